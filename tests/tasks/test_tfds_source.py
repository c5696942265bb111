"""The TFDS read path, on small array_record data sets the tests write themselves (no network).

The writer (:func:`tasks.raw_files.write_prepared`, which ``plax data prepare --from`` uses)
subclasses TFDS' own stock builder (``mnist``, ``cifar100``, ...) with only the example
generator replaced, and prepares it with TFDS' real ``download_and_prepare`` in array_record
format. The files, ``dataset_info.json`` and ``features.json`` are therefore what a real
``plax data prepare`` writes, under the same builder name and version, and ``tfds.data_source``
reads them as it would read the real data set. Images are given as PNG bytes (encoded with
Pillow) because TFDS encodes NumPy images with TensorFlow, which is not installed.
"""
from __future__ import annotations

import importlib.util
import io
import sys
import time

import numpy as np
import pytest

from tasks import raw_files, tfds_source
from tasks.tfds_source import (
    TFDS_NAMES,
    DatasetFormatError,
    DatasetNotPreparedError,
    default_data_dir,
    find_prepared,
    load_tfds,
    prepare,
)

tfds = pytest.importorskip("tensorflow_datasets")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="png")
    return buffer.getvalue()


def write_array_record_dataset(builder_name: str, data_dir, splits: dict[str, list[dict]]) -> None:
    """Prepares ``builder_name`` under ``data_dir`` from in-memory examples, as TFDS would."""
    raw_files.write_prepared(builder_name, data_dir, splits)


def _distinct_images(rng, n, shape) -> np.ndarray:
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, :2] = np.stack([np.arange(n) // 256, np.arange(n) % 256], 1)
    return images


def _check_round_trip(x_loaded, y_loaded, x, y):
    """TFDS shuffles records when writing: compare up to that (deterministic) permutation."""
    assert x_loaded.shape == x.shape and x_loaded.dtype == np.uint8
    assert y_loaded.shape == y.shape and y_loaded.dtype == np.int32
    index = {image.tobytes(): i for i, image in enumerate(x)}
    order = np.array([index[image.tobytes()] for image in x_loaded])  # KeyError: pixels changed
    np.testing.assert_array_equal(np.sort(order), np.arange(len(x)))
    np.testing.assert_array_equal(x_loaded, x[order])
    np.testing.assert_array_equal(y_loaded, y[order])


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 50), ("test", 20)):
        x = _distinct_images(rng, n, (28, 28, 1))
        y = rng.integers(0, 10, n).astype(np.int32)
        data[split] = (x, y)
    data_dir = tmp_path_factory.mktemp("tfds")
    start = time.perf_counter()
    write_array_record_dataset(
        "mnist",
        data_dir,
        {s: [{"image": _png(a), "label": int(b)} for a, b in zip(*xy)] for s, xy in data.items()},
    )
    print(f"wrote 70 mnist records in {time.perf_counter() - start:.3f}s")
    return data_dir, data


def test_mnist_round_trips_pixels_labels_shapes_and_dtypes(small_mnist):
    data_dir, data = small_mnist
    start = time.perf_counter()
    ds = load_tfds("mnist", data_dir)
    print(f"load_tfds read 70 mnist records in {time.perf_counter() - start:.3f}s")
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.scale == 255.0
    assert ds.image_shape == (28, 28, 1)
    _check_round_trip(ds.x_train, ds.y_train, *data["train"])
    _check_round_trip(ds.x_test, ds.y_test, *data["test"])
    expected = ds.x_train.astype(np.float64) / 255.0
    assert ds.mean == pytest.approx(expected.mean()) and ds.std == pytest.approx(expected.std())


def test_loading_twice_gives_the_same_order(small_mnist):
    data_dir, _ = small_mnist
    a, b = load_tfds("mnist", data_dir), load_tfds("mnist", data_dir)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here"
)
def test_reading_works_without_tensorflow_installed(small_mnist):
    assert load_tfds("mnist", small_mnist[0]).x_train.shape == (50, 28, 28, 1)
    assert "tensorflow" not in sys.modules


