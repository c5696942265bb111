"""Box-Moving in pure JAX as a goal-conditioned environment source, tasks as data: the stitching
benchmark of Bortkiewicz, Pałucki, Ostaszewski & Eysenbach 2025 ("Is TD learning the gold
standard for stitching?", arXiv 2510.21995), our own version written from the paper's
description (its code carries no licence and is not used here).

A board is a ``size × size`` grid (``size`` even and >= 2, static for a sequence; the paper uses
4–6), cells row-major. An agent walks on it carrying at most one box; boxes lie on cells, one per
cell. The six actions (:data:`ACTIONS`, a one-hot or any score vector: its argmax) are UP, DOWN,
LEFT, RIGHT, PICK_UP and PUT_DOWN. A move that would leave the board, or enter a cell outside the
episode's *allowed* region, is a no-op; the agent walks over boxes freely. PICK_UP lifts the box
under the agent when it carries none, PUT_DOWN drops the carried box on the agent's cell when
that cell has no box; otherwise each is a no-op (a box never enters another box's cell, and never
leaves the board or the allowed region, because the agent cannot). An episode's goal is a target
board (one target cell per box); it succeeds when the box board equals the target board exactly.
The reward is that success (1, else 0, no step penalty) and success terminates; the loop applies
the time limit (the paper's episode is :data:`EPISODE_LENGTH` = 100 steps; CPU presets may use
fewer).

Observation = state ‖ goal, ``3·C + 1`` floats for ``C = size²`` cells::

    agent one-hot [C] ‖ carrying [1] ‖ boxes [C] (0/1, on the board) ‖ target board [C] (0/1)

so ``state_size = 2·C + 1`` and the goal coordinates are the box board
(:class:`tasks.envs.base.GoalSpace` with ``indices = range(C + 1, 2·C + 1)``, ``threshold =
0.5``: the distance of two 0/1 boards is √(mismatched cells), so success is an exact match). A
carried box is off the board, and a target board holds every box of the episode, so carrying
never counts as success.

Quarters (:data:`QUARTERS`): ``nw, ne, sw, se`` (rows < size/2 are north, columns < size/2
west). Two quarters are *adjacent* when they share an edge (``nw-ne``, ``nw-sw``, ``ne-se``,
``sw-se``, either way round: :data:`ADJACENT`, 8 ordered pairs) and *diagonal* otherwise
(:data:`DIAGONAL`, 4 ordered pairs). The paper's regimes (:func:`parse_task`):

* ``exact:train``: the boxes start in one quarter and their targets lie in an adjacent one (one
  of the 8 ordered adjacent pairs, uniformly per episode), the agent confined to the two
  quarters; ``exact:test``: start and target quarters diagonal (4 ordered pairs), the agent free
  on the whole board, so a solution chains two trained legs through an adjacent quarter (the
  stitching test). ``exact:Q1-Q2`` is one ordered pair (confined iff adjacent).
* ``generalised:K`` (or ``generalized:K``): boxes and targets anywhere on the board, ``K`` of the
  boxes starting on their own targets, so ``boxes − K`` must move; ``generalised:test`` is
  ``K = 0`` (move every box). The paper uses 4 boxes (``box_moving_sequence(..., boxes=4)``;
  our default is 2, CPU-sized).
* ``any``: boxes and targets anywhere, none on target (the no-stitching baseline; the same task
  as ``generalised:0``).

Tasks are data (:class:`BoxTask`: box count, boxes on target, the allowed ordered quarter pairs
as a 4 × 4 mask, and two flags), stacked with a leading ``[T]`` axis in a sequence's params, so
every task of a sequence runs in one compilation with a traced task index
(:func:`tasks.base.task_slice`). A reset draws the pair, then ``boxes`` distinct target cells in
the target quarter, the first ``on_target`` boxes on their own targets and the others on
distinct non-target cells of the start quarter, and the agent uniformly on an allowed cell, not
carrying. The episode's allowed region depends on the drawn pair, so it is part of the state
(``State.allowed``).

Differences from the paper, as we read it: the paper's *exact* regime filters logged
trajectories to those inside the pair's quarters; online we confine the agent to the pair's two
quarters instead, which keeps every training transition inside them (a principled online
equivalent; boxes cannot leave them either). Boxes are carried (PICK_UP / PUT_DOWN), not pushed
as in Sokoban, so no state is a dead end. Relabelled goals (``GoalSpace.reward``) compare box
boards only: a goal relabelled from a state where a box was carried has one box fewer, and is
reached whatever the agent carries; the env's own targets always hold every box.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from tasks.envs.base import EnvTaskSequence, GoalSpace, distinct_rank

EPISODE_LENGTH = 100     # the paper's time limit (applied by the loop: --episode-length)
SUCCESS_THRESHOLD = 0.5  # < 1 = the distance of boards one box apart: exact match
ACTIONS = ("UP", "DOWN", "LEFT", "RIGHT", "PICK_UP", "PUT_DOWN")
UP, DOWN, LEFT, RIGHT, PICK_UP, PUT_DOWN = range(6)
_DELTAS = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0), (0, 0))   # (row, col) per action
QUARTERS = ("nw", "ne", "sw", "se")   # index = 2·(south) + (east)
# Adjacent quarters differ in one of the two bits (north/south, west/east), diagonal in both.
ADJACENT = tuple((a, b) for a in QUARTERS for b in QUARTERS
                 if QUARTERS.index(a) ^ QUARTERS.index(b) in (1, 2))
DIAGONAL = tuple((a, b) for a in QUARTERS for b in QUARTERS
                 if QUARTERS.index(a) ^ QUARTERS.index(b) == 3)
_Q = "(nw|ne|sw|se)"
_EXACT = re.compile(rf"^exact:(train|test|{_Q}-{_Q})$")
_GENERALISED = re.compile(r"^generali[sz]ed:(test|\d+)$")
VALID_SPECS = ("exact:train, exact:test, exact:Q1-Q2 (an ordered pair of distinct quarters of "
               "nw, ne, sw, se, e.g. exact:nw-ne), generalised:K (K boxes start on target; "
               "also generalized:K), generalised:test (K = 0) or any")


class BoxTask(NamedTuple):
    """One task: Python values, or arrays with a leading ``[T]`` axis in a sequence's
    ``params``. ``pairs[s][t]``: the ordered (start quarter, target quarter) pair ``(s, t)``
    (indices into :data:`QUARTERS`) may be drawn; a reset picks one uniformly. ``confine``: the
    agent stays within the drawn pair's two quarters; ``anywhere``: boxes and targets are drawn
    over the whole board, ignoring ``pairs`` (the generalised and no-stitching regimes)."""

    boxes: int                              # boxes of this task
    on_target: int                          # of them, starting on their own targets
    pairs: tuple[tuple[bool, ...], ...]     # [4, 4]
    confine: bool
    anywhere: bool


class BoxMovingFamily(NamedTuple):
    """What a sequence holds (``seq.env``)."""

    names: tuple[str, ...]
    size: int                   # the board side
    boxes: int                  # the box count of string specs
    tasks: tuple[BoxTask, ...]


class State(NamedTuple):
    obs: jax.Array      # [3·C + 1] float32: agent [C] ‖ carrying ‖ boxes [C] ‖ target [C]
    reward: jax.Array   # [] float32
    done: jax.Array     # [] float32: 1.0 on success
    allowed: jax.Array  # [C] float32 0/1: the cells the agent may enter this episode


def _pair_mask(pairs) -> tuple[tuple[bool, ...], ...]:
    mask = [[False] * 4 for _ in QUARTERS]
    for a, b in pairs:
        mask[QUARTERS.index(a)][QUARTERS.index(b)] = True
    return tuple(map(tuple, mask))


_NO_PAIRS = _pair_mask(())


def check_task(task: BoxTask, size: int) -> BoxTask:
    """``task`` with plain Python values, or a ValueError saying why a ``size × size`` board
    cannot hold it."""
    if size < 2 or size % 2:
        raise ValueError(f"the board size must be even and >= 2 (so quarters exist), got {size}")
    pairs = task.pairs.tolist() if hasattr(task.pairs, "tolist") else task.pairs
    pairs = tuple(tuple(bool(x) for x in row) for row in pairs)
    task = BoxTask(int(task.boxes), int(task.on_target), pairs, bool(task.confine),
                   bool(task.anywhere))
    if len(pairs) != 4 or any(len(row) != 4 for row in pairs):
        raise ValueError(f"pairs must be a 4 × 4 mask over (start, target) quarters {QUARTERS}")
    if not 0 <= task.on_target < task.boxes:
        raise ValueError(f"needs 0 <= on_target < boxes (at least one box to move), got "
                         f"on_target={task.on_target}, boxes={task.boxes}")
    cells, quarter = size * size, (size // 2) ** 2
    if task.anywhere:
        if 2 * task.boxes - task.on_target > cells:
            raise ValueError(f"{task.boxes} boxes with {task.on_target} on target need "
                             f"2·boxes − on_target <= {cells} cells of a {size}x{size} board")
        return task
    chosen = [(s, t) for s in range(4) for t in range(4) if pairs[s][t]]
    if not chosen:
        raise ValueError("an exact task needs at least one (start, target) quarter pair")
    if any(s == t for s, t in chosen):
        raise ValueError("a pair must join two different quarters")
    if task.confine and any(s ^ t == 3 for s, t in chosen):
        raise ValueError("a confined task cannot use a diagonal pair: the agent could not carry "
                         "a box between the two quarters")
    if task.boxes > quarter:
        raise ValueError(f"{task.boxes} boxes do not fit a quarter of a {size}x{size} board "
                         f"({quarter} cells)")
    return task


def parse_task(spec: str, size: int = 4, boxes: int = 2) -> BoxTask:
    """A spec → a task with ``boxes`` boxes on a ``size × size`` board: ``exact:train`` (the 8
    ordered adjacent pairs, confined), ``exact:test`` (the 4 ordered diagonal pairs, the agent
    free), ``exact:Q1-Q2`` (one ordered pair, e.g. ``exact:nw-ne``, confined iff adjacent),
    ``generalised:K`` / ``generalized:K`` (anywhere, K boxes on target), ``generalised:test``
    (K = 0) or ``any`` (anywhere, none on target)."""
    text = spec.strip().lower() if isinstance(spec, str) else ""
    exact, general = _EXACT.match(text), _GENERALISED.match(text)
    if exact:
        if exact[1] == "train":
            task = BoxTask(boxes, 0, _pair_mask(ADJACENT), True, False)
        elif exact[1] == "test":
            task = BoxTask(boxes, 0, _pair_mask(DIAGONAL), False, False)
        else:
            pair = (exact[2], exact[3])
            if pair[0] == pair[1]:
                raise ValueError(f"bad Box-Moving task {spec!r}: a pair joins two different "
                                 f"quarters; valid: {VALID_SPECS}")
            task = BoxTask(boxes, 0, _pair_mask([pair]), pair in ADJACENT, False)
    elif general:
        k = 0 if general[1] == "test" else int(general[1])
        task = BoxTask(boxes, k, _NO_PAIRS, False, True)
    elif text == "any":
        task = BoxTask(boxes, 0, _NO_PAIRS, False, True)
    else:
        raise ValueError(f"bad Box-Moving task {spec!r}; valid: {VALID_SPECS}")
    try:
        return check_task(task, size)
    except ValueError as error:
        raise ValueError(f"Box-Moving task {spec!r}: {error}") from None


def describe(task: BoxTask) -> str:
    """A short name for a task given as a :class:`BoxTask`."""
    where = ("anywhere" if task.anywhere else "+".join(
        f"{QUARTERS[s]}-{QUARTERS[t]}" for s in range(4) for t in range(4) if task.pairs[s][t]))
    return (f"boxes={task.boxes},on_target={task.on_target},{where}"
            + (",confined" if task.confine else ""))


# --- dynamics -------------------------------------------------------------------------------

def quarter_of(size: int) -> jax.Array:
    """``[C]`` int32: the quarter (index into :data:`QUARTERS`) of every cell, row-major."""
    index, half = jnp.arange(size * size), size // 2
    return 2 * (index // size >= half) + (index % size >= half)


def _reset(task: BoxTask, key: jax.Array, size: int) -> State:
    task = jax.tree.map(jnp.asarray, task)
    cells = size * size
    # One draw of 16 + 3·cells uniforms (the loop resets every env at every step where puzzles
    # are fresh, so the reset's cost is the env's: one random call, no sort).
    u = jax.random.uniform(key, (16 + 3 * cells,))
    u_pair, u_targets, u_starts, u_agent = jnp.split(u, [16, 16 + cells, 16 + 2 * cells])
    pair = jnp.argmin(jnp.where(task.pairs.reshape(16), u_pair, 2.0))
    start_q, target_q = pair // 4, pair % 4
    quarter = quarter_of(size)
    anywhere = task.anywhere.astype(bool)
    start_region = anywhere | (quarter == start_q)
    target_region = anywhere | (quarter == target_q)
    # Target cells: the `boxes` first of a random order of the target region; the first
    # `on_target` boxes start on their own targets, the others on distinct non-target cells.
    target_rank = distinct_rank(jnp.where(target_region, u_targets, 2.0))
    target = target_rank < task.boxes
    start_rank = distinct_rank(jnp.where(start_region & ~target, u_starts, 2.0))
    boxes = (target_rank < task.on_target) | (start_rank < task.boxes - task.on_target)
    confined = task.confine.astype(bool) & ~anywhere
    allowed = ~confined | (quarter == start_q) | (quarter == target_q)
    agent = jnp.argmin(jnp.where(allowed, u_agent, 2.0))
    obs = jnp.concatenate([jax.nn.one_hot(agent, cells), jnp.zeros(1),
                           boxes.astype(jnp.float32), target.astype(jnp.float32)])
    return State(obs, jnp.zeros(()), jnp.zeros(()), allowed.astype(jnp.float32))


def _step(state: State, action: jax.Array, size: int) -> State:
    cells = size * size
    obs = state.obs
    agent, carrying = jnp.argmax(obs[:cells]), obs[cells] > 0.5
    boxes, target = obs[cells + 1:2 * cells + 1], obs[2 * cells + 1:]
    a = jnp.argmax(action)
    deltas = jnp.asarray(_DELTAS)
    row, col = agent // size + deltas[a, 0], agent % size + deltas[a, 1]
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    moved = jnp.clip(row, 0, size - 1) * size + jnp.clip(col, 0, size - 1)
    agent = jnp.where(inside & (state.allowed[moved] > 0.5), moved, agent)
    has_box = boxes[agent] > 0.5
    pick = (a == PICK_UP) & ~carrying & has_box
    put = (a == PUT_DOWN) & carrying & ~has_box
    boxes = boxes.at[agent].set(jnp.where(pick, 0.0, jnp.where(put, 1.0, boxes[agent])))
    carrying = (carrying | pick) & ~put
    success = jnp.all(boxes == target).astype(jnp.float32)
    obs = jnp.concatenate([jax.nn.one_hot(agent, cells), carrying[None].astype(jnp.float32),
                           boxes, target])
    return State(obs, success, success, state.allowed)


def render(state, size: int) -> str:
    """An ASCII board of a state (a :class:`State` or its ``obs``), one line per row: ``A`` the
    agent (``a`` carrying a box; it hides what lies under it), ``B`` a box, ``T`` a target,
    ``*`` a box on its target, ``.`` an empty cell."""
    cells = size * size
    obs = [float(x) for x in jnp.asarray(getattr(state, "obs", state)).tolist()]
    agent = max(range(cells), key=lambda c: obs[c])
    carrying = obs[cells] > 0.5
    boxes, target = obs[cells + 1:2 * cells + 1], obs[2 * cells + 1:]
    chars = []
    for c in range(cells):
        if c == agent:
            chars.append("a" if carrying else "A")
        else:
            chars.append({(True, True): "*", (True, False): "B", (False, True): "T",
                          (False, False): "."}[(boxes[c] > 0.5, target[c] > 0.5)])
    return "\n".join("".join(chars[r * size:(r + 1) * size]) for r in range(size))


def box_moving_sequence(tasks: Sequence[str | BoxTask], *, size: int = 4,
                        boxes: int = 2) -> EnvTaskSequence:
    """A task sequence over Box-Moving tasks on a ``size × size`` board, each a
    :func:`parse_task` spec (``"exact:train"``, with ``boxes`` boxes) or a :class:`BoxTask`.
    Actions are the six of :data:`ACTIONS` (a one-hot, or any score vector: its argmax)."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"no Box-Moving tasks given; e.g. exact:train,exact:test (valid: "
                         f"{VALID_SPECS})")
    if size < 2 or size % 2:
        raise ValueError(f"the board size must be even and >= 2 (so quarters exist), got {size}")
    parsed = tuple(parse_task(t, size, boxes) if isinstance(t, str) else check_task(BoxTask(*t),
                                                                                      size)
                   for t in tasks)
    names = tuple(t if isinstance(t, str) else describe(p) for t, p in zip(tasks, parsed))
    column = lambda f: [getattr(t, f) for t in parsed]  # noqa: E731
    params = BoxTask(jnp.asarray(column("boxes"), jnp.int32),
                     jnp.asarray(column("on_target"), jnp.int32),
                     jnp.asarray(column("pairs"), bool),
                     jnp.asarray(column("confine"), bool),
                     jnp.asarray(column("anywhere"), bool))
    cells = size * size
    goals = GoalSpace(2 * cells + 1, tuple(range(cells + 1, 2 * cells + 1)), SUCCESS_THRESHOLD)

    def reset(task: BoxTask, key: jax.Array) -> State:
        return _reset(task, key, size)

    def step(task: BoxTask, state: State, action: jax.Array) -> State:
        del task  # the dynamics are the same for every task; the episode's region is in state
        return _step(state, action, size)

    # A fresh puzzle at every episode (as Lights Out): with one reset state per env a run would
    # only ever see num_envs layouts.
    return EnvTaskSequence("boxes", BoxMovingFamily(names, size, int(boxes), parsed), params,
                           reset, step, len(parsed), 3 * cells + 1, len(ACTIONS), goals=goals,
                           fresh_resets=True)
