"""Resets, shrink & perturb, ReDo and continual backprop (plasticity.resets)."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticity.networks import layer_params, make_network
from plasticity.resets import (
    cbp_init, cbp_step, full_reset, interpolate_fresh, last_layers, redo, reset_layers,
    reset_optimizer_entries, shrink_perturb)

RUNS = 3
MLP_ORDER = ["hidden/0", "hidden/1", "out"]
CNN_ORDER = ["conv/0", "conv/1", "hidden/0", "out"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _np_layers(tree):
    return {k: {n: np.asarray(v) for n, v in d.items()} for k, d in layer_params(tree).items()}


def _pick(tree, run):
    """Run ``run`` of a batched tree, as numpy (no per-leaf device dispatch)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[run], tree)


def _set(params, layer, leaf, fn):
    """params with ``fn(value)`` at ``params[layer][leaf]`` (pure; works under vmap)."""
    def f(path, x):
        names = [str(k.key) if hasattr(k, "key") else str(k.idx) for k in path
                 if hasattr(k, "key") or hasattr(k, "idx")]
        return fn(x) if ("/".join(names[:-1]), names[-1]) == (layer, leaf) else x
    return jax.tree_util.tree_map_with_path(f, params)


def _init(network, seed, runs=None):
    """Parameters shaped like ``network.init``'s, drawn with numpy (a leading run axis if
    ``runs``). Tests need distinct values, not flax's initialiser; tracing and compiling the
    initialiser costs seconds on a shared 2-core CPU."""
    shapes = jax.eval_shape(network.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    lead = () if runs is None else (runs,)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.5, lead + s.shape), s.dtype), shapes)


def _with_moments(tx, params, runs=False):
    """An optimizer state after two updates (nonzero moments; Adam's count is 2)."""
    def two_updates(p):
        state = tx.init(p)
        _, state = tx.update(p, state, p)
        half = jax.tree_util.tree_map(lambda x: 0.5 - x, p)
        return tx.update(half, state, p)[1]
    return jax.jit(jax.vmap(two_updates) if runs else two_updates)(params)


def _data(seed, shape, low=None, high=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) if low is None else rng.uniform(low, high, size=shape)
    return jnp.asarray(x, jnp.float32)


