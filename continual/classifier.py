"""The supervised continual learner: a classifier as pure ``init / update / evaluate`` functions."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.optimizers import HParams, make_optimizer, make_transform
from plasticity import regularizers
from plasticity.networks import Network, layer_params
from tasks.base import Batch

SETTINGS = ("class", "task")


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    init_params: Any  # θ₀, for distance-from-init diagnostics
    step: jax.Array
    extras: Any = ()  # intervention state (e.g. continual backprop's utilities)


class Learner(NamedTuple):
    """A continual learner as pure functions (the extension point of :mod:`continual.loop`).

    ``boundary(state, batch, key)`` runs once between tasks with the finished task's probe batch
    (EWC consolidation); ``fresh(key, hparams)`` is a freshly initialised state (resets).
    """

    init: Callable[[jax.Array, HParams], TrainState]
    update: Callable[[TrainState, Batch, HParams, jax.Array], tuple[TrainState, dict]]
    evaluate: Callable[[TrainState, Batch], dict]
    features: Callable[[Any, Batch], dict[str, jax.Array]]
    boundary: Callable[[TrainState, Batch, jax.Array], TrainState]


def mask_logits(logits: jax.Array, class_mask: jax.Array, setting: str) -> jax.Array:
    """The logits a ``setting`` trains and evaluates: all of them (``class``), or only the
    example's task classes (``task``; the others at −1e9, so softmax gives them 0)."""
    return jnp.where(class_mask, logits, -1e9) if setting == "task" else logits


def make_classifier(network: Network, optimizer: str, *, setting: str = "class",
                    regularizer: str = "none", fisher_examples: int = 128,
                    optimizer_stats: Callable | None = None,
                    eval_network: Network | None = None) -> Learner:
    """A softmax classifier trained with cross-entropy.

    Args:
      network: pure ``init/apply`` pair returning ``(logits, features)``.
      optimizer: ``sgd``, ``adam`` or ``adamw``.
      setting: ``class`` — one head over all classes (class-incremental); ``task`` — logits
        outside the example's task classes are masked in training and evaluation
        (task-incremental with task identity given, as in van de Ven & Tolias 2019).
      regularizer: a name from :data:`plasticity.regularizers.REGULARIZERS`, chained with the
        optimizer; its strength is ``hparams.reg_strength``. ``ewc`` consolidates the diagonal
        Fisher (one sampled label per example, ``fisher_examples`` probe examples) between tasks.
      optimizer_stats: optional ``(grads, updates, params) -> dict`` computed every step
        (per-layer dicts; see :func:`metrics.probes.optimizer_stats`).
      eval_network: the network ``evaluate`` runs (default ``network``): the same parameters
        applied differently, e.g. an iterative network with more steps at test time.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")
    make_optimizer(optimizer, HParams.defaults())  # validate names now, not at trace time
    regularizer = regularizers.canonical_name(regularizer)

    def logits_of(params, batch: Batch, net: Network = network):
        logits, features = net.apply(params, batch.x)
        return mask_logits(logits, batch.class_mask, setting), features

    def init(key: jax.Array, hparams: HParams) -> TrainState:
        init_key, reg_key = jax.random.split(key)
        params = network.init(init_key)
        opt_state = make_transform(optimizer, regularizer, hparams, reg_key).init(params)
        return TrainState(params, opt_state, params, jnp.zeros((), jnp.int32))

    def loss_fn(params, batch: Batch):
        logits, _ = logits_of(params, batch)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
        correct = (jnp.argmax(logits, -1) == batch.y).astype(jnp.float32)
        # Weighted means: rehearsal rows are masked out (weight 0) while the buffer is empty.
        total = jnp.maximum(jnp.sum(batch.weight), 1.0)
        return jnp.sum(losses * batch.weight) / total, jnp.sum(correct * batch.weight) / total

    def update(state: TrainState, batch: Batch, hparams: HParams, key: jax.Array):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        tx = make_transform(optimizer, regularizer, hparams, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        info = {"train_loss": loss, "train_acc": acc}
        if optimizer_stats is not None:
            # Δθ as θ_new − θ, the change actually applied: reading ``updates`` instead makes XLA
            # write the update tree out on its own rather than fuse it into apply_updates.
            applied = jax.tree.map(jnp.subtract, params, state.params)
            info.update(optimizer_stats(layer_params(grads), layer_params(applied),
                                        layer_params(state.params)))
        return state._replace(params=params, opt_state=opt_state, step=state.step + 1), info

    def evaluate(state: TrainState, batch: Batch) -> dict:
        logits, _ = logits_of(state.params, batch, eval_network or network)
        correct = (jnp.argmax(logits, -1) == batch.y).astype(jnp.float32)
        return {"acc": jnp.sum(correct * batch.weight) / jnp.maximum(jnp.sum(batch.weight), 1.0)}

    def features(params, batch: Batch) -> dict[str, jax.Array]:
        return network.apply(params, batch.x)[1]

    def boundary(state: TrainState, batch: Batch, key: jax.Array) -> TrainState:
        if regularizer != "ewc":
            return state
        n = min(fisher_examples, batch.x.shape[0])
        mask = batch.class_mask if batch.class_mask.ndim == 1 else batch.class_mask[0]

        def log_probs(params, x):
            logits, _ = logits_of(params, Batch(x, batch.y[:1], mask, batch.weight[:1]))
            return jax.nn.log_softmax(logits)

        chunk = next(c for c in (32, 16, 8, 4, 2, 1) if n % c == 0)
        fisher = regularizers.diagonal_fisher(log_probs, state.params, batch.x[:n], key,
                                              num_samples=1, chunk_size=chunk)
        return state._replace(
            opt_state=regularizers.consolidate(state.opt_state, state.params, fisher))

    return Learner(init, update, evaluate, features, boundary)
