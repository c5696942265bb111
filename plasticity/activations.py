"""Activation functions chosen by name.

Each entry of :data:`ACTIVATIONS` is an :class:`Activation`:

* ``fn`` — the function. For a parametric activation it is the function at its *initial*
  coefficients (handy for plots and stateless use); networks call the module instead.
* ``width_factor`` — concatenating activations (CReLU, Fourier) output twice as many features as
  they receive, and the network widens the next layer's input accordingly. This toolkit **keeps
  the width** (≈2× parameters in the following layer, as Plasticine does); Kumar et al. 2023
  halve the width to match parameter counts instead — pass a halved ``hidden`` to get that.
* ``make`` — for activations with parameters (rationals), a zero-argument constructor of the Flax
  NNX module that holds one coefficient set (:mod:`plasticity.rational`); ``None`` otherwise.
* ``shared`` — whether one module serves every layer of a network (``rational_shared``, Delfosse
  et al.'s "rpau") rather than one per layer (``rational``, their "paus").

Rational activations (Molina et al. 2020 PAU, version A, initialised to leaky ReLU; Delfosse et
al. 2024 sharing; Surdej et al. 2025 motivate the constrained variant, whose form here is this
toolkit's design — see :func:`plasticity.rational.constrained_rational`):

* ``rational`` — one PAU per hidden layer;
* ``rational_shared`` — one PAU shared by all hidden layers;
* ``rational_constrained`` — one slope-bounded rational per hidden layer (s_max = 1, ε = 1e-2,
  no gain normalisation).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from plasticity import rational as _rational


class Activation(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]
    width_factor: int = 1
    make: Callable[[], nnx.Module] | None = None
    shared: bool = False

    @property
    def parametric(self) -> bool:
        """Whether the activation has learnable parameters (an NNX module per layer or shared)."""
        return self.make is not None


def crelu(x: jax.Array) -> jax.Array:
    """Concatenated ReLU [ReLU(x), ReLU(−x)] (Shang et al. 2016; Abbas et al. 2023)."""
    return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


def fourier(x: jax.Array) -> jax.Array:
    """Deep Fourier features [sin(x), cos(x)] (Lewandowski et al. 2024)."""
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


def _initial(module_factory: Callable[[], nnx.Module]) -> Callable[[jax.Array], jax.Array]:
    """The function of a freshly built coefficient module (built on each call: it is cheap)."""
    return lambda x: module_factory()(x)


_pau = _rational.Rational
_constrained = _rational.ConstrainedRational

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
    "rational": Activation(_initial(_pau), 1, _pau, shared=False),
    "rational_shared": Activation(_initial(_pau), 1, _pau, shared=True),
    "rational_constrained": Activation(_initial(_constrained), 1, _constrained, shared=False),
}

PARAMETRIC = tuple(name for name, act in ACTIVATIONS.items() if act.parametric)


def get_activation(name: str) -> Activation:
    """The activation called ``name``; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}"
        ) from None
