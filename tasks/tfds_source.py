"""Real image data sets read from TensorFlow Datasets' prepared array_record files.

Reading needs no TensorFlow: ``tfds.data_source`` gives random access to the array_record shards,
we take the raw serialized ``tf.train.Example`` records in large batches, parse them with the
protobuf classes bundled in tensorflow-datasets and decode the PNG images with Pillow. That is
about twice as fast as letting TFDS decode every record (its NumPy example parser is slow) and
loads MNIST's 70k images in a few seconds, most of them spent in Pillow.

Nothing here downloads. A data set that is not prepared under ``data_dir`` is reported at once,
before TFDS is touched, with the command that prepares it (:func:`prepare`, ``plax data prepare``),
which is the only step that needs TensorFlow (the ``plax[prepare]`` extra) and the internet
(:mod:`tasks.raw_files` converts distribution files already at hand, with neither).
"""
from __future__ import annotations

import io
import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tasks.images import Dataset, make_dataset

# Our name -> TFDS builder name.
TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10",
              "cifar100": "cifar100"}


class FeatureKeys(NamedTuple):
    image: str
    label: str
    extra_labels: tuple[str, ...] = ()  # other label features a caller may pick as ``label_key``


# The features we read from each data set. cifar100's "label" is the fine label (100 classes);
# its "coarse_label" (20 superclasses) is available through ``load_tfds(..., label_key=...)``.
TFDS_FEATURES = {
    "mnist": FeatureKeys("image", "label"),
    "fashion_mnist": FeatureKeys("image", "label"),
    "cifar10": FeatureKeys("image", "label"),
    "cifar100": FeatureKeys("image", "label", ("coarse_label",)),
}

SPLITS = ("train", "test")
PREPARE_EXTRA = "pip install 'plax[prepare]'"
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_CHUNK = 8192  # records per batched read


class DatasetNotPreparedError(FileNotFoundError):
    """The data set has no prepared array_record files under the data directory."""


class DatasetFormatError(DatasetNotPreparedError):
    """The data set is there, but not readable as array_record (TFRecord only, or incomplete)."""


def default_data_dir() -> str:
    """``$PLAX_DATA_DIR`` if set, else ``~/tensorflow_datasets`` (TFDS' own default)."""
    return os.environ.get("PLAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _builder_name(name: str) -> str:
    if name not in TFDS_NAMES:
        raise ValueError(
            f"unknown TFDS data set {name!r}; valid names: {', '.join(sorted(TFDS_NAMES))}"
        )
    return TFDS_NAMES[name]


def prepare_command(name: str, data_dir) -> str:
    """The shell command that prepares ``name`` under ``data_dir``."""
    return f"plax data prepare {name} --data-dir {shlex.quote(os.fspath(data_dir))}"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.name.split("."))


def _has_shards(version_dir: Path, builder: str, file_format: str) -> bool:
    return all(any(version_dir.glob(f"{builder}-{s}.{file_format}-*")) for s in SPLITS)


def find_prepared(name: str, data_dir) -> Path:
    """The version directory holding ``name``'s array_record files, or a clear error.

    Looks only at the file system (``<data_dir>/<builder>/<version>/dataset_info.json`` and
    ``<builder>-{train,test}.array_record-*``), so a missing data set fails in microseconds
    without importing TFDS, let alone attempting a download. The newest complete version wins.
    """
    builder = _builder_name(name)
    data_dir = Path(os.path.expanduser(os.fspath(data_dir)))
    builder_dir = data_dir / builder
    # TFDS writes into `incomplete.*` folders and renames them when done: only `X.Y.Z` counts.
    versions = sorted(
        (p for p in builder_dir.glob("*") if p.is_dir() and _VERSION_RE.match(p.name)),
        key=_version_key,
        reverse=True,
    )
    for version_dir in versions:
        if (version_dir / "dataset_info.json").is_file() and _has_shards(
            version_dir, builder, "array_record"
        ):
            return version_dir

    prepare = prepare_command(name, data_dir)
    how = (
        f"Prepare it once with\n    {prepare}\n"
        f"which needs the optional extra ({PREPARE_EXTRA}: TensorFlow, used only to build the "
        f"array_record files) and internet access for the one-time download. Offline, "
        f"convert the data set's distribution files you have instead (no TensorFlow):\n"
        f"    {prepare} --from DIR\n"
        f"Set $PLAX_DATA_DIR or pass --data-dir to read from another directory."
    )
    tfrecord = [v for v in versions if any(v.glob(f"{builder}-*.tfrecord-*"))]
    if tfrecord:
        version_dir = tfrecord[0]
        raise DatasetFormatError(
            f"data set {name!r} is prepared in {version_dir} in TFRecord format only, but plax "
            f"reads array_record files (random access without TensorFlow). Either add "
            f"array_record files beside the TFRecord ones (needs {PREPARE_EXTRA}):\n"
            f"    tfds convert_format --dataset_version_dir={version_dir} "
            f"--out_file_format=array_record\n"
            f"or re-prepare it with file_format=array_record into another directory:\n"
            f"    plax data prepare {name} --data-dir NEW_DIR"
        )
    if versions:
        raise DatasetFormatError(
            f"data set {name!r} under {data_dir} is incomplete: {versions[0]} lacks "
            f"dataset_info.json or {builder}-{{train,test}}.array_record-* files. Delete that "
            f"folder, then {how}"
        )
    found = sorted(p.name for p in builder_dir.iterdir()) if builder_dir.is_dir() else []
    raise DatasetNotPreparedError(
        f"data set {name!r} (TFDS {builder!r}) is not prepared in {data_dir}: no "
        f"{builder_dir}/<version>/dataset_info.json with array_record files"
        + (f" (found {found})" if found else "")
        + f". {how}"
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode_image(data: bytes) -> bytes:
    """The raw pixels of one encoded image (row-major, channels last, uint8)."""
    from PIL import Image, PngImagePlugin

    # TFDS stores these images as PNG; opening them as such skips Pillow's format probing, a
    # third of the time per 28×28 image. Anything else goes through the general path.
    if data.startswith(_PNG_SIGNATURE):
        image = PngImagePlugin.PngImageFile(io.BytesIO(data))
    else:
        image = Image.open(io.BytesIO(data))
    with image:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"expected 8-bit grey or RGB images, got Pillow mode {image.mode!r}")
        return image.tobytes()


