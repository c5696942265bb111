"""Minigrid-style gridworlds in pure JAX with tasks as data: Empty, DoorKey and the Lava / Simple
Crossings (Chevalier-Boisvert et al., Minigrid), so a continual sequence, e.g. Continual Dreamer's
DoorKey-9x9 → LavaCrossingS9N1 → SimpleCrossingS9N1 (Kessler et al. 2023), runs in one compiled
program with a traced task index.

Why plax writes its own: navix 0.7.4 makes each task a separate class with static fields and its
own entity state, so a continual sequence would need a union wrapper holding every task's state
and a ``lax.switch`` over environments (and navix pulls rlax, distrax, tfp-nightly and wandb);
xminigrid 0.9.3 is tasks-as-data but has no lava and no crossings. Here a task is five integers
(:class:`GridTask`: which generator, grid size, lava or wall rivers, how many, the step budget),
every task's state is the same :class:`State`, and ``reset`` picks the layout generator with a
``lax.switch`` on the task's ``generator`` field.

Semantics are Minigrid's. The grid is ``[S, S]`` cell codes indexed ``[row, col]`` (Minigrid
indexes ``(x, y) = (col, row)``); the size counts the outer wall. Directions 0 right (+col),
1 down (+row), 2 left, 3 up; actions 0 turn left, 1 turn right, 2 forward, 3 pickup, 4 drop,
5 toggle, 6 done (a no-op). Forward moves into an empty, goal, lava or open-door cell; the goal
ends the episode with reward ``1 − 0.9 · step_count / max_steps`` (step_count counting this
step), lava ends it with reward 0. Pickup takes a key in front when the hands are empty, drop
puts the key on an empty front cell, toggle opens a locked door when carrying the key and opens
or closes an unlocked door. Layouts are drawn per episode by Minigrid's rules (the generators
below). The observation is Minigrid's egocentric 7 × 7 partial view with occlusion
(``see_through_walls=False``): the agent sits at view row 6, column 3 looking up the view, cells
off the grid read as wall, cells hidden behind walls or closed doors read as unseen, and the
agent's own cell shows the key while it is carried.

Deliberate differences from Minigrid:

* One channel of cell classes (:data:`NUM_CLASSES`, one-hot ``obs [7·7·9]``) instead of
  Minigrid's (object, colour, state) triple: a door's state is its own class (open / closed /
  locked) and colours are dropped (there is one key and one door, so a colour carries nothing).
  The view is ``[row, col]`` (Minigrid's image is ``[col, row]``).
* No time limit inside the env and no auto-reset: the RL loop applies both (Minigrid truncates at
  ``max_steps``; ``max_steps`` stays a task field for the goal reward).
* No mission string. A sequence stores every task at its largest size, the area beyond a smaller
  task's outer wall filled with walls: its views are those at its own size (Minigrid reads cells
  off the grid as wall).
* Layouts follow Minigrid's rules and distributions but not its NumPy random stream: a seed does
  not reproduce Minigrid's layout for that seed.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.envs.base import EnvTaskSequence

# Cell codes (``UNSEEN`` appears only in observations).
UNSEEN, EMPTY, WALL, DOOR_OPEN, DOOR_CLOSED, DOOR_LOCKED, KEY, GOAL, LAVA = range(9)
NUM_CLASSES = 9
VIEW = 7
NUM_ACTIONS = 7
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(NUM_ACTIONS)
EMPTY_ROOM, DOOR_KEY, CROSSING = range(3)  # generators

# The (row, col) step of each direction: right, down, left, up.
DIRECTIONS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], np.int32)


def _view_offsets() -> np.ndarray:
    """``[4, VIEW, VIEW, 2]``: the grid offset from the agent of each view cell, per direction.
    View row ``i`` lies ``VIEW − 1 − i`` cells ahead, view column ``j`` lies ``j − VIEW // 2``
    cells to the agent's right (the next direction clockwise): Minigrid's slice-and-rotate
    (``gen_obs_grid``) as index arithmetic."""
    ahead = (VIEW - 1 - np.arange(VIEW))[:, None, None]
    right = (np.arange(VIEW) - VIEW // 2)[None, :, None]
    return np.stack([ahead * DIRECTIONS[d] + right * DIRECTIONS[(d + 1) % 4]
                     for d in range(4)]).astype(np.int32)


VIEW_OFFSETS = _view_offsets()


class GridTask(NamedTuple):
    """One task: Python ints in :data:`GRIDS`, ``[T]`` arrays in a sequence's ``params``."""

    generator: int   # EMPTY_ROOM, DOOR_KEY or CROSSING
    size: int        # the full grid, outer wall included
    lava: bool       # crossing rivers of lava (else of wall)
    rivers: int      # the number of crossing rivers
    max_steps: int   # Minigrid's step budget; used only in the goal reward