def _same_structure_and_shapes(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype


def _tile_rows(feat_mask, rows):
    return np.tile(feat_mask, rows // feat_mask.shape[-1])


def _expected_reset(old, fresh, unit_masks, order):
    """Numpy reference of a ReDo/CBP-style reset: (new params by layer, touched masks)."""
    new = {n: {k: v.copy() for k, v in old[n].items()} for n in order}
    touched = {n: {k: np.zeros(v.shape, bool) for k, v in old[n].items()} for n in order}
    for name, u in unit_masks.items():
        new[name]["kernel"][..., u] = fresh[name]["kernel"][..., u]
        new[name]["bias"][u] = 0
        touched[name]["kernel"][..., u] = True
        touched[name]["bias"][u] = True
    for name, nxt in zip(order[:-1], order[1:]):
        if name in unit_masks:
            rows = _tile_rows(unit_masks[name], old[nxt]["kernel"].shape[-2])
            new[nxt]["kernel"][..., rows, :] = 0
            touched[nxt]["kernel"][..., rows, :] = True
    return new, touched


def _check_reset(run, params, params_new, fresh, opt, opt_new, unit_masks, order):
    """Touched entries equal the fresh sample (or 0), untouched ones bit-identical; Adam moments
    zero exactly at touched entries; count unchanged."""
    pick = lambda t: _pick(t, run)  # noqa: E731
    old, new, fr = _np_layers(pick(params)), _np_layers(pick(params_new)), _np_layers(pick(fresh))
    want, touched = _expected_reset(old, fr, unit_masks, order)
    for name in old:
        for leaf in old[name]:
            expect = want[name][leaf] if name in want else old[name][leaf]
            np.testing.assert_array_equal(new[name][leaf], expect, err_msg=f"{name}/{leaf}")
    adam_old, adam_new = pick(opt)[0], pick(opt_new)[0]
    assert int(adam_new.count) == int(adam_old.count) == 2
    for moment in ("mu", "nu"):
        mo, mn = _np_layers(getattr(adam_old, moment)), _np_layers(getattr(adam_new, moment))
        for name in mo:
            for leaf in mo[name]:
                t = touched[name][leaf] if name in touched else np.zeros(mo[name][leaf].shape,
                                                                         bool)
                np.testing.assert_array_equal(mn[name][leaf], np.where(t, 0, mo[name][leaf]),
                                              err_msg=f"{moment} {name}/{leaf}")


def _runs(network, seed, tx, prepare=None):
    """Params (after ``prepare``), fresh samples and optimizer states with moments for RUNS
    runs."""
    params = _init(network, seed, RUNS)
    if prepare is not None:
        params = jax.jit(jax.vmap(prepare))(params)
    return params, _init(network, seed + 1000, RUNS), _with_moments(tx, params, runs=True)


@functools.lru_cache(maxsize=None)
def _batched_apply(network):
    return jax.jit(jax.vmap(network.apply, in_axes=(0, None)))


def _apply(network, params, x):
    return _batched_apply(network)(params, x)


# ---------------------------------------------------------------------------------------------
# optimizer entries, full/layer resets, shrink & perturb
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_tx, path", [
    (lambda: optax.adam(1e-3), lambda s: [s[0].mu, s[0].nu]),
    (lambda: optax.adamw(1e-3, weight_decay=0.1), lambda s: [s[0].mu, s[0].nu]),
    (lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
     lambda s: [s[1][0].mu, s[1][0].nu]),
    (lambda: optax.sgd(1e-2, momentum=0.9), lambda s: [s[0].trace]),
])
def test_reset_optimizer_entries_zeroes_moments_in_any_chain(make_tx, path):
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    tx = make_tx()
    opt = _with_moments(tx, params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(2)
    mask = jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(rng.uniform(size=x.shape) < 0.3) for x in leaves])
    new = jax.jit(reset_optimizer_entries)(opt, params, mask)
    _same_structure_and_shapes(opt, new)
    for old_m, new_m in zip(path(opt), path(new)):
        for o, n, m in zip(jax.tree_util.tree_leaves(old_m), jax.tree_util.tree_leaves(new_m),
                           jax.tree_util.tree_leaves(mask)):
            np.testing.assert_array_equal(n, jnp.where(m, 0, o))
    # everything that is not a moment (counts, empty states) is untouched
    moment_ids = {id(x) for m in path(opt) for x in jax.tree_util.tree_leaves(m)}
    for o, n in zip(jax.tree_util.tree_leaves(opt), jax.tree_util.tree_leaves(new)):
        if id(o) not in moment_ids:
            np.testing.assert_array_equal(o, n)


class _Anchor(NamedTuple):
    anchor: Any


def test_reset_optimizer_entries_keeps_regularizer_anchors_by_default():
    """A θ₀ kept in optimizer state (L2-init, EWC) is params-shaped too, but is not a moment."""
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    anchored = optax.GradientTransformation(lambda p: _Anchor(p), lambda u, s, p=None: (u, s))
    opt = _with_moments(optax.chain(anchored, optax.adam(1e-3)), params)
    mask = jax.tree_util.tree_map(lambda x: jnp.ones(x.shape, bool), params)
    new = reset_optimizer_entries(opt, params, mask)
    for o, n in zip(jax.tree_util.tree_leaves(opt[0].anchor),
                    jax.tree_util.tree_leaves(new[0].anchor)):
        np.testing.assert_array_equal(o, n)
    assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves((new[1][0].mu, new[1][0].nu)))
    everything = reset_optimizer_entries(opt, params, mask, opt_filter=None)
    assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(everything[0].anchor))


def test_a_reset_releases_reset_weights_from_ewc_but_keeps_the_rest_consolidated():
    """EWC's Fisher is params-shaped state too: a reset zeroes it where the weights were reset
    (their consolidated importance was about weights that no longer exist, and a kept F would
    pull the fresh weights back to θ*), keeps it elsewhere, and keeps the anchor θ* whole."""
    from plasticity import regularizers

    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    tx = optax.chain(regularizers.ewc(1.0), optax.adam(1e-3))
    fisher = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 2.0), params)
    opt = regularizers.consolidate(tx.init(params), params, fisher)
    # Reset the output layer (a head reset): its weights' entries, no others.
    mask = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, "out" in jax.tree_util.keystr(path)), params)
    new = reset_optimizer_entries(opt, params, mask)
    (ewc_old,), (ewc_new,) = ([x for x in jax.tree_util.tree_leaves(
        o, is_leaf=lambda n: isinstance(n, regularizers.EWCState))
        if isinstance(x, regularizers.EWCState)] for o in (opt, new))
    leaves = jax.tree_util.tree_leaves
    for old_a, new_a in zip(leaves(ewc_old.anchor), leaves(ewc_new.anchor)):
        np.testing.assert_array_equal(new_a, old_a)
    for f, m in zip(leaves(ewc_new.fisher), leaves(mask)):
        np.testing.assert_array_equal(f, np.where(m, 0.0, 2.0))
    assert any(np.all(m) for m in leaves(mask)) and not all(np.all(m) for m in leaves(mask))


