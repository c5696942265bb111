"""Rational activations: Padé activation units and a slope-bounded ("constrained") variant.

Pure ``jnp`` math (:func:`rational`, :func:`constrained_rational`) plus Flax NNX modules that hold
the coefficients as ``nnx.Param`` (:class:`Rational`, :class:`ConstrainedRational`). One module
holds one coefficient set, applied elementwise to every entry of its input.

* **PAU** — Molina, Schramowski & Kersting 2020, "Padé Activation Units: End-to-end Learning of
  Flexible Activation Functions in Deep Networks" (ICLR). R(x) = P(x)/Q(x),
  P(x) = Σ_{j=0}^{m} a_j x^j, degrees (m, n) = (5, 4), versions after ml-research/
  rational_activations (``rational/torch/rational_pytorch_functions.py``):

  ======== ====================================================================================
  version  Q(x)
  ======== ====================================================================================
  ``A``    1 + Σ_{k=1}^{n} |b_k|·|x|^k (default; the original PAU "abs" kernel)
  ``B``    1 + |Σ_{k=1}^{n} b_k x^k| ("safe PAU")
  ``C``    0.1 + |Σ_{k=0}^{n} b_k x^k| (``denominator`` holds b_0..b_n: 5 entries for n = 4,
           as in the package's ``Rational_version_C5/4`` config; REFERENCE.md writes k = 0..3)
  ``D``    ``B`` with the numerator coefficients × U(0.9, 1.1) (one draw per coefficient and
           call) when a ``key`` is passed (training); without a key it *is* ``B``
  ``N``    1 + Σ_{k=1}^{n} b_k x^k (unsafe: Q can vanish, poles)
  ======== ====================================================================================

  Initial coefficients: the package's least-squares fits to leaky ReLU (slope 0.01) on [−3, 3]
  (``rational/rationals_config.json``; :data:`INIT`). Versions A and B are within ≈0.03 of leaky
  ReLU on [−3, 3] (largest at x = 0); both tails are asymptotically linear with slope a₅/|b₄|
  (A: 0.723, so R(−10) ≈ −2.73, R(−100) ≈ −66.4; B: 0.505).

* **Sharing** — Delfosse, Schramowski, Mundt, Molina & Kersting 2024, "Adaptive Rational
  Activations to Boost Deep Reinforcement Learning" (ICLR; ml-research/rational_rl): "paus" = one
  PAU per layer, "rpau" = one PAU shared by all layers. The networks expose them as the
  activations ``"rational"`` and ``"rational_shared"`` (:mod:`plasticity.networks`).

* **Constrained rationals** — Surdej, Bortkiewicz, Lewandowski, Ostaszewski & Lyle 2025
  (special114/rl_rational_plasticity) show that unconstrained rationals cause overestimation in RL
  and feature collapse in long continual learning, and propose a variant that "structurally limits
  excessive output scaling while preserving adaptability". **The paper's exact form is not
  reproduced here**: :func:`constrained_rational` is this toolkit's design (REFERENCE.md §7), to be
  validated against version A with ``q_bias`` and ``srank``. See its docstring.

Numerics: for |x| > 1 the ratio is evaluated in t = 1/x (numerator and denominator divided by
|x|^n), so large pre-activations never overflow float32 (x⁵ would at |x| ≈ 5e7) and the linear
tails are exact; both forms are the same function and agree at |x| = 1 up to rounding.

Weight penalties: the coefficients are ordinary ``nnx.Param`` leaves of the network's parameter
tree (layers ``act/i``, ``conv_act/i``, ``act``, ...; they have no ``kernel``), so L2, weight
decay, L2-init and the like cover them unless a regularizer masks them out by layer name.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

VERSIONS = ("A", "B", "C", "D", "N")

# Least-squares fits to leaky ReLU (negative slope 0.01) on [−3, 3], degrees (5, 4), from
# ml-research/rational_activations rational/rationals_config.json. (numerator a_0..a_5,
# denominator b_1..b_4; version C's denominator is b_0..b_4.)
_A = ((0.029792778657264946, 0.6183735264987601, 2.323309062531321, 3.051936237265109,
       1.4854203263828845, 0.2510244961111299),
      (-1.1419548357285474, 4.393159974992486, 0.8714712309957245, 0.34719662339598834))
_B = ((0.03355815733452378, 0.5050059186781659, 1.6534697310952233, 2.0100501552600014,
       0.9319195586484518, 0.15242646398275836),
      (4.812831860534153e-05, 3.9802479055059194, 1.5837587665720168e-05, 0.30183382839661377))
_C = ((0.863943144302673, 13.001131096231564, 42.56763919941753, 51.74757697869782,
       23.99165145314087, 3.924120833060723),
      (25.644974747512343, -0.0013495866374991824, 102.47308203485366, -0.0017931970367811253,
       7.77090005615082))
INIT: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "A": _A, "B": _B, "C": _C, "D": _B, "N": _B,  # B/D/N share the fit (REFERENCE.md §7)
}

LEAKY_SLOPE = 0.01


def _check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"unknown rational version {version!r}; valid: {', '.join(VERSIONS)}")
    return version


def init_coefficients(version: str = "A") -> tuple[jax.Array, jax.Array]:
    """``(numerator, denominator)`` initial coefficients of ``version`` (leaky-ReLU fit)."""
    a, b = INIT[_check_version(version)]
    return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def _horner(coeffs: Sequence[jax.Array], x: jax.Array) -> jax.Array:
    """Σ_i coeffs[i]·x^i (ascending powers), by Horner's rule."""
    y = jnp.broadcast_to(coeffs[-1], x.shape).astype(x.dtype)
    for c in coeffs[-2::-1]:
        y = y * x + c
    return y


