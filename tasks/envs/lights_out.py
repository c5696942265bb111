"""Lights Out in pure JAX as a goal-conditioned environment source, tasks as data: the test-time
compute benchmark of Ghugare et al. 2026 ("On the role of iterative computation in RL",
REFERENCE.md §13; RajGhugare19/on-computation-and-rl, lightsout/envs/lightsout_env.py).

A board is an ``m × n`` grid of lights (0 off, 1 on). Action ``p`` (one per cell, row-major)
presses cell ``p``: it toggles that cell and its up to four orthogonal neighbours on the board.
Presses commute and pressing a cell twice undoes it, so a board reached by a set of presses
depends only on the set. An episode starts from a random board (each light on with probability
½) with a goal: the board that ``k`` distinct presses reach from it, ``k`` drawn uniformly from
the task's range. The paper trains on ``k ∈ [1, ⌊mn/2⌋)`` and evaluates on the harder
``k ∈ [⌊mn/2⌋, mn)`` (:func:`paper_split`; 3 × 3: train 1–3, eval 4–8).

Observation = board ‖ goal (``2·M·N`` floats); the goal coordinates are the board cells
(:class:`tasks.envs.base.GoalSpace` with ``indices = range(M·N)``, ``threshold = 0.5``: the
Euclidean distance of two 0/1 boards is √(mismatched cells), so success is an exact match). A
step rewards ``success − step_penalty`` (the paper's ``success − 0.1``) and terminates on
success; the loop applies the time limit (the paper's episode is 6 steps: ``--episode-length 6``).

Tasks are data (:class:`LightsOutTask`: board size and press range, four integers): a sequence
stores every board at the largest rows × columns of its tasks, the cells beyond a task's own
board always off and pressing them a no-op (a padded task behaves exactly as its own size, its
actions beyond its board wasted steps), so a goal-difficulty curriculum or 3 × 3 → 4 × 4 runs in
one compilation with a traced task index.

Differences from the paper's env: the reward of a relabelled goal (``GoalSpace.reward``) is the
bare success signal; it equals the env's reward only with ``step_penalty = 0`` (an agent that
relabels with the penalty subtracts ``seq.env.step_penalty`` itself). On boards whose press
matrix is singular over GF(2) (4 × 4, 5 × 5; 3 × 3 is invertible) a goal of ``k`` presses may be
reachable in fewer, and rarely equal the start board; the state's ``remaining`` is always *a*
solution, the minimal one only on invertible boards.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from tasks.envs.base import EnvTaskSequence, GoalSpace, distinct_rank

STEP_PENALTY = 0.1     # REFERENCE §13: reward = success − 0.1 per step
EPISODE_LENGTH = 6     # the paper's time limit (applied by the loop: --episode-length)
SUCCESS_THRESHOLD = 0.5  # < 1 = the distance of boards one light apart: exact match
SPLITS = ("train", "eval")
_SPEC = re.compile(r"^(\d+)x(\d+):(train|eval|\d+|\d+-\d+)$")


class LightsOutTask(NamedTuple):
    """One task: Python ints, or ``[T]`` int32 arrays in a sequence's ``params``. Goals are
    ``k`` distinct presses, ``k`` uniform in ``[low, high]`` (inclusive)."""

    rows: int
    cols: int
    low: int
    high: int


class LightsOutFamily(NamedTuple):
    """What a sequence holds (``seq.env``)."""

    names: tuple[str, ...]
    shape: tuple[int, int]              # the stored board (largest rows, largest cols)
    tasks: tuple[LightsOutTask, ...]
    step_penalty: float


class State(NamedTuple):
    obs: jax.Array        # [2·M·N] float32: board ‖ goal
    reward: jax.Array     # [] float32
    done: jax.Array       # [] float32: 1.0 on success
    remaining: jax.Array  # [M·N] float32 0/1: presses that turn the board into the goal


def paper_split(rows: int, cols: int, split: str) -> tuple[int, int]:
    """The paper's inclusive press range: ``train`` = [1, ⌊mn/2⌋), ``eval`` = [⌊mn/2⌋, mn)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    cells = rows * cols
    half = cells // 2
    low, high = (1, half - 1) if split == "train" else (half, cells - 1)
    if low > high:
        raise ValueError(f"a {rows}x{cols} board has no {split} presses (the paper's train "
                         f"range is [1, {half}), eval [{half}, {cells})): use a larger board")
    return low, high


