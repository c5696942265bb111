"""The Minigrid family in JAX: every generated layout follows Minigrid's rules and is solvable,
the dynamics and the egocentric view match hand-computed cases and a literal transcription of
Minigrid's view code, shortest plans found outside the env reach the goal through ``step``, and a
sequence of tasks (of mixed sizes) runs under one compilation with a traced task index."""
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.base import task_slice
from tasks.envs import grid as G
from tasks.envs.grid import (DONE, DOOR_CLOSED, DOOR_LOCKED, DOOR_OPEN, DROP, EMPTY, FORWARD,
                             GOAL, KEY, LAVA, LEFT, PICKUP, RIGHT, TOGGLE, UNSEEN, WALL)

CHARS = {"#": WALL, ".": EMPTY, "G": GOAL, "L": LAVA, "K": KEY, "D": DOOR_LOCKED,
         "C": DOOR_CLOSED, "O": DOOR_OPEN}
STEPS = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # right, down, left, up as (row, col)
CONTINUAL_DREAMER = ["doorkey-9x9", "lavacrossing-s9n1", "simplecrossing-s9n1"]
ROLLOUT = 48  # steps per rollout (every rollout of the file, so one compilation)


def parse(rows):
    return np.array([[CHARS[c] for c in r] for r in rows], np.int8)


def onehot(action):
    return jax.nn.one_hot(action, G.NUM_ACTIONS)


# --- references written from Minigrid's rules, independent of the module -----------------------

def solvable(grid, pos):
    """BFS over (cell, carrying, door open): walk through empty cells and open doors, pick the
    key up from a neighbouring cell, unlock the door from a neighbouring cell with the key;
    never enter lava or walls. Assumes at most one key and one door (asserted by the callers)."""
    start = (int(pos[0]), int(pos[1]), False, False)
    seen, frontier = {start}, deque([start])
    while frontier:
        r, c, key, door = frontier.popleft()
        for dr, dc in STEPS:
            nr, nc = r + dr, c + dc
            cell = grid[nr, nc]
            if cell == GOAL:
                return True
            if (cell in (EMPTY, DOOR_OPEN) or (cell == KEY and key)
                    or (cell == DOOR_LOCKED and door)):
                nxt = (nr, nc, key, door)
            elif cell == KEY:
                nxt = (r, c, True, door)
            elif cell == DOOR_LOCKED and key:
                nxt = (r, c, key, True)
            else:
                continue
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return False


def plan(grid, pos, direction):
    """A shortest action sequence to the goal under Minigrid's rules: BFS over (cell, direction,
    carrying, door open) with turn / forward / pickup / toggle."""
    start = (int(pos[0]), int(pos[1]), int(direction), False, False)
    parent = {start: None}
    frontier = deque([start])
    while frontier:
        state = frontier.popleft()
        r, c, d, key, door = state
        fr, fc = r + STEPS[d][0], c + STEPS[d][1]
        cell = grid[fr, fc]
        cell = EMPTY if cell == KEY and key else DOOR_OPEN if cell == DOOR_LOCKED and door else cell
        if cell == GOAL:
            actions = [FORWARD]
            while parent[state] is not None:
                state, action = parent[state]
                actions.append(action)
            return actions[::-1]
        successors = [(LEFT, (r, c, (d + 3) % 4, key, door)), (RIGHT, (r, c, (d + 1) % 4, key,
                                                                        door))]
        if cell in (EMPTY, DOOR_OPEN):
            successors.append((FORWARD, (fr, fc, d, key, door)))
        if cell == KEY:
            successors.append((PICKUP, (r, c, d, True, door)))
        if cell == DOOR_LOCKED and key:
            successors.append((TOGGLE, (r, c, d, key, True)))
        for action, nxt in successors:
            if nxt not in parent:
                parent[nxt] = (state, action)
                frontier.append(nxt)
    raise AssertionError("no plan reaches the goal")