def test_reset_optimizer_entries_opt_filter_keeps_other_subtrees():
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    opt = _with_moments(optax.adam(1e-3), params)
    mask = jax.tree_util.tree_map(lambda x: jnp.ones(x.shape, bool), params)
    keep_nu = lambda p: "nu" not in jax.tree_util.keystr(p)  # noqa: E731
    new = reset_optimizer_entries(opt, params, mask, opt_filter=keep_nu)
    assert all(np.all(x == 0) for x in jax.tree_util.tree_leaves(new[0].mu))
    for o, n in zip(jax.tree_util.tree_leaves(opt[0].nu), jax.tree_util.tree_leaves(new[0].nu)):
        np.testing.assert_array_equal(o, n)


def test_full_reset_returns_everything_fresh():
    net = make_network("mlp", (5,), 3, hidden=(4,))
    tx = optax.adam(1e-3)
    params = _init(net, 0)
    opt = _with_moments(tx, params)
    fresh = _init(net, 1)
    p, o = jax.jit(full_reset)(params, opt, fresh, tx.init(fresh))
    for a, b in zip(jax.tree_util.tree_leaves((p, o)),
                    jax.tree_util.tree_leaves((fresh, tx.init(fresh)))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", [1, 2])
def test_reset_layers_reinitialises_named_layers_only(k):
    net = make_network("mlp", (5,), 3, hidden=(4, 6))
    tx = optax.adam(1e-3)
    params, fresh, opt = _runs(net, 0, tx)
    layers = last_layers(MLP_ORDER, k)
    p2, o2 = jax.jit(jax.vmap(lambda p, o, f: reset_layers(p, o, f, layers)))(params, opt, fresh)
    _same_structure_and_shapes(opt, o2)
    _same_structure_and_shapes(params, p2)
    for run in range(RUNS):
        pick = lambda t: _pick(t, run)  # noqa: E731
        old, new, fr = _np_layers(pick(params)), _np_layers(pick(p2)), _np_layers(pick(fresh))
        for name in old:
            for leaf in old[name]:
                want = fr[name][leaf] if name in layers else old[name][leaf]
                np.testing.assert_array_equal(new[name][leaf], want)
        a_old, a_new = pick(opt)[0], pick(o2)[0]
        assert int(a_new.count) == int(a_old.count)
        for m in ("mu", "nu"):
            mo, mn = _np_layers(getattr(a_old, m)), _np_layers(getattr(a_new, m))
            for name in mo:
                for leaf in mo[name]:
                    want = 0 * mo[name][leaf] if name in layers else mo[name][leaf]
                    np.testing.assert_array_equal(mn[name][leaf], want)


def test_reset_layers_rejects_unknown_layer_naming_valid_ones():
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    with pytest.raises(ValueError, match=r"hidden/7.*valid layer names: hidden/0, out"):
        reset_layers(params, optax.adam(1e-3).init(params), params, ["hidden/7"])
    with pytest.raises(ValueError, match="k must be in 1..3"):
        last_layers(MLP_ORDER, 4)


def test_shrink_perturb_and_interpolate_fresh_formulas_vmapped():
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params, fresh, _ = _runs(net, 0, optax.sgd(1e-3))
    shrink = jnp.array([0.2, 0.5, 0.9])
    sp = jax.jit(jax.vmap(lambda p, f, s: shrink_perturb(p, f, s, 0.01)))(params, fresh, shrink)
    it = jax.jit(jax.vmap(interpolate_fresh))(params, fresh, shrink)
    _same_structure_and_shapes(params, sp)
    _same_structure_and_shapes(params, it)
    for p, f, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (params, fresh, sp, it))):
        s = shrink.reshape((RUNS,) + (1,) * (p.ndim - 1))
        np.testing.assert_allclose(a, s * p + 0.01 * f, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b, s * p + (1 - s) * f, rtol=1e-6, atol=1e-7)