def parse_task(spec: str) -> LightsOutTask:
    """``"MxN:SPLIT"`` → a task: SPLIT is ``train`` or ``eval`` (:func:`paper_split`), ``K``
    (exactly K presses) or ``A-B`` (A to B presses, inclusive), e.g. ``3x3:train``,
    ``4x4:5-8``."""
    match = _SPEC.match(spec.strip().lower()) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"bad Lights Out task {spec!r}; valid: MxN:train, MxN:eval, MxN:K or "
                         f"MxN:A-B (presses, inclusive), e.g. 3x3:train, 3x3:4-8")
    rows, cols, presses = int(match[1]), int(match[2]), match[3]
    if rows < 1 or cols < 1:
        raise ValueError(f"Lights Out task {spec!r}: the board needs at least one row and "
                         f"column")
    if presses in SPLITS:
        low, high = paper_split(rows, cols, presses)
    else:
        low, _, high = presses.partition("-")
        low, high = int(low), int(high or low)
    if not 1 <= low <= high <= rows * cols:
        raise ValueError(f"Lights Out task {spec!r}: presses must satisfy 1 <= low <= high <= "
                         f"{rows * cols} (the cells of a {rows}x{cols} board), got {low}-{high}")
    return LightsOutTask(rows, cols, low, high)


# --- dynamics -------------------------------------------------------------------------------

def _cells(shape: tuple[int, int]):
    """(row, col) of every stored cell, row-major, ``[M·N]`` each."""
    index = jnp.arange(shape[0] * shape[1])
    return index // shape[1], index % shape[1]


def active_cells(task: LightsOutTask, shape: tuple[int, int]) -> jax.Array:
    """``[M·N]`` bool: the cells of the task's own board."""
    rows, cols = _cells(shape)
    return (rows < task.rows) & (cols < task.cols)


def toggle_matrix(task: LightsOutTask, shape: tuple[int, int]) -> jax.Array:
    """``[M·N, M·N]`` bool: ``[p, q]`` where pressing ``p`` toggles ``q`` (itself and its
    orthogonal neighbours, both on the task's board)."""
    rows, cols = _cells(shape)
    active = active_cells(task, shape)
    adjacent = (jnp.abs(rows[:, None] - rows[None, :])
                + jnp.abs(cols[:, None] - cols[None, :])) <= 1
    return adjacent & active[:, None] & active[None, :]


def press(task: LightsOutTask, board: jax.Array, cell: jax.Array,
          shape: tuple[int, int]) -> jax.Array:
    """The 0/1 ``board [M·N]`` after pressing ``cell`` (an int, possibly traced)."""
    rows, cols = _cells(shape)
    r, c = cell // shape[1], cell % shape[1]
    toggled = (jnp.abs(rows - r) + jnp.abs(cols - c) <= 1) & active_cells(task, shape)
    toggled = toggled & (r < task.rows) & (c < task.cols)
    return jnp.where(toggled, 1.0 - board, board)


def goal_of(task: LightsOutTask, board: jax.Array, presses: jax.Array,
            shape: tuple[int, int]) -> jax.Array:
    """The board reached from ``board`` by pressing every cell where ``presses [M·N]`` is 1."""
    counts = jnp.asarray(presses, jnp.int32) @ toggle_matrix(task, shape).astype(jnp.int32)
    return jnp.where(counts % 2 == 1, 1.0 - board, board)


