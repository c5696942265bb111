"""The tanh-Gaussian policy head shared by the actor-critic agents (SAC, CRL): a network's raw
output ``[..., 2|A|]`` read as the mean and the bounded log standard deviation of a Gaussian
over pre-squash actions ``u``; the action is ``tanh(u)``.

``log σ = −5 + 3.5 (tanh(raw) + 1) ∈ [−5, 2]`` (the bounded parameterisation of JaxGCRL,
REFERENCE.md §9 "Actor"); ``log π(a|s)`` includes the tanh Jacobian; the evaluation action is
``tanh(mean)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def tanh_gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log π(tanh(u)) for u ~ N(mean, exp(log_std)²), summed over action dimensions.

    log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u)) is the stable form of the Jacobian term.
    """
    normal = (-0.5 * jnp.square((u - mean) / jnp.exp(log_std)) - log_std
              - 0.5 * jnp.log(2 * jnp.pi))
    jacobian = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(normal - jacobian, axis=-1)


def gaussian_params(raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean, log_std)`` of the pre-squash Gaussian from the network's raw output."""
    mean, raw_std = jnp.split(raw, 2, axis=-1)
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_std) + 1.0)
    return mean, log_std


def sample(raw: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised action ``tanh(u)`` and its ``log π``."""
    mean, log_std = gaussian_params(raw)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)


def mode(raw: jax.Array) -> jax.Array:
    """The deterministic evaluation action ``tanh(mean)``."""
    return jnp.tanh(gaussian_params(raw)[0])