def test_shrink_perturb_restricted_to_layers_leaves_others_bit_identical():
    net = make_network("mlp", (5,), 3, hidden=(4,), layer_norm=True)
    params, fresh = _init(net, 0), _init(net, 1)
    sp = jax.jit(lambda p, f: shrink_perturb(p, f, 0.5, 0.1, layers=["hidden/0", "out"]))(
        params, fresh)
    old, new, fr = _np_layers(params), _np_layers(sp), _np_layers(fresh)
    for name in old:
        for leaf in old[name]:
            want = (0.5 * old[name][leaf] + 0.1 * fr[name][leaf] if name in ("hidden/0", "out")
                    else old[name][leaf])
            np.testing.assert_allclose(new[name][leaf], want, rtol=1e-6)
            if name == "norm/0":
                np.testing.assert_array_equal(new[name][leaf], old[name][leaf])
    with pytest.raises(ValueError, match="unknown layers"):
        interpolate_fresh(params, fresh, 0.8, layers=["hidden/9"])


# ---------------------------------------------------------------------------------------------
# ReDo
# ---------------------------------------------------------------------------------------------


def _ref_dormant(h, tau):
    m = np.abs(np.asarray(h, np.float64)).mean(axis=tuple(range(h.ndim - 1)))
    return m == 0 if tau == 0 else m / (m.mean() + 1e-9) <= tau


def _redo_case(net, order, kill, x, tau, tx=optax.adam(1e-3)):
    params, fresh, opt = _runs(net, 0, tx, kill)
    out, feats = _apply(net, params, x)
    taus = np.broadcast_to(np.asarray(tau, np.float32), (RUNS,))  # a vmapped hyperparameter
    p2, o2, counts = jax.jit(jax.vmap(lambda p, o, f, fr, t: redo(p, o, f, fr, order, t)))(
        params, opt, feats, fresh, jnp.asarray(taus))
    _same_structure_and_shapes(opt, o2)
    _same_structure_and_shapes(params, p2)
    masks = []
    for run in range(RUNS):
        m = {n: _ref_dormant(np.asarray(feats[n][run]), taus[run]) for n in order[:-1]}
        _check_reset(run, params, p2, fresh, opt, o2, m, order)
        for n in order[:-1]:
            assert int(counts[n][run]) == m[n].sum()
        masks.append(m)
    out2, _ = _apply(net, p2, x)
    return params, p2, masks, out, out2


def test_redo_resets_forced_dead_dense_unit_and_preserves_function():
    net = make_network("mlp", (5,), 3, hidden=(8, 8))

    def kill(p):  # hidden/0 unit 2: zero incoming and bias; hidden/1 unit 5: negative bias
        p = _set(p, "hidden/0", "kernel", lambda w: w.at[:, 2].set(0.0))
        p = _set(p, "hidden/0", "bias", lambda b: b.at[2].set(0.0))
        p = _set(p, "hidden/1", "kernel", lambda w: w.at[:, 5].set(0.0))
        return _set(p, "hidden/1", "bias", lambda b: b.at[5].set(-1.0))

    x = _data(5, (64, 5))
    params, p2, masks, out, out2 = _redo_case(net, MLP_ORDER, kill, x, tau=0.0)
    for run, m in enumerate(masks):
        assert m["hidden/0"][2] and m["hidden/1"][5]
        assert m["hidden/0"].sum() + m["hidden/1"].sum() < 16
        new = _np_layers(_pick(p2, run))
        assert np.all(new["hidden/1"]["kernel"][2] == 0) and np.all(new["out"]["kernel"][5] == 0)
        assert np.any(new["hidden/0"]["kernel"][:, 2] != 0)  # re-initialised, alive again
    np.testing.assert_allclose(out2, out, rtol=1e-6, atol=1e-6)


def test_redo_threshold_uses_dormant_score_per_run():
    net = make_network("mlp", (5,), 3, hidden=(16, 16))
    x = _data(5, (64, 5))
    _, _, masks, _, _ = _redo_case(net, MLP_ORDER, lambda p: p, x, tau=[0.0, 0.3, 0.6])
    resets = [m["hidden/0"].sum() + m["hidden/1"].sum() for m in masks]
    assert resets[2] > 0 and resets[2] >= resets[0]


