"""Image classification data sets held as host arrays, ready to be put on device once.

Images stay ``uint8`` (4× smaller on device than float32); the compiled program normalises them
with :func:`normalize`. Sources:

* ``digits``: scikit-learn's bundled 8×8 digits (offline; the embedded default),
* ``mnist``, ``fashion_mnist``, ``cifar100``: TensorFlow Datasets, read from prepared
  array_record files with ``tfds.data_source`` (see :mod:`tasks.tfds_source`),
* ``synthetic``: small generated class-conditional data for tests.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Train and test splits. ``x_*``: uint8 ``[N, H, W, C]``; ``y_*``: int32 ``[N]``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    # x_float = (x_uint8 / scale - mean) / std; scalars so that pixel permutations commute with it.
    scale: float
    mean: float
    std: float

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def make_dataset(name, x_train, y_train, x_test, y_test, num_classes, scale=255.0) -> Dataset:
    """Builds a :class:`Dataset`, computing the normalisation from the training split."""
    x_train = np.asarray(x_train, np.uint8)
    x_test = np.asarray(x_test, np.uint8)
    if x_train.ndim == 3:  # grey images without a channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    scaled = x_train.astype(np.float64) / scale
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=np.asarray(y_train, np.int32).reshape(-1),
        x_test=x_test,
        y_test=np.asarray(y_test, np.int32).reshape(-1),
        num_classes=int(num_classes),
        scale=float(scale),
        mean=float(scaled.mean()),
        std=float(scaled.std() + 1e-8),
    )
