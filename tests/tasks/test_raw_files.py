"""``plax data prepare NAME --from DIR``: data sets from their distribution files, offline.

The files are written here byte by byte in their published formats (IDX: LeCun's MNIST page;
CIFAR-10 / CIFAR-100: the binary and python versions of Krizhevsky's tarballs), prepared through TFDS'
stock builder and read back by the loader every run uses.
"""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from experiments import cli
from tasks import raw_files
from tasks.tfds_source import DatasetNotPreparedError, find_prepared, load_tfds

pytest.importorskip("tensorflow_datasets")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder, splits, compress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        images, labels = raw_files.IDX_FILES[split]
        for name, array in ((images, x), (labels, y)):
            data = _idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def _as_set(images) -> list[bytes]:
    return sorted(image.tobytes() for image in images)


def test_read_idx_decodes_the_header_by_hand(tmp_path):
    # magic 0x00000803 (ubyte, 3 dims), sizes 2, 1, 3 big-endian, then the pixels.
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    (tmp_path / "a").write_bytes(raw)
    np.testing.assert_array_equal(raw_files.read_idx(tmp_path / "a"), [[[1, 2, 3]], [[4, 5, 6]]])
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw[:-1]))
    with pytest.raises(ValueError, match="needs 6"):
        raw_files.read_idx(tmp_path / "b.gz")
    (tmp_path / "c").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4)  # float32
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        raw_files.read_idx(tmp_path / "c")


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_prepares_and_loads_every_image_with_its_label(tmp_path, compress):
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 40), ("test", 12)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n)   # distinct images, so each one's label can be looked up
        splits[split] = (x, rng.integers(0, 10, n).astype(np.uint8))
    _write_idx_folder(tmp_path / "files", splits, compress)
    path = raw_files.prepare_from_files("fashion_mnist", tmp_path / "files", tmp_path / "tfds")
    assert path == find_prepared("fashion_mnist", tmp_path / "tfds")
    data = load_tfds("fashion_mnist", tmp_path / "tfds")
    assert data.num_classes == 10 and data.image_shape == (28, 28, 1)
    for (x, y), (x_loaded, y_loaded) in ((splits["train"], (data.x_train, data.y_train)),
                                         (splits["test"], (data.x_test, data.y_test))):
        label_of = {image.tobytes(): int(label) for image, label in zip(x, y)}
        assert _as_set(x_loaded[..., 0]) == _as_set(x)
        assert [label_of[image.tobytes()] for image in x_loaded[..., 0]] == list(y_loaded)
    # Prepared once: a second call reads nothing (the source folder may be gone by then).
    assert raw_files.prepare_from_files("fashion_mnist", tmp_path / "gone",
                                        tmp_path / "tfds") == path


def _cifar_splits(rng, name: str) -> dict:
    classes = 100 if name == "cifar100" else 10
    splits = {}
    for split, n in (("train", 10), ("test", 3)):
        labels = (rng.integers(0, classes, n),) + ((rng.integers(0, 20, n),)
                                                   if name == "cifar100" else ())
        splits[split] = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), *labels)
    return splits


def _files(name: str, split: str) -> list[tuple[str, slice]]:
    """The tarball's file names of a split and the rows each holds (CIFAR-10: five train
    batches)."""
    if name == "cifar100":
        return [(split, slice(None))]
    if split == "test":
        return [("test_batch", slice(None))]
    return [(f"data_batch_{i + 1}", slice(2 * i, 2 * i + 2)) for i in range(5)]


def _write_cifar(folder, name: str, splits, binary: bool) -> None:
    folder.mkdir(parents=True)
    for split, (x, *labels) in splits.items():
        for file, rows in _files(name, split):
            xs, ls = x[rows], [label[rows] for label in labels]
            if binary:  # label bytes (CIFAR-100: coarse, then fine), channel-first planes
                data = b"".join(bytes([int(lab[i]) for lab in reversed(ls)])
                                + xs[i].transpose(2, 0, 1).tobytes() for i in range(len(xs)))
                (folder / f"{file}.bin").write_bytes(data)
            else:
                keys = [b"labels"] if name == "cifar10" else [b"fine_labels", b"coarse_labels"]
                batch = {b"data": xs.transpose(0, 3, 1, 2).reshape(len(xs), -1),
                         **{k: list(map(int, lab)) for k, lab in zip(keys, ls)}}
                (folder / file).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("name,version", [
    ("cifar10", "cifar-10-batches-bin"), ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-binary"), ("cifar100", "cifar-100-python")])
def test_cifar_tarball_folders_read_channels_last_with_their_labels(tmp_path, name, version):
    splits = _cifar_splits(np.random.default_rng(1), name)
    _write_cifar(tmp_path / version, name, splits, binary=not version.endswith(("py", "python")))
    read = raw_files.read_cifar_splits(name, tmp_path)   # the folder holding the extracted one
    for split, arrays in splits.items():
        assert len(read[split]) == len(arrays)
        for got, want in zip(read[split], arrays):
            np.testing.assert_array_equal(got, want)


def test_cifar100_binary_prepares_fine_and_coarse_labels(tmp_path):
    splits = _cifar_splits(np.random.default_rng(2), "cifar100")
    _write_cifar(tmp_path / "cifar-100-binary", "cifar100", splits, binary=True)
    raw_files.prepare_from_files("cifar100", tmp_path / "cifar-100-binary", tmp_path / "tfds")
    fine, coarse = (load_tfds("cifar100", tmp_path / "tfds", label_key=k)
                    for k in ("label", "coarse_label"))
    x, y, c = splits["train"]
    row = {image.tobytes(): i for i, image in enumerate(x)}
    order = [row[image.tobytes()] for image in fine.x_train]
    np.testing.assert_array_equal(fine.y_train, y[order])
    np.testing.assert_array_equal(coarse.y_train, c[order])
    assert fine.num_classes == 100 and coarse.num_classes == 20


def test_missing_files_name_what_is_expected_and_write_nothing(tmp_path, capsys):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "README").write_text("")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*found: \['README'\]"):
        raw_files.prepare_from_files("mnist", tmp_path / "files", tmp_path / "tfds")
    with pytest.raises(DatasetNotPreparedError):
        find_prepared("mnist", tmp_path / "tfds")
    code = cli.main(["data", "prepare", "cifar100", "--from", str(tmp_path / "files"),
                     "--data-dir", str(tmp_path / "tfds")])
    assert code != 0 and "cifar-100-binary" in capsys.readouterr().err