class GridFamily(NamedTuple):
    """What a sequence holds (``seq.env``): the observation is ``view · view`` one-hot groups of
    ``classes`` cell classes, row-major over the egocentric view."""

    names: tuple[str, ...]
    size: int                      # every grid's stored size, the largest of the sequence
    max_steps: tuple[int, ...]     # per task
    view: int = VIEW
    classes: int = NUM_CLASSES


class State(NamedTuple):
    obs: jax.Array        # [VIEW · VIEW · NUM_CLASSES] float32, one-hot view
    reward: jax.Array     # [] float32
    done: jax.Array       # [] float32, 1.0 where the episode terminated (goal or lava)
    grid: jax.Array       # [S, S] int8 cell codes
    pos: jax.Array        # [2] int32 (row, col)
    dir: jax.Array        # [] int32
    carrying: jax.Array   # [] bool: holds the key
    steps: jax.Array      # [] int32 steps taken this episode


def _empty(n: int) -> GridTask:
    return GridTask(EMPTY_ROOM, n, False, 0, 4 * n * n)


def _doorkey(n: int) -> GridTask:
    return GridTask(DOOR_KEY, n, False, 0, 10 * n * n)


def _crossing(n: int, rivers: int, lava: bool) -> GridTask:
    return GridTask(CROSSING, n, lava, rivers, 4 * n * n)


# Minigrid's registered ids, lower case, without the ``MiniGrid-`` prefix and ``-v0`` suffix.
GRIDS = {
    "empty-5x5": _empty(5), "empty-6x6": _empty(6), "empty-8x8": _empty(8),
    "doorkey-5x5": _doorkey(5), "doorkey-6x6": _doorkey(6), "doorkey-8x8": _doorkey(8),
    "doorkey-9x9": _doorkey(9),
    "lavacrossing-s5n1": _crossing(5, 1, True), "simplecrossing-s5n1": _crossing(5, 1, False),
    **{f"lavacrossing-s9n{n}": _crossing(9, n, True) for n in (1, 2, 3)},
    **{f"simplecrossing-s9n{n}": _crossing(9, n, False) for n in (1, 2, 3)},
}


# --- layouts: each returns (grid [S, S] int8, pos [2] int32, dir [] int32) ---------------------

def _room(size: jax.Array, stored: int) -> jax.Array:
    """Outer walls of a ``size`` room (walls beyond it up to ``stored``), the goal in the
    bottom-right corner (every generator here puts it there)."""
    rows, cols = jnp.arange(stored)[:, None], jnp.arange(stored)[None, :]
    inside = (rows >= 1) & (rows <= size - 2) & (cols >= 1) & (cols <= size - 2)
    grid = jnp.where(inside, EMPTY, WALL).astype(jnp.int8)
    return grid.at[size - 2, size - 2].set(GOAL)


# Each generator draws all its randomness in one ``uniform`` call and shapes it (every
# ``jax.random`` call inlines its own threefry rounds: one call instead of up to nine halves
# ``reset``'s compile time).

def _uniform_int(u: jax.Array, low, high) -> jax.Array:
    """An integer in ``[low, high)`` from a uniform ``u ∈ [0, 1)`` (``high > low``; the bound
    guards float rounding of ``u · (high − low)`` up to ``high − low``)."""
    return jnp.minimum(low + jnp.floor(u * (high - low)).astype(jnp.int32), high - 1)


def _ranks(scores: jax.Array) -> jax.Array:
    """Each entry's place in ascending order of ``scores [n]`` (ties by index): a permutation of
    ``[0, n)``, from pairwise comparisons (cheaper to compile than a sort at these sizes)."""
    index = jnp.arange(scores.shape[0])
    before = (scores[None, :] < scores[:, None]) | ((scores[None, :] == scores[:, None])
                                                   & (index[None, :] < index[:, None]))
    return before.sum(axis=1)