def test_data_dir_defaults_to_plax_data_dir(small_mnist, monkeypatch):
    monkeypatch.setenv("PLAX_DATA_DIR", str(small_mnist[0]))
    assert default_data_dir() == str(small_mnist[0])
    assert load_tfds("mnist").x_test.shape == (20, 28, 28, 1)
    monkeypatch.delenv("PLAX_DATA_DIR")
    assert default_data_dir().endswith("tensorflow_datasets")


def test_cifar100_reads_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(1)
    data = {}
    for split, n in (("train", 12), ("test", 6)):
        data[split] = (
            _distinct_images(rng, n, (32, 32, 3)),
            rng.integers(0, 100, n).astype(np.int32),
            rng.integers(0, 20, n).astype(np.int32),
        )
    write_array_record_dataset(
        "cifar100",
        tmp_path,
        {
            s: [
                {"id": f"{s}_{i}", "image": _png(x[i]), "label": int(y[i]),
                 "coarse_label": int(c[i])}
                for i in range(len(y))
            ]
            for s, (x, y, c) in data.items()
        },
    )
    fine = load_tfds("cifar100", tmp_path)
    assert fine.num_classes == 100 and fine.image_shape == (32, 32, 3)
    _check_round_trip(fine.x_train, fine.y_train, *data["train"][:2])
    _check_round_trip(fine.x_test, fine.y_test, *data["test"][:2])
    coarse = load_tfds("cifar100", tmp_path, label_key="coarse_label")
    assert coarse.num_classes == 20
    _check_round_trip(coarse.x_train, coarse.y_train, data["train"][0], data["train"][2])


def test_missing_dataset_fails_at_once_with_the_prepare_command(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        load_tfds("fashion_mnist", tmp_path)
    assert time.perf_counter() - start < 1.0
    assert isinstance(info.value, DatasetNotPreparedError)
    message = str(info.value)
    assert f"plax data prepare fashion_mnist --data-dir {tmp_path}" in message
    assert "pip install 'plax[prepare]'" in message and "internet" in message
    assert "'fashion_mnist'" in message
    assert list(tmp_path.iterdir()) == []  # nothing was created, let alone downloaded


def test_tfrecord_only_dataset_says_how_to_get_array_record(tmp_path):
    version_dir = tmp_path / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    for split in ("train", "test"):
        (version_dir / f"mnist-{split}.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(DatasetFormatError) as info:
        load_tfds("mnist", tmp_path)
    message = str(info.value)
    assert "TFRecord" in message and "array_record" in message
    assert f"--dataset_version_dir={version_dir}" in message
    with pytest.raises(DatasetFormatError):
        prepare("mnist", tmp_path)  # TFDS would keep the TFRecord copy: refuse, say why


def test_unfinished_preparation_is_not_mistaken_for_data(tmp_path):
    (tmp_path / "mnist" / "incomplete.AB12CD_3.0.1").mkdir(parents=True)
    with pytest.raises(DatasetNotPreparedError, match="plax data prepare mnist"):
        find_prepared("mnist", tmp_path)


@pytest.mark.parametrize("call", [load_tfds, prepare, find_prepared])
def test_unknown_name_lists_valid_ones(call, tmp_path):
    with pytest.raises(ValueError, match="'mnst'") as info:
        call("mnst", tmp_path)
    for name in TFDS_NAMES:
        assert name in str(info.value)


def test_unknown_label_key_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="coarse_label"):
        load_tfds("cifar100", tmp_path, label_key="superclass")


def test_prepare_without_tensorflow_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises
    with pytest.raises(ImportError) as info:
        prepare("mnist", tmp_path)
    message = str(info.value)
    assert "pip install 'plax[prepare]'" in message
    assert f"plax data prepare mnist --data-dir {tmp_path}" in message


def test_prepare_leaves_an_array_record_dataset_alone(small_mnist):
    assert prepare("mnist", small_mnist[0]) == small_mnist[0] / "mnist" / "3.0.1"


def test_module_names_every_source(tmp_path):
    assert set(TFDS_NAMES) == set(tfds_source.TFDS_FEATURES)
