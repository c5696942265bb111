"""Lights Out in JAX: a press toggles the cell and its four neighbours (hand-worked boards), two
presses of a cell cancel, a goal of k distinct presses is reached by pressing exactly those cells
in any order (reward and termination on success), the paper's train and eval press ranges are
disjoint, padded boards behave as their own size, every task of a sequence runs under one
compilation, the RL loop runs it unchanged and configs name their errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from continual.agents import RLSpec, make_rl_train
from continual.runner import execute, run_keys
from experiments.config import ConfigError
from experiments.experiment import hparams_of
from experiments.registry import from_preset
from tasks.base import task_slice
from tasks.envs import lights_out as L
from tasks.schedule import parse as parse_schedule
from toy_rl import random_agent

TASK_3 = L.LightsOutTask(3, 3, 1, 8)
B, S = 32, 9  # envs and steps of every rollout of the file (one compilation)


def board(rows):
    """A board from strings of 0/1, row-major."""
    return jnp.asarray([int(c) for r in rows for c in r], jnp.float32)


def onehot(cell, cells=9):
    return jax.nn.one_hot(cell, cells)


@pytest.fixture(scope="module")
def seq():
    """3×3 train and eval goals and a 2×2 board padded into the 3×3 store, with a jitted
    rollout (traced task index) and a count of its traces."""
    s = L.lights_out_sequence(["3x3:train", "3x3:eval", "2x2:1-3"])
    traces = [0]

    @jax.jit
    def rollout(t, keys, actions):  # keys [B], actions [B, S] cells
        traces[0] += 1
        task = task_slice(s.params, t)

        def one(key, acts):
            def body(state, a):
                state = s.step(task, state, onehot(a, s.action_size))
                return state, state
            first = s.reset(task, key)
            return first, jax.lax.scan(body, first, acts)[1]
        return jax.vmap(one)(keys, actions)
    return s, rollout, traces


@pytest.mark.parametrize("cell, lit", [
    (0, ["110", "100", "000"]),   # corner: itself, right, below
    (2, ["011", "001", "000"]),   # corner
    (8, ["000", "001", "011"]),   # corner
    (1, ["111", "010", "000"]),   # top edge: three in its row, one below
    (3, ["100", "110", "100"]),   # left edge
    (5, ["001", "011", "001"]),   # right edge
    (4, ["010", "111", "010"]),   # centre: the plus
])
def test_a_press_toggles_the_cell_and_its_four_neighbours(cell, lit):
    off = board(["000", "000", "000"])
    np.testing.assert_array_equal(L.press(TASK_3, off, cell, (3, 3)), board(lit))
    # On a lit board the same cells flip (on → off, off → on).
    start = board(["101", "011", "110"])
    expected = np.abs(np.asarray(start) - np.asarray(board(lit)))
    np.testing.assert_array_equal(L.press(TASK_3, start, cell, (3, 3)), expected)


def test_a_press_on_a_non_square_board_and_on_padding():
    # 2×3 board stored in a 3×4 store: toggles stay on the task's board, padding presses are
    # no-ops.
    task, shape = L.LightsOutTask(2, 3, 1, 3), (3, 4)
    off = jnp.zeros(12)
    grid = lambda b: np.asarray(b).reshape(3, 4)  # noqa: E731
    np.testing.assert_array_equal(grid(L.press(task, off, 5, shape)),   # (1, 1): the plus,
                                  [[0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])  # row 2 cut off
    np.testing.assert_array_equal(grid(L.press(task, off, 2, shape)),   # (0, 2): col 3 cut off
                                  [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    for padding in (3, 7, 8, 11):
        np.testing.assert_array_equal(L.press(task, off, padding, shape), off)


def test_pressing_a_cell_twice_is_the_identity():
    boards = jax.random.bernoulli(jax.random.key(0), 0.5, (5, 9)).astype(jnp.float32)
    twice = jax.jit(jax.vmap(jax.vmap(
        lambda b, c: L.press(TASK_3, L.press(TASK_3, b, c, (3, 3)), c, (3, 3)),
        (None, 0)), (0, None)))
    np.testing.assert_array_equal(twice(boards, jnp.arange(9)),
                                  np.broadcast_to(np.asarray(boards)[:, None], (5, 9, 9)))


def test_the_paper_splits_are_disjoint_and_cover_one_to_mn_minus_one():
    assert L.paper_split(3, 3, "train") == (1, 3) and L.paper_split(3, 3, "eval") == (4, 8)
    for rows, cols in [(2, 2), (3, 3), (3, 4), (4, 4), (5, 5)]:
        (a, b), (c, d) = (L.paper_split(rows, cols, s) for s in ("train", "eval"))
        train, held_out = set(range(a, b + 1)), set(range(c, d + 1))
        assert not train & held_out
        assert train | held_out == set(range(1, rows * cols))
        assert max(train) < (rows * cols) // 2 <= min(held_out)
    with pytest.raises(ValueError, match="a 1x2 board has no train presses"):
        L.paper_split(1, 2, "train")


def test_goals_are_k_distinct_presses_in_each_task_range(seq):
    s, rollout, _ = seq
    keys = jax.random.split(jax.random.key(1), B)
    for t, (low, high) in enumerate([(1, 3), (4, 8), (1, 3)]):
        first = rollout(t, keys, jnp.zeros((B, S), int))[0]
        k = np.asarray(first.remaining.sum(-1))
        assert ((k >= low) & (k <= high)).all(), (t, k)
        assert set(k) == set(range(low, high + 1))  # every count is drawn
        board, goal = np.asarray(first.obs[:, :9]), np.asarray(first.obs[:, 9:])
        assert (board != goal).any(axis=1).all()     # never solved at the start
    padded = rollout(2, keys, jnp.zeros((B, S), int))[0]  # the 2×2 task: padding stays off
    outside = np.ones((3, 3), bool)
    outside[:2, :2] = False
    for leaf in (padded.obs[:, :9], padded.obs[:, 9:], padded.remaining):
        assert (np.asarray(leaf).reshape(-1, 3, 3)[:, outside] == 0).all()


def test_pressing_exactly_the_goal_presses_in_any_order_solves_it(seq):
    s, rollout, traces = seq
    keys = jax.random.split(jax.random.key(2), B)
    rng = np.random.default_rng(0)
    for t in range(3):
        first = rollout(t, keys, jnp.zeros((B, S), int))[0]
        actions, lengths = np.zeros((B, S), int), []
        for e in range(B):
            cells = rng.permutation(np.nonzero(np.asarray(first.remaining[e]))[0])
            actions[e, :len(cells)] = cells
            lengths.append(len(cells))
        states = jax.tree.map(np.asarray, rollout(t, keys, jnp.asarray(actions))[1])
        for e, n in enumerate(lengths):
            # 3×3 is invertible over GF(2): no earlier board is the goal; the 2×2 task is too.
            np.testing.assert_array_equal(states.done[e, :n], [0.0] * (n - 1) + [1.0])
            np.testing.assert_allclose(states.reward[e, :n], [-0.1] * (n - 1) + [0.9])
            np.testing.assert_array_equal(states.remaining[e, n - 1], 0.0)
        distance = np.asarray(s.goals.distance(jnp.asarray(states.obs)))  # [B, S]
        for e, n in enumerate(lengths):
            assert distance[e, n - 1] < s.goals.threshold <= distance[e, :n - 1].min(initial=1)
    assert traces[0] == 1  # three tasks (one padded), one compilation


def test_one_compilation_for_every_task_of_a_sequence():
    s = L.lights_out_sequence(["3x3:1", "3x3:2-5", "4x4:eval", "2x3:train"])
    assert s.env.shape == (4, 4) and s.observation_size == 32 and s.action_size == 16

    @jax.jit
    def rollout(task, key):
        state = s.reset(task, key)
        return jax.lax.fori_loop(0, 6, lambda i, st: s.step(task, st, onehot(i, 16)), state)

    tasks = [task_slice(s.params, t) for t in range(4)]
    keys = list(jax.random.split(jax.random.key(0), 4))
    rollout(tasks[0], keys[0])
    with jax.no_tracing(True):
        for task, key in zip(tasks[1:], keys[1:]):
            rollout(task, key)


def test_the_rl_loop_runs_lights_out():
    s = L.lights_out_sequence(["3x3:train", "3x3:eval"])
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=2, episode_length=6, eval_envs=2,
                  eval_length=6, probe_examples=2)
    train = make_rl_train(spec, random_agent(s.observation_size, s.action_size, 2), s)
    _, logs = execute(train, run_keys([0]), hparams_of(pd.DataFrame({"seed": [0]})), (),
                      s.params, parse_schedule("sequential", 2, 2), mode="sweep")
    returns = np.asarray(logs["eval_return"])
    assert returns.shape == (1, 4, 2) and "eval_success" in logs
    # A first episode of ≤ 6 steps: −0.1 per unsolved step, +0.9 on the solving one.
    assert ((returns >= -0.6 - 1e-5) & (returns <= 0.9 + 1e-5)).all()


@pytest.mark.parametrize("spec, words", [
    ("3x3", "MxN:train"), ("3x3:hard", "MxN:train"), ("3x3:0", "1 <= low <= high <= 9"),
    ("2x2:3-9", "got 3-9"), ("1x1:train", "no train presses"),
])
def test_bad_task_specs_say_what_is_valid(spec, words):
    with pytest.raises(ValueError, match=words):
        L.parse_task(spec)


def test_configs_wire_lights_out_and_name_their_errors():
    with pytest.raises(ConfigError, match="lightsout has discrete actions.*sac agent"):
        from_preset("cheetah-quick", env="lightsout")
    with pytest.raises(ConfigError, match="lights_tasks: bad Lights Out task '3x3:hard'"):
        from_preset("grid-quick", env="lightsout", lights_tasks=("3x3:hard",))
    cfg = from_preset("grid-quick", env="lightsout", lights_tasks=("3x3:train", "4x4:eval"))
    assert cfg.num_tasks == 2 and cfg.goal_conditioned and cfg.discrete_env
    assert "boards 3x3:train, 4x4:eval" in cfg.describe()
    from experiments.kinds import rl
    s = rl.env_sequence(cfg)
    assert s.name == "lightsout" and s.env.shape == (4, 4) and s.env.step_penalty == 0.1


@pytest.mark.parametrize("fresh", [True, False])
def test_every_episode_restarts_from_a_fresh_puzzle(fresh):
    """Lights Out sets fresh_resets: where an episode ends (here every step: episodes of one
    step) the env restarts from a new board and goal; without it, from its one reset state."""
    from continual.loop import schedule_entry
    from continual.optimizers import HParams

    s = L.lights_out_sequence(["3x3:train"])
    assert s.fresh_resets
    s = s._replace(fresh_resets=fresh)
    spec = RLSpec(num_envs=8, steps_per_task=3, log_every=3, episode_length=1, eval_envs=2,
                  eval_length=1, probe_examples=2)
    train = make_rl_train(spec, random_agent(s.observation_size, s.action_size, 2), s)
    hp = HParams.defaults()
    carry, _ = jax.jit(train.init)(jax.random.key(0), hp, (), s.params)
    entry = jax.tree.map(jnp.asarray, schedule_entry(parse_schedule("sequential", 1, 1), 0)
                         ._replace(switch=np.bool_(False)))
    after, _ = jax.jit(train.run_interval)(carry, entry, hp, (), s.params)
    same = np.all(np.asarray(after.env.obs) == np.asarray(carry.first.obs), axis=1)
    assert same.all() != fresh   # fresh: new puzzles (8 random 3×3 boards never all repeat)
