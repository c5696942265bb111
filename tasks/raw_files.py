"""Preparing a data set from its original distribution files, for machines without internet.

``plax data prepare NAME --from DIR`` reads the files a data set is distributed as, wherever a
user already has them (a cluster's shared copy, a manual download, a system package):

* ``mnist``, ``fashion_mnist`` — the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped
  or not (Debian's ``dataset-fashion-mnist`` package installs them in
  ``/usr/share/datasets/fashion-mnist``);
* ``cifar10``, ``cifar100`` — an extracted tarball, binary (what TFDS itself downloads:
  ``cifar-10-batches-bin`` with ``data_batch_{1..5}.bin`` and ``test_batch.bin``;
  ``cifar-100-binary`` with ``train.bin`` and ``test.bin``) or python (``cifar-10-batches-py``,
  ``cifar-100-python``: the same names without ``.bin``, pickles), that folder or the one
  holding it.

The examples go through TFDS' own stock builder — its features, name and version — with only
the example generator replaced, so the array_record files and ``dataset_info.json`` are the ones
``plax data prepare`` writes after a download, in the same order of examples (TFDS shuffles by
the record key, here the example's index in the original files, as the stock builders use).
TensorFlow is not needed: images reach TFDS as PNG bytes encoded with Pillow.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np

from tasks import tfds_source

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Per CIFAR data set: the tarball folders, each split's files (without .bin), label bytes.
CIFAR = {"cifar10": (("cifar-10-batches-bin", "cifar-10-batches-py"),
                     {"train": tuple(f"data_batch_{i}" for i in range(1, 6)),
                      "test": ("test_batch",)}, 1),
         "cifar100": (("cifar-100-binary", "cifar-100-python"),
                      {"train": ("train",), "test": ("test",)}, 2)}
_IDX_UBYTE = 0x08


def read_idx(path) -> np.ndarray:
    """The uint8 array in an IDX file (LeCun's MNIST format), gzipped or not.

    Header: two zero bytes, the element type (0x08: unsigned byte, the only one MNIST-style
    data sets use), the number of dimensions d, then d big-endian uint32 sizes.
    """
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} bytes after its header; its shape {shape} "
                         f"needs {int(np.prod(shape))}")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise FileNotFoundError(f"{folder} has no {stem} (or {stem}.gz); found: {found}")


def read_idx_splits(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images [N, 28, 28, 1], labels [N]), "test": ...}`` from the IDX files."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    splits = {}
    for split, (images_file, labels_file) in IDX_FILES.items():
        images, labels = read_idx(_find(folder, images_file)), read_idx(_find(folder, labels_file))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: {split} images {images.shape} and labels "
                             f"{labels.shape} do not pair up")
        splits[split] = (images[..., None], labels.astype(np.int64))
    return splits


def _cifar_binary(path: Path, label_bytes: int) -> tuple[np.ndarray, ...]:
    # One record: the label bytes (CIFAR-100: coarse, fine), 3 × 32 × 32 channel-first pixels.
    size = label_bytes + 3072
    records = np.fromfile(path, np.uint8)
    if records.size % size:
        raise ValueError(f"{path} is not a CIFAR binary file with {label_bytes} label byte(s) "
                         f"(size not a multiple of {size})")
    records = records.reshape(-1, size)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = [records[:, i].astype(np.int64) for i in reversed(range(label_bytes))]
    return (images, *labels)   # labels fine first


def _cifar_python(path: Path, label_bytes: int) -> tuple[np.ndarray, ...]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    keys = (b"labels",) if label_bytes == 1 else (b"fine_labels", b"coarse_labels")
    return (images, *(np.asarray(batch[k], np.int64) for k in keys))


def read_cifar_splits(name: str, folder) -> dict[str, tuple[np.ndarray, ...]]:
    """``{"train": (images [N, 32, 32, 3], labels [N], (cifar100) coarse labels [N]), "test":
    ...}`` from an extracted CIFAR-10 / CIFAR-100 tarball (binary or python version)."""
    folders, files, label_bytes = CIFAR[name]
    folder = Path(os.path.expanduser(os.fspath(folder)))
    for candidate in (folder, *(folder / sub for sub in folders)):
        for suffix, read in ((".bin", _cifar_binary), ("", _cifar_python)):
            if all((candidate / (f + suffix)).is_file() for f in sum(files.values(), ())):
                parts = {split: [read(candidate / (f + suffix), label_bytes) for f in names]
                         for split, names in files.items()}
                return {split: tuple(np.concatenate(a) for a in zip(*p))
                        for split, p in parts.items()}
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    expected = ", ".join(sum(files.values(), ()))
    raise FileNotFoundError(
        f"{folder} holds no {name} files: expected {expected} (with .bin: the binary version, "
        f"without: the python pickles), there or in a subfolder {' or '.join(folders)}; "
        f"found: {found}")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="png")
    return buffer.getvalue()


def _records(name: str, split: str, arrays: tuple) -> Iterator[dict]:
    images, labels, *coarse = arrays
    for i, (image, y) in enumerate(zip(images, labels)):
        record = {"image": _png(image), "label": int(y)}
        if name in CIFAR:   # the stock builders' id: "<split>_<index in the files>"
            record["id"] = f"{split}_{i:05d}"
        if coarse:
            record["coarse_label"] = int(coarse[0][i])
        yield record


def write_prepared(builder_name: str, data_dir, splits: dict) -> None:
    """Prepares TFDS' stock ``builder_name`` under ``data_dir`` (array_record) from examples:
    ``splits`` maps a split name to an iterable of feature dicts (images as PNG bytes)."""
    import tensorflow_datasets as tfds

    stock = tfds.builder_cls(builder_name)

    class FromFiles(stock, skip_registration=True):
        name = builder_name  # the stock name, so the files land in <data_dir>/<name>/<version>

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            yield from enumerate(splits[split])

    FromFiles(data_dir=os.fspath(data_dir), file_format="array_record").download_and_prepare()


def prepare_from_files(name: str, source, data_dir=None) -> Path:
    """Writes ``name`` (mnist, fashion_mnist, cifar10, cifar100) from its distribution files in
    ``source`` as array_record files under ``data_dir``; no download, no TensorFlow. A data set
    already prepared there is left as it is. Returns the version directory."""
    builder = tfds_source._builder_name(name)
    data_dir = os.path.expanduser(tfds_source.default_data_dir() if data_dir is None
                                  else os.fspath(data_dir))
    done = tfds_source.already_prepared(name, data_dir)
    if done is not None:
        return done
    arrays = read_cifar_splits(name, source) if name in CIFAR else read_idx_splits(source)
    write_prepared(builder, data_dir, {split: _records(name, split, a)
                                       for split, a in arrays.items()})
    return tfds_source.find_prepared(name, data_dir)
