"""The goal-conditioned Ant (tasks.envs.brax_goals): goal regions as task data, goals drawn
inside their region, observation = state ‖ goal, the sparse success reward, one compile for
every region (the physics part is ``slow``: Brax's Ant compiles for about 20 s on 2 cores)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.base import task_slice
from tasks.envs import brax_goals, pointmaze


@pytest.mark.parametrize("name", list(brax_goals.REGIONS))
def test_goals_fall_inside_their_region(name):
    region = task_slice(brax_goals.regions([name]), 0)
    goals = jax.vmap(brax_goals.sample_goal, (None, 0))(region,
                                                        jax.random.split(jax.random.key(0), 500))
    radius = np.linalg.norm(goals, axis=1)
    angle = np.mod(np.arctan2(goals[:, 1], goals[:, 0]), 2 * math.pi)
    low, high = brax_goals.REGIONS[name]
    np.testing.assert_allclose(radius, 10.0, rtol=1e-5)  # the Ant's default radius
    assert np.all((angle >= low - 1e-5) & (angle <= high + 1e-5))
    if name == "circle":  # the whole circle: every quadrant visited
        assert len(np.unique(np.floor(angle / (math.pi / 2)))) == 4


def test_reacher_goals_fill_the_annulus_of_the_arms_reach():
    region = task_slice(brax_goals.regions(["sw"], brax_goals.REACHER_RADIUS), 0)
    goals = jax.vmap(brax_goals.sample_goal, (None, 0))(region,
                                                        jax.random.split(jax.random.key(1), 500))
    radius = np.linalg.norm(goals, axis=1)
    assert radius.min() >= 0.02 - 1e-6 and radius.max() <= 0.2 + 1e-6
    assert radius.max() - radius.min() > 0.15  # spread over the annulus, not one circle
    assert np.all((goals[:, 0] <= 1e-6) & (goals[:, 1] <= 1e-6))  # the SW quadrant


@pytest.mark.slow
def test_reacher_tip_starts_near_the_stretched_arm_and_reward_is_success_within_005():
    """The state's fingertip is the forward kinematics of the two links (0.1 and 0.11 m) from
    the observed angles; the goal is the target's position; reward is 1 exactly within 0.05."""
    seq = brax_goals.reacher_goals(["circle"])
    assert (seq.observation_size, seq.action_size) == (10, 2)
    task = task_slice(seq.params, 0)
    state = jax.jit(jax.vmap(seq.reset, (None, 0)))(task, jax.random.split(jax.random.key(0), 8))
    step = jax.jit(jax.vmap(seq.step, (None, 0, 0)))
    for i in range(3):
        state = step(task, state, jnp.full((8, 2), 0.5))
        obs = np.asarray(state.obs)
        cos, sin = obs[:, 0:2], obs[:, 2:4]
        theta0, theta01 = np.arctan2(sin[:, 0], cos[:, 0]), np.arctan2(sin[:, 1], cos[:, 1])
        tip = np.stack([0.1 * np.cos(theta0) + 0.11 * np.cos(theta0 + theta01),
                        0.1 * np.sin(theta0) + 0.11 * np.sin(theta0 + theta01)], 1)
        np.testing.assert_allclose(obs[:, 6:8], tip, atol=2e-3)
        target = np.asarray(state.inner.pipeline_state.x.pos[:, 2, :2])
        np.testing.assert_allclose(obs[:, 8:], target, atol=1e-5)  # the target stays put
        np.testing.assert_array_equal(
            state.reward, (np.linalg.norm(obs[:, 6:8] - obs[:, 8:], axis=1) < 0.05)
            .astype(np.float32))


def test_unknown_regions_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid: circle, ne, nw, sw, se"):
        brax_goals.regions(["north"])


@pytest.mark.slow
def test_ant_goals_observe_state_and_goal_and_reward_success_with_one_compile():
    seq = brax_goals.ant_goals(["ne", "sw"])
    assert (seq.observation_size, seq.action_size, seq.num_tasks) == (31, 8, 2)
    assert seq.goals.state_size == 29 and seq.goals.indices == (0, 1)

    @jax.jit
    def roll(task, key):
        state = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(key, 4))
        goal0 = state.obs[:, 29:]

        def body(s, k):
            a = jax.random.uniform(k, (4, 8), minval=-1, maxval=1)
            s = jax.vmap(seq.step, (None, 0, 0))(task, s, a)
            return s, (s.obs, s.reward)

        _, (obs, reward) = jax.lax.scan(body, state, jax.random.split(key, 5))
        return goal0, obs, reward

    for t in range(2):
        goal0, obs, reward = roll(task_slice(seq.params, t), jax.random.key(t))
        np.testing.assert_array_equal(obs[:, :, 29:], np.broadcast_to(goal0, obs[:, :, 29:].shape))
        x, y = np.asarray(goal0).T
        assert np.all((x > 0) & (y > 0)) if t == 0 else np.all((x < 0) & (y < 0))
        distance = np.linalg.norm(obs[:, :, :2] - obs[:, :, 29:], axis=-1)
        np.testing.assert_array_equal(reward, (distance < 0.5).astype(np.float32))
    assert roll._cache_size() == 1


def test_maze_tasks_place_present_walls_and_sink_absent_ones():
    task = task_slice(brax_goals.maze_tasks(["u_maze"]), 0)
    z = np.asarray(task.wall_pos[:, 2]).reshape(5, 5)
    walls = np.array([[c == "#" for c in row] for row in pointmaze.MAZES["u_maze"]])
    np.testing.assert_array_equal(z > 0, walls)
    np.testing.assert_array_equal(z[~walls], brax_goals.SUNK)
    np.testing.assert_allclose(task.wall_pos[7, :2], [4 * 2 + 2, 4 * 1 + 2])  # cell (1, 2)
    np.testing.assert_allclose(task.start[:2], [6.0, 6.0])                    # R at (1, 1)
    with pytest.raises(ValueError, match="same size"):
        brax_goals.maze_tasks(["u_maze", "big_maze"])


@pytest.mark.slow
def test_an_ant_dropped_on_a_present_wall_rests_on_it_and_falls_through_an_absent_one():
    """Walls are data: the same model, a wall present (cell (0, 0), the border) holds a torso
    dropped on it 2 m up; a free cell (1, 1), whose wall is sunk, lets it fall to the floor."""
    seq = brax_goals.ant_maze(["u_maze"])
    task = task_slice(seq.params, 0)
    step = jax.jit(lambda t, s: seq.step(t, s, jnp.zeros(8)))

    def torso_height(x, y):
        t = task._replace(start=jnp.asarray([x, y, 2.8]))
        state = jax.jit(seq.reset)(t, jax.random.key(0))
        for _ in range(60):
            state = step(t, state)
        return float(state.obs[2])

    assert torso_height(2.0, 2.0) > 2.0      # on top of the 2 m wall
    assert torso_height(6.0, 6.0) < 1.0      # on the floor
