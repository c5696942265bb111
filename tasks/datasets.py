"""Image classification data sets held as host arrays, ready to be put on device once.

Images stay ``uint8`` (4× smaller on device than float32); the compiled program normalises them
with :func:`normalize`. Sources:

* ``digits``: scikit-learn's bundled 8×8 digits (offline; the embedded default),
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: TensorFlow Datasets, read from prepared
  array_record files with ``tfds.data_source`` (see :mod:`tasks.tfds_source`),
* ``synthetic``: small generated class-conditional data for tests.
"""
from __future__ import annotations

import numpy as np

from tasks.images import Dataset, make_dataset


DATASETS = ("digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100")


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits (pixel values 0..16), split once at random."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)  # values 0..16
    y = bunch.target
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return make_dataset("digits", x[train], y[train], x[test], y[test], 10, scale=16.0)


def synthetic(
    num_classes: int = 10,
    shape: tuple[int, int, int] = (8, 8, 1),
    n_train: int = 512,
    n_test: int = 128,
    noise: float = 40.0,
    seed: int = 0,
) -> Dataset:
    """Generated class-conditional images: a random prototype per class plus pixel noise.

    Learnable in a few hundred steps, small enough for tests.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, (num_classes, *shape))

    def draw(n):
        y = rng.integers(0, num_classes, n)
        x = prototypes[y] + rng.normal(0, noise, (n, *shape))
        return np.clip(x, 0, 255).astype(np.uint8), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return make_dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Loads a data set by name. TFDS ones must have been prepared (``plax data prepare NAME``)."""
    if name == "digits":
        return digits()
    if name == "synthetic":
        return synthetic()
    if name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        from tasks import tfds_source

        return tfds_source.load_tfds(name, data_dir or tfds_source.default_data_dir())
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
