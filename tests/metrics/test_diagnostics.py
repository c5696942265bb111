"""Golden values for metrics.diagnostics, against hand computations and float64 numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metrics import diagnostics as D

# --- independent float64 numpy references (REFERENCE.md §2) ----------------------------------


def np_sv(phi):
    phi = np.asarray(phi, np.float64)
    return np.linalg.svd(phi.reshape(phi.shape[0], -1), compute_uv=False)


def np_effective_rank(sv):
    p = sv / sv.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def np_cumulative_rank(w, delta):
    # smallest k with sum(w[:k]) / sum(w) >= 1 - delta
    frac = np.cumsum(w) / w.sum()
    return int(np.argmax(frac >= 1 - delta)) + 1


# --- dormant / dead ---------------------------------------------------------------------------

# N = 2 samples, H = 4 units. E|h| = [0, 2, 2, 0.02]; mean_k E|h_k| = 4.02 / 4 = 1.005
# s = [0, 2/1.005, 2/1.005, 0.02/1.005] = [0, 1.99005, 1.99005, 0.0199005]
H_DENSE = np.array([[0.0, -1.0, 2.0, 0.01], [0.0, 3.0, -2.0, 0.03]], np.float32)


def test_dormant_scores_match_hand_computation():
    expected = np.array([0.0, 2.0, 2.0, 0.02]) / (1.005 + 1e-9)
    np.testing.assert_allclose(D.dormant_scores(H_DENSE), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "tau, count",
    [
        (0.0, 1),  # only unit 0 is dead
        (0.01, 1),  # unit 3 has s = 0.0199 > 0.01
        (0.025, 2),  # unit 3 is dormant at the ReDo default
        (2.0, 4),
    ],
)
def test_dormant_count_tau(tau, count):
    c, width = D.dormant_count(H_DENSE, tau)
    assert c.dtype == jnp.float32 and float(c) == count
    assert width == 4


def test_tau_zero_is_exact_dead_not_small_score():
    # unit 1 is tiny but alive: s ≈ 5e-9 <= any practical tau, yet not dead at tau = 0
    h = np.array([[1.0, 1e-8, 0.0], [1.0, 0.0, 0.0]], np.float32)
    assert float(D.dormant_count(h, 0.0)[0]) == 1
    assert float(D.dormant_count(h, 1e-6)[0]) == 2
    assert float(D.dead_count_exact(h)) == 1


def test_dormant_count_traced_tau_under_vmap():
    counts = jax.vmap(lambda t: D.dormant_count(H_DENSE, t)[0])(jnp.array([0.0, 0.025]))
    np.testing.assert_array_equal(counts, [1.0, 2.0])


def test_dead_count_exact():
    assert float(D.dead_count_exact(H_DENSE)) == 1.0


def test_conv_channel_is_one_unit():
    # [N=2, 2, 2, C=3]: channel 0 all zero, channel 1 all ones, channel 2 a single 0.04 among
    # 8 entries -> E|h| = [0, 1, 0.005], mean 0.335, s = [0, 2.985, 0.014925]
    h = np.zeros((2, 2, 2, 3), np.float32)
    h[..., 1] = 1.0
    h[1, 0, 1, 2] = 0.04
    np.testing.assert_allclose(
        D.dormant_scores(h), np.array([0.0, 1.0, 0.005]) / 0.335, rtol=1e-5
    )
    assert D.dormant_count(h, 0.025) == (2.0, 3)
    assert float(D.dormant_count(h, 0.0)[0]) == 1
    assert float(D.dead_count_exact(h)) == 1
    # identical to treating every (sample, position) as a sample of a dense layer
    np.testing.assert_allclose(D.dormant_scores(h), D.dormant_scores(h.reshape(-1, 3)))


def test_all_zero_features_all_units_dormant_and_dead():
    h = np.zeros((5, 3), np.float32)
    assert float(D.dormant_count(h, 0.025)[0]) == 3
    assert float(D.dormant_count(h, 0.0)[0]) == 3
    assert float(D.dead_count_exact(h)) == 3
    assert np.all(np.isfinite(D.dormant_scores(h)))


# --- active entries (Plasticine FAU) ----------------------------------------------------------


@pytest.mark.parametrize(
    "activation, h",
    [
        ("relu", [[0.0, 1.0], [2.0, 0.0]]),  # zeros inactive
        ("crelu", [[0.0, 1.0], [2.0, 0.0]]),
        ("ReLU", [[0.0, 1.0], [2.0, 0.0]]),  # case-insensitive
        ("tanh", [[0.995, 0.5], [-0.999, 0.0]]),  # |h| > 0.99 inactive
        ("sigmoid", [[0.005, 0.5], [0.995, 0.3]]),  # h < 0.01 or h > 0.99 inactive
    ],
)
def test_active_entry_frac_rules(activation, h):
    assert float(D.active_entry_frac(jnp.array(h), activation)) == 0.5


@pytest.mark.parametrize("activation", ["fourier", "leaky_relu", "gelu", "silu", "rational"])
def test_active_entry_frac_not_applicable_is_nan(activation):
    assert np.isnan(D.active_entry_frac(jnp.ones((2, 3)), activation))


# --- singular values and ranks ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 5), (4, 10), (3, 2, 2, 2)])  # N>=d, N<d, conv
def test_singular_values_match_numpy_svd(shape):
    phi = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    sv = D.singular_values(jnp.asarray(phi))
    ref = np_sv(phi)
    assert sv.shape == (min(shape[0], math.prod(shape[1:])),)
    assert np.all(np.diff(sv) <= 0)  # descending
    np.testing.assert_allclose(sv, ref, rtol=1e-4, atol=1e-4 * ref[0])


# sv = [4, 2, 1, 1]:
#   p = [1/2, 1/4, 1/8, 1/8] -> entropy = 1.75 ln 2 -> effective rank 2**1.75 = 3.3636
#   cumsum(σ)/Σσ = [0.5, 0.75, 0.875, 1.0]; σ² = [16, 4, 1, 1], cumsum/22 = [.727, .909, .955, 1]
#   stable rank = 22 / 16 = 1.375; σ/√4 = [2, 1, 0.5, 0.5]
SV = jnp.array([4.0, 2.0, 1.0, 1.0])


def test_rank_golden_values_by_hand():
    np.testing.assert_allclose(D.effective_rank(SV), 2**1.75, rtol=1e-6)
    assert float(D.srank(SV, 0.01)) == 4
    assert float(D.srank(SV, 0.2)) == 3  # first k with cumsum >= 0.8 is 3 (0.875)
    assert float(D.srank(SV, 0.5)) == 1  # 0.5 >= 0.5
    assert float(D.approx_rank(SV, 0.01)) == 4
    assert float(D.approx_rank(SV, 0.05)) == 3  # 0.955 >= 0.95
    assert float(D.approx_rank(SV, 0.1)) == 2  # 0.909 >= 0.9
    np.testing.assert_allclose(D.stable_rank(SV), 1.375, rtol=1e-6)
    assert float(D.feature_rank(SV, 4, 0.6)) == 2
    assert float(D.feature_rank(SV, 4, 0.01)) == 4
    assert float(D.feature_rank(SV, 4, 1.5, scale_by_sqrt_n=False)) == 2


@pytest.mark.parametrize("shape", [(32, 6), (5, 12), (4, 3, 3, 2)])
def test_ranks_of_features_match_numpy(shape):
    rng = np.random.default_rng(1)
    # decaying column scales so the cumulative ranks are not trivially full
    phi = rng.normal(size=shape) * np.geomspace(1.0, 0.01, shape[-1])
    phi = phi.astype(np.float32)
    sv, ref = D.singular_values(jnp.asarray(phi)), np_sv(phi)
    np.testing.assert_allclose(D.effective_rank(sv), np_effective_rank(ref), rtol=1e-4)
    for delta in (0.01, 0.1):
        assert float(D.srank(sv, delta)) == np_cumulative_rank(ref, delta)
        assert float(D.approx_rank(sv, delta)) == np_cumulative_rank(ref**2, delta)
    np.testing.assert_allclose(D.stable_rank(sv), (ref**2).sum() / ref[0] ** 2, rtol=1e-4)
    n = shape[0]
    assert float(D.feature_rank(sv, n, 0.05)) == np.sum(ref / np.sqrt(n) > 0.05)


def test_all_zero_features_give_zero_ranks_without_nan():
    sv = D.singular_values(jnp.zeros((6, 4)))
    np.testing.assert_array_equal(sv, np.zeros(4))
    for f in (D.effective_rank, D.srank, D.approx_rank, D.stable_rank):
        assert float(f(sv)) == 0.0
        assert np.all(np.isfinite(jax.grad(f)(sv)))  # safe denominators: no NaN gradient
    assert float(D.feature_rank(sv, 6)) == 0.0
    assert float(D.feature_norm(jnp.zeros((6, 4)))) == 0.0


def test_rank_one_features_have_rank_one():
    # exact: the Gram of a matrix with one nonzero column is diagonal, so its tail is exactly 0
    phi = np.zeros((6, 4), np.float32)
    phi[:, 1] = [1.0, 2.0, -1.0, 0.5, 3.0, 1.0]
    sv = D.singular_values(jnp.asarray(phi))
    for f in (D.effective_rank, D.srank, D.approx_rank, D.stable_rank):
        assert float(f(sv)) == 1.0
    assert float(D.feature_rank(sv, 6)) == 1.0
    # generic rank-1 outer product: the float32 Gram leaves a ~1e-4·σ_1 tail (REFERENCE §2),
    # which cumulative and count ranks ignore and the entropy rank barely feels
    rng = np.random.default_rng(2)
    phi = (3 * np.outer(rng.normal(size=6), rng.normal(size=4))).astype(np.float32)
    sv = D.singular_values(jnp.asarray(phi))
    for f in (D.srank, D.approx_rank):
        assert float(f(sv)) == 1.0
    assert float(D.feature_rank(sv, 6)) == 1.0
    np.testing.assert_allclose(D.effective_rank(sv), 1.0, atol=1e-2)
    np.testing.assert_allclose(D.stable_rank(sv), 1.0, atol=1e-5)


def test_feature_norm():
    # ‖[3, 4]‖ = 5, ‖0‖ = 0 -> mean 2.5; conv maps are flattened per sample
    assert float(D.feature_norm(jnp.array([[3.0, 4.0], [0.0, 0.0]]))) == 2.5
    h = jnp.zeros((2, 2, 2, 1)).at[0, 0, 0, 0].set(3.0).at[0, 1, 1, 0].set(4.0)
    assert float(D.feature_norm(h)) == 2.5


# --- weights ----------------------------------------------------------------------------------


def test_weight_matrix_reshapes_conv_kernel():
    k = np.arange(3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)
    w = D.weight_matrix(jnp.asarray(k))
    assert w.shape == (18, 4)
    assert w[(1 * 3 + 2) * 2 + 0, 3] == k[1, 2, 0, 3]  # (kh, kw, in) flattened row-major
    dense = jnp.ones((5, 3))
    assert D.weight_matrix(dense).shape == (5, 3)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 2, 3, 4)])
def test_weight_spectrum_matches_numpy(shape):
    k = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    ref = np.linalg.svd(k.reshape(-1, shape[-1]).astype(np.float64), compute_uv=False)
    spec = D.weight_spectrum(jnp.asarray(k), top_k=6)
    np.testing.assert_allclose(spec["sv_max"], ref[0], rtol=1e-5)
    np.testing.assert_allclose(spec["sv_min"], ref[-1], rtol=1e-3)
    np.testing.assert_allclose(spec["log10_cond"], np.log10(ref[0] / ref[-1]), atol=1e-3)
    # top_k past min(m, n) is zero-padded so the shape stays static
    expected_top = np.pad(ref, (0, 6 - len(ref)))[:6]
    np.testing.assert_allclose(spec["sv_top"], expected_top, rtol=1e-3, atol=1e-6)
    assert "sv_top" not in D.weight_spectrum(jnp.asarray(k))


def test_weight_spectrum_singular_kernel_has_infinite_condition():
    spec = D.weight_spectrum(jnp.diag(jnp.array([2.0, 1.0, 0.0])))
    assert float(spec["sv_max"]) == 2.0 and float(spec["sv_min"]) == 0.0
    assert spec["log10_cond"] == np.inf
    assert float(D.weight_spectrum(jnp.diag(jnp.array([100.0, 1.0])))["log10_cond"]) == 2.0


# --- parameter trees --------------------------------------------------------------------------

TREE = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array([[-4.0]])}}


def test_tree_norms_and_abs_mean():
    assert float(D.tree_l2(TREE)) == 5.0
    assert float(D.param_norm(TREE)) == 5.0
    assert float(D.grad_norm(TREE)) == 5.0
    assert float(D.weight_abs_mean(TREE)) == pytest.approx(7.0 / 3)  # (3 + 0 + 4) / 3
    assert float(D.tree_l2({})) == 0.0 and float(D.weight_abs_mean({})) == 0.0


def test_param_dist_init_absolute_and_relative():
    init = {"a": jnp.array([3.0, 4.0])}  # ‖θ₀‖ = 5
    moved = {"a": jnp.array([3.0, 7.0])}  # ‖θ−θ₀‖ = 3
    dist, rel = D.param_dist_init(moved, init)
    assert float(dist) == 3.0 and float(rel) == pytest.approx(0.6)
    zero = {"a": jnp.zeros(2)}
    assert [float(x) for x in D.param_dist_init(zero, zero)] == [0.0, 0.0]
    assert float(D.param_dist_init(init, zero)[1]) == np.inf  # zero-initialised, then moved


def test_update_ratio():
    params = {"w": jnp.array([3.0, 4.0])}
    assert float(D.update_ratio({"w": jnp.array([0.3, 0.4])}, params)) == pytest.approx(0.1)
    zero = {"w": jnp.zeros(2)}
    assert float(D.update_ratio(zero, zero)) == 0.0
    assert float(D.update_ratio(params, zero)) == np.inf


def test_diagnostics_jit_and_vmap_over_runs():
    phi = jax.random.normal(jax.random.key(0), (3, 8, 4))  # 3 runs

    def all_of(h):
        sv = D.singular_values(h)
        return jnp.stack([
            D.effective_rank(sv), D.srank(sv), D.approx_rank(sv), D.stable_rank(sv),
            D.feature_rank(sv, 8), D.feature_norm(h), D.dormant_count(h, 0.025)[0],
            D.dead_count_exact(h), D.active_entry_frac(h, "relu"),
        ])

    batched = jax.jit(jax.vmap(all_of))(phi)
    for i in range(3):
        np.testing.assert_allclose(batched[i], all_of(phi[i]), rtol=1e-5)


# --- eigenvalues-only LAPACK path and cheap sums of squares -----------------------------------


def _gram(rng, n, d):
    a = rng.normal(size=(n, d)).astype(np.float32)
    return a.T @ a


def test_eigvalsh_matches_numpy_and_asks_lapack_for_eigenvalues_only():
    g = _gram(np.random.default_rng(4), 40, 24)
    ref = np.linalg.eigvalsh(g.astype(np.float64))
    w = D._eigvalsh(jnp.asarray(g))
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-5 * ref[-1])
    assert np.all(np.diff(np.asarray(w)) >= 0)  # ascending, as jnp.linalg.eigvalsh
    hlo = jax.jit(D._eigvalsh).lower(jnp.asarray(g)).as_text()
    if jax.default_backend() == "cpu":
        # jnp.linalg.eigvalsh lowers to syevd with mode 'V' (86) and drops the vectors
        assert "lapack_ssyevd_ffi" in hlo and "mode = 78" in hlo and "mode = 86" not in hlo


def test_eigvalsh_under_vmap_is_one_lapack_call_per_matrix():
    # a batched LAPACK call deadlocked XLA's CPU pool (see _eigvalsh_cpu): the vmapped runs must
    # reach LAPACK one matrix at a time, inside a loop
    rng = np.random.default_rng(5)
    gs = np.stack([_gram(rng, 12, 6) for _ in range(3)])
    w = jax.jit(jax.vmap(D._eigvalsh))(jnp.asarray(gs))
    np.testing.assert_allclose(w, np.linalg.eigvalsh(gs.astype(np.float64)), atol=1e-4)
    if jax.default_backend() == "cpu":
        calls = [l for l in jax.jit(jax.vmap(D._eigvalsh)).lower(jnp.asarray(gs)).as_text()
                 .splitlines() if "custom_call @lapack" in l]
        assert len(calls) == 1 and "(tensor<6x6xf32>)" in calls[0]


def test_eigvalsh_fallback_without_the_lapack_target(monkeypatch):
    monkeypatch.setattr(D, "_lapack_syevd_target", lambda dtype: None)
    gs = jnp.asarray(np.stack([_gram(np.random.default_rng(i), 10, 5) for i in range(2)]))
    ref = np.linalg.eigvalsh(np.asarray(gs, np.float64))
    np.testing.assert_allclose(jax.jit(jax.vmap(D._eigvalsh))(gs), ref, atol=1e-4)
    np.testing.assert_allclose(D._eigvalsh(gs[0]), ref[0], atol=1e-4)


def test_eigvalsh_on_other_platforms_does_not_lower_the_cpu_lapack_call():
    export = pytest.importorskip("jax.export")
    spec = jax.ShapeDtypeStruct((3, 8, 8), jnp.float32)
    module = export.export(jax.jit(jax.vmap(D._eigvalsh)), platforms=["cuda"])(spec)
    text = module.mlir_module()
    assert "@lapack_" not in text and "cusolver" in text


def test_singular_values_are_differentiable_like_the_vector_path():
    phi = jnp.asarray(np.random.default_rng(6).normal(size=(9, 4)).astype(np.float32))

    def via_library(x):
        sv = D.singular_values(x)
        return jnp.sum(sv) + sv[0]

    def via_jnp(x):
        sv = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(x.T @ x), 0.0))[::-1]
        return jnp.sum(sv) + sv[0]

    np.testing.assert_allclose(jax.grad(via_library)(phi), jax.grad(via_jnp)(phi), atol=1e-4)


def test_tree_sum_sq_promotes_and_matches_numpy():
    rng = np.random.default_rng(7)
    tree = {"a": rng.normal(size=(5, 3)).astype(np.float32),
            "b": [rng.normal(size=4).astype(np.float16)]}
    ref = (tree["a"].astype(np.float64) ** 2).sum() + (tree["b"][0].astype(np.float64) ** 2).sum()
    out = D.tree_sum_sq(jax.tree.map(jnp.asarray, tree))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert float(D.tree_sum_sq({})) == 0.0
    np.testing.assert_allclose(D.tree_l2(tree), np.sqrt(ref), rtol=1e-6)


def test_norm_ratio_from_sq_conventions():
    assert float(D.norm_ratio_from_sq(jnp.float32(0.25), jnp.float32(25.0))) == pytest.approx(0.1)
    assert float(D.norm_ratio_from_sq(jnp.float32(0.0), jnp.float32(0.0))) == 0.0
    assert float(D.norm_ratio_from_sq(jnp.float32(1.0), jnp.float32(0.0))) == np.inf
