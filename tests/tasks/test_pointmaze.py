"""The goal-conditioned point-mass maze: cell maps parse, a body cannot pass a wall or leave the
grid, goals come from the goal cells, rewards are the success signal (or the dense distance),
every layout of a sequence runs in one compilation, and the RL loop runs it unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from continual.agents import RLSpec, make_rl_train
from continual.runner import execute, run_keys
from experiments.experiment import hparams_of
from tasks.base import task_slice
from tasks.envs import pointmaze
from tasks.schedule import parse as parse_schedule
from toy_rl import random_agent


def test_cell_maps_parse_and_bad_maps_are_clear_errors():
    layout = pointmaze.parse(pointmaze.MAZES["u_maze"])
    assert layout.walls.shape == (5, 5) and float(layout.walls[2, 1]) == 1.0
    assert float(layout.starts[1, 1]) == 1.0 and float(layout.goals[3, 1]) == 1.0
    with pytest.raises(ValueError, match="square"):
        pointmaze.parse(["##", "#"])
    with pytest.raises(ValueError, match=r"unknown maze cells \['x'\]"):
        pointmaze.parse(["#x", "RG"])
    with pytest.raises(ValueError, match="start cell R"):
        pointmaze.parse(["##", "#G"])
    with pytest.raises(ValueError, match="u_maze, u_maze_flipped"):
        pointmaze.maze_sequence(["nosuch"])
    with pytest.raises(ValueError, match="same size"):
        pointmaze.maze_sequence(["u_maze", "big_maze"])


def _push(walls, start, action, steps=40, step_size=0.25):
    def body(position, _):
        position = pointmaze.maze_step(walls, position, jnp.asarray(action), step_size)
        return position, position
    return np.asarray(jax.lax.scan(body, jnp.asarray(start), None, length=steps)[1])


def test_a_wall_stops_the_body_and_a_gap_lets_it_through():
    walls = pointmaze.parse(pointmaze.MAZES["u_maze"]).walls
    down = _push(walls, [1.5, 1.5], [0.0, 1.0])  # row 2 under column 1 is a wall
    assert down[:, 1].max() < 2.0 and down[-1, 1] > 1.99
    right = _push(walls, [1.5, 1.5], [1.0, 0.0])  # along row 1 to the outer wall
    assert right[:, 0].max() < 4.0 and right[-1, 0] > 3.99
    through = _push(walls, [3.5, 1.5], [0.0, 1.0])  # column 3 has the gap
    assert through[-1, 1] > 3.5


def test_random_walks_never_enter_a_wall_or_leave_the_grid():
    layout = pointmaze.parse(pointmaze.MAZES["big_maze"])
    free = np.argwhere(np.asarray(layout.walls) == 0)
    starts = jnp.asarray(free[:, ::-1] + 0.5, jnp.float32)  # [x, y] cell centres
    actions = jax.random.uniform(jax.random.key(0), (200, len(free), 2), minval=-1, maxval=1)

    def body(positions, action):
        positions = jax.vmap(pointmaze.maze_step, (None, 0, 0, None))(layout.walls, positions,
                                                                      action, 0.9)
        return positions, positions
    path = np.asarray(jax.lax.scan(body, starts, actions)[1]).reshape(-1, 2)
    cols, rows = np.floor(path[:, 0]).astype(int), np.floor(path[:, 1]).astype(int)
    assert (path >= 0).all() and (path < 8).all()
    assert not np.asarray(layout.walls)[rows, cols].any()


def test_goals_come_from_the_goal_cells_and_reward_is_success():
    rows = ["#####", "#R.G#", "#...#", "#G.G#", "#####"]
    seq = pointmaze.maze_sequence([rows])
    task = task_slice(seq.params, 0)
    states = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(jax.random.key(1), 3000))
    goals = np.asarray(states.obs[:, 2:])
    cells, counts = np.unique(goals, axis=0, return_counts=True)
    np.testing.assert_array_equal(cells, [[1.5, 3.5], [3.5, 1.5], [3.5, 3.5]])
    assert counts.min() > 900  # uniform over the three cells
    np.testing.assert_array_equal(np.asarray(states.obs[:, :2]),
                                  np.broadcast_to([1.5, 1.5], (3000, 2)))
    at_goal = pointmaze.State(jnp.asarray([3.4, 1.5, 3.5, 1.5]), jnp.zeros(()), jnp.zeros(()))
    assert float(seq.step(task, at_goal, jnp.zeros(2)).reward) == 1.0
    far = pointmaze.State(jnp.asarray([1.5, 1.5, 3.5, 1.5]), jnp.zeros(()), jnp.zeros(()))
    assert float(seq.step(task, far, jnp.zeros(2)).reward) == 0.0
    dense = pointmaze.maze_sequence([rows], dense=True)
    assert float(dense.step(task, far, jnp.zeros(2)).reward) == pytest.approx(-2.0)


def test_every_layout_runs_in_one_compilation():
    seq = pointmaze.maze_sequence(["u_maze", "u_maze_flipped", "open"])

    @jax.jit
    def rollout(task, key):
        state = seq.reset(task, key)
        return jax.lax.fori_loop(0, 10, lambda i, s: seq.step(task, s, jnp.ones(2)), state)

    tasks = [task_slice(seq.params, t) for t in range(3)]
    keys = list(jax.random.split(jax.random.key(0), 3))
    rollout(tasks[0], keys[0])
    with jax.no_tracing(True):
        for task, key in zip(tasks[1:], keys[1:]):
            rollout(task, key)
    assert seq.observation_size == 4 and seq.action_size == 2


def test_the_rl_loop_runs_a_maze_sequence():
    seq = pointmaze.maze_sequence(["u_maze", "u_maze_flipped"])
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=2, episode_length=3, eval_envs=2,
                  eval_length=3, probe_examples=2)
    train = make_rl_train(spec, random_agent(seq.observation_size, seq.action_size, 2), seq)
    logs0, logs = execute(train, run_keys([0, 1]), hparams_of(pd.DataFrame({"seed": [0, 1]})),
                          (), seq.params, parse_schedule("sequential", 2, 2), mode="sweep")
    assert logs["eval_return"].shape == (2, 4, 2)
    assert np.isin(logs["eval_return"], np.arange(4)).all()  # sparse: steps within the goal
