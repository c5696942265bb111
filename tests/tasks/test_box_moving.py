"""Box-Moving in JAX: moves off the board or out of the episode's allowed region are no-ops, the
agent walks over boxes, PICK_UP and PUT_DOWN only act where they can (a box never enters another
box), carrying a box to its target succeeds exactly when the box board equals the target board
(reward and termination), carrying never counts, the paper's exact train and test pairs are the
adjacent and diagonal ordered quarter pairs and resets respect them, generalised:K starts exactly
K boxes on target, every task of a sequence runs under one compilation, the RL loop runs it and
bad specs name the valid forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from continual.agents import RLSpec, make_rl_train
from continual.runner import execute, run_keys
from experiments.experiment import hparams_of
from tasks.base import task_slice
from tasks.envs import box_moving as M
from tasks.schedule import parse as parse_schedule
from toy_rl import random_agent

SIZE, C = 4, 16
TASKS = ("exact:train", "exact:test", "exact:nw-ne", "exact:nw-se", "generalised:0",
         "generalized:1", "any")
N, S = 512, 30  # envs and steps of every rollout of the file (one compilation)
UP, DOWN, LEFT, RIGHT, PICK, PUT = range(6)
ROWS, COLS = np.divmod(np.arange(C), SIZE)
QUARTER = 2 * (ROWS >= SIZE // 2) + (COLS >= SIZE // 2)   # nw 0, ne 1, sw 2, se 3


def state(rows, agent, carrying=False, allowed=None):
    """A hand-worked state: ``rows`` of ``.`` (empty), ``B`` (box), ``T`` (target) and ``*``
    (box on target); the agent at cell ``agent``; ``allowed`` a set of cells (default all)."""
    chars = "".join(rows)
    boxes = [float(ch in "B*") for ch in chars]
    target = [float(ch in "T*") for ch in chars]
    mask = [float(allowed is None or c in allowed) for c in range(C)]
    obs = list(np.eye(C)[agent]) + [float(carrying)] + boxes + target
    return M.State(jnp.asarray(obs, jnp.float32), jnp.zeros(()), jnp.zeros(()),
                   jnp.asarray(mask, jnp.float32))


def parts(st):
    """(agent cell, carrying, boxes [C], target [C]) of a state, as numpy."""
    obs = np.asarray(st.obs)
    return int(obs[:C].argmax()), bool(obs[C]), obs[C + 1:2 * C + 1], obs[2 * C + 1:]


@pytest.fixture(scope="module")
def seq():
    """A sequence over every spec form, a jitted one-step function and a jitted rollout (traced
    task index) with a count of its traces."""
    s = M.box_moving_sequence(TASKS, size=SIZE, boxes=2)
    traces = [0]
    task0 = task_slice(s.params, 0)
    step = jax.jit(lambda st, a: s.step(task0, st, jax.nn.one_hot(a, 6)))

    @jax.jit
    def rollout(t, keys, actions):  # keys [N], actions [N, S]
        traces[0] += 1
        task = task_slice(s.params, t)

        def one(key, acts):
            def body(st, a):
                st = s.step(task, st, jax.nn.one_hot(a, 6))
                return st, st
            first = s.reset(task, key)
            return first, jax.lax.scan(body, first, acts)[1]
        return jax.vmap(one)(keys, actions)
    return s, step, rollout, traces


@pytest.fixture(scope="module")
def runs(seq):
    """Every task's resets and a random-action rollout from them, as numpy."""
    s, _, rollout, _ = seq
    keys = jax.random.split(jax.random.key(0), N)
    actions = jax.random.randint(jax.random.key(1), (N, S), 0, 6)
    out = {}
    for t, name in enumerate(TASKS):
        first, states = jax.tree.map(np.asarray, rollout(t, keys, actions))
        out[name] = first, states
    return out


def split(obs):
    """[..., 3C+1] → agent cell, carrying, boxes, target (numpy)."""
    return (obs[..., :C].argmax(-1), obs[..., C], obs[..., C + 1:2 * C + 1],
            obs[..., 2 * C + 1:])