def minigrid_view(grid, pos, direction, carrying, n=7):
    """Minigrid's ``gen_obs_grid`` + ``encode`` transcribed literally, in its ``(x, y) =
    (col, row)`` indexing (``get_view_exts``, ``Grid.slice``, ``rotate_left`` ×
    ``(dir + 1)``, ``process_vis``, the carried object drawn on the agent's cell); returned as
    ``[row, col]``."""
    height, width = grid.shape
    x, y = int(pos[1]), int(pos[0])
    top_x, top_y = [(x, y - n // 2), (x - n // 2, y), (x - n + 1, y - n // 2),
                    (x - n // 2, y - n + 1)][direction]
    sub = [[grid[top_y + j, top_x + i] if 0 <= top_x + i < width and 0 <= top_y + j < height
            else WALL for j in range(n)] for i in range(n)]  # sub[x][y]
    for _ in range(direction + 1):
        rotated = [[None] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                rotated[j][n - 1 - i] = sub[i][j]
        sub = rotated

    def see_behind(cell):
        return cell not in (WALL, DOOR_CLOSED, DOOR_LOCKED)
    mask = np.zeros((n, n), bool)
    mask[n // 2, n - 1] = True
    for j in reversed(range(n)):
        for i in range(n - 1):
            if not mask[i, j] or not see_behind(sub[i][j]):
                continue
            mask[i + 1, j] = True
            if j > 0:
                mask[i + 1, j - 1] = mask[i, j - 1] = True
        for i in reversed(range(1, n)):
            if not mask[i, j] or not see_behind(sub[i][j]):
                continue
            mask[i - 1, j] = True
            if j > 0:
                mask[i - 1, j - 1] = mask[i, j - 1] = True
    sub[n // 2][n - 1] = KEY if carrying else EMPTY
    return np.array([[sub[i][j] if mask[i, j] else UNSEEN for i in range(n)] for j in range(n)])


# --- layouts --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def every_grid():
    """200 reset states of every GRIDS task, all stored at 9 × 9 (one compilation)."""
    seq = G.grid_sequence(list(G.GRIDS))
    reset = jax.jit(lambda t, keys: jax.vmap(seq.reset, (None, 0))(task_slice(seq.params, t),
                                                                    keys))
    keys = jax.random.split(jax.random.key(0), 200)
    return seq, {name: jax.tree.map(np.asarray, reset(t, keys))
                 for t, name in enumerate(seq.env.names)}


def _rivers(interior, obstacle, size):
    """The river rows and columns of a crossing: lines whose interior is obstacle but for at
    most one opening (a line crossed by ≤ 3 rivers holds ≤ 3 obstacle cells otherwise)."""
    rows = [r for r in range(1, size - 1) if (interior[r] == obstacle).sum() >= size - 3]
    cols = [c for c in range(1, size - 1) if (interior[:, c] == obstacle).sum() >= size - 3]
    return rows, cols


def test_every_layout_is_solvable_and_follows_minigrid_rules(every_grid):
    seq, states = every_grid
    assert seq.env.size == 9 and seq.observation_size == 7 * 7 * G.NUM_CLASSES == 441
    assert seq.action_size == 7 and seq.goals is None
    assert (seq.env.view, seq.env.classes) == (7, G.NUM_CLASSES)
    for name, states_of in states.items():
        spec = G.GRIDS[name]
        size = spec.size
        assert spec.max_steps == (10 if spec.generator == G.DOOR_KEY else 4) * size * size
        splits, door_rows, directions, layouts = set(), set(), set(), set()
        for e in range(200):
            grid, pos, direction = states_of.grid[e], states_of.pos[e], int(states_of.dir[e])
            assert states_of.reward[e] == 0 and states_of.done[e] == 0 and states_of.steps[e] == 0
            assert not states_of.carrying[e]
            np.testing.assert_array_equal(states_of.obs[e].reshape(7, 7, -1).argmax(-1),
                                          minigrid_view(grid, pos, direction, False))
            # Outer walls, walls beyond them, the goal in the bottom-right corner.
            outside = np.ones((9, 9), bool)
            outside[1:size - 1, 1:size - 1] = False
            assert (grid[outside] == WALL).all(), name
            assert grid[size - 2, size - 2] == GOAL and (grid == GOAL).sum() == 1
            assert grid[pos[0], pos[1]] == EMPTY
            interior = grid[:size, :size].copy()
            interior[outside[:size, :size]] = EMPTY  # only the inside counts below
            if spec.generator == G.EMPTY_ROOM:
                assert ((interior == EMPTY) | (interior == GOAL)).all()
                assert tuple(pos) == (1, 1) and direction == 0
            elif spec.generator == G.DOOR_KEY:
                assert (grid == KEY).sum() == 1 and (grid == DOOR_LOCKED).sum() == 1
                (door_row,), (split,) = np.nonzero(grid == DOOR_LOCKED)
                column = grid[:size, split]
                assert 2 <= split <= size - 3 and 1 <= door_row <= size - 3
                assert ((column == WALL) | (column == DOOR_LOCKED)).all()  # a full wall column
                (key_row,), (key_col,) = np.nonzero(grid == KEY)
                assert key_col < split and pos[1] < split and (key_row, key_col) != tuple(pos)
                assert set(np.unique(interior[:, :split]).tolist()) <= {EMPTY, KEY}
                assert set(np.unique(interior[:, split + 1:]).tolist()) <= {EMPTY, GOAL}
                splits.add(int(split))
                door_rows.add(int(door_row))
                directions.add(direction)
            else:
                assert tuple(pos) == (1, 1) and direction == 0
                obstacle = LAVA if spec.lava else WALL
                other = WALL if spec.lava else LAVA
                assert not (interior == other).any() and not (interior == KEY).any()
                rows, cols = _rivers(interior, obstacle, size)
                assert len(rows) + len(cols) == spec.rivers, (name, rows, cols)
                assert all(r % 2 == 0 and 2 <= r <= size - 3 for r in rows + cols)
                on_river = np.zeros_like(interior, bool)
                on_river[rows, :] = on_river[:, cols] = True
                assert not ((interior == obstacle) & ~on_river).any()
                # Exactly one opening per river, never at a crossing of two rivers.
                for r in rows:
                    assert (interior[r, 1:size - 1] != obstacle).sum() == 1
                for c in cols:
                    assert (interior[1:size - 1, c] != obstacle).sum() == 1
                assert (interior[np.ix_(rows, cols)] == obstacle).all()
                n = spec.rivers
                assert (interior == obstacle).sum() == (n * (size - 2) - len(rows) * len(cols)
                                                        - n)
                directions.add(len(rows))
            assert solvable(grid, pos), (name, e)
            layouts.add(grid.tobytes() + pos.tobytes() + bytes([direction]))
        if spec.generator == G.DOOR_KEY:
            # Every split column and door row Minigrid allows, and every direction, occurs.
            assert splits == set(range(2, size - 2)), (name, splits)
            assert door_rows == set(range(1, size - 2)), (name, door_rows)
            assert directions == {0, 1, 2, 3}
        if spec.generator == G.CROSSING:
            assert directions == set(range(spec.rivers + 1))  # rows vs columns both drawn
            # S5N1 has 6 layouts (2 rivers × 3 openings); S9 has at least 42.
            assert len(layouts) == 6 if size == 5 else len(layouts) >= 30, len(layouts)
        if spec.generator == G.EMPTY_ROOM:
            assert len(layouts) == 1


# --- dynamics: hand-computed cases ----------------------------------------------------------

ROOM = parse(["#######",
              "#..K..#",
              "#.....#",
              "#D#C#O#",
              "#.L.G.#",
              "#.....#",
              "#######"])
TASK = G.GridTask(G.DOOR_KEY, 7, False, 0, 100)


def _step(pos, direction, action, carrying=False, steps=0, grid=ROOM):
    state = G.make_state(grid, pos, direction, carrying, steps)
    return jax.tree.map(np.asarray, G.grid_step(TASK, state, onehot(action)))


def test_turning_and_walls():
    for direction, action, turned in [(0, LEFT, 3), (0, RIGHT, 1), (3, RIGHT, 0), (2, LEFT, 1),
                                      (1, DONE, 1)]:
        s = _step((2, 1), direction, action, steps=4)
        assert int(s.dir) == turned and tuple(s.pos) == (2, 1) and int(s.steps) == 5
        assert s.reward == 0 and s.done == 0
        np.testing.assert_array_equal(s.grid, ROOM)
    assert tuple(_step((1, 1), 3, FORWARD).pos) == (1, 1)  # into the outer wall
    assert tuple(_step((2, 2), 1, FORWARD).pos) == (2, 2)  # into an inner wall
    assert tuple(_step((2, 1), 0, FORWARD).pos) == (2, 2)  # into an empty cell
    assert tuple(_step((1, 2), 0, FORWARD).pos) == (1, 2)  # a key blocks the way
    # Any score vector picks its argmax.
    s = G.grid_step(TASK, G.make_state(ROOM, (2, 1), 0), jnp.array([.1, .2, 3., 0, 0, 0, -1]))
    assert tuple(np.asarray(s.pos)) == (2, 2)


def test_pickup_and_drop():
    s = _step((1, 2), 0, PICKUP)
    assert s.carrying and s.grid[1, 3] == EMPTY and (s.grid == KEY).sum() == 0
    assert not _step((2, 2), 0, PICKUP).carrying  # nothing in front
    two_keys = ROOM.copy()
    two_keys[2, 3] = KEY
    s = _step((2, 2), 0, PICKUP, carrying=True, grid=two_keys)  # the hands are full
    assert s.carrying and s.grid[2, 3] == KEY
    s = _step((2, 2), 0, DROP, carrying=True)
    assert not s.carrying and s.grid[2, 3] == KEY
    s = _step((1, 2), 3, DROP, carrying=True)  # onto a wall: nothing happens
    assert s.carrying and s.grid[0, 2] == WALL
    s = _step((1, 2), 0, DROP, carrying=True)  # onto the other key: nothing happens
    assert s.carrying and (s.grid == KEY).sum() == 1


def test_doors():
    # Locked door below (2, 1): without the key it stays locked and blocks the way.
    s = _step((2, 1), 1, TOGGLE)
    assert s.grid[3, 1] == DOOR_LOCKED and tuple(_step((2, 1), 1, FORWARD).pos) == (2, 1)
    s = _step((2, 1), 1, TOGGLE, carrying=True)
    assert s.grid[3, 1] == DOOR_OPEN and s.carrying  # the key stays in hand
    s = G.grid_step(TASK, G.make_state(s.grid, s.pos, s.dir, s.carrying), onehot(FORWARD))
    assert tuple(np.asarray(s.pos)) == (3, 1)
    # Closed door below (2, 3): blocks; toggles open without a key, and closed again.
    assert tuple(_step((2, 3), 1, FORWARD).pos) == (2, 3)
    s = _step((2, 3), 1, TOGGLE)
    assert s.grid[3, 3] == DOOR_OPEN
    assert _step((2, 3), 1, TOGGLE, grid=s.grid).grid[3, 3] == DOOR_CLOSED
    # Open door below (2, 5): walk into it; drop is refused on a door.
    assert tuple(_step((2, 5), 1, FORWARD).pos) == (3, 5)
    assert _step((2, 5), 1, DROP, carrying=True).carrying


def test_goal_reward_and_lava():
    s = _step((4, 3), 0, FORWARD, steps=9)  # goal to the right, the 10th step
    assert tuple(s.pos) == (4, 4) and s.done == 1
    np.testing.assert_allclose(s.reward, 1 - 0.9 * 10 / 100, rtol=1e-6)
    s = _step((5, 4), 3, FORWARD, steps=49)  # the goal from below, the 50th step
    assert s.done == 1 and np.isclose(s.reward, 1 - 0.9 * 50 / 100)
    s = _step((4, 1), 0, FORWARD, steps=3)  # lava to the right
    assert tuple(s.pos) == (4, 2) and s.done == 1 and s.reward == 0
    assert _step((4, 1), 0, PICKUP).done == 0  # only walking in ends it


# --- the egocentric view --------------------------------------------------------------------

SMALL = parse(["#####",
               "#...#",
               "#...#",
               "#..G#",
               "#####"])
# The agent in the middle of SMALL, by direction: it sees its row and the one ahead, the wall
# beyond, nothing past the wall; the goal is ahead-right facing right, ahead-left facing down.
EDGE = [0, 2, 2, 2, 2, 2, 0]
NEAR = [0, 2, 1, 1, 1, 2, 0]
HIDDEN = [[0] * 7] * 4
VIEWS = {0: HIDDEN + [EDGE, [0, 2, 1, 1, 7, 2, 0], NEAR],
         1: HIDDEN + [EDGE, [0, 2, 7, 1, 1, 2, 0], NEAR],
         2: HIDDEN + [EDGE, NEAR, NEAR],
         3: HIDDEN + [EDGE, NEAR, NEAR]}
# A closed door in a wall column two cells ahead (the agent at (2, 1) facing right): the room
# behind it is unseen; with the door open the goal behind it shows.
SPLIT = ["#######",
         "#..#..#",
         "#..C.G#",
         "#..#..#",
         "#..#..#",
         "#..#..#",
         "#######"]
BEHIND_CLOSED = HIDDEN + [[0, 2, 2, 4, 2, 2, 2], [0, 2, 1, 1, 1, 1, 1], [0, 2, 1, 1, 1, 1, 1]]
BEHIND_OPEN = [[0] * 7, [0, 2, 2, 2, 2, 2, 2], [0, 2, 1, 7, 1, 1, 1], [0, 2, 1, 1, 1, 1, 1],
               [0, 2, 2, 3, 2, 2, 2], [0, 2, 1, 1, 1, 1, 1], [0, 2, 1, 1, 1, 1, 1]]


def _view(grid, pos, direction, carrying=False):
    state = G.make_state(grid, pos, direction, carrying)
    return np.asarray(state.obs).reshape(7, 7, G.NUM_CLASSES).argmax(-1)


def test_view_golden_cases():
    for direction, expected in VIEWS.items():
        np.testing.assert_array_equal(_view(SMALL, (2, 2), direction), expected, str(direction))
    carrying = np.array(VIEWS[2])
    carrying[6, 3] = KEY  # the carried key shows on the agent's cell
    np.testing.assert_array_equal(_view(SMALL, (2, 2), 2, carrying=True), carrying)
    np.testing.assert_array_equal(_view(parse(SPLIT), (2, 1), 0), BEHIND_CLOSED)
    opened = parse([row.replace("C", "O") for row in SPLIT])
    np.testing.assert_array_equal(_view(opened, (2, 1), 0), BEHIND_OPEN)
    obs = G.make_state(SMALL, (2, 2), 0).obs
    assert obs.shape == (441,) and obs.dtype == jnp.float32 and float(obs.sum()) == 49


def test_view_matches_minigrid_on_random_cluttered_grids():
    rng = np.random.default_rng(0)
    cells = np.array([EMPTY] * 6 + [WALL] * 3 + [DOOR_OPEN, DOOR_CLOSED, DOOR_LOCKED, KEY,
                                                  GOAL, LAVA])
    n = 400
    grids = rng.choice(cells, size=(n, 9, 9)).astype(np.int8)
    pos = rng.integers(0, 9, size=(n, 2))
    dirs = rng.integers(0, 4, size=n)
    carrying = rng.random(n) < 0.5
    views = np.asarray(jax.jit(jax.vmap(G.observe))(grids, pos, dirs, carrying))
    for e in range(n):
        np.testing.assert_array_equal(views[e], minigrid_view(grids[e], pos[e], dirs[e],
                                                              carrying[e]), str(e))
    assert (views == UNSEEN).mean() > 0.2  # occlusion happened


# --- tasks as data --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dreamer():
    """Continual-Dreamer's sequence and a jitted batch rollout with a traced task index, with a
    count of its traces."""
    seq = G.grid_sequence(CONTINUAL_DREAMER)
    traces = [0]

    @jax.jit
    def rollout(t, keys, actions):  # keys [B], actions [B, ROLLOUT] ints
        traces[0] += 1
        task = task_slice(seq.params, t)

        def one(key, acts):
            def body(state, action):
                state = seq.step(task, state, onehot(action))
                return state, state
            first = seq.reset(task, key)
            return first, jax.lax.scan(body, first, acts)[1]
        return jax.vmap(one)(keys, actions)
    return seq, rollout, traces


def test_a_traced_task_index_matches_eager_calls_and_compiles_once(dreamer):
    seq, rollout, traces = dreamer
    keys = jax.random.split(jax.random.key(3), 4)
    actions = jax.random.choice(jax.random.key(4), 7, (4, ROLLOUT),
                                p=jnp.array([.15, .15, .4, .1, .05, .1, .05]))
    firsts = []
    for t in range(3):
        first, states = rollout(t, keys, actions)
        task = task_slice(seq.params, t)  # eager, one task, one env
        state = seq.reset(task, keys[0])
        for leaf, expected in zip(state, jax.tree.map(lambda a: a[0], first)):
            np.testing.assert_array_equal(leaf, expected)
        for i in range(12):
            state = seq.step(task, state, onehot(actions[0, i]))
            for leaf, expected in zip(state, jax.tree.map(lambda a: a[0, i], states)):
                np.testing.assert_array_equal(leaf, expected)
        firsts.append(np.asarray(first.grid[0]))
    assert traces[0] == 1
    assert (firsts[0] == KEY).any() and (firsts[1] == LAVA).any()
    assert not (firsts[2] == LAVA).any() and (firsts[2][1:8, 1:8] == WALL).sum() == 6


def test_shortest_plans_reach_the_goal_through_step(dreamer):
    seq, rollout, traces = dreamer
    keys = jax.random.split(jax.random.key(5), 4)
    for t in range(3):
        first = jax.tree.map(np.asarray, rollout(t, keys, jnp.zeros((4, ROLLOUT), int))[0])
        plans = [plan(first.grid[e], first.pos[e], first.dir[e]) for e in range(4)]
        actions = np.full((4, ROLLOUT), DONE)
        for e, p in enumerate(plans):
            assert len(p) <= ROLLOUT
            actions[e, :len(p)] = p
        states = jax.tree.map(np.asarray, rollout(t, keys, jnp.asarray(actions))[1])
        for e, p in enumerate(plans):
            done = np.nonzero(states.done[e])[0]
            assert done[0] == len(p) - 1, (t, e)  # no lava on the way, the goal at the end
            np.testing.assert_allclose(states.reward[e, len(p) - 1],
                                       1 - 0.9 * len(p) / seq.env.max_steps[t], rtol=1e-6)
            assert (states.reward[e, :len(p) - 1] == 0).all()
    assert traces[0] == 1


def test_mixed_sizes_are_padded_with_walls():
    seq = G.grid_sequence(["empty-5x5", "doorkey-9x9"])
    assert seq.env.size == 9 and seq.env.max_steps == (100, 810) and seq.num_tasks == 2
    key = jax.random.key(7)
    small = seq.reset(task_slice(seq.params, 0), key)
    expected = np.full((9, 9), WALL)
    expected[:5, :5] = SMALL
    np.testing.assert_array_equal(small.grid, expected)
    alone = G.grid_sequence(["empty-5x5"])
    assert alone.env.size == 5
    np.testing.assert_array_equal(small.obs, alone.reset(task_slice(alone.params, 0), key).obs)
    big = seq.reset(task_slice(seq.params, 1), key)
    assert (np.asarray(big.grid) == KEY).sum() == 1 and (np.asarray(big.grid) == GOAL).sum() == 1
    assert np.asarray(big.grid)[7, 7] == GOAL


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown grid 'doorkey-7x7'; valid: empty-5x5, "
                                         "empty-6x6, .*simplecrossing-s9n3"):
        G.grid_sequence(["doorkey-5x5", "doorkey-7x7"])
    with pytest.raises(ValueError, match="no grids given"):
        G.grid_sequence([])