def test_redo_cnn_repeats_channel_mask_over_flattened_positions():
    net = make_network("cnn", (8, 8, 1), 3, hidden=(5,), channels=(3, 4))

    def kill(p):  # conv/0 channel 0 and conv/1 channel 1 dead
        p = _set(p, "conv/0", "kernel", lambda w: w.at[..., 0].set(0.0))
        p = _set(p, "conv/0", "bias", lambda b: b.at[0].set(-1.0))
        p = _set(p, "conv/1", "kernel", lambda w: w.at[..., 1].set(0.0))
        return _set(p, "conv/1", "bias", lambda b: b.at[1].set(0.0))

    x = _data(5, (16, 8, 8, 1))
    params, p2, masks, out, out2 = _redo_case(net, CNN_ORDER, kill, x, tau=0.0)
    for run, m in enumerate(masks):
        assert m["conv/0"][0] and m["conv/1"][1]
        new = _np_layers(_pick(p2, run))
        assert np.all(new["conv/1"]["kernel"][:, :, 0, :] == 0)
        # the dense layer sees the 2×2×4 map flattened NHWC: channel 1 at every position
        dense = new["hidden/0"]["kernel"].reshape(2, 2, 4, 5)
        assert np.all(dense[:, :, 1, :] == 0)
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-6)


def test_redo_leaves_layer_norm_untouched():
    net = make_network("mlp", (5,), 3, hidden=(8, 8), layer_norm=True)
    params, fresh, opt = _runs(net, 0, optax.adam(1e-3))
    _, feats = _apply(net, params, _data(1, (32, 5)))
    p2, o2, counts = jax.jit(jax.vmap(lambda p, o, f, fr: redo(p, o, f, fr, MLP_ORDER, 0.9)))(
        params, opt, feats, fresh)
    assert int(sum(c.sum() for c in counts.values())) > 0
    old, new = layer_params(params), layer_params(p2)
    for name in ("norm/0", "norm/1"):
        for leaf in old[name]:
            np.testing.assert_array_equal(new[name][leaf], old[name][leaf])


def test_redo_bad_input_messages():
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    opt = optax.adam(1e-3).init(params)
    _, feats = net.apply(params, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="unknown layer in layer_order"):
        redo(params, opt, feats, params, ["hidden/1", "out"], 0.1)
    with pytest.raises(ValueError, match="features has no entry"):
        redo(params, opt, {}, params, ["hidden/0", "out"], 0.1)


# ---------------------------------------------------------------------------------------------
# Continual backprop
# ---------------------------------------------------------------------------------------------

CONST_UNIT = {"hidden/0": 3, "hidden/1": 4}


def _cbp_prepare(params):
    """A 4→6→6→2 MLP whose units are all clearly active (positive weights and inputs), except one
    constant unit per hidden layer (incoming 0, bias 1, ReLU(1) = 1) with tiny outgoing weights:
    the unit of clearly lowest utility. Weights in [0.1, 0.5] derive from the run's own init."""
    for name in MLP_ORDER:
        params = _set(params, name, "kernel", lambda w: 0.1 + 0.4 * jnp.abs(jnp.tanh(3 * w)))
    for name, nxt in zip(MLP_ORDER[:-1], MLP_ORDER[1:]):
        i = CONST_UNIT[name]
        params = _set(params, nxt, "kernel", lambda w, i=i: w.at[i].set(1e-3))
        params = _set(params, name, "kernel", lambda w, i=i: w.at[:, i].set(0.0))
        params = _set(params, name, "bias", lambda b, i=i: jnp.full_like(b, 0.1).at[i].set(1.0))
    return params


