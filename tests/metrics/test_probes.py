"""metrics.probes: registry, canonical keys, aggregation, and behaviour under jit(vmap)."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metrics import diagnostics as D
from metrics.probes import (
    GROUPS,
    PROBES,
    ProbeInputs,
    make_probes,
    optimizer_stats,
    run_probes,
)

N = 8  # probe batch


def make_inputs(key, activation="relu"):
    """A conv layer [N, 2, 2, 3], a dense layer [N, 4] with one dead unit, and an output layer."""
    k = jax.random.split(key, 8)
    layers = {
        "hidden/0": {"kernel": jax.random.normal(k[0], (3, 3, 1, 3)), "bias": jnp.zeros(3)},
        "hidden/1": {
            "kernel": jax.random.normal(k[1], (12, 4)), "bias": jax.random.normal(k[2], (4,))
        },
        "out": {"kernel": jax.random.normal(k[3], (4, 2)), "bias": jnp.zeros(2)},
    }
    init_layers = jax.tree.map(lambda x: x * 0.9, layers)
    features = {
        "hidden/0": jax.nn.relu(jax.random.normal(k[4], (N, 2, 2, 3))),
        "hidden/1": jax.nn.relu(jax.random.normal(k[5], (N, 4))).at[:, 2].set(0.0),
    }
    return ProbeInputs(layers, init_layers, features, activation)


INPUTS = make_inputs(jax.random.key(0))


@pytest.fixture(scope="module")
def all_out():
    """Every probe on INPUTS, computed once for the tests that only read it."""
    return jax.jit(lambda x: run_probes(make_probes("all", top_k=2), x))(INPUTS)


def test_all_probes_emit_canonical_keys_and_layers(all_out):
    out = all_out
    hidden = {"hidden/0", "hidden/1"}
    every = hidden | {"out"}
    expected = {
        "dormant_frac@0.025": hidden | {"total"},
        "dead_frac": hidden | {"total"},
        "dead_count_exact": hidden | {"total"},
        "active_entry_frac": hidden | {"total"},
        "effective_rank": hidden,
        "srank@0.01": hidden,
        "approx_rank@0.01": hidden,
        "stable_rank": hidden,
        "feature_rank@0.01": hidden,
        "feature_norm": hidden,
        "sv_max": every,
        "sv_min": every,
        "log10_cond": every,
        "sv_1": every,
        "sv_2": every,
        "param_norm": every | {"global"},
        "param_dist_init": every | {"global"},
        "param_dist_init_rel": every | {"global"},
        "weight_abs_mean": every | {"global"},
    }
    assert {k: set(v) for k, v in out.items()} == expected
    for per_layer in out.values():
        for value in per_layer.values():
            assert value.shape == () and np.isfinite(value)


def test_keys_carry_their_parameters():
    out = run_probes(
        make_probes("dormant,srank,approx_rank,feature_rank", tau=0.1, delta=0.05, eps=0.2), INPUTS
    )
    assert set(out) == {"dormant_frac@0.1", "srank@0.05", "approx_rank@0.05", "feature_rank@0.2"}
    unscaled = run_probes(make_probes("feature_rank", scale_by_sqrt_n=False), INPUTS)
    assert set(unscaled) == {"feature_rank_unscaled@0.01"}


def test_dormant_total_is_unit_weighted_over_hidden_layers():
    # layer a: 4 units, units 0 and 1 dead -> 2/4; layer b: 2 active units -> 0/2
    # total = (2 + 0) / (4 + 2) = 1/3, not the mean of layer fractions (0.25)
    a = jnp.array([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 3.0, 1.0]])
    b = jnp.ones((2, 2))
    inputs = ProbeInputs({}, {}, {"a": a, "b": b}, "relu")
    out = run_probes(make_probes("dormant,dead,active_units"), inputs)
    for key in ("dormant_frac@0.025", "dead_frac"):
        assert float(out[key]["a"]) == 0.5 and float(out[key]["b"]) == 0.0
        assert float(out[key]["total"]) == pytest.approx(1 / 3)
    assert float(out["dead_count_exact"]["total"]) == 2.0
    # active entries: a has 4 zero entries out of 8, b none -> total (4 + 4) / 12
    assert float(out["active_entry_frac"]["a"]) == 0.5
    assert float(out["active_entry_frac"]["total"]) == pytest.approx(8 / 12)


def test_output_layer_features_are_excluded():
    feats = dict(INPUTS.features, out=jnp.zeros((N, 2)))  # an all-dead "out" would raise total
    with_out = run_probes(make_probes("dormant"), INPUTS._replace(features=feats))
    without = run_probes(make_probes("dormant"), INPUTS)
    assert set(with_out["dormant_frac@0.025"]) == {"hidden/0", "hidden/1", "total"}
    assert with_out["dormant_frac@0.025"]["total"] == without["dormant_frac@0.025"]["total"]


def test_probes_agree_with_diagnostics(all_out):
    out = all_out
    h1 = INPUTS.features["hidden/1"]
    assert float(out["dead_count_exact"]["hidden/1"]) == 1.0  # column 2 set to zero
    assert float(out["dead_frac"]["hidden/1"]) == 0.25
    sv = D.singular_values(h1)
    np.testing.assert_allclose(out["effective_rank"]["hidden/1"], D.effective_rank(sv), rtol=1e-6)
    np.testing.assert_allclose(out["feature_rank@0.01"]["hidden/1"], D.feature_rank(sv, N))
    conv = INPUTS.features["hidden/0"]
    np.testing.assert_allclose(
        out["srank@0.01"]["hidden/0"], D.srank(D.singular_values(conv.reshape(N, -1)))
    )
    k0 = INPUTS.layers["hidden/0"]["kernel"]
    ref = np.linalg.svd(np.asarray(k0).reshape(9, 3), compute_uv=False)
    np.testing.assert_allclose(out["sv_max"]["hidden/0"], ref[0], rtol=1e-5)
    np.testing.assert_allclose(out["sv_1"]["out"], out["sv_max"]["out"])
    norms = [out["param_norm"][k] for k in INPUTS.layers]
    np.testing.assert_allclose(
        out["param_norm"]["global"], np.sqrt(np.sum(np.square(norms))), rtol=1e-6
    )
    # init = 0.9 θ -> ‖θ − θ₀‖ / ‖θ₀‖ = 0.1 / 0.9 for every layer and globally
    for value in out["param_dist_init_rel"].values():
        np.testing.assert_allclose(value, 1 / 9, rtol=1e-5)


def test_weight_sv_skips_layers_without_a_kernel():
    layers = dict(INPUTS.layers, act={"coeffs": jnp.ones(6)})
    inputs = INPUTS._replace(layers=layers, init_layers=layers)
    out = run_probes(make_probes("weight_sv"), inputs)
    assert "act" not in out["sv_max"]
    assert "act" in run_probes(make_probes("param_norm"), inputs)["param_norm"]


def test_active_units_not_applicable_activation_is_nan():
    out = run_probes(make_probes("active_units"), make_inputs(jax.random.key(1), "fourier"))
    assert all(np.isnan(v) for v in out["active_entry_frac"].values())


# --- make_probes ------------------------------------------------------------------------------


def test_make_probes_parses_groups_dedupes_and_fuses_ranks():
    assert make_probes("none") == [] and make_probes("") == [] and make_probes([]) == []
    names = [p.name for p in make_probes(" dead, dormant ,dead,weights")]
    assert names == [
        "dead", "dormant", "weight_sv", "param_norm", "param_dist_init", "weight_abs_mean"
    ]
    # rank probes share one spectrum per layer: fused at the first rank position
    names = [p.name for p in make_probes(["stable_rank", "dead", "srank", "stable_rank"])]
    assert names == ["stable_rank+srank", "dead"]
    all_names = [p.name for p in make_probes("all")]
    assert "effective_rank+srank+approx_rank+stable_rank+feature_rank" in all_names
    assert set(GROUPS["all"]) == set(PROBES)
    assert set(GROUPS["representation"]) | set(GROUPS["weights"]) == set(PROBES)


def test_unknown_probe_message_names_bad_value_and_valid_ones():
    with pytest.raises(ValueError) as err:
        make_probes("dormant,dormnat")
    msg = str(err.value)
    assert "'dormnat'" in msg
    for valid in [*PROBES, *GROUPS, "none"]:
        assert valid in msg


@pytest.mark.parametrize(
    "kwargs, bad",
    [({"tau": -0.1}, "-0.1"), ({"delta": 1.0}, "1.0"), ({"eps": 0}, "0"), ({"top_k": -1}, "-1")],
)
def test_bad_parameters_are_rejected_with_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        make_probes("all", **kwargs)


def _custom_calls(fn, inputs, platform=None):
    """{custom-call target: count} of ``jit(vmap(fn))`` over 3 runs of ``inputs`` (the probes'
    compiled use), lowered for this backend or exported for ``platform``."""
    runs = jax.tree.map(lambda x: jnp.stack([x] * 3), inputs)
    f = jax.jit(jax.vmap(fn))
    if platform is None:
        text = f.lower(runs).as_text()
    else:
        export = pytest.importorskip("jax.export")
        spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), runs)
        text = export.export(f, platforms=[platform])(spec).mlir_module()
    return collections.Counter(re.findall(r"custom_call @(\w+)", text)), text


def test_rank_probes_share_one_spectrum_per_layer():
    probes = make_probes("effective_rank,srank,approx_rank,stable_rank,feature_rank")
    fn = lambda x: run_probes(probes, x)  # noqa: E731
    layers = len(INPUTS.features)
    # The traced program holds both branches of the platform-dependent spectrum once per layer:
    # the CPU one (an SVD) and the default one (QR, both features are non-square, + the
    # eigenvalues of the Jordan-Wielandt matrix). Five rank metrics, one spectrum.
    jaxpr = str(jax.make_jaxpr(fn)(INPUTS))
    assert jaxpr.count("= svd[") == layers
    assert len(re.findall(r"= geqrf\b", jaxpr)) == layers
    # Each platform lowers only its own branch. CPU: one eigenvalues-only gesdd (jobz = 'N' = 78)
    # per layer and per run, inside a loop over the runs; no QR and no eigensolver.
    if jax.default_backend() == "cpu":
        calls, hlo = _custom_calls(fn, INPUTS)
        assert calls == {"lapack_sgesdd_ffi": layers}
        gesdd = [line for line in hlo.splitlines() if "@lapack_sgesdd_ffi" in line]
        assert all("mode = 78" in line for line in gesdd)
        assert {re.search(r"\((tensor<[^>]*>)\)", line).group(1) for line in gesdd} == {
            "tensor<12x8xf32>", "tensor<8x4xf32>"  # one matrix per call: [8, 12] transposed
        }
    # GPU: one batched geqrf and one eigenvalues problem per layer, and no SVD.
    calls, _ = _custom_calls(fn, INPUTS, "cuda")
    assert calls == {"cusolver_geqrf_ffi": layers, "cusolver_syevd_ffi": layers}


def test_all_probes_issue_one_decomposition_per_matrix():
    # features: 2 hidden layers (one spectrum each); weights: 3 kernels (one Gram eigvalsh each).
    # Nothing else asks for a decomposition.
    probes = make_probes("all")
    fn = lambda x: run_probes(probes, x)  # noqa: E731
    n_feat, n_kernels = len(INPUTS.features), len(INPUTS.layers)
    jaxpr = str(jax.make_jaxpr(fn)(INPUTS))
    assert jaxpr.count("= svd[") == n_feat  # the feature spectra's CPU branch only
    if jax.default_backend() == "cpu":
        calls, _ = _custom_calls(fn, INPUTS)
        assert calls == {"lapack_sgesdd_ffi": n_feat, "lapack_ssyevd_ffi": n_kernels}
    calls, _ = _custom_calls(fn, INPUTS, "cuda")
    assert calls == {"cusolver_geqrf_ffi": n_feat, "cusolver_syevd_ffi": n_feat + n_kernels}


# --- compiled use -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_runs_under_jit_vmap_and_matches_unbatched(name):
    probes = make_probes(name, top_k=2)
    runs = [make_inputs(jax.random.key(i)) for i in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *runs)  # activation is static metadata
    batched = jax.jit(jax.vmap(lambda x: run_probes(probes, x)))(stacked)
    for i, inputs in enumerate(runs):
        single = run_probes(probes, inputs)
        assert jax.tree.structure(batched) == jax.tree.structure(single)
        jax.tree.map(
            lambda b, s: np.testing.assert_allclose(b[i], s, rtol=1e-4, atol=1e-5), batched, single
        )


def test_new_values_of_the_same_shape_do_not_retrace():
    probes = make_probes("all", top_k=1)
    traces = []

    def probe_runs(x):
        traces.append(1)  # Python side effect: runs once per trace
        return run_probes(probes, x)

    f = jax.jit(jax.vmap(probe_runs))
    stack = lambda seed: jax.tree.map(  # noqa: E731
        lambda *xs: jnp.stack(xs), *[make_inputs(jax.random.key(seed + i)) for i in range(3)]
    )
    first, second = stack(0), stack(10)
    jax.block_until_ready(f(first))
    with jax.transfer_guard("disallow"):  # no implicit host transfer inside the probes
        out = f(second)
    assert len(traces) == 1
    assert not np.allclose(out["sv_max"]["out"], f(first)["sv_max"]["out"])


# --- optimisation stats -----------------------------------------------------------------------


def test_optimizer_stats_per_layer_and_global():
    params = {"h": {"kernel": jnp.array([3.0, 4.0])}, "out": {"kernel": jnp.array([0.0, 0.0])}}
    grads = {"h": {"kernel": jnp.array([0.0, 2.0])}, "out": {"kernel": jnp.array([1.5, 0.0])}}
    updates = {"h": {"kernel": jnp.array([0.3, 0.4])}, "out": {"kernel": jnp.array([0.0, 0.0])}}
    stats = jax.jit(optimizer_stats)(grads, updates, params)
    assert float(stats["grad_norm"]["h"]) == 2.0 and float(stats["grad_norm"]["out"]) == 1.5
    assert float(stats["grad_norm"]["global"]) == 2.5
    assert float(stats["update_ratio"]["h"]) == pytest.approx(0.1)
    assert float(stats["update_ratio"]["out"]) == 0.0  # 0 / 0: no update on zero params
    assert float(stats["update_ratio"]["global"]) == pytest.approx(0.5 / 5.0)


def test_optimizer_stats_global_combines_the_layer_sums():
    rng = np.random.default_rng(0)
    tree = lambda: {k: {"kernel": jnp.asarray(rng.normal(size=(3, 2)).astype(np.float32)),  # noqa: E731
                        "bias": jnp.asarray(rng.normal(size=2).astype(np.float32))}
                    for k in ("hidden/0", "out")}
    grads, updates, params = tree(), tree(), tree()
    stats = jax.jit(optimizer_stats)(grads, updates, params)
    np.testing.assert_allclose(stats["grad_norm"]["global"], D.grad_norm(grads), rtol=1e-6)
    np.testing.assert_allclose(stats["update_ratio"]["global"], D.update_ratio(updates, params),
                               rtol=1e-6)
    for k in grads:
        np.testing.assert_allclose(stats["grad_norm"][k], D.grad_norm(grads[k]), rtol=1e-6)
        np.testing.assert_allclose(stats["update_ratio"][k],
                                   D.update_ratio(updates[k], params[k]), rtol=1e-6)
    zero = jax.tree.map(jnp.zeros_like, params)
    assert float(optimizer_stats(grads, params, zero)["update_ratio"]["out"]) == np.inf


def test_classifier_logs_the_raw_gradient_and_the_applied_update():
    import optax

    from continual.classifier import make_classifier
    from continual.optimizers import HParams
    from plasticity.networks import layer_params, make_network
    from tasks.base import Batch

    net = make_network("mlp", (4, 4, 1), 3, hidden=(8,))
    learner = make_classifier(net, "adam", optimizer_stats=optimizer_stats)
    hp = HParams.defaults(learning_rate=0.05)
    state = learner.init(jax.random.key(0), hp)
    k1, k2 = jax.random.split(jax.random.key(1))
    batch = Batch(jax.random.normal(k1, (16, 4, 4, 1)), jax.random.randint(k2, (16,), 0, 3),
                  jnp.ones(3, bool), jnp.ones(16))
    new, info = jax.jit(learner.update)(state, batch, hp, jax.random.key(2))

    def loss(params):
        logits, _ = net.apply(params, batch.x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch.y).mean()

    grads = layer_params(jax.grad(loss)(state.params))
    old, moved = layer_params(state.params), layer_params(new.params)
    applied = jax.tree.map(jnp.subtract, moved, old)
    for k in grads:
        np.testing.assert_allclose(info["grad_norm"][k], D.grad_norm(grads[k]), rtol=1e-5)
        np.testing.assert_allclose(info["update_ratio"][k], D.update_ratio(applied[k], old[k]),
                                   rtol=1e-5)
    np.testing.assert_allclose(info["grad_norm"]["global"], D.grad_norm(grads), rtol=1e-5)
    assert 0 < float(info["update_ratio"]["global"]) < 1
