"""plasticity.rational: PAU versions, leaky-ReLU init, golden tails, the slope-bounded variant."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from plasticity import rational as R

GRID = np.linspace(-3.0, 3.0, 6001, dtype=np.float32)
# Jitted once per (version, shape): eager evaluation would compile every primitive separately.
_rational = jax.jit(R.rational, static_argnames=("version",))
_constrained = jax.jit(R.constrained_rational, static_argnames=("s_max", "eps", "gain_norm"))


def _leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def _direct(x, a, b, version):
    """P/Q straight from the definitions, in float64 (the reference for the 1/x evaluation)."""
    x = np.asarray(x, np.float64)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    p = sum(a[j] * x**j for j in range(len(a)))
    if version == "A":
        q = 1 + sum(abs(b[k - 1]) * abs(x) ** k for k in range(1, len(b) + 1))
    elif version in ("B", "D"):
        q = 1 + abs(sum(b[k - 1] * x**k for k in range(1, len(b) + 1)))
    elif version == "C":
        q = 0.1 + abs(sum(b[k] * x**k for k in range(len(b))))
    else:
        q = 1 + sum(b[k - 1] * x**k for k in range(1, len(b) + 1))
    return p / q


@pytest.mark.parametrize("version, a0", [("A", 0.029793), ("B", 0.033558)])
def test_versions_a_and_b_start_close_to_leaky_relu(version, a0):
    a, b = R.init_coefficients(version)
    err = np.abs(np.asarray(_rational(jnp.asarray(GRID), a, b, version)) - _leaky(GRID))
    assert 0.025 < err.max() < 0.035          # REFERENCE.md §7: max error ≈ 0.03 ...
    assert abs(GRID[err.argmax()]) < 0.05     # ... at x = 0, where R(0) = a_0
    np.testing.assert_allclose(err.max(), a0, rtol=1e-3)


def test_version_a_golden_tails():
    a, b = R.init_coefficients("A")
    r = np.asarray(_rational(jnp.array([-10.0, -100.0, 1e4, 2e4, -1e4, -2e4]), a, b, "A"))
    np.testing.assert_allclose(r[0], -2.73, atol=5e-3)       # leaky ReLU: −0.1
    np.testing.assert_allclose(r[1], -66.4, atol=0.05)       # leaky ReLU: −1
    np.testing.assert_allclose((r[3] - r[2]) / 1e4, 0.723, atol=1e-3)   # a5/|b4|, both tails
    np.testing.assert_allclose((r[5] - r[4]) / -1e4, 0.723, atol=1e-3)
    a, b = R.init_coefficients("B")
    r = np.asarray(_rational(jnp.array([1e4, 2e4]), a, b, "B"))
    np.testing.assert_allclose((r[1] - r[0]) / 1e4, 0.505, atol=1e-3)


@pytest.mark.parametrize("version", ["A", "B", "C", "N"])
def test_stable_evaluation_matches_the_definition(version):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-40, 40, 801), [-1.0, 1.0, -1.0001, 1.0001]]).astype(np.float32)
    a0, b0 = (np.asarray(v) for v in R.init_coefficients(version))
    for a, b in [(a0, b0), (rng.normal(size=a0.shape), np.abs(rng.normal(size=b0.shape)))]:
        got = np.asarray(_rational(jnp.asarray(x), jnp.asarray(a, jnp.float32),
                                    jnp.asarray(b, jnp.float32), version))
        want = _direct(x, a, b, version)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * (1 + np.abs(want).max()))


def test_no_overflow_for_huge_inputs():
    a, b = R.init_coefficients("A")
    r = np.asarray(_rational(jnp.array([1e30, -1e30]), a, b, "A"))
    assert np.isfinite(r).all()
    np.testing.assert_allclose(r / np.array([1e30, -1e30]), 0.723, atol=1e-3)


@pytest.mark.parametrize("version", R.VERSIONS)
def test_gradients_wrt_input_and_coefficients_are_finite(version):
    a, b = R.init_coefficients(version)
    x = jnp.array([-1e3, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 1e3])

    def loss(x, a, b):
        return jnp.sum(R.rational(x, a, b, version, key=jax.random.key(0)) ** 2)

    gx, ga, gb = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, a, b)
    for g in (gx, ga, gb):
        assert np.isfinite(np.asarray(g)).all()
    assert np.abs(np.asarray(ga)).sum() > 0 and np.abs(np.asarray(gb)).sum() > 0


def test_version_d_is_b_without_a_key_and_noisy_numerator_with_one():
    a, b = R.init_coefficients("D")
    x = jnp.linspace(-3, 3, 13)
    np.testing.assert_array_equal(_rational(x, a, b, "D"), _rational(x, a, b, "B"))
    key = jax.random.key(3)
    noise = jax.random.uniform(key, a.shape, a.dtype, 0.9, 1.1)
    noisy = _rational(x, a, b, "D", key=key)
    np.testing.assert_allclose(noisy, _rational(x, a * noise, b, "B"), rtol=1e-6)
    assert not np.allclose(noisy, _rational(x, a, b, "B"))


def test_unknown_version_lists_valid_versions():
    with pytest.raises(ValueError, match=r"'E'.*A, B, C, D, N"):
        R.rational(jnp.ones(2), *R.init_coefficients("A"), version="E")
    with pytest.raises(ValueError, match="'E'"):
        R.Rational("E")


def test_rational_module_holds_coefficients_as_params():
    m = R.Rational()
    state = nnx.state(m, nnx.Param)
    assert state["numerator"][...].shape == (6,) and state["denominator"][...].shape == (4,)
    x = jnp.linspace(-2, 2, 9)
    graphdef, params = nnx.split(m)
    apply = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
    np.testing.assert_allclose(apply(params, x), _rational(x, *R.init_coefficients("A"), "A"),
                               rtol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(apply(p, x))))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# --- constrained rational ----------------------------------------------------------------------


def test_constrained_starts_as_version_a():
    m = R.ConstrainedRational()
    x = jnp.concatenate([jnp.asarray(GRID), jnp.array([-1e4, -100.0, -10.0, 10.0, 1e4])])
    call = jax.jit(lambda p, x, gain_norm=False: R.constrained_rational(
        x, p["numerator"][...], p["denominator"][...], p["slope"][...], gain_norm=gain_norm),
        static_argnames="gain_norm")
    params = nnx.state(m, nnx.Param)
    np.testing.assert_allclose(call(params, x), _rational(x, *R.init_coefficients("A"), "A"),
                               rtol=2e-6, atol=1e-6)
    assert set(params) == {"numerator", "denominator", "slope"}
    np.testing.assert_allclose(float(m.slope[...]), np.arctanh(0.7230039), rtol=1e-5)
    # "shrink" gain normalisation leaves the initial function alone (its gain is just below 1).
    np.testing.assert_allclose(call(params, x, gain_norm="shrink"), call(params, x), rtol=1e-6)


def _random_coefficients(seed, n):
    """Coefficient sets spanning 1e-3 … 1e6 in magnitude with random signs, ρ up to ±50."""
    rng = np.random.default_rng(seed)
    signed = lambda s: 10.0 ** rng.uniform(-3, 6, s) * rng.choice([-1.0, 1.0], s)
    a, b = signed((n, 5)), signed((n, 4))
    b[: n // 4, 3] = 0.0                      # vanishing top denominator coefficient
    rho = rng.uniform(-50, 50, n)
    return tuple(jnp.asarray(v, jnp.float32) for v in (a, b, rho))


@pytest.mark.parametrize("gain_norm", [False, "shrink", "exact"])
def test_constrained_bound_holds_for_any_coefficients(gain_norm):
    s_max = 1.0
    x = jnp.concatenate([-jnp.logspace(-3, 6, 200), jnp.array([0.0]), jnp.logspace(-3, 6, 200)])
    a, b, rho = _random_coefficients(0, 256)

    @jax.jit
    def check(a, b, rho):
        def one(a, b, rho):
            f = lambda x: R.constrained_rational(x, a, b, rho, s_max=s_max, gain_norm=gain_norm)
            c0, s = R.constrained_bound(a, b, rho, s_max=s_max, gain_norm=gain_norm)
            far = f(jnp.array([1e12, 2e12, -1e12, -2e12]))
            slope = jnp.array([(far[1] - far[0]) / 1e12, (far[3] - far[2]) / -1e12])
            return f(x), c0, s, slope
        return jax.vmap(one)(a, b, rho)

    r, c0, s, slope = (np.asarray(v, np.float64) for v in check(a, b, rho))
    assert np.isfinite(r).all()
    bound = c0[:, None] + s[:, None] * np.abs(np.asarray(x))[None]
    assert (np.abs(r) <= bound * (1 + 1e-4) + 1e-6).all()
    # Both tails become linear with slope s_max·tanh(ρ) (÷ the gain under normalisation).
    np.testing.assert_allclose(np.abs(slope), s[:, None] * np.ones((1, 2)), rtol=1e-2,
                               atol=1e-3 * s_max)
    if gain_norm != "exact":
        assert (s <= s_max).all() and (np.abs(slope) <= s_max * (1 + 1e-3)).all()


def test_unconstrained_version_a_has_no_such_bound():
    # b4 = 0: a4 x⁴ / (1 + |b3||x|³) grows with slope a4/|b3| = 100.
    a = jnp.array([0.0, 0.0, 0.0, 0.0, 100.0, 0.0])
    b = jnp.array([0.0, 0.0, 1.0, 0.0])
    r = _rational(jnp.array([1e4, 2e4]), a, b, "A")
    assert float((r[1] - r[0]) / 1e4) > 99
    c = _constrained(jnp.array([1e12, 2e12]), a[:5], b, jnp.array(10.0))
    assert float((c[1] - c[0]) / 1e12) <= 1.0 + 1e-3


def test_exact_gain_norm_pins_the_reference_rms():
    a, b, rho = _random_coefficients(1, 8)
    r = jax.jit(jax.vmap(lambda a, b, rho: R.constrained_rational(
        jnp.asarray(R.X_REF), a, b, rho, gain_norm=True)))(a, b, rho)
    rms = np.sqrt(np.sum(R.W_REF * np.asarray(r, np.float64) ** 2, axis=1))
    np.testing.assert_allclose(rms, R.RMS_LEAKY_REF, rtol=1e-3)
    np.testing.assert_allclose(R.RMS_LEAKY_REF, np.sqrt((1 + 1e-4) / 2), rtol=1e-2)


def test_constrained_gradients_are_finite():
    m = R.ConstrainedRational(gain_norm="shrink")
    graphdef, params = nnx.split(m)
    x = jnp.array([-1e3, -1.0, 0.0, 0.3, 1.0, 1e3])

    def loss(p, x):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    leaves = jax.tree.leaves(gp)
    assert len(leaves) == 3 and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert np.isfinite(np.asarray(gx)).all()


def test_constrained_rejects_bad_settings():
    with pytest.raises(ValueError, match="eps"):
        R.ConstrainedRational(eps=0.0)
    with pytest.raises(ValueError, match="'sometimes'"):
        R.ConstrainedRational(gain_norm="sometimes")
    with pytest.raises(ValueError, match="slope_bound"):
        R.ConstrainedRational(slope_bound=False).bound()