def _read_split(source, keys: FeatureKeys, label_key: str, shape) -> tuple[np.ndarray, np.ndarray]:
    # tfds bundles the tf.train.Example proto, so parsing needs no TensorFlow.
    from tensorflow_datasets.proto import tf_example_pb2

    n = len(source)
    images = np.empty((n, *shape), np.uint8)
    flat = images.reshape(n, -1)
    labels = np.empty((n,), np.int32)
    for start in range(0, n, _CHUNK):
        records = source.__getitems__(list(range(start, min(n, start + _CHUNK))))
        for i, record in enumerate(records, start):
            feature = tf_example_pb2.Example.FromString(record).features.feature
            if i == 0:
                missing = {keys.image, label_key} - set(feature.keys())
                if missing:
                    raise KeyError(
                        f"records lack features {sorted(missing)}; they have {sorted(feature)}"
                    )
            pixels = _decode_image(feature[keys.image].bytes_list.value[0])
            if len(pixels) != flat.shape[1]:
                raise ValueError(
                    f"record {i} holds {len(pixels)} pixel bytes; the data set's image shape "
                    f"{tuple(shape)} needs {flat.shape[1]}"
                )
            flat[i] = np.frombuffer(pixels, np.uint8)
            labels[i] = feature[label_key].int64_list.value[0]
    return images, labels


def load_tfds(name: str, data_dir=None, *, label_key: str | None = None) -> Dataset:
    """Reads the prepared train and test splits of ``name`` into a :class:`Dataset`.

    Images are ``uint8 [N, H, W, C]`` in the order of the prepared files, labels ``int32``.
    ``label_key`` picks another label feature (cifar100: ``"coarse_label"``). Raises
    :class:`DatasetNotPreparedError` (a ``FileNotFoundError``) at once, naming the directory and
    the command that prepares it, if the array_record files are not there; never downloads.
    """
    builder = _builder_name(name)
    keys = TFDS_FEATURES[name]
    label_key = label_key or keys.label
    if label_key not in (keys.label, *keys.extra_labels):
        raise ValueError(
            f"unknown label_key {label_key!r} for {name!r}; valid: "
            f"{', '.join((keys.label, *keys.extra_labels))}"
        )
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    version_dir = find_prepared(name, data_dir)

    import tensorflow_datasets as tfds

    sources = tfds.data_source(
        f"{builder}:{version_dir.name}",
        split=list(SPLITS),
        data_dir=str(version_dir.parent.parent),
        download=False,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )
    features = sources[0].dataset_info.features
    shape = tuple(features[keys.image].shape)
    num_classes = features[label_key].num_classes
    (x_train, y_train), (x_test, y_test) = (
        _read_split(source, keys, label_key, shape) for source in sources
    )
    return make_dataset(name, x_train, y_train, x_test, y_test, num_classes, scale=255.0)


def already_prepared(name: str, data_dir) -> Path | None:
    """The version directory of ``name`` if it is prepared under ``data_dir``, else ``None``;
    a data set there in a form plax cannot read raises (preparing again would reuse that folder
    and still leave nothing readable)."""
    try:
        return find_prepared(name, data_dir)
    except DatasetFormatError:
        raise
    except DatasetNotPreparedError:
        return None


def prepare(name: str, data_dir=None) -> Path:
    """Downloads ``name`` and writes it as array_record files under ``data_dir`` (explicit step).

    Needs TensorFlow (TFDS' stock builders encode images with it) from the ``plax[prepare]``
    extra, and internet access to the data set's original host. A data set already prepared as
    array_record is left as it is. Returns the version directory.
    """
    builder_name = _builder_name(name)
    data_dir = os.path.expanduser(default_data_dir() if data_dir is None else os.fspath(data_dir))
    done = already_prepared(name, data_dir)
    if done is not None:
        return done
    try:
        import tensorflow  # noqa: F401  (only to give a clear error when it is missing)
    except ImportError as e:
        raise ImportError(
            f"preparing {name!r} needs TensorFlow, which TFDS uses to build the array_record "
            f"files (reading them later does not). Install the optional extra:\n"
            f"    {PREPARE_EXTRA}\n"
            f"then run `{prepare_command(name, data_dir)}` again (it downloads the data once)."
        ) from e
    import tensorflow_datasets as tfds

    tfds.builder(
        builder_name, data_dir=data_dir, file_format="array_record"
    ).download_and_prepare(file_format="array_record")
    return find_prepared(name, data_dir)
