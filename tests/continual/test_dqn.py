"""DQN (continual.agents.dqn) and its kind (experiments.kinds.dqn): the double-DQN target by
hand, ε-greedy probabilities, test-time think steps, HER rewards on Lights Out, resets, and the
config errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from continual.agents.base import EnvStep
from continual.agents.dqn import DQNSpec, goal_rewards, layer_orders, make_dqn, make_reset
from continual.agents.sac import Transition
from continual.agents.trajectory import TrajectorySpec, make_her_memory
from continual.interventions import InterventionSpec
from continual.optimizers import HParams
from experiments.config import ConfigError
from experiments.registry import from_preset
from plasticity.networks import layer_params
from tasks.envs import lights_out

OBS, A = 6, 4


@functools.lru_cache(maxsize=None)
def _dqn(**kw):
    """The DQN record with its functions jitted (one compile per spec, shared by tests)."""
    spec = dict(hidden=(16,), **kw)
    dqn = make_dqn(DQNSpec(**spec), OBS, A)
    jitted = {name: jax.jit(getattr(dqn, name)) for name in
              ("init", "act", "act_mode", "update", "td_loss", "q_values", "features")}
    return dqn._replace(**jitted, greedy=jax.jit(dqn.greedy, static_argnums=2))


def _perturbed(dqn):
    """A state whose target network differs from the online one."""
    state = dqn.init(jax.random.key(0), HParams.defaults())
    target = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape),
                          state.target)
    return state._replace(target=target)


def _fixed_batch():
    rng = np.random.default_rng(0)
    n = 5
    action = np.eye(A, dtype=np.float32)[[0, 3, 1, 2, 3]]
    return Transition(jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32), jnp.asarray(action),
                      jnp.asarray([1.0, -0.1, 0.9, 0.0, 2.0], jnp.float32),
                      jnp.asarray([1.0, 1.0, 0.0, 1.0, 1.0], jnp.float32),  # one terminal
                      jnp.asarray(rng.normal(size=(n, OBS)), jnp.float32))


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_td_target_matches_double_dqn_by_hand(double, loss):
    gamma = 0.9
    dqn = _dqn(double=double, td_loss=loss, discount=gamma)
    state, batch = _perturbed(dqn), _fixed_batch()
    q_online = lambda x: np.asarray(dqn.network.apply(state.q.params, x)[0])  # noqa: E731
    q_target = np.asarray(dqn.network.apply(state.target, batch.next_obs)[0])
    q_next = q_online(batch.next_obs)
    rows = np.arange(5)
    if double:  # the online network picks, the target values
        next_value = q_target[rows, q_next.argmax(-1)]
    else:
        next_value = q_target.max(-1)
    y = np.asarray(batch.reward) + gamma * np.asarray(batch.discount) * next_value
    assert y[2] == pytest.approx(0.9)  # the terminal transition does not bootstrap
    error = q_online(batch.obs)[rows, np.asarray(batch.action).argmax(-1)] - y
    want = np.mean(0.5 * error ** 2 if loss == "mse" else
                   np.where(np.abs(error) <= 1, 0.5 * error ** 2, np.abs(error) - 0.5))
    np.testing.assert_allclose(float(dqn.td_loss(state, batch)), want, rtol=1e-5, atol=1e-6)


def test_double_and_max_targets_differ_when_the_networks_disagree():
    state, batch = _perturbed(_dqn(td_loss="mse")), _fixed_batch()
    assert float(_dqn(td_loss="mse").td_loss(state, batch)) != pytest.approx(
        float(_dqn(td_loss="mse", double=False).td_loss(state, batch)))


def test_update_lowers_the_td_loss_and_moves_the_target_by_polyak():
    dqn = _dqn(tau=0.1)
    state, batch = _perturbed(dqn), _fixed_batch()
    hp = HParams.defaults(learning_rate=1e-2)
    new = state
    for i in range(20):
        new, info = dqn.update(new, batch, hp, jax.random.key(i))
    assert float(dqn.td_loss(new._replace(target=state.target), batch)) < float(
        dqn.td_loss(state, batch))
    one, _ = dqn.update(state, batch, hp, jax.random.key(0))
    want = jax.tree.map(lambda t, p: 0.9 * t + 0.1 * p, state.target, one.q.params)
    for a, b in zip(jax.tree.leaves(one.target), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(one.step) == 1 and {"critic_loss", "q_mean", "epsilon"} <= set(info)


def test_periodic_target_copies_every_period():
    dqn = _dqn(target_update="periodic", target_period=3)
    state, batch = _perturbed(dqn), _fixed_batch()
    hp = HParams.defaults()
    for i in range(3):
        previous = state
        state, _ = dqn.update(state, batch, hp, jax.random.key(i))
        leaf, want = jax.tree.leaves(state.target)[0], jax.tree.leaves(
            (state.q.params if i == 2 else previous.target))[0]
        np.testing.assert_array_equal(leaf, want)


def test_epsilon_greedy_takes_the_greedy_action_with_prob_one_minus_eps_plus_eps_over_a():
    eps = 0.3
    dqn = _dqn(epsilon_end=eps, epsilon_decay=0)
    state = dqn.init(jax.random.key(0), HParams.defaults())
    n = 20_000
    obs = jax.random.normal(jax.random.key(1), (n, OBS))
    action, logp = dqn.act(state, obs, jax.random.key(2))
    assert action.shape == (n, A) and np.all(np.asarray(action).sum(-1) == 1)
    greedy = np.asarray(action).argmax(-1) == np.asarray(dqn.q_values(state, obs)).argmax(-1)
    p = 1 - eps + eps / A
    assert abs(greedy.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(np.exp(np.asarray(logp)), np.where(greedy, p, eps / A),
                               rtol=1e-5)
    mode = np.asarray(dqn.act_mode(state, obs)).argmax(-1)
    np.testing.assert_array_equal(mode, np.asarray(dqn.q_values(state, obs)).argmax(-1))


def test_epsilon_decays_linearly_over_updates():
    dqn = make_dqn(DQNSpec(hidden=(4,), epsilon_start=1.0, epsilon_end=0.1,
                           epsilon_decay=100), OBS, A)
    got = [float(dqn.epsilon(jnp.asarray(u))) for u in (0, 50, 100, 1000)]
    np.testing.assert_allclose(got, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def test_think_acts_at_think_steps_and_evaluates_at_eval_think_steps():
    dqn = _dqn(network="think", think_steps=2, eval_think_steps=7, epsilon_end=0.0,
               epsilon_decay=0)
    state = dqn.init(jax.random.key(0), HParams.defaults())
    obs = jax.random.normal(jax.random.key(1), (512, OBS)) * 3
    at = lambda s: np.asarray(dqn.network.apply(state.q.params, obs, s)[0]).argmax(-1)  # noqa
    assert (at(2) != at(7)).any()   # the step count changes the decision somewhere
    np.testing.assert_array_equal(np.asarray(dqn.act_mode(state, obs)).argmax(-1), at(7))
    np.testing.assert_array_equal(np.asarray(dqn.act(state, obs, jax.random.key(2))[0])
                                  .argmax(-1), at(2))
    np.testing.assert_array_equal(np.asarray(dqn.greedy(state, obs, 4)).argmax(-1), at(4))


def test_her_rewards_on_lights_out_are_the_envs_for_the_batch_goal():
    seq = lights_out.lights_out_sequence(["3x3:1-3"])
    penalty, envs, steps = seq.env.step_penalty, 8, 24
    her = make_her_memory(TrajectorySpec(capacity=32, batch_size=512, min_steps=1), seq.goals,
                          envs, seq.action_size, "future", relabel=0.8)
    memory = goal_rewards(her, step_penalty=penalty, terminal_on_success=True)
    task = jax.tree.map(lambda a: a[0], seq.params)
    reset = jax.vmap(seq.reset, in_axes=(None, 0))
    step = jax.vmap(seq.step, in_axes=(None, 0, 0))

    @jax.jit
    def fill(key):
        env = reset(task, jax.random.split(key, envs))

        def body(c, k):
            m, env, t = c
            action = jax.nn.one_hot(jax.random.randint(k, (envs,), 0, 9), 9)
            nxt = step(task, env, action)
            last = (nxt.done > 0) | (t + 1 >= 6)
            m = memory.store(m, EnvStep(env.obs, action, nxt.reward, 1 - nxt.done, nxt.obs,
                                        last, ()), k, 0)
            env = jax.tree.map(lambda a, b: jnp.where(
                last.reshape(last.shape + (1,) * (a.ndim - 1)), a, b),
                reset(task, jax.random.split(k, envs)), nxt)
            return (m, env, jnp.where(last, 0, t + 1)), None
        return jax.lax.scan(body, (memory.init(), env, jnp.zeros(envs, jnp.int32)),
                            jax.random.split(key, steps))[0][0]

    batch = jax.jit(memory.sample)(fill(jax.random.key(0)), jax.random.key(1))
    next_obs = np.asarray(batch.next_obs)
    success = np.all(next_obs[:, :9] == next_obs[:, 9:], axis=-1).astype(np.float32)
    assert 0.2 < success.mean() < 1.0  # relabelled goals reached and not
    np.testing.assert_allclose(np.asarray(batch.reward), success - penalty, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(batch.discount), 1.0 - success)
    # The env's own reward for these goals (its step is the ground truth).
    board = next_obs[:, :9]
    np.testing.assert_allclose(np.asarray(batch.reward),
                               np.all(board == next_obs[:, 9:], -1) - penalty, atol=1e-6)


@pytest.mark.parametrize("kind", ["full", "head"])
def test_resets_reach_the_network_and_its_target_follows(kind):
    dqn = make_dqn(DQNSpec(hidden=(8, 8)), OBS, A)
    state = _perturbed(dqn)
    reset = make_reset(InterventionSpec(kind, 0, 1), dqn, layer_orders(dqn, OBS))
    obs = jax.random.normal(jax.random.key(3), (16, OBS))
    new = reset(state, obs, HParams.defaults(), jax.random.key(9))
    before, after = layer_params(state.q.params), layer_params(new.q.params)
    target = layer_params(new.target)
    assert not np.allclose(before["out"]["kernel"], after["out"]["kernel"])
    np.testing.assert_array_equal(target["out"]["kernel"], after["out"]["kernel"])
    if kind == "head":  # the hidden layers and their target stay
        np.testing.assert_array_equal(before["hidden/0"]["kernel"], after["hidden/0"]["kernel"])
        np.testing.assert_array_equal(layer_params(state.target)["hidden/0"]["kernel"],
                                      target["hidden/0"]["kernel"])


def test_huber_is_optax_with_delta_one():
    x = jnp.asarray([-3.0, -0.5, 0.2, 2.0])
    np.testing.assert_allclose(optax.huber_loss(x, delta=1.0),
                               [2.5, 0.125, 0.02, 1.5], rtol=1e-6)


@pytest.mark.parametrize("overrides, words", [
    (dict(env="halfcheetah"), ["dqn takes discrete actions", "grid, lightsout"]),
    (dict(env="grid"), ["her: grid is not goal-conditioned", "--her none"]),
    (dict(td_loss="l1"), ["td_loss: unknown value 'l1'", "huber, mse"]),
    (dict(target_update="hard"), ["target_update: unknown value 'hard'", "polyak, periodic"]),
    (dict(epsilon_end=1.5), ["epsilon_end must lie in [0, 1]"]),
    (dict(eval_think_steps=9), ["eval_think_steps applies to iterative networks"]),
    (dict(her_relabel=2.0), ["her_relabel must lie in [0, 1]"]),
    (dict(think_sweep=(5,)), ["think_sweep applies to iterative networks"]),
    (dict(env="boxes", box_tasks=("exact:nw-nw",)), ["box_tasks:", "two different quarters"]),
    (dict(env="boxes", box_tasks=("exact:train",), boxes=5), ["do not fit a quarter"]),
    (dict(target_period=0), ["target_period must be >= 1"]),
    (dict(replay_sampling="reward"), ["her: its trajectory replay is a FIFO ring"]),
])
def test_dqn_config_errors_name_the_value(overrides, words):
    with pytest.raises(ConfigError) as err:
        from_preset("lightsout-dqn", **overrides)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_presets_validate_and_think_is_wired():
    assert from_preset("lightsout-dqn").her == "future"
    cfg = from_preset("lightsout-think", eval_think_steps=20)
    assert cfg.network == "think" and cfg.hidden == (64,) and cfg.think_steps == 5
    assert from_preset("lightsout-dqn", env="grid", her="none").discrete_env
    boxes = from_preset("boxes-dqn")
    assert boxes.goal_conditioned and boxes.discrete_env and boxes.num_tasks == 2
    with pytest.raises(ConfigError, match="env: boxes has discrete actions"):
        from_preset("cheetah-quick", env="boxes")


@pytest.mark.slow  # one compile of the whole loop (~30 s)
def test_lightsout_dqn_runs_and_summarises_the_untrained_held_out_goals():
    from experiments import experiment, registry
    cfg = from_preset("lightsout-think", env_steps_per_task=640, log_every=320, seeds=2,
                      min_replay=256, eval_envs=16, metrics="dormant,srank",
                      think_sweep=(1, 8))
    table, summary, _ = experiment.run(registry.build(cfg), progress=False)
    assert {"eval_success", "critic_loss", "q_bias", "td_error_train", "eval_success_think1",
            "eval_success_think8"} <= set(table["metric"])
    swept = table[table["metric"] == "eval_success_think8"]
    assert sorted(swept["eval_task"].unique()) == [0, 1] and swept["value"].between(0, 1).all()
    assert sorted(table.loc[table["metric"] == "eval_success", "eval_task"].unique()) == [0, 1]
    assert "untrained_end" in summary and np.isfinite(summary["success_avg"]).all()
    assert any(str(v).startswith("critic/") for v in table["layer"].dropna().unique())
