"""Optimizers chosen by name, built from array hyperparameters.

The optimizer is rebuilt inside the traced update from the run's ``HParams`` (learning rate and
weight decay are traced scalars), so a sweep over them is one compiled program vmapped over runs.
Its state's shape never depends on those values.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")


class HParams(NamedTuple):
    """Vmappable hyperparameters of one run (scalars; a batch of runs stacks them)."""

    learning_rate: jax.Array
    weight_decay: jax.Array


def make_optimizer(name: str, hparams: HParams) -> optax.GradientTransformation:
    """``sgd``, ``adam`` (Kingma & Ba 2015) or ``adamw`` (decoupled decay, Loshchilov & Hutter 2019;
    optax multiplies the decay by the learning rate)."""
    if name == "sgd":
        return optax.sgd(hparams.learning_rate)
    if name == "adam":
        return optax.adam(hparams.learning_rate)
    if name == "adamw":
        return optax.adamw(hparams.learning_rate, weight_decay=hparams.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
