"""The iterative-compute network ``think`` (Ghugare et al. 2026, REFERENCE.md §13): the
weight-tied cell matches a numpy loop of its equations, its parameters do not depend on the step
count, the same parameters run more steps at evaluation with one compilation per step count,
the forget gate starts with bias 1, and bad settings are named."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.config import ConfigError
from experiments.registry import from_preset
from plasticity.networks import (ALL_NETWORKS, ITERATIVE_NETWORKS, NETWORKS, layer_order,
                                 layer_params, make_network)

IN, D, OUT, N = 5, 4, 3, 6


def _net(steps=3):
    return make_network("think", (IN,), OUT, hidden=(D,), think_steps=steps)


def _numpy_think(p, x, steps):
    """The equations of REFERENCE §13, written out in numpy (float64): returns the output and
    the gates of every step."""
    def dense(name, v):
        return v @ p[name]["kernel"] + p[name]["bias"]

    def norm(name, v, eps=1e-6):  # flax's LayerNorm: biased variance, eps 1e-6
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + eps) * p[name]["scale"] + p[name]["bias"]

    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    e = norm("embed_norm", dense("embed", x))
    c = h = np.zeros((x.shape[0], D))
    gates, states = [], []
    for _ in range(steps):
        z = norm("cell_norm", np.concatenate([e, h], axis=-1))
        f, i = sigmoid(dense("forget", z)), np.tanh(dense("input", z))
        c = f * c + (1 - f) * i
        h = h + np.tanh(c)
        gates.append((f, i))
        states.append(h)
    return dense("out", h), e, gates, states


def _random_params(net, seed=0):
    """Parameters with every leaf random (layer-norm scales and biases too), as float64 numpy
    for the reference and float32 for the network."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), jnp.float32),
                          shapes)
    ref = {layer: {k: np.asarray(v, np.float64) for k, v in leaves.items()}
           for layer, leaves in layer_params(params).items()}
    return params, ref


def test_the_cell_matches_a_numpy_loop_of_its_equations():
    net = _net(3)
    params, ref = _random_params(net)
    x = np.random.default_rng(1).normal(size=(N, IN)).astype(np.float32)
    apply = jax.jit(net.apply, static_argnames="steps")
    for steps in (1, 3, 7):  # the built default (3), fewer and more
        out, features = apply(params, jnp.asarray(x), steps=None if steps == 3 else steps)
        want, embed, gates, states = _numpy_think(ref, x.astype(np.float64), steps)
        np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(features["embed"], embed, rtol=2e-5, atol=2e-5)
        # Features: the gates of the last step (the cell is causal: step s = a run of s steps).
        np.testing.assert_allclose(features["forget"], gates[-1][0], rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(features["input"], gates[-1][1], rtol=2e-5, atol=2e-5)
        # ... and the residual stream after every step (diagnostics per think step).
        assert sorted(k for k in features if k.startswith("step/")) == sorted(
            f"step/{s + 1}" for s in range(steps))
        for s, h in enumerate(states):
            np.testing.assert_allclose(features[f"step/{s + 1}"], h, rtol=2e-5, atol=2e-5)


def test_parameters_do_not_depend_on_the_step_count():
    shapes = [jax.eval_shape(_net(steps).init, jax.random.key(0)) for steps in (1, 3, 20)]
    flat = [[(tuple(p), leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(s)[0]]
            for s in shapes]
    assert flat[0] == flat[1] == flat[2]
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes[0]))
    # embed IN·D + D, two layer norms (2D + 4D), forget and input 2D·D + D each, out D·OUT + OUT
    assert count == (IN * D + D) + 2 * D + 4 * D + 2 * (2 * D * D + D) + (D * OUT + OUT)


def test_more_steps_at_evaluation_compile_once_per_step_count_not_per_task():
    net = _net(3)
    params, _ = _random_params(net)
    traces = []

    @jax.jit
    def evaluate(params, x):  # the step counts are static: one program holds both
        traces.append(1)
        return net.apply(params, x)[0], net.apply(params, x, steps=8)[0]

    tasks = [jax.random.normal(jax.random.key(t), (N, IN)) for t in range(3)]
    outs = [evaluate(params, x) for x in tasks]
    assert len(traces) == 1
    for train_steps, eval_steps in outs:
        assert not np.allclose(train_steps, eval_steps)  # more steps compute something else
    per_count = jax.jit(net.apply, static_argnames="steps")
    for steps in (2, 5):
        for x in tasks:
            per_count(params, x, steps=steps)
    assert per_count._cache_size() == 2


def test_forget_bias_starts_at_one_and_the_head_bias_at_zero():
    net = _net(2)
    layers = layer_params(jax.jit(net.init)(jax.random.key(3)))
    np.testing.assert_array_equal(layers["forget"]["bias"], np.ones(D))
    np.testing.assert_array_equal(layers["input"]["bias"], np.zeros(D))
    np.testing.assert_array_equal(layers["out"]["bias"], np.zeros(OUT))
    assert np.abs(np.asarray(layers["forget"]["kernel"])).sum() > 0


