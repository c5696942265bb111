"""The trajectory memories (continual.agents.trajectory): the ring never moves stored data, the
binary search finds each episode's last stored step across the ring's wrap, CRL's relabelled
goals follow the truncated geometric law, never past the stored trajectory nor across
episodes, and hindsight relabelling (HER, future and final) rewards a relabelled goal as the env
would."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents.base import EnvStep
from continual.agents.trajectory import (TrajectorySpec, last_in_episode, make_her_memory,
                                         make_trajectory_memory)
from tasks.envs.base import GoalSpace

# A state is [time, env, episode]; the goal a state achieves is its time, so a goal tells
# which stored step it came from.
GOALS = GoalSpace(state_size=3, indices=(0,), threshold=0.5)
E, C, T, GAMMA = 3, 16, 41, 0.8


def _episode_ends(rng) -> np.ndarray:
    """[T, E] where each env's episodes end (lengths 1..9, one env with a single long one)."""
    last = rng.random((T, E)) < 0.2
    last[:, 2] = False
    last[5, 0] = last[6, 0] = True  # a one-step episode
    return last


def _filled(rng):
    memory = make_trajectory_memory(TrajectorySpec(capacity=C, batch_size=4096, min_steps=1,
                                                   discount=GAMMA), GOALS, E, 1)
    last = _episode_ends(rng)
    ids = np.vstack([np.zeros((1, E), int), np.cumsum(last, axis=0)[:-1]])  # [T, E]
    state = memory.init()
    store = jax.jit(memory.store)
    for t in range(T):
        obs = np.stack([np.full(E, t), np.arange(E), ids[t], np.zeros(E)], axis=1)  # + goal
        step = EnvStep(jnp.asarray(obs, jnp.float32), jnp.zeros((E, 1)), jnp.zeros(E),
                       jnp.ones(E), jnp.asarray(obs, jnp.float32), jnp.asarray(last[t]), ())
        state = store(state, step, jax.random.key(t), t)
    return memory, state, ids


def test_an_insert_writes_one_slot_and_moves_nothing_else():
    memory, state, _ = _filled(np.random.default_rng(0))
    step = EnvStep(jnp.full((E, 4), 99.0), jnp.ones((E, 1)), jnp.zeros(E), jnp.ones(E),
                   jnp.zeros((E, 4)), jnp.zeros(E, bool), ())
    after = memory.store(state, step, jax.random.key(0), 0)
    changed = np.flatnonzero(np.any(np.asarray(after.state != state.state), axis=(1, 2)))
    assert changed.tolist() == [int(state.pos)]
    assert int(after.pos) == (int(state.pos) + 1) % C and int(after.size) == C


def test_binary_search_finds_the_episode_end_across_the_wrap():
    rng = np.random.default_rng(1)
    search = jax.jit(last_in_episode)
    for _ in range(20):
        size, start = int(rng.integers(1, C + 1)), int(rng.integers(0, C))
        logical = np.cumsum(rng.random(size) < 0.3)            # non-decreasing ids
        episode = np.full((C, 1), -7, np.int32)                 # garbage outside the window
        episode[(start + np.arange(size)) % C, 0] = logical
        for index in range(size):
            expected = np.flatnonzero(logical == logical[index]).max()
            got = search(jnp.asarray(episode), jnp.int32(start), jnp.int32(size),
                                  jnp.int32(0), jnp.int32(index))
            assert int(got) == expected


def test_goals_stay_in_their_episode_within_the_stored_window():
    memory, state, ids = _filled(np.random.default_rng(2))
    batch = memory.sample(state, jax.random.key(3))
    t_state = np.asarray(batch.obs[:, 0]).astype(int)
    env = np.asarray(batch.obs[:, 1]).astype(int)
    t_goal = np.asarray(batch.goal[:, 0]).astype(int)
    np.testing.assert_array_equal(batch.obs[:, 3], batch.goal[:, 0])  # obs = state ‖ goal
    oldest = T - C
    assert t_state.min() >= oldest and t_goal.max() <= T - 1
    assert np.all(t_goal >= t_state)
    assert np.all(ids[t_goal, env] == ids[t_state, env]), "a goal from another episode"
    # The state itself only where the episode has no later stored step.
    later = np.array([np.any(ids[t + 1:, e] == ids[t, e]) if t + 1 < T else False
                      for t, e in zip(t_state, env)])
    assert np.all((t_goal > t_state) == later)


