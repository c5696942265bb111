"""The optimizer plumbing the actor-critic agents (SAC, CRL) share: a network's
:class:`~continual.classifier.TrainState` under plax's optimizer and regularizer
(:func:`continual.optimizers.make_transform`), one step on it, and the entropy temperature's
own Adam step (Haarnoja et al. 2018b, eq. 18: minimise ``α · E[−log π − H̄]`` over ``log α``).

The transform takes the run's hyperparameters (vmapped over runs) and a key (regularizers that
sample, e.g. shrink-and-perturb's noise), so it is rebuilt inside every update, never stored.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.classifier import TrainState
from continual.optimizers import HParams, make_optimizer, make_transform
from plasticity import regularizers
from plasticity.networks import Network


class NetOptimizer(NamedTuple):
    """A network optimizer: ``optimizer`` (a :data:`continual.optimizers.OPTIMIZERS` name) under
    ``regularizer`` (a :mod:`plasticity.regularizers` name, canonical)."""

    optimizer: str
    regularizer: str

    def transform(self, hparams: HParams, key) -> optax.GradientTransformation:
        return make_transform(self.optimizer, self.regularizer, hparams, key)

    def init(self, net: Network, key, hparams: HParams) -> TrainState:
        """Fresh parameters of ``net`` with their optimizer state (θ₀ kept for diagnostics)."""
        init_key, reg_key = jax.random.split(key)
        return self.wrap(net.init(init_key), reg_key, hparams)

    def wrap(self, params, key, hparams: HParams) -> TrainState:
        """A train state around given parameters (θ₀ = them) with a fresh optimizer state."""
        return TrainState(params, self.transform(hparams, key).init(params), params,
                          jnp.zeros((), jnp.int32))

    def step(self, state: TrainState, grads, hparams: HParams, key) -> tuple[TrainState, Any]:
        """One optimizer step on ``state``; also returns the parameter updates (diagnostics)."""
        updates, opt_state = self.transform(hparams, key).update(grads, state.opt_state,
                                                                 state.params)
        new = state._replace(params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, step=state.step + 1)
        return new, updates


def net_optimizer(optimizer: str, regularizer: str) -> NetOptimizer:
    """Checks both names now (an unknown one lists the valid ones) and returns the optimizer."""
    make_optimizer(optimizer, HParams.defaults())
    return NetOptimizer(optimizer, regularizers.canonical_name(regularizer))


def scalar_adam(hparams: HParams) -> optax.GradientTransformation:
    """Adam at the run's learning rate, for learned scalars (temperatures, logit scales)."""
    return optax.adam(hparams.learning_rate)


def temperature_step(log_alpha, opt_state, logp, target_entropy: float, hparams: HParams):
    """One Adam step of ``log α`` on ``mean(α · stop_grad(−log π − H̄))``: α grows while the
    policy's entropy is below the target ``H̄``. Returns ``(log_alpha, opt_state, loss)``."""

    def loss_fn(x):
        return jnp.mean(jnp.exp(x) * jax.lax.stop_gradient(-logp - target_entropy))

    loss, grad = jax.value_and_grad(loss_fn)(log_alpha)
    updates, opt_state = scalar_adam(hparams).update(grad, opt_state)
    return optax.apply_updates(log_alpha, updates), opt_state, loss