def test_features_name_its_weight_layers_in_forward_order():
    net = _net(2)
    params = jax.eval_shape(net.init, jax.random.key(0))
    _, features = jax.eval_shape(net.apply, params, jax.ShapeDtypeStruct((N, IN), jnp.float32))
    weight_layers = {n for n, p in layer_params(params).items() if "kernel" in p} - {"out"}
    assert set(features) - {"step/1", "step/2"} == weight_layers == {"embed", "forget", "input"}
    assert all(f.shape == (N, D) for f in features.values())
    assert layer_order(net, (IN,)) == ["embed", "forget", "input", "out"]
    assert "think" in ALL_NETWORKS and "think" in ITERATIVE_NETWORKS and "think" not in NETWORKS


def test_bad_think_settings_name_the_value():
    with pytest.raises(ValueError, match="think_steps=0"):
        make_network("think", (IN,), OUT, think_steps=0)
    with pytest.raises(ValueError, match="'rational' has parameters"):
        make_network("think", (IN,), OUT, activation="rational")
    with pytest.raises(ValueError, match=r"hidden=\(\)"):
        make_network("think", (IN,), OUT, hidden=())
    net = _net(2)
    params = jax.eval_shape(net.init, jax.random.key(0))
    with pytest.raises(ValueError, match="Python int >= 1"):
        jax.eval_shape(lambda p, x: net.apply(p, x, steps=0), params,
                       jax.ShapeDtypeStruct((N, IN), jnp.float32))
    with pytest.raises(ValueError, match="unknown network 'thinker'.*think"):
        make_network("thinker", (IN,), OUT)


def test_configs_refuse_think_where_the_kind_does_not_pass_the_step_counts():
    from_preset("quickstart", network="think", think_steps=3, eval_think_steps=8)  # wired
    from_preset("cheetah-quick", network="think", hidden=(16,), eval_think_steps=8)  # wired
    from_preset("lightsout-crl", network="think", hidden=(16,), eval_think_steps=8)  # wired
    with pytest.raises(ConfigError, match="network: 'think' is not wired into dreamer runs"):
        from_preset("grid-quick", network="think")
    with pytest.raises(ConfigError, match="think_steps must be >= 1"):
        from_preset("cheetah-quick", think_steps=0)
    with pytest.raises(ConfigError, match="eval_think_steps must be >= 0"):
        from_preset("cheetah-quick", eval_think_steps=-1)


def test_classifier_evaluates_at_eval_think_steps_and_trains_at_think_steps():
    """The classifier kind passes both step counts: evaluation at --eval-think-steps changes
    eval_acc, never training (the same parameters and losses); 1 step runs too."""
    from experiments import experiment, registry

    small = dict(network="think", hidden=(16,), think_steps=2, num_tasks=2, seeds=1,
                 steps_per_task=20, log_every=10, eval_examples=50, probe_examples=16)

    def metric(table, name):
        return table[table.metric == name].sort_values(["step", "eval_task"])["value"].to_numpy()

    tables = {e: experiment.run(registry.build(registry.from_preset(
        "quickstart", **small, eval_think_steps=e)), progress=False)[0] for e in (1, 6)}
    np.testing.assert_array_equal(metric(tables[1], "train_loss"),
                                  metric(tables[6], "train_loss"))
    assert not np.array_equal(metric(tables[1], "eval_acc"), metric(tables[6], "eval_acc"))
    with pytest.raises(ConfigError, match="eval_think_steps applies to iterative networks"):
        from_preset("quickstart", eval_think_steps=3)


@pytest.mark.parametrize("agent", ["sac", "crl", "crl-discrete"])
def test_sac_and_crl_act_at_think_steps_and_evaluate_at_eval_think_steps(agent):
    """Every RL learner but Dreamer takes the think network: its training policy runs
    ``think_steps`` cell applications, its evaluation policy (``act_mode``) ``eval_think_steps``
    on the same parameters."""
    from continual.agents.crl import CRLSpec, make_crl
    from continual.agents.sac import SACSpec, make_sac
    from continual.optimizers import HParams
    from tasks.envs.base import GoalSpace

    kw = dict(network="think", hidden=(8,), think_steps=2, eval_think_steps=7)
    if agent == "sac":
        made, obs_size = make_sac(SACSpec(**kw), 4, 2), 4
        actor = lambda st: (made.networks["actor"], st.actor.params)  # noqa: E731
    else:
        goals = GoalSpace(3, (0, 1), 0.5)
        made = make_crl(CRLSpec(**kw, discrete=agent == "crl-discrete"), goals, 3)
        obs_size = 5
    state = made.init(jax.random.key(0), HParams.defaults())
    obs = 3 * jax.random.normal(jax.random.key(1), (64, obs_size))
    if agent == "crl-discrete":
        values = lambda steps: np.asarray(make_crl(  # noqa: E731
            CRLSpec(**{**kw, "think_steps": steps, "eval_think_steps": 0}, discrete=True),
            goals, 3).action_values(state, obs)).argmax(-1)
        got = lambda: np.asarray(made.act_mode(state, obs)).argmax(-1)  # noqa: E731
        assert (values(2) != values(7)).any()
        np.testing.assert_array_equal(got(), values(7))
        return
    net, params = actor(state) if agent == "sac" else (made.networks["actor"],
                                                       state.actor.params)
    raw = lambda steps: np.asarray(net.apply(params, obs, steps)[0])  # noqa: E731
    mode = np.asarray(made.act_mode(state, obs))
    want = np.tanh(raw(7)[:, :mode.shape[-1]])
    assert not np.allclose(want, np.tanh(raw(2)[:, :mode.shape[-1]]))
    np.testing.assert_allclose(mode, want, rtol=1e-5, atol=1e-5)
