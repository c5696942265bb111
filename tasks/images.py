"""The image-classification data set record every source returns (:mod:`tasks.datasets`,
:mod:`tasks.tfds_source`): uint8 images and int32 labels held as host arrays."""
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
