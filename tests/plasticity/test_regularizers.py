"""Regularizers as optax transforms: each added update against a hand-computed value."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticity.networks import make_network
from plasticity.regularizers import (ALIASES, REGULARIZERS, EWCState, canonical_name,
                                     consolidate, diagonal_fisher, regularized)

LR = 0.1
LAM = 0.3


def tiny_params():
    return {
        "hidden": {0: {"kernel": jnp.array([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]]),
                       "bias": jnp.array([0.1, -0.2, 0.3])}},
        "out": {"kernel": jnp.array([[0.2, -0.4], [1.0, 0.5], [-0.3, 0.8]]),
                "bias": jnp.array([0.05, -0.1])},
    }


def tiny_grads():
    return jax.tree.map(lambda p: 0.1 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) - 0.2,
                        tiny_params())


def np_tree(tree):
    return jax.tree.map(np.asarray, tree)


def assert_tree_close(a, b, **kw):
    kw.setdefault("rtol", 1e-5)
    kw.setdefault("atol", 1e-6)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


def sq(tree):
    return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree))


def grad(f):
    """jax.grad, jitted: one compile instead of op-by-op dispatch."""
    return jax.jit(jax.grad(f))


def one_update(name, strength, params, grads, *, init_params=None, opt=None, **options):
    """One update from a fresh state (built at ``init_params``), jitted: one compile beats
    op-by-op dispatch on a busy CPU."""
    tx = regularized(opt or optax.sgd(LR), name, strength, learning_rate=LR, **options)

    def run(params, grads, init_params):
        return tx.update(grads, tx.init(init_params), params)

    return jax.jit(run)(params, grads, params if init_params is None else init_params)


def sgd_expected(grads, pen_grad):
    """−lr·(∇L + ∇penalty): a coupled penalty seen through SGD."""
    return jax.tree.map(lambda g, d: -LR * (np.asarray(g) + np.asarray(d)), grads, pen_grad)


# ---------------------------------------------------------------------------------------------
# names and errors


def test_none_returns_the_optimizer_unchanged():
    opt = optax.adam(1e-3)
    assert regularized(opt, "none", 0.5, learning_rate=1e-3) is opt


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown regularizer 'l3'") as err:
        regularized(optax.sgd(LR), "l3", 0.1)
    for name in REGULARIZERS:
        assert name in str(err.value)


def test_unknown_option_names_the_option_and_the_valid_ones():
    with pytest.raises(ValueError, match="unknown option.*p.*'sp_step'.*sigma, key"):
        regularized(optax.sgd(LR), "sp_step", 0.1, p=0.9)


def test_weight_decay_needs_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        regularized(optax.sgd(LR), "weight_decay", 0.1)


def test_update_without_params_is_a_clear_error():
    tx = regularized(optax.sgd(LR), "l2", 0.1)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(tiny_grads(), tx.init(tiny_params()))


def test_aliases_resolve_to_canonical_names():
    p = tiny_params()
    for alias, canonical in ALIASES.items():
        assert canonical_name(alias) == canonical
        shape = lambda n: jax.eval_shape(regularized(optax.sgd(LR), n, LAM).init, p)
        assert jax.tree.structure(shape(alias)) == jax.tree.structure(shape(canonical))


# ---------------------------------------------------------------------------------------------
# coupled penalties


def test_l2_adds_its_gradient_before_the_optimizer():
    p, g = tiny_params(), tiny_grads()
    updates, _ = one_update("l2", LAM, p, g)
    # loss += λ‖θ‖²  →  ∇ = 2λθ; out bias by hand: −0.1·([−0.2, −0.1] + 0.6·[0.05, −0.1])
    np.testing.assert_allclose(updates["out"]["bias"], [0.017, 0.016], rtol=1e-5)
    assert_tree_close(updates, sgd_expected(g, jax.tree.map(lambda x: 2 * LAM * x, np_tree(p))))
    assert_tree_close(updates, sgd_expected(g, grad(lambda q: LAM * sq(q))(p)))


def test_coupled_penalty_passes_through_adam_normalisation():
    p, g = tiny_params(), tiny_grads()
    updates, _ = one_update("l2", LAM, p, g, opt=optax.adam(LR))
    adam = optax.adam(LR)
    expected, _ = jax.jit(adam.update)(jax.tree.map(lambda gi, x: gi + 2 * LAM * x, g, p),
                                       adam.init(p))
    assert_tree_close(updates, expected)


def test_l2_init_pulls_towards_the_initial_parameters():
    p0, g = tiny_params(), tiny_grads()
    p = jax.tree.map(lambda x: x + 0.5, p0)
    updates, state = one_update("l2_init", LAM, p, g, init_params=p0)
    # ∇ λ‖θ − θ₀‖² = 2λ(θ − θ₀) = 2·0.3·0.5 = 0.3 everywhere
    np.testing.assert_allclose(updates["out"]["bias"], [-0.1 * (-0.2 + 0.3), -0.1 * (-0.1 + 0.3)],
                               rtol=1e-5)
    assert_tree_close(updates, sgd_expected(g, jax.tree.map(lambda x: np.full(x.shape, 0.3), p)))
    pen = lambda q: LAM * sq(jax.tree.map(jnp.subtract, q, p0))
    assert_tree_close(updates, sgd_expected(g, grad(pen)(p)))
    assert_tree_close(state[0].anchor, p0)  # θ₀ lives in the state


def _parseval_penalty(params, lam, s):
    """Written independently: the only non-output kernel of the tiny tree, Gram over outputs."""
    k = params["hidden"][0]["kernel"]
    return lam * jnp.sum((k.T @ k - s * jnp.eye(k.shape[1])) ** 2)


@pytest.mark.parametrize("s", [1.0, 2.0])
def test_parseval_gradient_matches_the_written_penalty(s):
    p, g = tiny_params(), tiny_grads()
    updates, _ = one_update("parseval", LAM, p, g, s=s)
    k = np.asarray(p["hidden"][0]["kernel"])
    by_hand = jax.tree.map(np.zeros_like, np_tree(p))
    by_hand["hidden"][0]["kernel"] = 4 * LAM * k @ (k.T @ k - s * np.eye(3))
    assert_tree_close(updates, sgd_expected(g, by_hand))
    assert_tree_close(updates, sgd_expected(g, grad(lambda q: _parseval_penalty(q, LAM, s))(p)))
    # the output layer is excluded: its update is plain SGD
    assert_tree_close(updates["out"], jax.tree.map(lambda x: -LR * x, g["out"]))


def test_parseval_is_the_gram_over_output_units():
    # (in=3, out=2) kernel with orthonormal columns: output units' weight vectors orthonormal
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 2)))
    p = {"hidden": {0: {"kernel": jnp.asarray(q, jnp.float32)}},
         "head": {"kernel": jnp.ones((2, 2))}}
    g = jax.tree.map(jnp.zeros_like, p)
    updates, _ = one_update("parseval", LAM, p, g, output_name="head")
    assert_tree_close(updates, g, atol=1e-6)
    # the other orientation (K Kᵀ, 3×3 of rank 2) could not vanish
    assert np.abs(q @ q.T - np.eye(3)).max() > 0.1
    updates, _ = one_update("parseval", LAM, p, g)  # "head" is no longer the output layer
    assert np.abs(np.asarray(updates["head"]["kernel"])).max() > 0


@pytest.mark.parametrize("k,bias_strength", [(2.0, None), (1.0, 0.05), (3.0, 0.0)])
def test_spectral_does_one_power_step_per_update(k, bias_strength):
    p, g = tiny_params(), tiny_grads()
    tx = regularized(optax.sgd(LR), "spectral_reg", LAM, k=k, bias_strength=bias_strength)
    state0 = tx.init(p)
    updates, state1 = jax.jit(tx.update)(g, state0, p)
    lam_b = LAM if bias_strength is None else bias_strength
    by_hand, us, vs = {}, {}, {}
    for layer in ("hidden", "out"):
        sub = (lambda t: t[layer][0]) if layer == "hidden" else (lambda t: t[layer])
        w = np.asarray(sub(p)["kernel"])
        u0 = np.asarray(sub(state0[0].u)["kernel"])
        v = w.T @ u0; v /= np.linalg.norm(v)
        u = w @ v; u /= np.linalg.norm(u)
        sig = u @ w @ v
        np.testing.assert_allclose(sub(state1[0].u)["kernel"], u, rtol=1e-5)
        np.testing.assert_allclose(sub(state1[0].v)["kernel"], v, rtol=1e-5)
        np.testing.assert_allclose(sub(state1[0].sigma)["kernel"], sig, rtol=1e-5)
        us[layer], vs[layer] = u, v
        by_hand[layer] = {"kernel": 2 * LAM * (sig ** k - 1) * k * sig ** (k - 1) * np.outer(u, v),
                          "bias": 2 * lam_b * np.asarray(sub(p)["bias"])}
    by_hand["hidden"] = {0: by_hand["hidden"]}
    assert_tree_close(updates, sgd_expected(g, by_hand), rtol=1e-4)

    def penalty(q):  # u, v are constants (stop-gradient)
        total = 0.0
        for layer, sub in (("hidden", q["hidden"][0]), ("out", q["out"])):
            sig = us[layer] @ sub["kernel"] @ vs[layer]
            total += LAM * (sig ** k - 1) ** 2 + lam_b * jnp.sum(sub["bias"] ** 2)
        return total

    assert_tree_close(updates, sgd_expected(g, grad(penalty)(p)), rtol=1e-4)


def test_spectral_power_iteration_converges_to_the_largest_singular_value():
    rng = np.random.default_rng(1)
    p = {"conv": {0: {"kernel": jnp.asarray(rng.normal(size=(2, 2, 3, 4)), jnp.float32)}},
         **tiny_params()}
    g = jax.tree.map(jnp.zeros_like, p)
    tx = regularized(optax.sgd(LR), "spectral_reg", LAM)
    state = tx.init(p)
    step = jax.jit(tx.update)
    for _ in range(50):  # params held fixed: only the persistent vectors move
        updates, state = step(g, state, p)
    sigma = state[0].sigma
    svd = lambda w: np.linalg.svd(np.asarray(w).reshape(-1, w.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(sigma["conv"][0]["kernel"], svd(p["conv"][0]["kernel"]), rtol=1e-4)
    np.testing.assert_allclose(sigma["hidden"][0]["kernel"], svd(p["hidden"][0]["kernel"]),
                               rtol=1e-4)
    np.testing.assert_allclose(sigma["out"]["kernel"], svd(p["out"]["kernel"]), rtol=1e-4)

    def exact_grad(sub):  # σ_max from numpy's SVD: ∂σ/∂W = u₁v₁ᵀ, ∂λ(σ²−1)²/∂W = 4λσ(σ²−1)u₁v₁ᵀ
        w = np.asarray(sub["kernel"])
        u, s, vt = np.linalg.svd(w.reshape(-1, w.shape[-1]))
        dw = 4 * LAM * s[0] * (s[0] ** 2 - 1) * np.outer(u[:, 0], vt[0])
        out = {"kernel": dw.reshape(w.shape)}
        if "bias" in sub:
            out["bias"] = 2 * LAM * np.asarray(sub["bias"])
        return out

    expected = {"conv": {0: exact_grad(p["conv"][0])}, "hidden": {0: exact_grad(p["hidden"][0])},
                "out": exact_grad(p["out"])}
    # the sign of (u₁, v₁) is irrelevant: it cancels in u₁v₁ᵀ
    assert_tree_close(updates, sgd_expected(g, expected), rtol=1e-3, atol=1e-5)


def test_ewc_has_no_effect_before_consolidation_and_pulls_to_the_anchor_after():
    p, g = tiny_params(), tiny_grads()
    tx = regularized(optax.sgd(LR), "ewc", LAM)
    state = tx.init(p)
    update = jax.jit(tx.update)
    updates, state = update(g, state, p)
    assert_tree_close(updates, jax.tree.map(lambda x: -LR * x, g))

    anchor = jax.tree.map(lambda x: x - 0.25, p)
    fisher = jax.tree.map(lambda x: jnp.abs(x) + 1.0, p)
    state = consolidate(state, anchor, fisher)
    updates, _ = update(g, state, p)
    pen = jax.tree.map(lambda f: LAM * f * 0.25, np_tree(fisher))  # λF(θ − θ*)
    assert_tree_close(updates, sgd_expected(g, pen))
    ewc_penalty = lambda q: LAM / 2 * sum(
        jnp.sum(f * (x - a) ** 2) for x, a, f in
        zip(jax.tree.leaves(q), jax.tree.leaves(anchor), jax.tree.leaves(fisher)))
    assert_tree_close(updates, sgd_expected(g, grad(ewc_penalty)(p)))

    # online: a second consolidation moves the anchor and adds the Fisher
    state2 = consolidate(state, p, fisher)
    assert_tree_close(state2[0].anchor, p)
    assert_tree_close(state2[0].fisher, jax.tree.map(lambda f: 2 * f, fisher))


def test_consolidate_finds_ewc_state_in_nested_chains():
    p = tiny_params()
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     regularized(optax.adam(LR), "ewc", LAM, learning_rate=LR))
    fisher = jax.tree.map(jnp.ones_like, p)
    state = consolidate(tx.init(p), p, fisher)
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, EWCState))
             if isinstance(s, EWCState)]
    assert len(found) == 1
    assert_tree_close(found[0].fisher, fisher)
    with pytest.raises(ValueError, match="no EWC state"):
        consolidate(optax.adam(LR).init(p), p, fisher)


# ---------------------------------------------------------------------------------------------
# decoupled transforms


def test_weight_decay_is_decoupled_and_scaled_by_the_learning_rate():
    p, g = tiny_params(), tiny_grads()
    updates, _ = one_update("weight_decay", LAM, p, g)
    assert_tree_close(updates, jax.tree.map(lambda gi, x: -LR * (gi + LAM * x), g, p))
    # after Adam, not through it: the same as optax.adamw
    updates, _ = one_update("weight_decay", LAM, p, g, opt=optax.adam(LR))
    adamw = optax.adamw(LR, weight_decay=LAM)
    expected, _ = jax.jit(adamw.update)(g, adamw.init(p), p)
    assert_tree_close(updates, expected)


def test_shrink_to_init_interpolates_towards_theta0_after_the_step():
    p0, g = tiny_params(), tiny_grads()
    p = jax.tree.map(lambda x: 2.0 * x, p0)
    updates, _ = one_update("shrink_to_init", 0.1, p, g, init_params=p0)
    new = optax.apply_updates(p, updates)
    # θ ← p(θ − lr·g) + (1 − p)θ₀, p = 0.9
    expected = jax.tree.map(lambda x, gi, a: 0.9 * (x - LR * gi) + 0.1 * a, p, g, p0)
    assert_tree_close(new, expected)


def test_sp_step_shrinks_the_step_and_adds_gaussian_noise():
    p, g = tiny_params(), tiny_grads()
    updates, _ = one_update("sp_step", 0.1, p, g, sigma=0.0)
    expected = jax.tree.map(lambda x, gi: 0.9 * (x - LR * gi), p, g)
    assert_tree_close(optax.apply_updates(p, updates), expected)

    big = {"w": jnp.zeros((200, 200))}
    tx = regularized(optax.sgd(LR), "sp_step", 0.0, sigma=0.01, key=jax.random.key(3))
    update, zeros = jax.jit(tx.update), jax.tree.map(jnp.zeros_like, big)
    state = tx.init(big)
    n1, state = update(zeros, state, big)
    n2, _ = update(zeros, state, big)
    e = np.asarray(n1["w"])
    assert abs(e.mean()) < 3e-4 and abs(e.std() - 0.01) < 3e-4       # N(0, σ²), σ = 0.01
    assert not np.allclose(n1["w"], n2["w"])                        # a fresh draw every step
    again, _ = update(zeros, tx.init(big), big)
    np.testing.assert_array_equal(again["w"], n1["w"])              # reproducible from the key


def test_sp_step_noise_differs_between_runs_given_their_keys():
    p, g = {"w": jnp.zeros((4, 5))}, {"w": jnp.zeros((4, 5))}

    def run(key):
        tx = regularized(optax.sgd(LR), "sp_step", 0.0, sigma=1.0, key=key)
        return tx.update(g, tx.init(p), p)[0]["w"]

    noise = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 3)))
    assert not np.allclose(noise[0], noise[1]) and not np.allclose(noise[1], noise[2])


# ---------------------------------------------------------------------------------------------
# sweeps: strengths and options are traced, one program for all runs


def _sweep_step(name, strength, lr, **options):
    p0, g = tiny_params(), tiny_grads()
    p = jax.tree.map(lambda x: 1.5 * x + 0.1, p0)
    tx = regularized(optax.sgd(lr), name, strength, learning_rate=lr, key=jax.random.key(0),
                     **options) if name == "sp_step" else \
        regularized(optax.sgd(lr), name, strength, learning_rate=lr, **options)
    state = tx.init(p0)
    if name == "ewc":
        state = consolidate(state, p0, jax.tree.map(jnp.ones_like, p0))
    return tx.update(g, state, p)[0]


@pytest.mark.parametrize("name", [n for n in REGULARIZERS if n != "none"])
def test_every_regularizer_sweeps_strength_under_jit_vmap(name):
    strengths = jnp.array([0.0, 0.1, 0.2])
    lrs = jnp.full((3,), LR)
    updates = jax.jit(jax.vmap(lambda s, lr: _sweep_step(name, s, lr)))(strengths, lrs)
    flat = np.concatenate([np.asarray(x).reshape(3, -1) for x in jax.tree.leaves(updates)], 1)
    assert np.isfinite(flat).all()
    assert not np.allclose(flat[0], flat[1]) and not np.allclose(flat[1], flat[2])
    # and the run with strength s equals an unbatched call with s
    single = _sweep_step(name, 0.1, LR)
    assert_tree_close(jax.tree.map(lambda x: x[1], updates), single, rtol=1e-4)


@pytest.mark.parametrize("name,option,values", [
    ("spectral_reg", "k", [1.0, 2.0, 3.0]),
    ("spectral_reg", "bias_strength", [0.0, 0.1, 0.2]),
    ("parseval", "s", [0.5, 1.0, 2.0]),
    ("sp_step", "sigma", [0.0, 0.01, 0.02]),
])
def test_numeric_options_are_traceable(name, option, values):
    step = lambda v: _sweep_step(name, 0.1, LR, **{option: v})
    updates = jax.jit(jax.vmap(step))(jnp.array(values))
    flat = np.concatenate([np.asarray(x).reshape(3, -1) for x in jax.tree.leaves(updates)], 1)
    assert not np.allclose(flat[0], flat[1]) and not np.allclose(flat[1], flat[2])


# ---------------------------------------------------------------------------------------------
# real parameters: flax nnx.State


def test_regularizers_work_on_nnx_state_like_on_plain_dicts():
    net = make_network("mlp", (4, 1, 1), 2, hidden=(3,))
    state_params = net.init(jax.random.key(0))
    grads = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), state_params)
    moved = jax.tree.map(lambda x: x + 0.5, state_params)

    def run(name, params, g, p1):
        tx = regularized(optax.sgd(LR), name, LAM, learning_rate=LR)
        opt_state = tx.init(params)
        if name == "ewc":
            opt_state = consolidate(opt_state, params, jax.tree.map(jnp.ones_like, params))
        return tx.update(g, opt_state, p1)[0]

    @jax.jit  # every regularizer on both tree types in one compile
    def all_updates(params, g, p1):
        as_dict = lambda t: t.to_pure_dict()
        return {name: (run(name, params, g, p1),
                       run(name, as_dict(params), as_dict(g), as_dict(p1)))
                for name in REGULARIZERS}

    for name, (up_state, up_dict) in all_updates(state_params, grads, moved).items():
        assert type(up_state) is type(state_params), name
        assert_tree_close(up_state.to_pure_dict(), up_dict)

    up = all_updates(state_params, grads, state_params)["parseval"][0].to_pure_dict()
    np.testing.assert_allclose(up["out"]["kernel"], -LR * 0.1 * np.ones((3, 2)), rtol=1e-6)
    assert not np.allclose(up["hidden"][0]["kernel"], -LR * 0.1)


# ---------------------------------------------------------------------------------------------
# EWC Fisher


def _linear_softmax(params, x):
    return jax.nn.log_softmax(x @ params["w"] + params["b"])


def _fisher_bruteforce(params, x):
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for xn in np.asarray(x, np.float64):
        z = xn @ w + b
        prob = np.exp(z - z.max()); prob /= prob.sum()
        for c in range(len(b)):
            d = np.eye(len(b))[c] - prob           # ∂ log p_c / ∂z
            fw += prob[c] * np.outer(xn, d) ** 2
            fb += prob[c] * d ** 2
    return {"b": fb / len(x), "w": fw / len(x)}


def _fisher_problem():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    return params, jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)


def test_diagonal_fisher_exact_expectation_matches_brute_force():
    params, x = _fisher_problem()
    expected = _fisher_bruteforce(params, x)
    exact = jax.jit(lambda p, x: diagonal_fisher(_linear_softmax, p, x, num_samples=None))
    assert_tree_close(exact(params, x), expected)
    chunked = jax.jit(lambda p, x: diagonal_fisher(_linear_softmax, p, x, num_samples=None,
                                                   chunk_size=2))
    assert_tree_close(chunked(params, x), expected)


def test_diagonal_fisher_sampled_labels_estimate_the_expectation():
    params, x = _fisher_problem()
    est = jax.jit(lambda k: diagonal_fisher(_linear_softmax, params, x, k, num_samples=2000))(
        jax.random.key(1))
    assert_tree_close(est, _fisher_bruteforce(params, x), rtol=0.1, atol=2e-3)


def test_diagonal_fisher_on_a_network_state():
    net = make_network("mlp", (4, 1, 1), 2, hidden=(3,))
    params = net.init(jax.random.key(0))
    log_prob = lambda p, x: jax.nn.log_softmax(net.apply(p, x)[0])
    x = jax.random.normal(jax.random.key(1), (4, 4, 1, 1))
    fisher = jax.jit(lambda p, k: diagonal_fisher(log_prob, p, x, k, num_samples=2))(
        params, jax.random.key(2))
    assert jax.tree.structure(fisher) == jax.tree.structure(params)
    assert all((np.asarray(f) >= 0).all() for f in jax.tree.leaves(fisher))
    tx = regularized(optax.adam(LR), "ewc", LAM)
    consolidate(tx.init(params), params, fisher)  # the Fisher fits the EWC state