def test_cbp_replaces_lowest_utility_unit_and_preserves_function():
    maturity, rate = 3, 0.2  # 6 eligible units × 0.2 = 1.2 → one replacement at step m + 1
    net = make_network("mlp", (4,), 2, hidden=(6, 6))
    params, fresh, opt = _runs(net, 0, optax.adam(1e-3), _cbp_prepare)
    x = _data(2, (32, 4), 0.5, 1.0)

    def run(p, o, fr):
        state = cbp_init(p, MLP_ORDER)

        def step(carry, _):
            p, o, s = carry
            _, feats = net.apply(p, x)
            p, o, s = cbp_step(p, o, s, feats, fr, MLP_ORDER, maturity=maturity,
                               replacement_rate=rate)
            return (p, o, s), s.replaced
        (p, o, s), replaced = jax.lax.scan(step, (p, o, state), None, length=maturity + 1)
        return p, o, s, replaced

    p2, o2, s, replaced = jax.jit(jax.vmap(run))(params, opt, fresh)
    _same_structure_and_shapes(params, p2)
    _same_structure_and_shapes(opt, o2)
    masks = {n: np.eye(6, dtype=bool)[i] for n, i in CONST_UNIT.items()}
    for r in range(RUNS):
        for name, i in CONST_UNIT.items():
            np.testing.assert_array_equal(replaced[name][r], [0] * maturity + [1])
            np.testing.assert_array_equal(s.age[name][r], np.where(masks[name], 0, maturity + 1))
            assert s.utility[name][r][i] == 0 and np.all(s.utility[name][r][~masks[name]] > 0)
            np.testing.assert_allclose(s.accumulator[name][r], 0.2, rtol=1e-5)
        # weights: exactly as a reset of the two units, except the bias correction (below)
        no_bias = lambda t: _set(_set(t, "hidden/1", "bias", lambda b: 0 * b),  # noqa: E731
                                 "out", "bias", lambda b: 0 * b)
        _check_reset(r, no_bias(params), no_bias(p2), fresh, opt, o2, masks, MLP_ORDER)
    # next-layer bias += W_out[i, :]·h̄_i with h̄_i = 1 (the constant unit)
    old, new = layer_params(params), layer_params(p2)
    want_h1 = old["hidden/1"]["bias"] + old["hidden/1"]["kernel"][:, 3, :]
    want_h1 = want_h1.at[:, 4].set(0.0)  # the replaced unit of hidden/1 gets bias 0
    np.testing.assert_allclose(new["hidden/1"]["bias"], want_h1, rtol=1e-5)
    np.testing.assert_allclose(new["out"]["bias"],
                               old["out"]["bias"] + old["out"]["kernel"][:, 4, :], rtol=1e-5)
    # the function is preserved (here exactly up to rounding: the replaced units were constant)
    for xs in (x, _data(3, (16, 4), -1.0, 2.0)):
        out, _ = _apply(net, params, xs)
        out2, _ = _apply(net, p2, xs)
        np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_replacements", [None, 1])
def test_cbp_replacement_count_follows_rate(max_replacements):
    rate, maturity, steps, width = 1 / 16, 3, 40, 20  # ρ exact in binary: exact accumulator
    net = make_network("mlp", (5,), 3, hidden=(width, width))
    tx = optax.adam(1e-3)
    params, fresh, opt = _runs(net, 0, tx)
    x = _data(1, (16, 5))

    def run(p, o, fr):
        def step(carry, _):
            p, o, s = carry
            _, feats = net.apply(p, x)
            p, o, s = cbp_step(p, o, s, feats, fr, MLP_ORDER, maturity=maturity,
                               replacement_rate=rate, max_replacements=max_replacements)
            return (p, o, s), (s.replaced, s.age, s.accumulator)
        return jax.lax.scan(step, (p, o, cbp_init(p, MLP_ORDER)), None, length=steps)[1]

    replaced, ages, acc = jax.jit(jax.vmap(run))(params, opt, fresh)
    cap = max_replacements or int(np.ceil(rate * width))
    for name in MLP_ORDER[:-1]:
        for r in range(RUNS):
            a_prev, pending, total_eligible = np.zeros(width, int), 0.0, 0
            for t in range(steps):
                eligible = (a_prev + 1) > maturity
                pending += rate * eligible.sum()
                total_eligible += eligible.sum()
                n = min(int(np.floor(pending)), cap, eligible.sum())
                pending -= n
                a = np.asarray(ages[name][r, t])
                assert int(replaced[name][r, t]) == n, (name, r, t)
                assert (a == 0).sum() == n and np.all(eligible[a == 0])
                assert acc[name][r, t] == pending
                a_prev = a
            assert replaced[name][r].sum() == rate * total_eligible - pending
            assert replaced[name][r].sum() > 0


def test_cbp_rejects_conv_layers_and_traced_rate_without_cap():
    cnn = make_network("cnn", (8, 8, 1), 3, hidden=(5,), channels=(3,))
    with pytest.raises(ValueError, match="dense layers only"):
        cbp_init(_init(cnn, 0), ["conv/0", "hidden/0", "out"])
    net = make_network("mlp", (5,), 3, hidden=(4,))
    params = _init(net, 0)
    opt = optax.adam(1e-3).init(params)
    _, feats = net.apply(params, jnp.ones((2, 5)))
    state = cbp_init(params, ["hidden/0", "out"])
    step = lambda rate: cbp_step(params, opt, state, feats, params,  # noqa: E731
                                 ["hidden/0", "out"], replacement_rate=rate)
    with pytest.raises(ValueError, match="max_replacements"):
        jax.jit(step)(0.1)
