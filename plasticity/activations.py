"""Activation functions chosen by name.

Each entry maps a name to ``(fn, width_factor)``: concatenating activations (CReLU, Fourier)
output twice as many features as they receive, and the network widens the next layer's input
accordingly (the "keep width, ≈2× parameters" choice of Plasticine; Kumar et al. 2023 halve the
width instead — pass a halved ``hidden`` to get that).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Activation(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]
    width_factor: int = 1


def crelu(x: jax.Array) -> jax.Array:
    """Concatenated ReLU [ReLU(x), ReLU(−x)] (Shang et al. 2016; Abbas et al. 2023)."""
    return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


def fourier(x: jax.Array) -> jax.Array:
    """Deep Fourier features [sin(x), cos(x)] (Lewandowski et al. 2024)."""
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(jax.nn.relu),
    "leaky_relu": Activation(lambda x: jax.nn.leaky_relu(x, 0.01)),
    "tanh": Activation(jnp.tanh),
    "sigmoid": Activation(jax.nn.sigmoid),
    "gelu": Activation(jax.nn.gelu),
    "silu": Activation(jax.nn.silu),
    "swish": Activation(jax.nn.silu),
    "elu": Activation(jax.nn.elu),
    "crelu": Activation(crelu, 2),
    "fourier": Activation(fourier, 2),
}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}"
        ) from None