def _split_scalars(v: jax.Array) -> list[jax.Array]:
    return [v[i] for i in range(v.shape[0])]


def rational(x: jax.Array, numerator: jax.Array, denominator: jax.Array, version: str = "A",
             *, key: jax.Array | None = None) -> jax.Array:
    """R(x) = P(x)/Q(x) elementwise, PAU ``version`` (see the module docstring).

    ``numerator`` is a_0..a_m, ``denominator`` b_1..b_n (``C``: b_0..b_n), with n ≤ m.
    ``key`` (version ``D`` only) draws the training noise U(0.9, 1.1) on the numerator.
    """
    _check_version(version)
    a = jnp.asarray(numerator)
    b = jnp.asarray(denominator)
    m = a.shape[0] - 1
    n = b.shape[0] - (1 if version == "C" else 0)
    if a.ndim != 1 or b.ndim != 1 or n > m or n < 1:
        raise ValueError(f"rational needs 1-D coefficients with 1 ≤ deg Q ≤ deg P; got numerator "
                         f"{a.shape}, denominator {b.shape} (version {version!r})")
    if version == "D" and key is not None:
        a = a * jax.random.uniform(key, a.shape, a.dtype, 0.9, 1.1)
    dtype = jnp.result_type(x, a, b)
    x = x.astype(dtype)
    a, b = a.astype(dtype), b.astype(dtype)
    al = _split_scalars(a)
    bl = _split_scalars(b)

    small = jnp.abs(x) <= 1
    xs = jnp.where(small, x, 0)      # the direct form, used for |x| ≤ 1
    xl = jnp.where(small, 1, x)      # the 1/x form, used for |x| > 1 (safe where unused)
    t = 1 / xl
    p_small = _horner(al, xs)
    p_large = _horner(al[::-1], t)   # P(x)/x^m = Σ_j a_j t^{m−j}
    # Q(x) and Q(x)/|x|^n (N: Q(x)/x^n)
    if version == "A":
        ab = [jnp.abs(c) for c in bl]
        q_small = 1 + jnp.abs(xs) * _horner(ab, jnp.abs(xs))
        q_large = jnp.abs(t) ** n + _horner(ab[::-1], jnp.abs(t))
    elif version in ("B", "D"):
        q_small = 1 + jnp.abs(xs * _horner(bl, xs))
        q_large = jnp.abs(t) ** n + jnp.abs(_horner(bl[::-1], t))
    elif version == "C":
        q_small = 0.1 + jnp.abs(_horner(bl, xs))
        q_large = 0.1 * jnp.abs(t) ** n + jnp.abs(_horner(bl[::-1], t))
    else:  # "N"
        q_small = 1 + xs * _horner(bl, xs)
        q_large = t ** n + _horner(bl[::-1], t)
    # x^m / |x|^n = x^{m−n}·sign(x)^n  (N: x^m / x^n = x^{m−n})
    scale = xl ** (m - n)
    if version != "N" and n % 2:
        scale = scale * jnp.sign(xl)
    return jnp.where(small, p_small / q_small, scale * p_large / q_large)


# ---------------------------------------------------------------------------------------------
# Constrained rational (this toolkit's design; not the published form)
# ---------------------------------------------------------------------------------------------

GAIN_NORMS = (False, "exact", "shrink")
_N_QUAD = 16


