"""Preparing a data set from its original distribution files, for machines without internet.

``plax data prepare NAME --from DIR`` reads the files a data set is distributed as, wherever a
user already has them (a cluster's shared copy, a manual download, a system package):

* ``mnist``, ``fashion_mnist`` — the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped
  or not (Debian's ``dataset-fashion-mnist`` package installs them in
  ``/usr/share/datasets/fashion-mnist``);
* ``cifar100`` — the extracted ``cifar-100-binary`` tarball (``train.bin``, ``test.bin``: what
  TFDS itself downloads) or ``cifar-100-python`` (the ``train`` and ``test`` pickles), either
  that folder or the one holding it.

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
CIFAR100_FOLDERS = ("cifar-100-binary", "cifar-100-python")
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


def _cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # One record: coarse label byte, fine label byte, 3 × 32 × 32 channel-first pixels.
    records = np.fromfile(path, np.uint8)
    if records.size % 3074:
        raise ValueError(f"{path} is not a CIFAR-100 binary file (size not a multiple of 3074)")
    records = records.reshape(-1, 3074)
    images = records[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, records[:, 1].astype(np.int64), records[:, 0].astype(np.int64)


def _cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return (images, np.asarray(batch[b"fine_labels"], np.int64),
            np.asarray(batch[b"coarse_labels"], np.int64))


def read_cifar100_splits(folder) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"train": (images [N, 32, 32, 3], fine [N], coarse [N]), "test": ...}`` from an
    extracted CIFAR-100 tarball (binary or python version)."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    for candidate in (folder, *(folder / name for name in CIFAR100_FOLDERS)):
        if all((candidate / f"{s}.bin").is_file() for s in tfds_source.SPLITS):
            return {s: _cifar_binary(candidate / f"{s}.bin") for s in tfds_source.SPLITS}
        if all((candidate / s).is_file() for s in tfds_source.SPLITS):
            return {s: _cifar_python(candidate / s) for s in tfds_source.SPLITS}
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise FileNotFoundError(
        f"{folder} holds no CIFAR-100 files: expected train.bin and test.bin (cifar-100-binary) "
        f"or the train and test pickles (cifar-100-python), there or in a {CIFAR100_FOLDERS} "
        f"subfolder; found: {found}")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="png")
    return buffer.getvalue()


def _records(name: str, split: str, arrays: tuple) -> Iterator[dict]:
    if name == "cifar100":
        images, fine, coarse = arrays
        for i, (image, y, c) in enumerate(zip(images, fine, coarse)):
            # The stock builder's id: "<split>_<index in the file>".
            yield {"id": f"{split}_{i:05d}", "image": _png(image), "label": int(y),
                   "coarse_label": int(c)}
    else:
        images, labels = arrays
        for image, y in zip(images, labels):
            yield {"image": _png(image), "label": int(y)}


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
    """Writes ``name`` (mnist, fashion_mnist, cifar100) from its distribution files in
    ``source`` as array_record files under ``data_dir``; no download, no TensorFlow. A data set
    already prepared there is left as it is. Returns the version directory."""
    builder = tfds_source._builder_name(name)
    data_dir = os.path.expanduser(tfds_source.default_data_dir() if data_dir is None
                                  else os.fspath(data_dir))
    try:
        return tfds_source.find_prepared(name, data_dir)
    except tfds_source.DatasetFormatError:
        raise
    except tfds_source.DatasetNotPreparedError:
        pass
    arrays = read_cifar100_splits(source) if name == "cifar100" else read_idx_splits(source)
    write_prepared(builder, data_dir, {split: _records(name, split, a)
                                       for split, a in arrays.items()})
    return tfds_source.find_prepared(name, data_dir)