def test_the_layout_and_goal_space(seq):
    s = seq[0]
    assert s.name == "boxes" and s.fresh_resets and s.num_tasks == len(TASKS)
    assert s.observation_size == 3 * C + 1 and s.action_size == 6 == len(M.ACTIONS)
    assert M.ACTIONS == ("UP", "DOWN", "LEFT", "RIGHT", "PICK_UP", "PUT_DOWN")
    assert s.goals.state_size == 2 * C + 1 and s.goals.indices == tuple(range(C + 1, 2 * C + 1))
    assert s.env.names == TASKS and s.env.size == SIZE and s.env.boxes == 2
    np.testing.assert_array_equal(np.asarray(M.quarter_of(SIZE)), QUARTER)


@pytest.mark.parametrize("agent, action, after", [
    (0, UP, 0), (0, LEFT, 0), (0, RIGHT, 1), (0, DOWN, 4),     # a corner: two edges
    (15, DOWN, 15), (15, RIGHT, 15), (15, UP, 11), (15, LEFT, 14),
    (3, RIGHT, 3), (12, LEFT, 12), (5, PICK, 5), (5, PUT, 5),
])
def test_moves_off_the_board_are_no_ops(seq, agent, action, after):
    st = state(["....", "....", "....", "...."], agent)
    assert parts(seq[1](st, action))[0] == after


def test_moves_outside_the_allowed_region_are_no_ops(seq):
    step = seq[1]
    north = {c for c in range(C) if ROWS[c] < 2}            # nw ∪ ne
    st = state(["....", "....", "....", "...."], 4, allowed=north)   # (1, 0)
    assert parts(step(st, DOWN))[0] == 4 and parts(step(st, RIGHT))[0] == 5
    assert parts(step(st, UP))[0] == 0
    west = {c for c in range(C) if COLS[c] < 2}             # nw ∪ sw
    st = state(["....", "....", "....", "...."], 9, allowed=west)    # (2, 1)
    assert parts(step(st, RIGHT))[0] == 9 and parts(step(st, LEFT))[0] == 8
    np.testing.assert_array_equal(step(st, RIGHT).allowed, st.allowed)


def test_the_agent_walks_over_boxes(seq):
    st = seq[1](state(["BB..", "....", "....", "TT.."], 0), RIGHT)
    agent, carrying, boxes, _ = parts(st)
    assert agent == 1 and not carrying and boxes[:2].tolist() == [1, 1]


def test_pick_up_and_put_down_only_act_where_they_can(seq):
    step = seq[1]
    empty = state(["B...", "....", "....", "T..."], 1)
    for action in (PICK, PUT):   # nothing to lift, nothing carried
        after = step(empty, action)
        np.testing.assert_array_equal(after.obs, empty.obs)
    # Carrying one box onto another: PUT_DOWN is a no-op (a box never enters a box's cell), and
    # PICK_UP a second box is too (one box at a time).
    onto = state(["B...", "....", "....", "TT.."], 0, carrying=True)
    for action in (PUT, PICK):
        after = step(onto, action)
        np.testing.assert_array_equal(after.obs, onto.obs)
        assert float(after.done) == 0
    lifted = step(state(["B...", "....", "....", "T..."], 0), PICK)
    agent, carrying, boxes, _ = parts(lifted)
    assert agent == 0 and carrying and boxes.sum() == 0


def test_pick_carry_put_moves_a_box_and_succeeds_on_the_target_board(seq):
    s, step = seq[0], seq[1]
    st = state(["B.T.", "...B", "....", "...T"], 0)
    # Lift the box at (0, 0), carry it to (0, 2), drop it; then the box at (1, 3) to (3, 3).
    script = [PICK, RIGHT, RIGHT, PUT, DOWN, RIGHT, PICK, DOWN, DOWN, PUT]
    boards = []
    for i, a in enumerate(script):
        st = step(st, a)
        boards.append(M.render(st, SIZE))
        expected = float(i == len(script) - 1)
        assert float(st.done) == float(st.reward) == expected, boards[-1]
        assert (float(s.goals.distance(st.obs)) < s.goals.threshold) == bool(expected)
    assert boards[0] == "a.T.\n...B\n....\n...T"          # carrying, the box off the board
    assert boards[3] == "..A.\n...B\n....\n...T"          # dropped on its target
    assert boards[6] == "..*.\n...a\n....\n...T"
    assert boards[-1] == "..*.\n....\n....\n...A"        # the agent hides the box on target
    agent, carrying, boxes, target = parts(st)
    np.testing.assert_array_equal(boxes, target)
    assert agent == 15 and not carrying