def _random_cell(u: jax.Array, allowed: jax.Array) -> jax.Array:
    """A cell drawn uniformly among the ``allowed [S, S]`` ones (the largest of their iid scores
    ``u [S, S]``), as ``[row, col]``: what Minigrid's rejection sampling in ``place_obj``
    draws."""
    stored = allowed.shape[0]
    index = jnp.argmax(jnp.where(allowed, u, -1.0).reshape(-1))
    return jnp.stack([index // stored, index % stored]).astype(jnp.int32)


def _start(grid: jax.Array):
    """Minigrid's fixed start: the top-left cell, facing right."""
    return grid, jnp.array([1, 1], jnp.int32), jnp.zeros((), jnp.int32)


def _gen_empty(task: GridTask, key: jax.Array, stored: int):
    del key
    return _start(_room(task.size, stored))


def _gen_doorkey(task: GridTask, key: jax.Array, stored: int):
    """Minigrid's DoorKey: a wall column at ``split ∈ [2, size−3]``, a locked door in it at a
    row in ``[1, size−3]`` (Minigrid's ``_rand_int(1, width − 2)``: never the bottom interior
    row), the agent (random direction) and then the key at distinct free cells left of it."""
    size = task.size
    u = jax.random.uniform(key, (3 + 2 * stored * stored,))
    agent_scores, key_scores = u[3:].reshape(2, stored, stored)
    split = _uniform_int(u[0], 2, size - 2)
    door = _uniform_int(u[1], 1, size - 2)
    grid = _room(size, stored)
    cols = jnp.arange(stored)[None, :]
    grid = jnp.where(cols == split, jnp.int8(WALL), grid)
    grid = grid.at[door, split].set(DOOR_LOCKED)
    left = (grid == EMPTY) & (cols < split)
    pos = _random_cell(agent_scores, left)
    direction = _uniform_int(u[2], 0, 4)
    not_agent = jnp.ones_like(left).at[pos[0], pos[1]].set(False)
    key_cell = _random_cell(key_scores, left & not_agent)
    return grid.at[key_cell[0], key_cell[1]].set(KEY), pos, direction


def _gen_crossing(task: GridTask, key: jax.Array, stored: int):
    """Minigrid's Lava / Simple Crossing (``CrossingEnv._gen_grid``).

    Candidate rivers run along rows 2, 4, …, size−3 and columns 2, 4, …, size−3; ``rivers`` of
    them are drawn without replacement and filled with lava or wall. Then a path from the top-left
    room to the bottom-right one is a random order of one eastward move per chosen column
    and one southward move per chosen row; each move opens one random cell of the river bounding
    the current room (between the neighbouring rivers or walls) and enters the next room, so
    every river gets exactly one opening. Static loops run over the ``candidates`` a stored size
    allows, masked beyond the task's own."""
    size = task.size
    per_axis = max(1, (stored - 3) // 2)  # static: candidate rivers per axis at the stored size
    candidates = 2 * per_axis             # [0, per_axis) columns, [per_axis, 2·per_axis) rows
    choose_u, order_u, open_u = jax.random.uniform(key, (3, candidates))
    positions = 2 + 2 * jnp.arange(per_axis)
    valid = jnp.tile(positions <= size - 3, 2)
    # n distinct candidates uniformly: the n smallest of uniform scores, invalid ones last.
    scores = jnp.where(valid, choose_u, 2.0)
    chosen = _ranks(scores) < task.rivers
    on_col, on_row = chosen[:per_axis], chosen[per_axis:]

    grid = _room(size, stored)
    river_cols = jnp.zeros(stored, bool).at[positions].set(on_col)
    river_rows = jnp.zeros(stored, bool).at[positions].set(on_row)
    river = (grid == EMPTY) & (river_rows[:, None] | river_cols[None, :])
    grid = jnp.where(river, jnp.where(task.lava, LAVA, WALL).astype(jnp.int8), grid)

    # Room boundaries along each axis: 0, the chosen rivers in order, the far wall (padded with
    # the far wall so ``limits[room + 1]`` stays in range while masked moves run on).
    n_cols, n_rows = on_col.sum(), on_row.sum()
    slots = jnp.arange(per_axis)

    def limits(on, count):
        # The m-th chosen position (positions ascend): the one with m chosen ones before it.
        place = jnp.where(on, jnp.cumsum(on) - 1, -1)
        ordered = (jnp.where(place[None, :] == slots[:, None], positions, 0)).sum(axis=1)
        inner = jnp.where(slots < count, ordered, size - 1)
        return jnp.concatenate([jnp.zeros(1, jnp.int32), inner, (size - 1)[None]])
    col_limits, row_limits = limits(on_col, n_cols), limits(on_row, n_rows)

    # The path: moves [0, n_cols) go east, [n_cols, n) south, shuffled among the first n (move k
    # takes place rank_k; inactive moves rank last).
    moves = n_cols + n_rows
    move = jnp.arange(candidates)
    rank = _ranks(jnp.where(move < moves, order_u, 2.0))
    east = ((rank[None, :] == move[:, None]) & (move < n_cols)[None, :]).any(axis=1)
    room_row = room_col = jnp.zeros((), jnp.int32)
    for m in range(candidates):
        active = m < moves
        # East: the chosen column bounding the room, a row strictly inside the room; south:
        # the chosen row bounding the room, a column strictly inside it.
        row = jnp.where(east[m], _uniform_int(open_u[m], row_limits[room_row] + 1,
                                              row_limits[room_row + 1]),
                        row_limits[room_row + 1])
        col = jnp.where(east[m], col_limits[room_col + 1],
                        _uniform_int(open_u[m], col_limits[room_col] + 1,
                                     col_limits[room_col + 1]))
        grid = grid.at[row, col].set(jnp.where(active, jnp.int8(EMPTY), grid[row, col]))
        room_col = room_col + (active & east[m])
        room_row = room_row + (active & ~east[m])
    return _start(grid)


GENERATORS = (_gen_empty, _gen_doorkey, _gen_crossing)  # indexed by GridTask.generator


# --- observation ----------------------------------------------------------------------------

def _visibility(view: jax.Array) -> jax.Array:
    """``[VIEW, VIEW]`` bool: Minigrid's ``Grid.process_vis`` on the egocentric view.

    Minigrid sweeps the rows from the agent's (the bottom) up: along a row, visibility spreads
    east and then west from every visible cell one can see past (not a wall or closed / locked
    door), and each such cell makes the cells above it and diagonally above (on the sweep's
    side) visible. The sweeps are sequential within a row; here each is closed-form: a cell is
    reached eastward from a visible cell ``k`` to its west when no opaque cell lies in between
    (``k`` itself included), which prefix counts of opaque cells test for all pairs at once."""
    clear = (view != WALL) & (view != DOOR_CLOSED) & (view != DOOR_LOCKED)
    index = jnp.arange(VIEW)
    before_or_at = index[:, None] <= index[None, :]  # [k, i]: k ≤ i
    seen = jnp.zeros(VIEW, bool).at[VIEW // 2].set(True)  # the agent's cell
    rows = []
    for row in reversed(range(VIEW)):
        see_past = clear[row]
        # opaque[i]: opaque cells among columns [0, i), for i in [0, VIEW].
        opaque = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(~see_past)])
        # East sweep: i is reached from a seen k ≤ i with columns [k, i) all clear.
        east = jnp.any(seen[:, None] & before_or_at
                       & (opaque[None, :VIEW] == opaque[:VIEW, None]), axis=0)
        # West sweep (after the east one): i reached from k ≥ i with columns (i, k] all clear.
        west = jnp.any(east[:, None] & before_or_at.T
                       & (opaque[1:, None] == opaque[None, 1:]), axis=0)
        rows.append(west)
        # Upward: the east sweep visits columns [0, VIEW−1) and lights up i and i+1; the west
        # sweep visits (0, VIEW−1] and lights up i and i−1.
        from_east = east & see_past & (index < VIEW - 1)
        from_west = west & see_past & (index > 0)
        no = jnp.zeros(1, bool)
        seen = (from_east | from_west | jnp.concatenate([no, from_east[:-1]])
                | jnp.concatenate([from_west[1:], no]))
    return jnp.stack(rows[::-1])


def observe(grid: jax.Array, pos: jax.Array, direction: jax.Array,
            carrying: jax.Array) -> jax.Array:
    """``[VIEW, VIEW]`` int32 cell codes the agent sees (Minigrid's ``gen_obs_grid``)."""
    cells = pos + jnp.asarray(VIEW_OFFSETS)[direction]  # [VIEW, VIEW, 2]
    rows, cols = cells[..., 0], cells[..., 1]
    stored = grid.shape[0]
    inside = (rows >= 0) & (rows < stored) & (cols >= 0) & (cols < stored)
    view = jnp.where(inside, grid[jnp.clip(rows, 0, stored - 1), jnp.clip(cols, 0, stored - 1)],
                     WALL).astype(jnp.int32)
    visible = _visibility(view)  # from the grid's own cells, before the carried key is drawn
    view = view.at[VIEW - 1, VIEW // 2].set(jnp.where(carrying, KEY, EMPTY))
    return jnp.where(visible, view, UNSEEN)


def make_state(grid: jax.Array, pos, direction, carrying=False, steps=0, reward=0.0,
               done=0.0) -> State:
    """A :class:`State` with its observation, for a grid built by hand or by a generator."""
    grid = jnp.asarray(grid, jnp.int8)
    pos = jnp.asarray(pos, jnp.int32)
    direction = jnp.asarray(direction, jnp.int32)
    carrying = jnp.asarray(carrying, bool)
    view = observe(grid, pos, direction, carrying)
    obs = jax.nn.one_hot(view, NUM_CLASSES, dtype=jnp.float32).reshape(-1)
    return State(obs, jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.float32), grid,
                 pos, direction, carrying, jnp.asarray(steps, jnp.int32))


# --- dynamics -------------------------------------------------------------------------------

def grid_reset(task: GridTask, key: jax.Array, stored: int) -> State:
    """A new episode of ``task`` (possibly traced) on a ``stored × stored`` grid."""
    task = jax.tree.map(jnp.asarray, task)  # a GRIDS entry of Python ints works too
    generators = [lambda t, k, g=g: g(t, k, stored) for g in GENERATORS]
    grid, pos, direction = jax.lax.switch(task.generator, generators, task, key)
    return make_state(grid, pos, direction)


def grid_step(task: GridTask, state: State, action: jax.Array) -> State:
    """One Minigrid step; ``action [NUM_ACTIONS]`` is a one-hot (any score vector: argmax)."""
    act = jnp.argmax(action)
    task = jax.tree.map(jnp.asarray, task)
    grid, pos, direction, carrying = state.grid, state.pos, state.dir, state.carrying
    steps = state.steps + 1
    front = pos + jnp.asarray(DIRECTIONS)[direction]  # inside the grid: the agent is never on
    cell = grid[front[0], front[1]]                   # the outer wall

    forward = act == FORWARD
    walkable = (cell == EMPTY) | (cell == GOAL) | (cell == LAVA) | (cell == DOOR_OPEN)
    pos = jnp.where(forward & walkable, front, pos)
    reached, burnt = forward & (cell == GOAL), forward & (cell == LAVA)
    reward = jnp.where(reached, 1.0 - 0.9 * steps.astype(jnp.float32)
                       / task.max_steps.astype(jnp.float32), 0.0)

    direction = jnp.where(act == LEFT, (direction + 3) % 4,
                          jnp.where(act == RIGHT, (direction + 1) % 4, direction))
    pickup = (act == PICKUP) & (cell == KEY) & ~carrying
    drop = (act == DROP) & (cell == EMPTY) & carrying
    toggle = act == TOGGLE
    # Toggle: the key unlocks (and opens) a locked door and stays in hand; an unlocked door
    # flips between open and closed.
    new_cell = jnp.select(
        [pickup, drop, toggle & (cell == DOOR_LOCKED) & carrying, toggle & (cell == DOOR_CLOSED),
         toggle & (cell == DOOR_OPEN)],
        [EMPTY, KEY, DOOR_OPEN, DOOR_OPEN, DOOR_CLOSED], cell)
    grid = grid.at[front[0], front[1]].set(new_cell.astype(grid.dtype))
    carrying = (carrying | pickup) & ~drop
    return make_state(grid, pos, direction, carrying, steps, reward, reached | burnt)


def grid_sequence(names: Sequence[str]) -> EnvTaskSequence:
    """A task sequence over :data:`GRIDS` names, e.g. Continual-Dreamer's ``["doorkey-9x9",
    "lavacrossing-s9n1", "simplecrossing-s9n1"]``. Sizes may differ: every grid is stored at the
    largest, walls beyond a smaller one's outer wall."""
    names = tuple(names)
    unknown = [n for n in names if n not in GRIDS]
    if unknown or not names:
        problem = f"unknown grid {unknown[0]!r}" if unknown else "no grids given"
        raise ValueError(f"{problem}; valid: {', '.join(GRIDS)}")
    specs = [GRIDS[n] for n in names]
    stored = max(s.size for s in specs)
    dtypes = GridTask(jnp.int32, jnp.int32, bool, jnp.int32, jnp.int32)
    params = GridTask(*(jnp.asarray([getattr(s, f) for s in specs], dtype)
                        for f, dtype in zip(GridTask._fields, dtypes)))
    family = GridFamily(names, stored, tuple(s.max_steps for s in specs))

    def reset(task: GridTask, key: jax.Array) -> State:
        return grid_reset(task, key, stored)

    return EnvTaskSequence("grid", family, params, reset, grid_step, len(names),
                           VIEW * VIEW * NUM_CLASSES, NUM_ACTIONS)
