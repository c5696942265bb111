"""The multi-stage Reacher (tasks.envs.brax_stages): reset into a task's start stage, the stage
and its clock in the observation, success = reached and settled, the paper's success bonus,
the per-stage time limit and the last stage terminating. One compiled step serves every test
(the arm is placed by inverse kinematics on a target, or away from every target); those
physics tests are ``slow`` (the Reacher compiles for about 15 s), the config tests are not."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State

from tasks.base import task_slice
from tasks.envs import brax_stages

STAGE_STEPS = 6


@pytest.fixture(scope="module")
def seq():
    return brax_stages.reacher_stages((0, 3), stages=4, stage_steps=STAGE_STEPS)


@pytest.fixture(scope="module")
def step(seq):
    return jax.jit(seq.step)


def _elbow_angles(x, y):
    """Inverse kinematics of the two links (0.1, 0.11 m): joint angles with the tip at x, y."""
    l1, l2 = 0.1, 0.11
    elbow = math.acos((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2))
    shoulder = math.atan2(y, x) - math.atan2(l2 * math.sin(elbow), l1 + l2 * math.cos(elbow))
    return shoulder, elbow


def _state_at(seq, q01, stage, stage_step, qd01=(0.0, 0.0)):
    """A StageState with the arm at joint angles ``q01`` and velocities ``qd01``."""
    env = seq.env
    q = jnp.asarray([*q01, *brax_stages.TARGETS[0]], jnp.float32)
    qd = jnp.asarray([*qd01, 0.0, 0.0], jnp.float32)
    ps = env.pipeline_init(q, qd)
    zero = jnp.zeros(())
    inner = State(ps, env._get_obs(ps), zero, zero, {"reward_dist": zero, "reward_ctrl": zero})
    return brax_stages.StageState(inner, jnp.zeros(seq.observation_size), zero, zero,
                                  jnp.asarray(stage, jnp.int32),
                                  jnp.asarray(stage_step, jnp.int32))


@pytest.mark.slow  # Brax's Reacher compiles for about 15 s
def test_reset_starts_in_the_tasks_stage_with_its_clock_at_zero(seq):
    assert (seq.num_tasks, seq.observation_size, seq.action_size) == (2, 8 + 4 + 1, 2)
    reset = jax.jit(seq.reset)
    for t, start in enumerate((0, 3)):
        state = reset(task_slice(seq.params, t), jax.random.key(t))
        obs = np.asarray(state.obs)
        np.testing.assert_array_equal(obs[8:12], np.eye(4)[start])
        assert obs[12] == 0.0 and int(state.stage) == start and float(state.done) == 0.0
        # Brax's stretched start pose (±0.1 rad noise): the tip near (0.21, 0)
        assert np.linalg.norm(obs[6:8] - [0.21, 0.0]) < 0.03


@pytest.mark.slow  # Brax's Reacher compiles for about 15 s
@pytest.mark.parametrize("stage", [0, 2])
def test_settling_on_the_stage_target_solves_it_with_the_bonus(seq, step, stage):
    target = brax_stages.TARGETS[stage]
    state = _state_at(seq, _elbow_angles(*target), stage, stage_step=2)
    nxt = step(task_slice(seq.params, 0), state, jnp.zeros(2))
    obs = np.asarray(nxt.obs)
    distance = np.linalg.norm(obs[6:8] - np.asarray(target))
    assert distance < brax_stages.THRESHOLD
    shaped = 1.0 - np.tanh(distance / brax_stages.SHAPING_SCALE)
    # 1.5 · r_t · (T − t) with t = 3 steps into the stage
    np.testing.assert_allclose(float(nxt.reward), shaped * (1 + 1.5 * (STAGE_STEPS - 3)),
                               rtol=1e-4)
    np.testing.assert_array_equal(obs[8:12], np.eye(4)[stage + 1])  # next stage, clock at 0
    assert obs[12] == 0.0 and int(nxt.stage_step) == 0 and float(nxt.done) == 0.0


@pytest.mark.slow  # Brax's Reacher compiles for about 15 s
def test_passing_through_the_target_fast_does_not_solve_it(seq, step):
    state = _state_at(seq, _elbow_angles(*brax_stages.TARGETS[0]), 0, 0, qd01=(4.0, 0.0))
    nxt = step(task_slice(seq.params, 0), state, jnp.zeros(2))
    assert int(nxt.stage) == 0 and float(nxt.done) == 0.0
    assert float(nxt.reward) < 1.0  # shaping only, no bonus
    np.testing.assert_allclose(float(nxt.obs[12]), 1 / STAGE_STEPS, rtol=1e-6)


@pytest.mark.slow  # Brax's Reacher compiles for about 15 s
def test_solving_the_last_stage_ends_the_episode(seq, step):
    state = _state_at(seq, _elbow_angles(*brax_stages.TARGETS[3]), 3, 0)
    nxt = step(task_slice(seq.params, 0), state, jnp.zeros(2))
    assert float(nxt.done) == 1.0 and int(nxt.stage) == 3


@pytest.mark.slow  # Brax's Reacher compiles for about 15 s
def test_an_unsolved_stage_ends_the_episode_at_its_time_limit(seq, step):
    state = _state_at(seq, (0.0, 0.0), 1, 0)  # stretched along +x: far from every target
    task = task_slice(seq.params, 0)
    dones = []
    for _ in range(STAGE_STEPS):
        state = step(task, state, jnp.zeros(2))
        dones.append(float(state.done))
    assert dones == [0.0] * (STAGE_STEPS - 1) + [1.0]
    assert int(state.stage) == 1
    # far from the target (≥ 0.05 m): the shaping alone, below 1 − tanh(0.5)
    assert 0.0 < float(state.reward) < 1 - math.tanh(0.5)


def test_bad_stage_settings_list_the_valid_range():
    with pytest.raises(ValueError, match=r"0\.\.3"):
        brax_stages.reacher_stages((0, 4), stages=4)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        brax_stages.reacher_stages((0,), stages=5)


@pytest.mark.parametrize("overrides, message", [
    (dict(stage_starts=(0, 1.5)), r"an integer in 0\.\.3; got 0, 1\.5"),
    (dict(stage_starts=(0, 4)), r"0\.\.3; got 0, 4"),
    (dict(episode_length=100), r"at least stages × stage_steps = 160"),
    (dict(env="halfcheetah"), r"stages exists for reacher"),
])
def test_stage_config_errors_say_what_is_valid(overrides, message):
    from experiments import registry
    from experiments.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        registry.from_preset("reacher-stages-quick", **overrides).validate()


def test_stage_config_builds_one_task_per_start_stage():
    from experiments import registry
    from experiments.kinds import rl

    cfg = registry.from_preset("reacher-stages-quick", stage_starts=(0, 1, 3), stages=4)
    cfg.validate()
    seq = rl.env_sequence(cfg)
    assert cfg.num_tasks == seq.num_tasks == 3
    np.testing.assert_array_equal(seq.params.start_stage, [0, 1, 3])
    assert "4 stages, starting in 0, 1, 3" in cfg.describe()