def test_carrying_never_counts_and_boxes_are_conserved(runs):
    for name, (first, states) in runs.items():
        assert (first.done == 0).all() and (first.reward == 0).all(), name
        _, carrying, boxes, target = split(states.obs)
        matched = (boxes == target).all(-1)
        np.testing.assert_array_equal(states.done, matched.astype(np.float32))
        np.testing.assert_array_equal(states.reward, states.done)
        assert (states.done[carrying > 0] == 0).all()
        np.testing.assert_array_equal(boxes.sum(-1) + carrying, 2.0)   # none lost or made
        np.testing.assert_array_equal(target.sum(-1), 2.0)


def test_the_paper_pairs_adjacent_for_training_diagonal_for_testing():
    adjacent = {("nw", "ne"), ("nw", "sw"), ("ne", "se"), ("sw", "se")}
    adjacent |= {(b, a) for a, b in adjacent}
    diagonal = {("nw", "se"), ("se", "nw"), ("ne", "sw"), ("sw", "ne")}
    assert set(M.ADJACENT) == adjacent and len(M.ADJACENT) == 8
    assert set(M.DIAGONAL) == diagonal and len(M.DIAGONAL) == 4
    assert not adjacent & diagonal
    assert adjacent | diagonal == {(a, b) for a in M.QUARTERS for b in M.QUARTERS if a != b}
    pairs = lambda task: {(M.QUARTERS[i], M.QUARTERS[j])  # noqa: E731
                          for i in range(4) for j in range(4) if task.pairs[i][j]}
    train, test = M.parse_task("exact:train"), M.parse_task("exact:test")
    assert pairs(train) == adjacent and train.confine and not train.anywhere
    assert pairs(test) == diagonal and not test.confine and not test.anywhere
    one = M.parse_task("exact:sw-se")
    assert pairs(one) == {("sw", "se")} and one.confine
    assert not M.parse_task("exact:sw-ne").confine


def quarters_of(cells):
    """[N, C] 0/1 → per env the set of quarters the marked cells occupy."""
    return [frozenset(QUARTER[row > 0].tolist()) for row in cells]


def test_exact_train_stays_in_the_adjacent_pair_of_quarters(runs):
    first, states = runs["exact:train"]
    agent, _, boxes, target = split(first.obs)
    drawn = set()
    for e in range(N):
        (start,), (goal,) = quarters_of(boxes[e:e + 1])[0], quarters_of(target[e:e + 1])[0]
        drawn.add((M.QUARTERS[start], M.QUARTERS[goal]))
        union = np.isin(QUARTER, [start, goal])
        np.testing.assert_array_equal(first.allowed[e], union.astype(np.float32))
        assert union[agent[e]]
    assert drawn == set(M.ADJACENT)   # every ordered adjacent pair is drawn
    # Through a random rollout the agent and every box stay in the two quarters.
    agent, _, boxes, _ = split(states.obs)
    allowed = first.allowed[:, None, :]
    assert np.take_along_axis(allowed[:, 0], agent, 1).all()
    assert (boxes * (1 - allowed) == 0).all()


def test_exact_test_starts_and_targets_sit_in_diagonal_quarters(runs):
    first, _ = runs["exact:test"]
    _, _, boxes, target = split(first.obs)
    drawn = {(M.QUARTERS[min(a)], M.QUARTERS[min(b)])
             for a, b in zip(quarters_of(boxes), quarters_of(target)) if len(a) == len(b) == 1}
    assert len(drawn) == 4 and drawn == set(M.DIAGONAL)
    assert all(len(q) == 1 for q in quarters_of(boxes) + quarters_of(target))
    assert (first.allowed == 1).all()   # not confined: the agent crosses an adjacent quarter
    one, _ = runs["exact:nw-se"]
    assert set(quarters_of(split(one.obs)[2])) == {frozenset({0})}
    assert set(quarters_of(split(one.obs)[3])) == {frozenset({3})}
    assert (one.allowed == 1).all()
    one, _ = runs["exact:nw-ne"]
    assert set(quarters_of(split(one.obs)[2])) == {frozenset({0})}
    assert set(quarters_of(split(one.obs)[3])) == {frozenset({1})}
    np.testing.assert_array_equal(one.allowed, np.broadcast_to(QUARTER < 2, (N, C)))


