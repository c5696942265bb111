"""Representation, weight and optimisation diagnostics as pure ``jax.numpy`` functions.

Every function here is jit- and vmap-safe: no Python control flow on array values, no host
transfers. Names and definitions follow ``REFERENCE.md`` §1–3 (canonical keys in brackets).

Conventions
-----------
* Features ``h`` are post-activations ``[N, ..., H]``: dense ``[N, H]``, conv
  ``[N, height, width, C]``. For unit-level quantities (dormant, dead) a unit is the last axis (a conv channel), averaged over
  every other axis (batch *and* spatial positions, as in dopamine's ReDo).
* For rank quantities the feature matrix is ``Φ = h.reshape(N, -1)``: a conv map is flattened per
  sample, so ``d = height·width·C``.
* Quantities that would divide by zero (a fully dead layer, an all-zero parameter tree) return 0
  through ``jnp.where`` with a safe denominator, so neither the value nor its gradient is NaN.
* Inputs are promoted to at least float32 (bf16 features would make the spectra useless).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST
_REDO_EPS = 1e-9  # dopamine's constant in the ReDo score denominator


def _f32(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 0 where den == 0 (double-where so the gradient is finite too)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _unit_mean_abs(h: jax.Array) -> jax.Array:
    """E|h_i| per unit: mean over every axis but the last -> [H]."""
    h = _f32(h)
    return jnp.mean(jnp.abs(h), axis=tuple(range(h.ndim - 1)))


# ---------------------------------------------------------------------------------------------
# Unit activity: dormant / dead / active entries
# ---------------------------------------------------------------------------------------------


def dormant_scores(h: jax.Array) -> jax.Array:
    """ReDo score s_i = E|h_i| / (mean_k E|h_k| + 1e-9), shape [H] (Sokar et al. 2023).

    A conv channel is one unit: the expectation runs over batch and spatial positions.
    """
    m = _unit_mean_abs(h)
    return m / (jnp.mean(m) + _REDO_EPS)


def dormant_count(h: jax.Array, tau: float | jax.Array) -> tuple[jax.Array, int]:
    """Number of τ-dormant units (s_i ≤ τ) as float32, and the layer width H [``dormant_frac@τ``].

    τ = 0 means *dead*: it tests E|h_i| == 0 exactly rather than the score, so a tiny but nonzero
    activity can never be rounded into "dead". ``tau`` may be a traced array (e.g. a vmapped
    hyperparameter); H is a static Python int.
    """
    m = _unit_mean_abs(h)
    s = m / (jnp.mean(m) + _REDO_EPS)
    dormant = jnp.where(jnp.asarray(tau) == 0, m == 0, s <= tau)
    return jnp.sum(dormant, dtype=jnp.float32), int(h.shape[-1])


def dead_count_exact(h: jax.Array) -> jax.Array:
    """Units with Σ_x |h_i(x)| == 0 over the whole batch, as float32 [``dead_count_exact``].

    Dohare et al. 2024 (Permuted MNIST, 2,000 inputs). On the same batch this equals
    ``dormant_count(h, 0)``; the two names differ in the batch they are usually computed on.
    """
    h = _f32(h)
    total = jnp.sum(jnp.abs(h), axis=tuple(range(h.ndim - 1)))
    return jnp.sum(total == 0, dtype=jnp.float32)


# Activation family -> "entry is inactive" rule, after Plasticine (plasticine_metrics/units.py).
_ZERO_FLOOR = ("relu", "crelu")
_FAU_RULES = {
    **{name: (lambda h: h == 0) for name in _ZERO_FLOOR},
    "tanh": lambda h: jnp.abs(h) > 0.99,
    "sigmoid": lambda h: (h < 0.01) | (h > 0.99),
}
FAU_ACTIVATIONS = tuple(_FAU_RULES)


def active_entry_frac(h: jax.Array, activation: str) -> jax.Array:
    """Plasticine "FAU": 1 − mean_{b,j} 1[h_bj inactive], an *entry*-level fraction
    [``active_entry_frac``].

    ``activation`` is a static string. Inactive means: h == 0 for relu/crelu; |h| > 0.99 for
    tanh; h < 0.01 or h > 0.99 for sigmoid. Every other activation returns NaN (not applicable):
    leaky ReLU, GELU, SiLU/swish, ELU and rationals have no zero or saturating region, so any
    threshold would be arbitrary; Fourier features (sin/cos in [−1, 1]) make Plasticine's
    |h| > √2 − 0.01 rule never fire, giving FAU ≡ 1 (REFERENCE.md §2, bug note).
    """
    rule = _FAU_RULES.get(activation.lower())
    if rule is None:  # static branch on a Python string, not on a value
        return jnp.array(jnp.nan, jnp.float32)
    return 1.0 - jnp.mean(rule(_f32(h)), dtype=jnp.float32)


# ---------------------------------------------------------------------------------------------
# Ranks (on uncentred Φ ∈ R^{N×d})
# ---------------------------------------------------------------------------------------------


def _lapack_syevd_target(dtype) -> str | None:
    """jaxlib's LAPACK ``syevd`` FFI target for ``dtype`` (``lapack_ssyevd_ffi`` for float32), or
    None when this jaxlib does not register one under that name."""
    try:
        from jaxlib import lapack

        target = lapack.prepare_lapack_call("syevd_ffi", jnp.dtype(dtype))
        names = {name for name, *_ in lapack.registrations().get("cpu", [])}
    except Exception:  # a jaxlib whose internals moved: fall back to jnp.linalg.eigvalsh
        return None
    return target if target in names else None


@jax.custom_batching.custom_vmap
def _eigvalsh_per_matrix(g: jax.Array) -> jax.Array:
    """``jnp.linalg.eigvalsh`` whose batching rule loops over the batch (the fallback of
    :func:`_eigvalsh_cpu`, for the same deadlock reason)."""
    return jnp.linalg.eigvalsh(g)


@_eigvalsh_per_matrix.def_vmap
def _eigvalsh_per_matrix_vmap(axis_size, in_batched, g):
    return jax.lax.map(_eigvalsh_per_matrix, g), True


def _eigvalsh_cpu(g: jax.Array) -> jax.Array:
    """Eigenvalues only (LAPACK ``?syevd`` with ``jobz='N'``), ascending.

    Why not ``jnp.linalg.eigvalsh``: on CPU (jax 0.10.2) it lowers to ``syevd`` with
    ``jobz='V'`` and drops the eigenvectors afterwards; the divide-and-conquer eigenvectors and their
    back-transformation cost more than the tridiagonal reduction the eigenvalues need (256×256
    float32: 6.1 ms with vectors vs 2.5 ms without, measured on this project's 2-core CPU).

    ``vmap_method="sequential"`` makes a batch (the vmapped runs) a loop of one-matrix calls: a
    *batched* LAPACK call is split by jaxlib into tasks on XLA's intra-op pool while the calling
    pool thread waits, and with as many such calls in flight as the pool has threads (2 on a
    2-core machine, one per probed layer) every worker waited and the program deadlocked (found by
    ``bench/diagnostics_overhead.py``). One matrix per call runs inline.
    """
    target = _lapack_syevd_target(g.dtype)
    if target is None:
        return _eigvalsh_per_matrix(g)
    call = jax.ffi.ffi_call(
        target,
        (jax.ShapeDtypeStruct(g.shape, g.dtype),  # the input, overwritten by LAPACK
         jax.ShapeDtypeStruct(g.shape[:-1], g.dtype),
         jax.ShapeDtypeStruct(g.shape[:-2], jnp.int32)),
        input_output_aliases={0: 0},
        vmap_method="sequential",
    )
    _, w, info = call(g, mode=np.uint8(ord("N")), uplo=np.uint8(ord("L")))
    return jnp.where((info == 0)[..., None], w, jnp.nan)  # as jax does for a failed syevd


@jax.custom_jvp
def _eigvalsh(g: jax.Array) -> jax.Array:
    """Ascending eigenvalues of a symmetric ``g`` (its lower triangle is read).

    On CPU the LAPACK eigenvalues-only driver (:func:`_eigvalsh_cpu`); elsewhere
    ``jnp.linalg.eigvalsh`` (cuSOLVER on GPU, batched under vmap). Differentiable: the JVP
    dλ_i = v_iᵀ dG v_i takes the eigenvectors from ``jnp.linalg.eigh`` only when differentiated.
    """
    return jax.lax.platform_dependent(g, cpu=_eigvalsh_cpu, default=jnp.linalg.eigvalsh)


@_eigvalsh.defjvp
def _eigvalsh_jvp(primals, tangents):
    (g,), (dg,) = primals, tangents
    w, v = jnp.linalg.eigh(g)
    return w, jnp.einsum("...ji,...jk,...ki->...i", v, dg, v, precision=_HIGHEST)


def _gram_singular_values(a: jax.Array) -> jax.Array:
    """Singular values of a 2-D ``a``, descending, length min(m, n), from the smaller Gram matrix.

    Used for the weight spectrum only (:func:`weight_spectrum`); feature ranks use
    :func:`singular_values`, which does not square the condition number. eigvalsh(Gram) squares
    it: in float32 only σ_i ≳ 3.5e-4·σ_1 are reliable, and tail eigenvalues may come out slightly
    negative (clipped to 0 here). HIGHEST precision stops GPUs and TPUs from building the Gram in
    reduced-precision (TF32/bf16) matmuls.
    """
    a = _f32(a)
    m, n = a.shape
    gram = (
        jnp.matmul(a.T, a, precision=_HIGHEST) if m >= n else jnp.matmul(a, a.T, precision=_HIGHEST)
    )
    lam = _eigvalsh(gram)[::-1]
    return jnp.sqrt(jnp.maximum(lam, 0.0))


def _qr_r_raw(a: jax.Array) -> jax.Array:
    """R of a tall ``a`` (m > n) from LAPACK/cuSOLVER ``geqrf`` alone: ``mode="r"`` would also
    run ``orgqr`` to build the Q it then drops (as costly as the factorisation on CPU)."""
    n = a.shape[-1]
    h, _ = jnp.linalg.qr(a, mode="raw")  # h = packed.T: R in the upper triangle of packed
    return jnp.triu(jnp.swapaxes(h, -1, -2)[..., :n, :])


@jax.custom_batching.custom_vmap
def _qr_r(a: jax.Array) -> jax.Array:
    """The n×n R factor of a tall ``a`` (m > n): σ(R) = σ(a). Not differentiated
    (:func:`_tall_singular_values` has its own JVP; jax's QR JVP is NaN for rank-deficient
    ``a``, e.g. features with dead units)."""
    return _qr_r_raw(a)


@_qr_r.def_vmap
def _qr_r_vmap(axis_size, in_batched, a):
    # CPU: one LAPACK call per matrix, as for _eigvalsh_cpu (a batched LAPACK call can deadlock
    # XLA's CPU pool); elsewhere cuSOLVER's batched geqrf.
    return jax.lax.platform_dependent(
        a, cpu=lambda x: jax.lax.map(_qr_r, x), default=_qr_r_raw
    ), True


def _jordan_wielandt(r: jax.Array) -> jax.Array:
    """[[0, R], [Rᵀ, 0]] for a square R: symmetric, eigenvalues ±σ_i(R) (2n of them)."""
    z = jnp.zeros_like(r)
    return jnp.concatenate(
        [jnp.concatenate([z, r], axis=1), jnp.concatenate([r.T, z], axis=1)], axis=0
    )


def singular_values(phi: jax.Array) -> jax.Array:
    """σ_1 ≥ … ≥ σ_n of Φ = phi.reshape(N, -1), n = min(N, d): the spectrum every rank probe reads.

    Conv features [N, height, width, C] are flattened per sample. One call per layer; the fused
    rank probe (:mod:`metrics.probes`) shares it between all rank metrics.

    **Method: the fastest exact one for the platform the program is compiled for**, picked by
    ``jax.lax.platform_dependent`` (only the chosen branch is lowered):

    * **CPU**: ``jnp.linalg.svd(Φ, compute_uv=False)``, i.e. LAPACK ``?gesdd`` with
      ``jobz='N'`` (bidiagonalisation + dqds, no singular vectors), one LAPACK call per matrix
      (:func:`_svdvals_per_matrix`: under vmap a ``lax.map`` over the runs, as for
      :func:`_eigvalsh_cpu`, since a batched LAPACK call can deadlock XLA's CPU pool; a batched
      ``gesdd`` measured no faster within the noise). About 4× faster than the default branch
      on CPU (below).
    * **GPU/TPU** (default): Φ is oriented tall (Φᵀ if N < d) and, unless square, reduced to its
      n×n triangular factor R by Householder QR (σ(R) = σ(Φ)); the singular values are then the
      eigenvalues of the symmetric Jordan–Wielandt matrix M = [[0, R], [Rᵀ, 0]], which are
      ±σ_i: σ_i = (λ_top,i − λ_bottom,i)/2 (:func:`_sv_qr_jw`). Batched QR and eigensolvers are
      what cuSOLVER does well; batched SVDs are slow there (REFERENCE.md §2).

    Both are exact to an *absolute* error of a few eps·σ_1, where √eigvalsh(ΦᵀΦ) is good only to
    ≈ √eps·σ_1 ≈ 3.5e-4·σ_1 in float32 (the Gram squares the condition number). The Gram route
    put every zero singular value of a collapsed Φ near 3.5e-4·σ_1, and since ``effective_rank``
    and ``srank`` weight by σ, n such values add ~n·3.5e-4·σ_1 to Σσ: a rank-1 256×256 Φ read
    effective rank 1.10, rank 3 read 3.15 (float64 SVD: 2.99). The two paths agree to within
    the floor below and zero the same σ; the tests run every golden check (float64 SVD,
    ``tests/metrics/test_rank_golden.py``) on both branches, called directly, on CPU.

    Why not just floor the Gram eigenvalues: uncentred ReLU features have a dominant σ_1 (the
    mean direction) and their genuine tail lies in that same ~1e-4·σ_1 band, so any Gram floor
    above the noise truncates real spectrum. Against a float64 SVD, flooring λ at n·eps·λ_max
    cut the effective rank of an 8-layer ReLU net at init (256×256) by 14% and its
    ``feature_rank`` by 30%; even 4·eps·λ_max cut ReLU features behind a rank-3 bottleneck by 4%
    (``srank`` by 19%). Both exact paths match the SVD on those to < 0.1%.

    **Floor (both paths).** σ_i ≤ n·eps·σ_1 are set to 0 (eps of the computation dtype: 1.19e-7
    in float32; σ_1 itself is accurate to a few eps), so the two paths agree on what is zero.
    This is the usual numerical-rank tolerance (dimension·eps·σ_1, as in numpy's
    ``matrix_rank`` and MATLAB's ``rank``) and it covers the error sources: the SVD's and the
    eigensolver's ≤ p(n)·eps·σ_1 (p a modestly growing function) and Householder QR's backward
    error, ≲ n·eps·‖Φ‖. Measured on rank-1…20 products of Gaussian factors from 20×12 to 512×512
    and 4096×32, the computed zero singular values of the QR + Jordan–Wielandt path stayed
    ≤ 5·eps·σ_1, at most a tenth of n·eps·σ_1, so an exactly low-rank Φ gives exactly its rank
    (the golden tests check this on both paths). What the floor can cut is genuine
    σ < n·eps·σ_1 (3e-5·σ_1 at n = 256): a k⁻² spectrum reaching 1.5e-5·σ_1 lost 1% of its
    effective rank; the ReLU, Gaussian and geometric spectra tried lost ≤ 0.07%. Well-conditioned
    Φ is untouched. (The weight spectrum takes no floor: :func:`weight_spectrum`.)

    **Cost** (3 runs' 256×256 probe features of the permuted-mnist MLP, vmapped, on this
    project's 2-core CPU; variants interleaved in one process, median of 20 and of 30 calls,
    2026-12-02): the SVD path 16.3 and 15.6 ms against 65.2 and 64.2 ms for QR + Jordan–Wielandt
    (0.25× and 0.24×: the 2n×2n eigenproblem is ~5× an n×n one); the fused rank probes of both
    hidden layers 32 against 129 and 31 against 127 ms, ``make_probes("all")`` 70 against 164 and
    56 against 154 ms per log point. A batched ``gesdd`` took 13.8–16.1 ms against the
    per-matrix map's 15.5–16.3 ms (once 11.5 against 15.2 ms in the benchmark's own table), and
    for two layers in one program 30.1 against 28.9 ms; an unrolled per-run loop was the same:
    the per-matrix map is kept, since batched LAPACK calls can deadlock XLA's CPU pool. Both
    paths read max |σ − σ_float64| ≤ 3.2e-7·σ_1 there.
    Gradient: dσ_i = u_iᵀ dΦ v_i, with v_i from a thin SVD on CPU and from the JW
    eigenvectors elsewhere (only when differentiated); finite for rank-deficient Φ, 0 for
    floored σ.
    """
    a = _f32(phi.reshape(phi.shape[0], -1))
    return _tall_singular_values(a.T if a.shape[0] < a.shape[1] else a)


def _floor_tail(sv: jax.Array, n: int) -> jax.Array:
    """Descending σ with σ ≤ n·eps·σ_1 set to 0 (see :func:`singular_values`)."""
    floor = n * jnp.finfo(sv.dtype).eps * sv[0]
    return jnp.where(sv > floor, sv, 0.0)


@jax.custom_batching.custom_vmap
def _svdvals_per_matrix(a: jax.Array) -> jax.Array:
    """``jnp.linalg.svd(a, compute_uv=False)`` (LAPACK ``?gesdd``, ``jobz='N'``, on CPU) whose
    batching rule loops over the batch: one LAPACK call per matrix (see :func:`_eigvalsh_cpu`)."""
    return jnp.linalg.svd(a, compute_uv=False)


@_svdvals_per_matrix.def_vmap
def _svdvals_per_matrix_vmap(axis_size, in_batched, a):
    return jax.lax.map(_svdvals_per_matrix, a), True


@jax.custom_batching.custom_vmap
def _thin_svd_per_matrix(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(σ, Vᵀ) of a thin SVD, one LAPACK call per matrix under vmap (for the CPU JVP)."""
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return s, vt


@_thin_svd_per_matrix.def_vmap
def _thin_svd_per_matrix_vmap(axis_size, in_batched, a):
    return jax.lax.map(_thin_svd_per_matrix, a), (True, True)


def _sv_svd(a: jax.Array) -> jax.Array:
    """CPU branch of :func:`singular_values` for a tall 2-D ``a``: LAPACK SVD, floored."""
    return _floor_tail(_svdvals_per_matrix(a), a.shape[1])


def _sv_qr_jw(a: jax.Array) -> jax.Array:
    """Default (GPU/TPU) branch of :func:`singular_values` for a tall 2-D ``a``: QR, then the
    eigenvalues of the Jordan–Wielandt matrix, floored. Runs on any platform (its eigensolver is
    :func:`_eigvalsh`), so the tests check it on CPU too."""
    return _sv_from_jw_eigenvalues(_eigvalsh(_jw_matrix_of(a)), a.shape[1])


def _jw_matrix_of(a: jax.Array) -> jax.Array:
    m, n = a.shape
    return _jordan_wielandt(_qr_r(a) if m > n else a)


def _sv_from_jw_eigenvalues(w: jax.Array, n: int) -> jax.Array:
    """σ from the ascending eigenvalues −σ_1, …, −σ_n, σ_n, …, σ_1 (± noise) of the JW matrix,
    with σ ≤ n·eps·σ_1 set to 0 (see :func:`singular_values`)."""
    return _floor_tail((w[::-1][:n] - w[:n]) / 2, n)


@jax.custom_jvp
def _tall_singular_values(a: jax.Array) -> jax.Array:
    """:func:`singular_values` of a 2-D float ``a`` with m ≥ n."""
    return jax.lax.platform_dependent(a, cpu=_sv_svd, default=_sv_qr_jw)


def _sv_and_right_vectors_svd(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    s, vt = _thin_svd_per_matrix(a)
    return _floor_tail(s, a.shape[1]), vt.T


def _sv_and_right_vectors_jw(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    # v_i (the right singular vectors of R, hence of a) are the lower halves of the JW
    # eigenvectors for +σ_i, normalised
    n = a.shape[1]
    w, vecs = jnp.linalg.eigh(_jw_matrix_of(a))
    v = vecs[n:, ::-1][:, :n]
    v = v / jnp.maximum(jnp.linalg.norm(v, axis=0), jnp.finfo(v.dtype).tiny)
    return _sv_from_jw_eigenvalues(w, n), v


@_tall_singular_values.defjvp
def _tall_singular_values_jvp(primals, tangents):
    # dσ_i = u_iᵀ dA v_i with u_i = A v_i / σ_i. Floored σ get a zero tangent.
    (a,), (da,) = primals, tangents
    sv, v = jax.lax.platform_dependent(
        a, cpu=_sv_and_right_vectors_svd, default=_sv_and_right_vectors_jw
    )
    av = jnp.matmul(a, v, precision=_HIGHEST)
    dav = jnp.matmul(da, v, precision=_HIGHEST)
    ok = sv > 0
    return sv, jnp.where(ok, jnp.sum(av * dav, axis=0) / jnp.where(ok, sv, 1.0), 0.0)


def effective_rank(sv: jax.Array) -> jax.Array:
    """exp(−Σ p_k log p_k), p = σ/Σσ, 0·log 0 = 0 [``effective_rank``]
    (Roy & Vetterli 2007; the same quantity as RankMe).

    In [1, n]; 0 for an all-zero Φ.
    """
    sv = _f32(sv)
    total = jnp.sum(sv)
    p = _safe_div(sv, total)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.where(total > 0, jnp.exp(-jnp.sum(plogp)), 0.0)


def _cumulative_rank(w: jax.Array, delta: float | jax.Array) -> jax.Array:
    """min{k : Σ_{i≤k} w_i / Σw ≥ 1−δ} for descending w ≥ 0, computed as count(frac < 1−δ) + 1."""
    total = jnp.sum(w)
    frac = _safe_div(jnp.cumsum(w), total)
    k = jnp.sum(frac < 1.0 - delta, dtype=jnp.float32) + 1.0
    return jnp.where(total > 0, k, 0.0)


def srank(sv: jax.Array, delta: float | jax.Array = 0.01) -> jax.Array:
    """Kumar et al. 2021 rank: min{k : Σ_{i≤k}σ_i / Σσ ≥ 1−δ} [``srank@δ``].

    Returned 1-based (timoklein/implicit_underparameterization returns this − 1). 0 for Σσ = 0.
    """
    return _cumulative_rank(_f32(sv), delta)


def approx_rank(sv: jax.Array, delta: float | jax.Array = 0.01) -> jax.Array:
    """Yang et al. 2019 approximate rank: the ``srank`` rule on σ² [``approx_rank@δ``]
    (Dohare et al. 2024 ``compute_approximate_rank``). Squares σ/σ_max, not σ, so features of
    any magnitude (1e-25 or 1e18, e.g. a diverging run) neither under- nor overflow."""
    x = _max_normalised(sv)
    return _cumulative_rank(x * x, delta)


def stable_rank(sv: jax.Array) -> jax.Array:
    """Σσ²/σ_1² = ‖Φ‖_F²/‖Φ‖_2² (Rudelson & Vershynin) [``stable_rank``]; 0 for Φ = 0.

    Not Dohare's or Plasticine's "stable rank", which is ``srank``. Computed as Σ(σ/σ_1)², which
    neither under- nor overflows.
    """
    x = _max_normalised(sv)
    return jnp.sum(x * x)


def _max_normalised(sv: jax.Array) -> jax.Array:
    """σ / max σ (0 for an all-zero σ)."""
    sv = _f32(sv)
    return _safe_div(sv, jnp.max(sv, initial=0.0))


def feature_rank(
    sv: jax.Array, n: int, eps: float | jax.Array = 0.01, scale_by_sqrt_n: bool = True
) -> jax.Array:
    """Lyle et al. 2022 feature rank #{σ_i(Φ/√n) > ε}, as float32 [``feature_rank@ε``].

    ``n`` is the number of samples N. ``scale_by_sqrt_n=False`` counts σ_i(Φ) > ε instead, as
    timoklein/infer does; which form produced the paper's figures is unconfirmed. With σ from
    :func:`singular_values` (absolute error a few eps·σ_1) the count is exact unless some σ_i lies
    within that of the threshold, or the threshold is under the floor n·eps·σ_1.
    """
    sv = _f32(sv)
    if scale_by_sqrt_n:  # static flag
        sv = sv / math.sqrt(n)
    return jnp.sum(sv > eps, dtype=jnp.float32)


def feature_norm(h: jax.Array) -> jax.Array:
    """mean_b ‖h_b‖₂ with each sample flattened [``feature_norm``]."""
    h = _f32(h)
    return jnp.mean(jnp.linalg.norm(h.reshape(h.shape[0], -1), axis=-1))


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def weight_matrix(kernel: jax.Array) -> jax.Array:
    """Kernel as a matrix: dense (in, out) unchanged; conv (kh, kw, in, out) -> (kh·kw·in, out).

    The reshaped conv kernel's spectrum is a proxy, not the convolution's operator norm.
    """
    return kernel.reshape(-1, kernel.shape[-1])


def weight_spectrum(kernel: jax.Array, top_k: int = 0) -> dict[str, jax.Array]:
    """Spectrum of one layer's kernel (biases excluded) [``sv_max``, ``sv_min``, ``log10_cond``].

    Returns ``sv_max`` = σ_1, ``sv_min`` = σ_{min(m,n)}, ``log10_cond`` = log10(σ_max/σ_min)
    (+inf when σ_min = 0) and, if ``top_k`` > 0, ``sv_top`` = the ``top_k`` largest σ (zero-padded
    past min(m, n), so the shape is static).

    float32 caveat: σ comes from eigvalsh of the smaller of WᵀW and WWᵀ (the cheap Gram path; the
    probes run it on every kernel, so it stays), whose absolute error is ~1e-7·σ_max²: σ_min is
    accurate to κ ≈ 1e3 (256×64 with κ = 500: 0.05%; κ = 2000: 2%), and below ~3.5e-4·σ_max
    (κ ≳ 3e3) it is noise of that size or 0, so κ then reads ~3e3 (a lower bound) or inf.

    No floor, unlike :func:`singular_values`: there the floor zeroes a *sum* of tail noise that
    biases the ranks, whereas σ_min is one extreme value, and zeroing Gram eigenvalues below
    n·eps·λ_max would cap the resolvable κ at 1/√(n·eps) (≈ 180 for n = 256) and report κ = inf
    for ordinary ill-conditioned weights, including genuinely tiny but nonzero σ_min that the
    Gram still resolves. An exactly singular kernel still reads σ_min = 0 whenever its Gram
    eigenvalue comes out ≤ 0.
    """
    sv = _gram_singular_values(weight_matrix(kernel))
    sv_max, sv_min = sv[0], sv[-1]
    out = {
        "sv_max": sv_max,
        "sv_min": sv_min,
        "log10_cond": jnp.where(
            sv_min > 0, jnp.log10(sv_max / jnp.where(sv_min > 0, sv_min, 1.0)), jnp.inf
        ),
    }
    if top_k > 0:
        out["sv_top"] = jnp.pad(sv, (0, max(0, top_k - sv.shape[0])))[:top_k]
    return out


def tree_sum_sq(tree) -> jax.Array:
    """Σ θ² over every leaf of a pytree, as float32 or wider (0 for an empty tree).

    Written as Σ|θ|·|θ| on purpose: inside a training step XLA's CSE merges a plain θ·θ of the
    gradient with Adam's own g² and then writes that square out as an array of its own (an extra
    pass over the parameters every step, seen in the optimised HLO); |g|·|g| is not merged and
    fuses into the reduction. (A dot product is rewritten into the same multiply by XLA.)
    """
    total = jnp.zeros((), jnp.float32)
    for x in jax.tree.leaves(tree):
        a = jnp.abs(_f32(x))
        total = total + jnp.sum(a * a)
    return total


def tree_l2(tree) -> jax.Array:
    """√Σ θ² over every leaf of a pytree (0 for an empty tree)."""
    return jnp.sqrt(tree_sum_sq(tree))


def param_norm(layer_params) -> jax.Array:
    """√Σθ² of a layer's (or a whole model's) parameters, biases included [``param_norm``]
    (BRO ``critic_pnorm``)."""
    return tree_l2(layer_params)


def weight_abs_mean(tree) -> jax.Array:
    """(1/P) Σ|θ_j| over all leaves [``weight_abs_mean``] (Dohare et al. 2024; Kumar et al. 2023
    "average weight magnitude"); 0 for an empty tree."""
    leaves = jax.tree.leaves(tree)
    total = sum((jnp.sum(jnp.abs(_f32(x))) for x in leaves), jnp.zeros((), jnp.float32))
    count = sum(int(x.size) for x in leaves)
    return total / count if count else total


def param_dist_init(params, init_params) -> tuple[jax.Array, jax.Array]:
    """(‖θ−θ₀‖₂, ‖θ−θ₀‖₂/‖θ₀‖₂) [``param_dist_init``, ``param_dist_init_rel``].

    The relative distance is 0 when θ = θ₀ = 0 and +inf when θ₀ = 0 but θ moved (e.g. a
    zero-initialised layer): a genuinely unbounded relative change rather than a NaN.
    """
    dist = tree_l2(jax.tree.map(lambda a, b: _f32(a) - _f32(b), params, init_params))
    return dist, _ratio(dist, tree_l2(init_params))


def grad_norm(grads) -> jax.Array:
    """Global L2 norm of the raw gradient, before clipping [``grad_norm``]."""
    return tree_l2(grads)


def update_ratio(updates, params) -> jax.Array:
    """‖Δθ‖/‖θ‖ [``update_ratio``], Δθ the applied update (after optimizer, learning rate and
    decoupled decay) and θ the parameters it was applied to.

    0 when both norms are 0; +inf when ‖θ‖ = 0 but the update is not (first step of a
    zero-initialised layer).
    """
    return _ratio(tree_l2(updates), tree_l2(params))


def norm_ratio_from_sq(num_sq: jax.Array, den_sq: jax.Array) -> jax.Array:
    """√num_sq / √den_sq with :func:`update_ratio`'s conventions (0 for 0/0, +inf for x/0)."""
    return _ratio(jnp.sqrt(num_sq), jnp.sqrt(den_sq))


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, _safe_div(num, den), jnp.where(num > 0, jnp.inf, 0.0))