def _reference_points() -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and weights for E_{x∼N(0,1)}[f(x)] (probabilists' Hermite)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_N_QUAD)
    return nodes.astype(np.float32), (weights / math.sqrt(2 * math.pi)).astype(np.float32)


X_REF, W_REF = _reference_points()
# rms of leaky ReLU under N(0,1), by the same quadrature as R (≈ √((1 + 0.01²)/2) ≈ 0.7071).
RMS_LEAKY_REF = float(np.sqrt(np.sum(W_REF * np.where(X_REF > 0, X_REF, LEAKY_SLOPE * X_REF)**2)))


def _normalise_gain_norm(gain_norm) -> bool | str:
    if gain_norm is True:
        return "exact"
    if gain_norm is None:
        return False
    if gain_norm not in GAIN_NORMS:
        raise ValueError(f"unknown gain_norm {gain_norm!r}; valid: False, True (= 'exact'), "
                         f"'exact', 'shrink'")
    return gain_norm


def constrained_coefficients(numerator: jax.Array, denominator: jax.Array,
                             slope: jax.Array | None, *, s_max: float = 1.0,
                             eps: float = 1e-2) -> tuple[jax.Array, jax.Array]:
    """The effective version-A coefficients ``(a_0..a_5, b_1..b_4)`` of a constrained rational.

    With ``slope`` (ρ): b₄ ← |b₄| + ε and a₅ = s_max·tanh(ρ)·(|b₄| + ε), so the asymptotic slope
    a₅/(|b₄| + ε) = s_max·tanh(ρ). Without it: plain version-A coefficients.
    """
    a = jnp.asarray(numerator)
    b = jnp.asarray(denominator)
    if slope is None:
        return a, b
    beta = jnp.abs(b[-1]) + eps
    a_top = s_max * jnp.tanh(slope) * beta
    return jnp.concatenate([a, a_top[None]]), jnp.concatenate([b[:-1], beta[None]])


def constrained_gain(numerator: jax.Array, denominator: jax.Array, slope: jax.Array | None, *,
                     s_max: float = 1.0, eps: float = 1e-2) -> jax.Array:
    """g = rms R(X_ref) / rms leaky_relu(X_ref) on 16 Gauss–Hermite points of N(0, 1)."""
    a, b = constrained_coefficients(numerator, denominator, slope, s_max=s_max, eps=eps)
    r = rational(jnp.asarray(X_REF), a, b, "A")
    return jnp.sqrt(jnp.sum(W_REF * r * r) + 1e-12) / RMS_LEAKY_REF


def constrained_rational(x: jax.Array, numerator: jax.Array, denominator: jax.Array,
                         slope: jax.Array | None = None, *, s_max: float = 1.0, eps: float = 1e-2,
                         gain_norm: bool | str = False) -> jax.Array:
    """Constrained rational activation — **this toolkit's design choice, not the paper's form**.

    Surdej et al. 2025 ("constrained rationals"; see the module docstring) report that learned
    rationals scale their outputs up (overestimation in RL, collapse in long continual learning);
    their exact constraint is unconfirmed. This function implements REFERENCE.md §7's design:

    * Base: PAU version A, degrees (5, 4), Q(x) ≥ 1: no poles.
    * ``slope_bound`` (on when ``slope`` = ρ is given; ``numerator`` then holds a_0..a_4 only,
      ``denominator`` b_1..b_4): the top denominator coefficient becomes |b₄| + ε (ε = 1e-2 by
      default), Q(x) = 1 + Σ_{k≤3}|b_k||x|^k + (|b₄| + ε)|x|⁴, and a₅ = s_max·tanh(ρ)·(|b₄| + ε),
      so both tails have slope s_max·tanh(ρ) ∈ (−s_max, s_max), s_max = 1 by default. Without
      ``slope`` the function is plain version A (plus ``gain_norm``), with no bound.
      For **any** coefficients, with β = |b₄| + ε,

          |R(x)| ≤ C₀ + s_max·|tanh ρ|·|x|,   C₀ = Σ_{j=0}^{4} |a_j|·β^{−j/4}

      (each |a_j||x|^j/Q ≤ |a_j||x|^j / max(1, βx⁴) ≤ |a_j|β^{−j/4}), see :func:`constrained_bound`.
      Without ε a vanishing b₄ would let a₄x⁴/(1 + |b₃||x|³) grow with any slope.
    * ``gain_norm``: divides R by g = rms R(X_ref)/rms leaky_relu(X_ref) on 16 fixed
      Gauss–Hermite points of N(0, 1). ``"exact"`` (or ``True``; REFERENCE.md's form) pins the
      output scale on N(0, 1) inputs to leaky ReLU's, but then the tail slope is
      s_max·tanh(ρ)/g, no longer bounded by s_max; ``"shrink"`` divides by max(g, 1): it only ever
      scales *down* an output grown past leaky ReLU's scale, and keeps both bounds.

    Defaults of the ``"rational_constrained"`` activation: ``slope_bound`` on, s_max = 1,
    ε = 1e-2, ``gain_norm`` off. Its initial function is exactly version A's initial function
    (b₄ starts at 0.347197 − ε and ρ at atanh(0.723/s_max), i.e. ≈ 0.9146).
    """
    gain_norm = _normalise_gain_norm(gain_norm)
    a, b = constrained_coefficients(numerator, denominator, slope, s_max=s_max, eps=eps)
    r = rational(x, a, b, "A")
    if gain_norm:
        g = constrained_gain(numerator, denominator, slope, s_max=s_max, eps=eps)
        r = r / (jnp.maximum(g, 1.0) if gain_norm == "shrink" else g)
    return r


def constrained_bound(numerator: jax.Array, denominator: jax.Array, slope: jax.Array, *,
                      s_max: float = 1.0, eps: float = 1e-2,
                      gain_norm: bool | str = False) -> tuple[jax.Array, jax.Array]:
    """``(C₀, s)`` with |R(x)| ≤ C₀ + s·|x| for every x, for the slope-bounded form.

    s = s_max·|tanh ρ| ≤ s_max (divided by g or max(g, 1) under ``gain_norm``).
    """
    gain_norm = _normalise_gain_norm(gain_norm)
    a = jnp.abs(jnp.asarray(numerator))
    beta = jnp.abs(jnp.asarray(denominator)[-1]) + eps
    c0 = sum(a[j] * beta ** (-j / 4) for j in range(a.shape[0]))
    s = s_max * jnp.abs(jnp.tanh(slope))
    if gain_norm:
        g = constrained_gain(numerator, denominator, slope, s_max=s_max, eps=eps)
        g = jnp.maximum(g, 1.0) if gain_norm == "shrink" else g
        c0, s = c0 / g, s / g
    return c0, s


# ---------------------------------------------------------------------------------------------
# NNX modules
# ---------------------------------------------------------------------------------------------


class Rational(nnx.Module):
    """A Padé activation unit (Molina et al. 2020) with learnable ``numerator``/``denominator``.

    ``version`` as in :func:`rational`; coefficients default to the leaky-ReLU fit
    (:data:`INIT`). Version ``D`` takes ``key=`` at call time for its training noise.
    """

    def __init__(self, version: str = "A", *, numerator: Sequence[float] | None = None,
                 denominator: Sequence[float] | None = None):
        a, b = init_coefficients(version)
        self.version = version
        self.numerator = nnx.Param(a if numerator is None else jnp.asarray(numerator, jnp.float32))
        self.denominator = nnx.Param(
            b if denominator is None else jnp.asarray(denominator, jnp.float32))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return rational(x, self.numerator[...], self.denominator[...], self.version, key=key)


class ConstrainedRational(nnx.Module):
    """The slope-bounded rational of :func:`constrained_rational` (this toolkit's design).

    Parameters: ``numerator`` a_0..a_4 (a_0..a_5 without ``slope_bound``), ``denominator``
    b_1..b_4 and, with ``slope_bound``, the scalar ``slope`` ρ. Initialised to reproduce version
    A's initial function exactly (where s_max > 0.723; otherwise ρ starts at atanh(0.99) and the
    tails start at slope 0.99·s_max).
    """

    def __init__(self, *, s_max: float = 1.0, slope_bound: bool = True, eps: float = 1e-2,
                 gain_norm: bool | str = False):
        if not (eps > 0 and s_max > 0):
            raise ValueError(f"ConstrainedRational needs eps > 0 and s_max > 0; got eps={eps!r}, "
                             f"s_max={s_max!r}")
        self.s_max = float(s_max)
        self.eps = float(eps)
        self.gain_norm = _normalise_gain_norm(gain_norm)
        self.slope_bound = bool(slope_bound)
        a, b = (np.asarray(v, np.float64) for v in INIT["A"])
        if slope_bound:
            beta = abs(b[-1])
            rho = math.atanh(min(a[-1] / beta / s_max, 0.99))
            b = np.concatenate([b[:-1], [max(beta - eps, 0.0)]])
            self.numerator = nnx.Param(jnp.asarray(a[:-1], jnp.float32))
            self.denominator = nnx.Param(jnp.asarray(b, jnp.float32))
            self.slope = nnx.Param(jnp.asarray(rho, jnp.float32))
        else:
            self.numerator = nnx.Param(jnp.asarray(a, jnp.float32))
            self.denominator = nnx.Param(jnp.asarray(b, jnp.float32))

    def _slope(self):
        return self.slope[...] if self.slope_bound else None

    def __call__(self, x: jax.Array) -> jax.Array:
        return constrained_rational(x, self.numerator[...], self.denominator[...], self._slope(),
                                    s_max=self.s_max, eps=self.eps, gain_norm=self.gain_norm)

    def bound(self) -> tuple[jax.Array, jax.Array]:
        """``(C₀, s)`` with |R(x)| ≤ C₀ + s|x| (slope-bounded form only)."""
        if not self.slope_bound:
            raise ValueError("bound() needs slope_bound=True (version A alone is not bounded)")
        return constrained_bound(self.numerator[...], self.denominator[...], self.slope[...],
                                 s_max=self.s_max, eps=self.eps, gain_norm=self.gain_norm)
