"""The supervised continual learner: a classifier as pure ``init / update / evaluate`` functions."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.optimizers import HParams, make_optimizer
from plasticity.networks import Network, layer_params
from tasks.base import Batch

SETTINGS = ("class", "task")


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    init_params: Any  # θ₀, for distance-from-init diagnostics (and, later, L2-init)
    step: jax.Array


class Learner(NamedTuple):
    """A continual learner as pure functions (the extension point of :mod:`continual.loop`)."""

    init: Callable[[jax.Array, HParams], TrainState]
    update: Callable[[TrainState, Batch, HParams], tuple[TrainState, dict]]
    evaluate: Callable[[TrainState, Batch], dict]
    features: Callable[[Any, Batch], dict[str, jax.Array]]


def make_classifier(network: Network, optimizer: str, *, setting: str = "class",
                    optimizer_stats: Callable | None = None) -> Learner:
    """A softmax classifier trained with cross-entropy.

    Args:
      network: pure ``init/apply`` pair returning ``(logits, features)``.
      optimizer: ``sgd``, ``adam`` or ``adamw``.
      setting: ``class`` — one head over all classes (class-incremental); ``task`` — logits
        outside the current task's classes are masked in training and evaluation
        (task-incremental with task identity given, as in van de Ven & Tolias 2019).
      optimizer_stats: optional ``(grads, updates, params) -> dict`` computed every step
        (per-layer dicts; see :func:`metrics.probes.optimizer_stats`).
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")
    make_optimizer(optimizer, HParams(1.0, 0.0))  # validate the name now, not at trace time

    def logits_of(params, batch: Batch):
        logits, features = network.apply(params, batch.x)
        if setting == "task":
            logits = jnp.where(batch.class_mask, logits, -1e9)
        return logits, features

    def init(key: jax.Array, hparams: HParams) -> TrainState:
        params = network.init(key)
        opt_state = make_optimizer(optimizer, hparams).init(params)
        return TrainState(params, opt_state, params, jnp.zeros((), jnp.int32))

    def loss_fn(params, batch: Batch):
        logits, _ = logits_of(params, batch)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
        correct = (jnp.argmax(logits, -1) == batch.y).astype(jnp.float32)
        return jnp.mean(losses), jnp.mean(correct)

    def update(state: TrainState, batch: Batch, hparams: HParams):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        tx = make_optimizer(optimizer, hparams)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        info = {"train_loss": loss, "train_acc": acc}
        if optimizer_stats is not None:
            info.update(optimizer_stats(layer_params(grads), layer_params(updates),
                                        layer_params(state.params)))
        return TrainState(params, opt_state, state.init_params, state.step + 1), info

    def evaluate(state: TrainState, batch: Batch) -> dict:
        logits, _ = logits_of(state.params, batch)
        correct = (jnp.argmax(logits, -1) == batch.y).astype(jnp.float32)
        return {"acc": jnp.sum(correct * batch.weight) / jnp.maximum(jnp.sum(batch.weight), 1.0)}

    def features(params, batch: Batch) -> dict[str, jax.Array]:
        return network.apply(params, batch.x)[1]

    return Learner(init, update, evaluate, features)