def test_goal_offsets_follow_the_truncated_geometric_law():
    memory, state, ids = _filled(np.random.default_rng(4))
    sample = jax.jit(memory.sample)
    deltas, horizons = [], []
    for k in range(10):
        batch = sample(state, jax.random.key(10 + k))
        t = np.asarray(batch.obs[:, 0]).astype(int)
        env = np.asarray(batch.obs[:, 1]).astype(int)
        deltas.append(np.asarray(batch.goal[:, 0]).astype(int) - t)
        horizons.append([np.sum(ids[ti + 1:, e] == ids[ti, e]) for ti, e in zip(t, env)])
    delta, horizon = np.concatenate(deltas), np.concatenate(horizons)
    # Per horizon H, P(Δ = k) = γ^(k−1)(1 − γ)/(1 − γ^H): a z-score of the pooled offsets.
    z_num, z_var = 0.0, 0.0
    for h in np.unique(horizon[horizon > 0]):
        k = np.arange(1, h + 1)
        p = GAMMA ** (k - 1) * (1 - GAMMA) / (1 - GAMMA ** h)
        mean, var = np.sum(k * p), np.sum(k * k * p) - np.sum(k * p) ** 2
        d = delta[horizon == h]
        assert d.min() >= 1 and d.max() <= h
        z_num += np.sum(d - mean)
        z_var += len(d) * var
    assert abs(z_num / np.sqrt(z_var)) < 4
    # The long episode of env 2 (H up to 15): Δ = 1 about 1 − γ of the time.
    far = horizon >= 12
    assert np.mean(delta[far] == 1) == pytest.approx(1 - GAMMA, abs=0.03)


def test_clear_empties_and_ready_waits_for_min_steps():
    memory = make_trajectory_memory(TrajectorySpec(capacity=8, batch_size=2, min_steps=3),
                                    GOALS, 2, 1)
    state = memory.init()
    step = EnvStep(jnp.zeros((2, 4)), jnp.zeros((2, 1)), jnp.zeros(2), jnp.ones(2),
                   jnp.zeros((2, 4)), jnp.zeros(2, bool), ())
    ready = []
    for t in range(4):
        ready.append(bool(memory.ready(state)))
        state = memory.store(state, step, jax.random.key(t), t)
    assert ready == [False, False, False, True]
    assert int(memory.clear(state).size) == 0


def _filled_her(strategy, relabel=0.8):
    """As :func:`_filled`, the next state of step t marked t + 0.5 and the episode's own goal
    −1 (never reached)."""
    memory = make_her_memory(TrajectorySpec(capacity=C, batch_size=4096, min_steps=1), GOALS,
                             E, 1, strategy, relabel)
    last = _episode_ends(np.random.default_rng(5))
    ids = np.vstack([np.zeros((1, E), int), np.cumsum(last, axis=0)[:-1]])
    state = memory.init()
    for t in range(T):
        obs = np.stack([np.full(E, t), np.arange(E), ids[t], np.full(E, -1.0)], axis=1)
        nxt = obs + np.array([0.5, 0, 0, 0])
        step = EnvStep(jnp.asarray(obs, jnp.float32), jnp.zeros((E, 1)), jnp.zeros(E),
                       jnp.full(E, 0.5), jnp.asarray(nxt, jnp.float32),
                       jnp.asarray(last[t]), ())
        state = memory.store(state, step, jax.random.key(t), t)
    return memory, state, ids


@pytest.mark.parametrize("strategy", ["future", "final"])
def test_her_relabels_with_a_later_state_of_the_same_episode_and_rewards_it(strategy):
    memory, state, ids = _filled_her(strategy)
    batch = jax.jit(memory.sample)(state, jax.random.key(1))
    obs, nxt = np.asarray(batch.obs), np.asarray(batch.next_obs)
    t, env, goal = obs[:, 0].astype(int), obs[:, 1].astype(int), obs[:, 3]
    np.testing.assert_array_equal(nxt[:, 3], goal)                # one goal for obs and next
    np.testing.assert_array_equal(nxt[:, 0], t + 0.5)
    np.testing.assert_array_equal(batch.discount, 0.5)             # stored as given
    relabelled = goal != -1
    assert np.mean(relabelled) == pytest.approx(0.8, abs=0.03)
    source = (goal[relabelled] - 0.5).astype(int)                  # the step whose next state
    assert np.all(source >= t[relabelled])
    assert np.all(ids[source, env[relabelled]] == ids[t[relabelled], env[relabelled]])
    last = np.array([np.flatnonzero(ids[:, e] == ids[ti, e]).max() for ti, e in zip(t, env)])
    assert np.all(source <= last[relabelled])
    if strategy == "final":
        np.testing.assert_array_equal(source, last[relabelled])
    else:  # uniform over this step .. the episode's last: mean offset H/2
        h = (last - t)[relabelled]
        offset = source - t[relabelled]
        z = np.sum(offset - h / 2) / np.sqrt(np.sum(((h + 1) ** 2 - 1) / 12))
        assert abs(z) < 4
    # The env's sparse reward for the goal: 1 exactly where the goal is this step's next state.
    np.testing.assert_array_equal(batch.reward, (np.abs(t + 0.5 - goal) < 0.5).astype(float))


def test_her_without_relabelling_keeps_the_episode_goal():
    memory, state, _ = _filled_her("future", relabel=0.0)
    batch = memory.sample(state, jax.random.key(2))
    np.testing.assert_array_equal(batch.obs[:, 3], -1.0)
    np.testing.assert_array_equal(batch.reward, 0.0)