@pytest.mark.parametrize("name, k", [("generalised:0", 0), ("generalized:1", 1), ("any", 0)])
def test_generalised_k_starts_exactly_k_boxes_on_target(runs, name, k):
    first, _ = runs[name]
    agent, carrying, boxes, target = split(first.obs)
    np.testing.assert_array_equal((boxes * target).sum(-1), k)
    np.testing.assert_array_equal(boxes.sum(-1), 2)
    np.testing.assert_array_equal(target.sum(-1), 2)
    assert (carrying == 0).all() and (first.allowed == 1).all()
    # Anywhere on the board: every quarter holds boxes and targets in some episode.
    assert set(QUARTER[boxes.sum(0) > 0]) == set(QUARTER[target.sum(0) > 0]) == {0, 1, 2, 3}
    assert len(set(agent.tolist())) == C


def test_every_task_runs_under_one_compilation(seq, runs):
    assert len(runs) == len(TASKS) and seq[3][0] == 1


def test_render_draws_the_board():
    st = state(["B.T.", "..*.", "....", "...T"], 5, carrying=True)
    assert M.render(st, SIZE) == "B.T.\n.a*.\n....\n...T"
    assert M.render(st.obs, SIZE) == M.render(st, SIZE)
    assert M.render(state(["*...", "....", "....", "...."], 15), SIZE).endswith("...A")


@pytest.mark.slow  # the loop's compile (~7 s); lightsout-crl's end-to-end test covers the path
def test_the_rl_loop_runs_box_moving():
    s = M.box_moving_sequence(["exact:train", "exact:test"])
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=2, episode_length=5, eval_envs=2,
                  eval_length=5, probe_examples=2)
    train = make_rl_train(spec, random_agent(s.observation_size, s.action_size, 2), s)
    _, logs = execute(train, run_keys([0]), hparams_of(pd.DataFrame({"seed": [0]})), (),
                      s.params, parse_schedule("sequential", 2, 2), mode="sweep")
    returns = np.asarray(logs["eval_return"])
    assert returns.shape == (1, 4, 2) and "eval_success" in logs
    assert ((returns >= 0) & (returns <= 1)).all()


@pytest.mark.parametrize("spec, words", [
    ("exact", "valid: exact:train, exact:test, exact:Q1-Q2"), ("exact:nw-nw", "different"),
    ("exact:nw-xx", "generalised:K"), ("generalised:-1", "valid"), ("generalised:2",
                                                                    "on_target < boxes"),
    ("sokoban", "any"), ("exact:valid", "exact:Q1-Q2"),
])
def test_bad_task_specs_say_what_is_valid(spec, words):
    with pytest.raises(ValueError, match=words):
        M.parse_task(spec, 4, 2)


def test_boards_too_small_for_their_boxes_are_refused():
    assert M.parse_task("exact:train", 4, 4).boxes == 4          # a full quarter
    assert M.parse_task("exact:test", 6, 9).boxes == 9
    with pytest.raises(ValueError, match="5 boxes do not fit a quarter"):
        M.parse_task("exact:train", 4, 5)
    assert M.parse_task("generalised:0", 4, 8).boxes == 8        # 2·8 − 0 = 16 cells
    with pytest.raises(ValueError, match="2·boxes − on_target <= 16"):
        M.parse_task("any", 4, 9)
    assert M.parse_task("generalised:2", 4, 9).on_target == 2    # 18 − 2 = 16
    for size in (3, 0):
        with pytest.raises(ValueError, match="even and >= 2"):
            M.box_moving_sequence(["any"], size=size)
    with pytest.raises(ValueError, match="no Box-Moving tasks"):
        M.box_moving_sequence([])
    confined_diagonal = M.parse_task("exact:test")._replace(confine=True)
    with pytest.raises(ValueError, match="cannot use a diagonal pair"):
        M.box_moving_sequence([confined_diagonal])
    custom = M.box_moving_sequence([M.parse_task("exact:nw-ne", 4, 3)._replace(on_target=1)])
    assert custom.env.names == ("boxes=3,on_target=1,nw-ne,confined",)
