"""plasticity.activations: every name runs, differentiates, and rationals carry parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from plasticity import rational as R
from plasticity.activations import ACTIVATIONS, PARAMETRIC, get_activation

X = jnp.linspace(-4.0, 4.0, 24).reshape(3, 8)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_has_shape_and_finite_input_gradient(name):
    act = get_activation(name)
    if act.parametric:
        graphdef, params = nnx.split(act.make())
        f = lambda p, x: nnx.merge(graphdef, p)(x)
    else:
        params, f = {}, lambda p, x: act.fn(x)
    out = jax.jit(f)(params, X)
    assert out.shape == (3, 8 * act.width_factor)
    assert np.isfinite(np.asarray(out)).all()
    # (a cube: the sum of squares of [sin, cos] is constant, its input gradient exactly 0)
    gp, gx = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) ** 3), argnums=(0, 1)))(params, X)
    assert gx.shape == X.shape and np.isfinite(np.asarray(gx)).all()
    assert np.abs(np.asarray(gx)).sum() > 0
    leaves = jax.tree.leaves(gp)
    assert bool(leaves) == act.parametric
    for g in leaves:  # gradients reach every coefficient
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_parametric_activations_are_the_rationals():
    assert PARAMETRIC == ("rational", "rational_shared", "rational_constrained")
    assert not get_activation("rational").shared and get_activation("rational_shared").shared
    assert not get_activation("rational_constrained").shared
    assert isinstance(get_activation("rational").make(), R.Rational)
    assert get_activation("rational").make().version == "A"
    assert isinstance(get_activation("rational_constrained").make(), R.ConstrainedRational)
    for name in ACTIVATIONS:
        assert get_activation(name).width_factor == (2 if name in ("crelu", "fourier") else 1)


@pytest.mark.parametrize("name", PARAMETRIC)
def test_rational_fn_is_the_initial_function_close_to_leaky_relu(name):
    x = jnp.linspace(-3, 3, 601)
    fn = jax.jit(get_activation(name).fn)
    np.testing.assert_allclose(fn(x), jax.jit(get_activation("leaky_relu").fn)(x), atol=0.031)


def test_unknown_activation_message_lists_rationals():
    with pytest.raises(ValueError) as err:
        get_activation("pau")
    assert "'pau'" in str(err.value)
    for name in ("relu", "crelu", "fourier", *PARAMETRIC):
        assert name in str(err.value)
