"""Discrete interventions on the learner state: resets, ReDo, shrink & perturb, continual
backprop — pure ``state -> state`` functions the loop applies with ``lax.cond`` on a schedule
(every ``every`` steps) or between tasks (``every = 0``) (DESIGN.md, principle 4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax

from continual.classifier import Learner, TrainState
from continual.optimizers import HParams
from plasticity import resets
from tasks.base import Batch

RESETS = ("none", "full", "head", "last_k", "redo", "shrink_perturb", "cbp")

# (state, batch, hparams, key) -> state
Intervention = Callable[[TrainState, Batch, HParams, jax.Array], TrainState]


@dataclass(frozen=True)
class InterventionSpec:
    """Static choices. ``every = 0`` applies the intervention between tasks (before each task
    but the first, on the previous task's probe batch); ``every = n`` after every n-th step on
    the current training batch. Continual backprop runs every step regardless."""

    kind: str = "none"
    every: int = 0
    last_k: int = 1
    cbp_maturity: int = 100
    cbp_replacement_rate: float = 1e-4
    cbp_decay: float = 0.99

    def __post_init__(self):
        if self.kind not in RESETS:
            raise ValueError(f"unknown reset {self.kind!r}; valid: {', '.join(RESETS)}")
        if self.every < 0:
            raise ValueError(f"reset_every must be >= 0, got {self.every}")

    @property
    def per_step(self) -> bool:
        return self.kind == "cbp" or (self.kind != "none" and self.every > 0)


def reset_network(spec: InterventionSpec, state: TrainState, fresh: TrainState,
                  features: Callable[[], dict], hparams: HParams,
                  layer_order: list[str]) -> TrainState:
    """One network's reset of kind ``spec.kind`` (not ``cbp``, not ``none``): ``fresh`` is a
    freshly initialised state of the same network; ``features()`` its current per-layer features
    on the probe batch (called only by ReDo). Shared by the classifier and the RL agents."""
    if spec.kind == "full":
        # Everything afresh (optimizer moments and anchors too); θ₀ for diagnostics stays.
        return fresh._replace(init_params=state.init_params, step=state.step,
                              extras=state.extras)
    if spec.kind in ("head", "last_k"):
        touched = resets.last_layers(layer_order, 1 if spec.kind == "head" else spec.last_k)
        params, opt_state = resets.reset_layers(state.params, state.opt_state, fresh.params,
                                                touched)
        return state._replace(params=params, opt_state=opt_state)
    if spec.kind == "shrink_perturb":
        return state._replace(params=resets.shrink_perturb(
            state.params, fresh.params, hparams.sp_shrink, hparams.sp_perturb))
    if spec.kind == "redo":
        params, opt_state, _ = resets.redo(state.params, state.opt_state, features(),
                                           fresh.params, layer_order, hparams.redo_tau)
        return state._replace(params=params, opt_state=opt_state)
    raise ValueError(f"reset_network does not apply {spec.kind!r}")


def make_intervention(spec: InterventionSpec, learner: Learner,
                      layer_order: list[str]) -> Intervention | None:
    """The intervention of ``spec`` for a learner whose layers, input to output, are
    ``layer_order`` (the output layer last)."""
    if spec.kind == "none":
        return None
    if spec.kind in ("last_k", "head"):
        resets.last_layers(layer_order, 1 if spec.kind == "head" else spec.last_k)  # validate

    def apply(state: TrainState, batch: Batch, hparams: HParams, key: jax.Array) -> TrainState:
        fresh = learner.init(key, hparams)
        if spec.kind != "cbp":
            return reset_network(spec, state, fresh,
                                 lambda: learner.features(state.params, batch), hparams,
                                 layer_order)
        # Continual backprop: features of the batch just trained on (one extra forward pass).
        features = learner.features(state.params, batch)
        params, opt_state, cbp = resets.cbp_step(
            state.params, state.opt_state, state.extras, features, fresh.params, layer_order,
            decay=spec.cbp_decay, maturity=spec.cbp_maturity,
            replacement_rate=spec.cbp_replacement_rate)
        return state._replace(params=params, opt_state=opt_state, extras=cbp)

    return apply


def with_intervention_state(learner: Learner, spec: InterventionSpec,
                            layer_order: list[str]) -> Learner:
    """Adds the intervention's own state (continual backprop's utilities and ages) to the
    learner's initial state."""
    if spec.kind != "cbp":
        return learner

    def init(key, hparams):
        state = learner.init(key, hparams)
        return state._replace(extras=resets.cbp_init(state.params, layer_order))

    return learner._replace(init=init)
