"""A goal-conditioned point-mass maze in pure JAX: the fast CPU environment of goal-conditioned
RL (REFERENCE.md §9 "Goals"; JaxGCRL's mazes use the same cell maps with an Ant or Humanoid).

A maze is a square grid of cells, each free or a wall block, drawn as text (``#`` wall, ``.``
free, ``R`` free and a start cell, ``G`` free and a goal cell; JaxGCRL's cell map letters). The
point lives in continuous coordinates (one cell = 1 × 1, cell ``(row, col)`` spans
``[col, col+1) × [row, row+1)``) and moves by ``step_size · action`` per step, action in
``[−1, 1]²``; a move into a wall block or off the grid is stopped at the boundary, one axis at
a time (x first), so the point never enters a wall (``step_size < 1``: at most one cell boundary
per axis and step).

Tasks are data: a task is a layout (``walls [N, N]``) with its start and goal cells
(``starts``, ``goals [N, N]`` weights), so a sequence of layouts or of goal regions runs in one
compilation. An episode starts at the centre of a start cell drawn uniformly, with a goal at the
centre of a goal cell drawn uniformly. Observation = state ‖ goal = ``[x, y, goal_x, goal_y]``;
the goal indices into the state are ``(0, 1)``. Reward: 1 where ``‖position − goal‖`` is below
the threshold (sparse, the success signal), or ``−‖position − goal‖`` with ``dense=True`` (for
reward-based baselines). Episodes never terminate (the loop applies the time limit).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.envs.base import EnvTaskSequence, GoalSpace

# Cell maps by name: ``u_maze`` is the classic U-maze (D4RL's, also JaxGCRL's); the others are
# plax's own: its mirror image (the same maze, another route), an open room, a larger maze, and
# a room whose goals lie in one corner region each (``room_ne`` ...: a goal-region sequence).
MAZES = {
    "u_maze": ["#####",
               "#R..#",
               "###.#",
               "#G..#",
               "#####"],
    "u_maze_flipped": ["#####",
                       "#..R#",
                       "#.###",
                       "#..G#",
                       "#####"],
    "open": ["#####",
             "#R..#",
             "#...#",
             "#..G#",
             "#####"],
    "big_maze": ["########",
                 "#R.#...#",
                 "#..#.#.#",
                 "##...#.#",
                 "#..#...#",
                 "#.####.#",
                 "#.#G...#",
                 "########"],
}


def _room(goal_cells: set[tuple[int, int]]) -> list[str]:
    """A 5 × 5 open room (walls around) starting at its centre, goals at ``goal_cells``."""
    def cell(r, c):
        return "G" if (r, c) in goal_cells else "R" if (r, c) == (3, 3) else "."
    inner = ["#" + "".join(cell(r, c) for c in range(1, 6)) + "#" for r in range(1, 6)]
    return ["#######", *inner, "#######"]


MAZES.update({
    "room_ne": _room({(1, 4), (1, 5), (2, 5)}), "room_nw": _room({(1, 1), (1, 2), (2, 1)}),
    "room_se": _room({(4, 5), (5, 4), (5, 5)}), "room_sw": _room({(4, 1), (5, 1), (5, 2)}),
})
GOAL_INDICES = (0, 1)
SUCCESS_THRESHOLD = 0.5


class Layout(NamedTuple):
    """One task: its wall blocks and start / goal cell weights, each ``[N, N]`` float32."""

    walls: jax.Array
    starts: jax.Array
    goals: jax.Array


class State(NamedTuple):
    obs: jax.Array      # [x, y, goal_x, goal_y]
    reward: jax.Array
    done: jax.Array


def parse(rows: Sequence[str]) -> Layout:
    """A text cell map (``#`` wall, ``.`` free, ``R`` start, ``G`` goal) as a :class:`Layout`."""
    if any(len(r) != len(rows) for r in rows):
        raise ValueError(f"a maze is a square cell map, got {len(rows)} rows of lengths "
                         f"{[len(r) for r in rows]}")
    grid = np.asarray([list(r) for r in rows])
    unknown = set(grid.ravel()) - set("#.RG")
    if unknown:
        raise ValueError(f"unknown maze cells {sorted(map(str, unknown))}; valid: # . R G")
    starts, goals = grid == "R", grid == "G"
    if not starts.any() or not goals.any():
        raise ValueError("a maze needs at least one start cell R and one goal cell G")
    return Layout(*(jnp.asarray(a, jnp.float32) for a in (grid == "#", starts, goals)))


def _cell_weights_sample(key: jax.Array, weights: jax.Array) -> jax.Array:
    """The centre ``[x, y]`` of a cell drawn with probability ∝ ``weights [N, N]``."""
    n = weights.shape[0]
    index = jax.random.categorical(key, jnp.log(weights.reshape(-1)))
    return jnp.stack([index % n, index // n]).astype(jnp.float32) + 0.5


def _blocked(walls: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    n = walls.shape[0]
    outside = (x < 0) | (y < 0) | (x >= n) | (y >= n)
    col = jnp.clip(jnp.floor(x), 0, n - 1).astype(jnp.int32)
    row = jnp.clip(jnp.floor(y), 0, n - 1).astype(jnp.int32)
    return outside | (walls[row, col] > 0.5)


def _move_axis(walls, position, delta, axis: int):
    """Moves ``position`` by ``delta`` along ``axis``; a move into a wall block (or off the
    grid) stops just inside the current cell's boundary."""
    moved = position.at[axis].add(delta)
    cell = jnp.floor(position[axis])
    edge = jnp.where(delta > 0, cell + 1.0 - 1e-4, cell + 1e-4)
    stopped = position.at[axis].set(edge)
    return jnp.where(_blocked(walls, moved[0], moved[1]), stopped, moved)


def maze_step(walls: jax.Array, position: jax.Array, action: jax.Array,
              step_size: float) -> jax.Array:
    """One move of the point (see the module docstring)."""
    delta = step_size * jnp.clip(action, -1.0, 1.0)
    position = _move_axis(walls, position, delta[0], 0)
    return _move_axis(walls, position, delta[1], 1)


def maze_sequence(layouts: Sequence[str | Sequence[str]], *, step_size: float = 0.25,
                  threshold: float = SUCCESS_THRESHOLD, dense: bool = False) -> EnvTaskSequence:
    """A task sequence over maze layouts: each entry is a name of :data:`MAZES` or a cell map;
    all must have the same size. A sequence of goal regions is layouts that differ only in
    their ``G`` cells."""
    if not 0.0 < step_size < 1.0:
        raise ValueError(f"step_size must lie in (0, 1) cell, got {step_size}")
    parsed = []
    for layout in layouts:
        if isinstance(layout, str):
            if layout not in MAZES:
                raise ValueError(f"unknown maze {layout!r}; valid: {', '.join(MAZES)}")
            layout = MAZES[layout]
        parsed.append(parse(layout))
    sizes = {p.walls.shape for p in parsed}
    if len(sizes) != 1:
        raise ValueError(f"every maze of a sequence needs the same size, got {sorted(sizes)}")
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *parsed)

    goals = GoalSpace(2, GOAL_INDICES, threshold, dense)

    def reward_of(position, goal):
        return goals.reward(position, goal)  # the state is the position

    def reset(task: Layout, key: jax.Array) -> State:
        start_key, goal_key = jax.random.split(key)
        position = _cell_weights_sample(start_key, task.starts)
        goal = _cell_weights_sample(goal_key, task.goals)
        return State(jnp.concatenate([position, goal]), reward_of(position, goal),
                     jnp.zeros(()))

    def step(task: Layout, state: State, action: jax.Array) -> State:
        position, goal = state.obs[:2], state.obs[2:]
        position = maze_step(task.walls, position, action, step_size)
        return State(jnp.concatenate([position, goal]), reward_of(position, goal),
                     jnp.zeros(()))

    return EnvTaskSequence("pointmaze", None, params, reset, step, len(parsed), 4, 2,
                           goals=goals)
