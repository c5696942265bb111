"""Optimizers chosen by name, built from array hyperparameters.

The optimizer is rebuilt inside the traced update from the run's ``HParams`` (learning rate,
weight decay and regularizer strength are traced scalars), so a sweep over them is one compiled
program vmapped over runs. Its state's shape never depends on those values.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from plasticity.regularizers import regularized

OPTIMIZERS = ("sgd", "adam", "adamw")


class HParams(NamedTuple):
    """Vmappable hyperparameters of one run (scalars; a batch of runs stacks them)."""

    learning_rate: jax.Array
    weight_decay: jax.Array   # adamw's decoupled decay
    reg_strength: jax.Array   # λ of the selected regularizer
    redo_tau: jax.Array       # ReDo's dormancy threshold
    sp_shrink: jax.Array      # shrink & perturb: θ ← shrink·θ + perturb·ε
    sp_perturb: jax.Array
    # Retention while fine-tuning a pre-trained policy (continual.agents.retention): 0 = off.
    bc_coef: jax.Array          # behavioural cloning β
    kickstart_coef: jax.Array   # kickstarting β₀ (decays per update)
    ewc_coef: jax.Array         # EWC λ of the Gaussian-policy Fisher
    memory_share: jax.Array     # share of every batch from π*'s protected transitions
    source_run: jax.Array       # which pre-trained run (of --init-from) this run starts from

    @classmethod
    def defaults(cls, **values) -> "HParams":
        base = dict(learning_rate=1e-3, weight_decay=0.0, reg_strength=0.0, redo_tau=0.1,
                    sp_shrink=1.0, sp_perturb=0.0, bc_coef=0.0, kickstart_coef=0.0,
                    ewc_coef=0.0, memory_share=0.0, source_run=0.0)
        return cls(**{**base, **values})


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


def make_transform(optimizer: str, regularizer: str, hparams: HParams,
                   key: jax.Array | None = None) -> optax.GradientTransformation:
    """The optimizer chained with the regularizer (see :func:`plasticity.regularizers.regularized`)."""
    options = {"key": key} if regularizer in ("sp_step", "shrink_perturb_step") else {}
    return regularized(make_optimizer(optimizer, hparams), regularizer, hparams.reg_strength,
                       learning_rate=hparams.learning_rate, **options)
