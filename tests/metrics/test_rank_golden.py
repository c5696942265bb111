"""Golden ranks of low-rank, collapsed and ill-conditioned features against a float64 SVD.

Issue 17 item 1: √eigvalsh(ΦᵀΦ) in float32 put the zero singular values of a collapsed Φ near
√eps·σ_1 and inflated effective_rank (rank-1 256×256 read 1.10). Every reference here is numpy's
float64 SVD of the same float32 matrix, computed in the test; every rank is the library's, from
``D.singular_values`` and through the fused rank probe under jit(vmap).

``D.singular_values`` picks its method by platform (an SVD on CPU, QR + Jordan-Wielandt
eigenvalues elsewhere), so the golden checks run on each branch called directly, as well as on
whatever ``D.singular_values`` lowers to here: the GPU/TPU branch is checked on a CPU-only machine.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metrics import diagnostics as D
from metrics.probes import ProbeInputs, make_probes, run_probes

RTOL = 0.005  # 0.5% on effective_rank, srank, approx_rank and feature_rank
EPS32 = float(np.finfo(np.float32).eps)


def _tall(phi):
    a = jnp.asarray(phi, jnp.float32).reshape(phi.shape[0], -1)
    return a.T if a.shape[0] < a.shape[1] else a


SPECTRA = {
    "singular_values": D.singular_values,  # what the probes call: this platform's branch
    "svd": lambda phi: D._sv_svd(_tall(phi)),  # the CPU branch
    "qr_jw": lambda phi: D._sv_qr_jw(_tall(phi)),  # the GPU/TPU (default) branch
}


@pytest.fixture(params=list(SPECTRA))
def spectrum(request):
    return SPECTRA[request.param]


# --- float64 references (REFERENCE.md §2 definitions) ----------------------------------------


def ref_sv(phi):
    phi = np.asarray(phi, np.float64)
    return np.linalg.svd(phi.reshape(phi.shape[0], -1), compute_uv=False)


def ref_ranks(phi, delta=0.01, eps=0.01):
    sv = ref_sv(phi)
    n = phi.shape[0]
    p = sv / sv.sum()
    p = p[p > 0]

    def cumulative(w):  # min{k : Σ_{i≤k} w_i / Σw ≥ 1 − δ}
        return int(np.argmax(np.cumsum(w) / w.sum() >= 1 - delta)) + 1

    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "srank": cumulative(sv),
        "approx_rank": cumulative(sv**2),
        "feature_rank": int(np.sum(sv / np.sqrt(n) > eps)),
    }


def library_ranks(phi, delta=0.01, eps=0.01, spectrum=D.singular_values):
    sv = spectrum(jnp.asarray(phi))
    return {
        "effective_rank": float(D.effective_rank(sv)),
        "srank": float(D.srank(sv, delta)),
        "approx_rank": float(D.approx_rank(sv, delta)),
        "feature_rank": float(D.feature_rank(sv, phi.shape[0], eps)),
    }


def assert_ranks_match(got, ref):
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, rtol=RTOL, err_msg=key)


# --- test matrices ----------------------------------------------------------------------------


def low_rank(rank, n=256, d=256, seed=0):
    """A product of Gaussian factors [n, rank] @ [rank, d], rounded to float32."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))).astype(np.float32)


def relu_mostly_dead(n=256, width=256, dead=230, seed=1):
    """A ReLU layer relu(x W + b) whose first ``dead`` units have a bias far below any input."""
    rng = np.random.default_rng(seed)
    pre = rng.normal(size=(n, 128)) @ (rng.normal(size=(128, width)) / np.sqrt(128))
    bias = np.where(np.arange(width) < dead, -100.0, 0.0)
    return np.maximum(pre + bias, 0.0).astype(np.float32)


def relu_bottleneck(rank=3, n=256, d=256, seed=2):
    """relu of a rank-3 pre-activation: collapsed but full rank, with a dominant σ_1 (the mean
    direction) and ~90 genuine σ below √eps·σ_1, where a Gram eigenvalue floor would cut."""
    return np.maximum(low_rank(rank, n, d, seed), 0.0)


