"""The goal-conditioned Ant (tasks.envs.brax_goals): goal regions as task data, goals drawn
inside their region, observation = state ‖ goal, the sparse success reward, one compile for
every region (the physics part is ``slow``: Brax's Ant compiles for about 20 s on 2 cores)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.base import task_slice
from tasks.envs import brax_goals


@pytest.mark.parametrize("name", list(brax_goals.REGIONS))
def test_goals_fall_inside_their_region(name):
    region = task_slice(brax_goals.regions([name]), 0)
    goals = jax.vmap(brax_goals.sample_goal, (None, 0))(region,
                                                        jax.random.split(jax.random.key(0), 500))
    radius = np.linalg.norm(goals, axis=1)
    angle = np.mod(np.arctan2(goals[:, 1], goals[:, 0]), 2 * math.pi)
    low, high, r_low, r_high = brax_goals.REGIONS[name]
    np.testing.assert_allclose(radius, 10.0, rtol=1e-5)
    assert r_low == r_high == 10.0
    assert np.all((angle >= low - 1e-5) & (angle <= high + 1e-5))
    if name == "circle":  # the whole circle: every quadrant visited
        assert len(np.unique(np.floor(angle / (math.pi / 2)))) == 4


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