def _reset(task: LightsOutTask, key: jax.Array, shape: tuple[int, int]) -> State:
    task = jax.tree.map(jnp.asarray, task)
    active = active_cells(task, shape)
    cells = active.shape[0]
    # One draw of 2·cells + 1 uniforms (the loop resets every env at every step where puzzles
    # are fresh, so the reset's cost is the env's: one random call, no sort).
    u = jax.random.uniform(key, (2 * cells + 1,))
    board = ((u[:cells] < 0.5) & active).astype(jnp.float32)
    span = task.high - task.low + 1
    k = jnp.minimum(task.low + jnp.floor(u[-1] * span).astype(jnp.int32), task.high)
    # k distinct cells of the board uniformly: the k smallest of iid scores (padding last),
    # each cell's rank counted by comparisons.
    presses = (distinct_rank(jnp.where(active, u[cells:2 * cells], 2.0)) < k).astype(
        jnp.float32)
    goal = goal_of(task, board, presses, shape)
    return State(jnp.concatenate([board, goal]), jnp.zeros(()), jnp.zeros(()), presses)


def _step(task: LightsOutTask, state: State, action: jax.Array, shape: tuple[int, int],
          step_penalty: float) -> State:
    task = jax.tree.map(jnp.asarray, task)
    cells = shape[0] * shape[1]
    board, goal = state.obs[:cells], state.obs[cells:]
    cell = jnp.argmax(action)
    board = press(task, board, cell, shape)
    success = jnp.all(board == goal).astype(jnp.float32)
    on_board = active_cells(task, shape)[cell]
    remaining = state.remaining.at[cell].set(
        jnp.where(on_board, 1.0 - state.remaining[cell], state.remaining[cell]))
    return State(jnp.concatenate([board, goal]), success - step_penalty, success, remaining)


def lights_out_sequence(tasks: Sequence[str | LightsOutTask], *,
                        step_penalty: float = STEP_PENALTY) -> EnvTaskSequence:
    """A task sequence over Lights Out tasks, each a :func:`parse_task` spec (``"3x3:train"``)
    or a :class:`LightsOutTask`; boards of different sizes are padded to the largest rows and
    columns. Actions are one per stored cell (a one-hot, or any score vector: its argmax)."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("no Lights Out tasks given; e.g. 3x3:train,3x3:eval")
    parsed = tuple(parse_task(t) if isinstance(t, str) else LightsOutTask(*map(int, t))
                   for t in tasks)
    for t in parsed:
        if not (t.rows >= 1 and t.cols >= 1 and 1 <= t.low <= t.high <= t.rows * t.cols):
            raise ValueError(f"bad Lights Out task {t}: needs rows, cols >= 1 and 1 <= low <= "
                             f"high <= rows·cols")
    if step_penalty < 0:
        raise ValueError(f"step_penalty must be >= 0, got {step_penalty}")
    shape = (max(t.rows for t in parsed), max(t.cols for t in parsed))
    names = tuple(t if isinstance(t, str) else f"{t.rows}x{t.cols}:{t.low}-{t.high}"
                  for t in tasks)
    params = LightsOutTask(*(jnp.asarray([getattr(t, f) for t in parsed], jnp.int32)
                             for f in LightsOutTask._fields))
    cells = shape[0] * shape[1]
    goals = GoalSpace(cells, tuple(range(cells)), SUCCESS_THRESHOLD)
    penalty = float(step_penalty)

    def reset(task: LightsOutTask, key: jax.Array) -> State:
        return _reset(task, key, shape)

    def step(task: LightsOutTask, state: State, action: jax.Array) -> State:
        return _step(task, state, action, shape, penalty)

    # A fresh puzzle at every episode: with one reset state per env a run would only ever see
    # num_envs puzzles (and their relabelled goals).
    return EnvTaskSequence("lightsout", LightsOutFamily(names, shape, parsed, penalty), params,
                           reset, step, len(parsed), 2 * cells, cells, goals=goals,
                           fresh_resets=True)