def deep_relu_at_init(n=256, d=256, depth=8, seed=3):
    """Uncentred features of an 8-layer He-initialised ReLU MLP: ill-conditioned, full rank."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    for _ in range(depth):
        x = np.maximum(x @ (rng.normal(size=(d, d)) * np.sqrt(2 / d)), 0.0)
    return x.astype(np.float32)


# --- golden ranks -----------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_low_rank_256_matches_float64_svd(rank, spectrum):
    phi = low_rank(rank)
    ref = ref_ranks(phi)
    assert ref["srank"] == ref["approx_rank"] == ref["feature_rank"] == rank  # sanity
    assert_ranks_match(library_ranks(phi, spectrum=spectrum), ref)
    # the tail is exactly zero, so every rank is an exact integer (the Gram route read 1.10 for
    # rank 1, 3.15 for rank 3)
    sv = np.asarray(spectrum(jnp.asarray(phi)))
    assert np.count_nonzero(sv) == rank
    np.testing.assert_allclose(sv[:rank], ref_sv(phi)[:rank], rtol=1e-5)


def test_rank_one_50x30_matches_float64_svd(spectrum):
    phi = low_rank(1, 50, 30, seed=4)
    assert_ranks_match(library_ranks(phi, spectrum=spectrum), ref_ranks(phi))
    assert float(D.effective_rank(spectrum(jnp.asarray(phi)))) == 1.0


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (4, 3, 3, 2)])  # tall, wide, conv
def test_low_rank_non_square_and_conv(shape, spectrum):
    rng = np.random.default_rng(5)
    n, d = shape[0], int(np.prod(shape[1:]))
    phi = (rng.normal(size=(n, 2)) @ rng.normal(size=(2, d))).astype(np.float32).reshape(shape)
    assert_ranks_match(library_ranks(phi, spectrum=spectrum), ref_ranks(phi))
    assert np.count_nonzero(np.asarray(spectrum(jnp.asarray(phi)))) == 2


def test_relu_layer_with_most_units_dead(spectrum):
    phi = relu_mostly_dead()
    assert np.sum(phi.max(axis=0) == 0) >= 230  # dead units: all-zero columns
    ref = ref_ranks(phi)
    assert ref["feature_rank"] <= 26
    assert_ranks_match(library_ranks(phi, spectrum=spectrum), ref)


@pytest.mark.parametrize("make", [relu_bottleneck, deep_relu_at_init])
def test_ill_conditioned_relu_features_are_not_truncated(make, spectrum):
    # A floor on Gram eigenvalues at n·eps·λ_max cut these by 14–30% (feature_rank); the spectrum
    # below √eps·σ_1 is genuine here and must survive.
    phi = make()
    sv, ref = np.asarray(spectrum(jnp.asarray(phi))), ref_sv(phi)
    assert np.sum(ref < np.sqrt(EPS32) * ref[0]) > 10  # a real tail where the Gram cannot see
    assert_ranks_match(library_ranks(phi, spectrum=spectrum), ref_ranks(phi))
    np.testing.assert_allclose(sv, ref, rtol=0, atol=5 * phi.shape[1] * EPS32 * ref[0])


def test_gaussian_256x64_keeps_its_full_spectrum(spectrum):
    phi = np.random.default_rng(6).normal(size=(256, 64)).astype(np.float32)
    sv, ref = np.asarray(spectrum(jnp.asarray(phi))), ref_sv(phi)
    assert np.count_nonzero(sv) == 64  # nothing floored
    np.testing.assert_allclose(sv, ref, rtol=1e-5)
    got, expected = library_ranks(phi, spectrum=spectrum), ref_ranks(phi)
    assert_ranks_match(got, expected)
    assert got["feature_rank"] == 64
    np.testing.assert_allclose(D.stable_rank(jnp.asarray(sv)), (ref**2).sum() / ref[0] ** 2,
                               rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-25, 1e18])
def test_ranks_are_scale_invariant(scale, spectrum):
    # no squaring: Φ·1e-25 would underflow a float32 Gram to zero and Φ·1e18 overflow it
    base = low_rank(3, 64, 32, seed=7) + 0.1 * np.random.default_rng(8).normal(size=(64, 32))
    base = base.astype(np.float32)
    scaled = (base.astype(np.float64) * scale).astype(np.float32)
    assert_ranks_match(library_ranks(scaled, eps=0.01 * scale, spectrum=spectrum), ref_ranks(base))


def test_rank_probes_under_jit_vmap_match_float64_svd():
    # the probes read D.singular_values: three runs, a collapsed dense layer and a conv layer
    rng = np.random.default_rng(9)
    dense = np.stack([low_rank(r, 256, 256, seed=10 + r) for r in (1, 3, 5)])
    conv = np.stack([relu_mostly_dead(256, 48, 40, seed=20 + i) for i in range(3)])
    conv = conv.reshape(3, 256, 4, 4, 3) * rng.uniform(0.5, 2.0, size=(3, 1, 1, 1, 1))
    conv = conv.astype(np.float32)
    inputs = ProbeInputs({}, {}, {"dense": jnp.asarray(dense), "conv": jnp.asarray(conv)}, "relu")
    probes = make_probes("effective_rank,srank,approx_rank,feature_rank")
    out = jax.jit(jax.vmap(lambda x: run_probes(probes, x)))(inputs)
    keys = {"effective_rank": "effective_rank", "srank": "srank@0.01",
            "approx_rank": "approx_rank@0.01", "feature_rank": "feature_rank@0.01"}
    for layer, feats in (("dense", dense), ("conv", conv)):
        for run in range(3):
            got = {name: float(out[key][layer][run]) for name, key in keys.items()}
            assert_ranks_match(got, ref_ranks(feats[run]))


# --- mechanics --------------------------------------------------------------------------------


def test_floor_is_n_eps_sigma1_and_keeps_values_just_above_it(spectrum):
    # σ = 1 and 3·n·eps on the diagonal survive; 0.5·n·eps is zeroed (n = 4), on both paths
    n = 4
    s = np.array([1.0, 0.5, 3 * n * EPS32, 0.5 * n * EPS32], np.float32)
    phi = np.zeros((8, n), np.float32)
    phi[:n] = np.diag(s)
    sv = np.asarray(spectrum(jnp.asarray(phi)))
    np.testing.assert_allclose(sv[:3], s[:3], rtol=1e-5)
    assert sv[3] == 0.0


def test_gradient_is_finite_on_collapsed_and_dead_features():
    phi = jnp.asarray(relu_mostly_dead(32, 16, 12, seed=11))
    for f in (D.effective_rank, D.srank, D.stable_rank):
        g = jax.grad(lambda x, f=f: f(D.singular_values(x)))(phi)
        assert np.all(np.isfinite(g))
    g = jax.grad(lambda x: D.effective_rank(D.singular_values(x)))(jnp.asarray(low_rank(1, 20, 8)))
    assert np.all(np.isfinite(g))
    # and it is the right one: dΣσ/dΦ = U Vᵀ (thin float64 SVD) for a full-rank Φ
    phi = np.random.default_rng(14).normal(size=(20, 8)).astype(np.float32)
    u, _, vt = np.linalg.svd(phi.astype(np.float64), full_matrices=False)
    g = jax.grad(lambda x: jnp.sum(D.singular_values(x)))(jnp.asarray(phi))
    np.testing.assert_allclose(g, u @ vt, atol=1e-5)


@pytest.mark.parametrize("make", [deep_relu_at_init, relu_mostly_dead, lambda: low_rank(3)])
def test_the_two_branches_agree(make):
    # same floor, same zeros; values within the floor of each other
    a = _tall(make())
    svd, qr_jw = np.asarray(D._sv_svd(a)), np.asarray(D._sv_qr_jw(a))
    np.testing.assert_array_equal(svd > 0, qr_jw > 0)
    np.testing.assert_allclose(svd, qr_jw, rtol=0, atol=a.shape[1] * EPS32 * svd[0])


def _lapack_calls(fn, x):
    text = jax.jit(jax.vmap(fn)).lower(x).as_text()
    return [line for line in text.splitlines() if "custom_call @lapack" in line]


@pytest.mark.parametrize("shape", [(3, 40, 8), (3, 8, 40)])
def test_cpu_spectrum_is_one_eigenvalues_only_svd_per_matrix(shape):
    # as for eigvalsh (test_diagnostics): a batched LAPACK call can deadlock XLA's CPU pool, so
    # the vmapped runs reach LAPACK one matrix at a time, inside a loop; jobz = 'N' (78): no
    # singular vectors; a wide Φ is transposed to tall first
    if jax.default_backend() != "cpu":
        pytest.skip("CPU lowering")
    calls = _lapack_calls(D.singular_values, jnp.zeros(shape))
    assert len(calls) == 1
    assert "sgesdd" in calls[0] and "mode = 78" in calls[0] and "(tensor<40x8xf32>)" in calls[0]


def test_qr_jw_branch_under_vmap_is_one_lapack_call_per_matrix():
    # the default branch, lowered on CPU (as the tests run it): geqrf (no orgqr: Q is never
    # formed) and an eigenvalues-only syevd, one matrix per call
    if jax.default_backend() != "cpu":
        pytest.skip("CPU lowering")
    calls = _lapack_calls(D._sv_qr_jw, jnp.zeros((3, 40, 8)))
    assert len(calls) == 2
    assert any("sgeqrf" in c and "(tensor<40x8xf32>)" in c for c in calls)
    assert any("ssyevd" in c and "(tensor<16x16xf32>)" in c for c in calls)


def test_other_platforms_lower_qr_and_eigenvalues_not_svd():
    export = pytest.importorskip("jax.export")
    for shape in [(3, 40, 8), (3, 8, 40)]:
        spec = jax.ShapeDtypeStruct(shape, jnp.float32)
        text = export.export(jax.jit(jax.vmap(D.singular_values)), platforms=["cuda"])(spec)
        text = text.mlir_module()
        assert "@lapack_" not in text and "gesvd" not in text and "gesdd" not in text
        assert "cusolver_geqrf" in text and "cusolver_syevd" in text


def test_gradient_vectors_of_both_branches_agree():
    # the JVP reads (σ, V) from a thin SVD on CPU and from the JW eigenvectors elsewhere:
    # same σ, and the same right singular vectors up to sign (distinct σ)
    a = _tall(np.random.default_rng(13).normal(size=(40, 8)).astype(np.float32))
    s1, v1 = D._sv_and_right_vectors_svd(a)
    s2, v2 = D._sv_and_right_vectors_jw(a)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.asarray(v1.T @ v2)), np.eye(8), atol=1e-4)


# --- weights: no floor ------------------------------------------------------------------------


def test_weight_spectrum_keeps_a_resolvable_small_sigma_min():
    # κ = 500 on a 256×64 kernel: λ_min/λ_max = 4e-6 sits below n·eps = 7.6e-6, so a Gram floor
    # would read σ_min = 0 and κ = inf; the unfloored Gram resolves it
    rng = np.random.default_rng(12)
    u, _ = np.linalg.qr(rng.normal(size=(256, 64)))
    v, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    s = np.geomspace(1.0, 1 / 500, 64)
    w = ((u * s) @ v.T).astype(np.float32)
    ref = ref_sv(w)
    assert ref[-1] ** 2 < 64 * EPS32 * ref[0] ** 2
    spec = D.weight_spectrum(jnp.asarray(w))
    np.testing.assert_allclose(spec["sv_min"], ref[-1], rtol=1e-2)
    np.testing.assert_allclose(spec["log10_cond"], np.log10(ref[0] / ref[-1]), atol=1e-2)
