"""tasks.schedule: every schedule's interval → task (and share) table, by hand on small cases."""
import numpy as np
import pytest

from tasks.schedule import ScheduleError, from_visits, parse


def table(s):
    """(task, other, share, switch, announce, previous) per interval, as plain lists."""
    return (s.task.tolist(), s.other.tolist(), np.round(s.share, 6).tolist(), s.switch.tolist(),
            s.announce.tolist(), s.previous.tolist())


F, T_ = False, True


def test_sequential_is_each_task_once_in_order():
    s = parse("sequential", 3, 2)
    assert table(s) == ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [0.0] * 6,
                        [T_, F, T_, F, T_, F], [F, F, T_, F, T_, F], [0, 0, 0, 1, 1, 2])
    assert s.length == 6 and not s.mixed


def test_repeat_runs_the_sequence_k_times_and_announces_every_switch():
    s = parse("repeat:2", 2, 1)
    assert table(s) == ([0, 1, 0, 1], [0, 1, 0, 1], [0.0] * 4, [T_] * 4, [F, T_, T_, T_],
                        [0, 0, 1, 0])


def test_order_with_and_without_own_lengths():
    assert parse("order:0,1,0", 2, 2).task.tolist() == [0, 0, 1, 1, 0, 0]
    s = parse("order:1x1,0x3,1", 2, 2)
    assert s.task.tolist() == [1, 0, 0, 0, 1, 1]
    assert s.switch.tolist() == [T_, T_, F, F, T_, F]
    assert s.previous.tolist() == [1, 1, 0, 0, 0, 1]


def test_a_repeated_task_in_a_row_is_one_visit():
    s = parse("order:0,0,1", 2, 1)
    assert s.switch.tolist() == [T_, F, T_] and s.announce.tolist() == [F, F, T_]


def test_durations_give_unequal_visits():
    s = parse("durations:1,4,1", 3, 2)
    assert s.task.tolist() == [0, 1, 1, 1, 1, 2]
    assert s.announce.tolist() == [F, T_, F, F, F, T_]


def test_curriculum_orders_tasks_by_difficulty_ties_in_task_order():
    assert parse("curriculum:3,1,2,1", 4, 1).task.tolist() == [1, 3, 2, 0]


def test_drift_linear_window_2_blends_a_quarter_then_three_quarters():
    s = parse("drift:window=2", 2, 2)
    # Intervals 1 and 2 straddle the switch: 25% then 75% of task 1; the larger share names
    # the interval's task.
    assert table(s) == ([0, 0, 1, 1], [0, 1, 0, 1], [0.0, 0.25, 0.25, 0.0],
                        [T_, F, T_, F], [F, F, T_, F], [0, 0, 0, 1])
    np.testing.assert_allclose(s.shares(2), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert s.mixed


def test_drift_sigmoid_window_4_rises_along_a_logistic_curve():
    s = parse("drift:window=4,shape=sigmoid", 2, 4)
    x = (np.arange(4) + 0.5) / 4
    rise = 1 / (1 + np.exp(-10 * (x - 0.5)))
    np.testing.assert_allclose(s.shares(2)[2:6, 1], rise, rtol=1e-6)
    assert s.task.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(s.shares(2).sum(axis=1), 1.0, rtol=1e-6)


def test_drift_odd_window_keeps_the_old_task_at_an_even_split():
    s = parse("drift:window=3", 2, 3)
    np.testing.assert_allclose(s.shares(2)[2:5, 1], [1 / 6, 0.5, 5 / 6], rtol=1e-6)
    assert s.task.tolist() == [0, 0, 0, 0, 1, 1]  # 0.5 is not a majority: still task 0


def test_random_is_seeded_never_repeats_a_task_in_a_row_and_respects_the_dwell():
    a = parse("random:dwell=2", 4, 4, seed=3)
    b = parse("random:dwell=2", 4, 4, seed=3)
    c = parse("random:dwell=2,seed=4", 4, 4, seed=3)
    assert a.task.tolist() == b.task.tolist() != c.task.tolist()
    assert a.length == 16
    starts = np.flatnonzero(a.switch)
    lengths = np.diff(np.append(starts, a.length))
    assert (lengths >= 2).all() and (lengths <= 4 + 1).all()  # a short tail joins the last visit
    visit_tasks = a.task[starts]
    assert (visit_tasks[1:] != visit_tasks[:-1]).all()


def test_random_with_a_visit_count():
    s = parse("random:dwell=1,visits=5", 3, 2, seed=0)
    assert int(s.switch.sum()) == 5


def test_hidden_boundaries_announce_nothing_but_keep_the_switches():
    s = parse("repeat:2", 2, 2, boundaries="hidden")
    assert not s.announce.any()
    assert s.switch.tolist() == [T_, F, T_, F, T_, F, T_, F]


def test_a_new_schedule_of_the_same_length_has_the_same_shapes():
    shapes = {tuple(a.shape for a in parse(text, 2, 4)) for text in
              ("sequential", "order:1,0", "durations:3,5", "drift:window=4", "random:dwell=2")}
    assert shapes == {((8,),) * 7}


@pytest.mark.parametrize("text, message", [
    ("bogus", r"unknown schedule 'bogus'; valid: sequential, repeat:K"),
    ("repeat:0", r"repeat takes one count >= 1"),
    ("repeat:a", r"repeat must be comma-separated integers"),
    ("order:0,5", r"task\(s\) \[5\] out of range: the sequence has tasks 0..1"),
    ("order:0y2", r"order: visits are task or taskxINTERVALS"),
    ("order:", r"order needs at least one visit"),
    ("durations:1", r"durations needs one count >= 1 per task \(2 tasks\)"),
    ("curriculum:1", r"curriculum needs one difficulty per task \(2 tasks\)"),
    ("drift:window=9", r"drift: window must be in 1..2"),
    ("drift:shape=cubic", r"drift: unknown shape 'cubic'; valid: linear, sigmoid"),
    ("drift:width=2", r"drift: unknown option 'width=2'; valid: window=, shape="),
    ("random:dwell=0", r"random: dwell must be >= 1"),
])
def test_bad_schedules_say_what_is_valid(text, message):
    with pytest.raises(ScheduleError, match=message):
        parse(text, 2, 2)


def test_unknown_boundaries_are_named():
    with pytest.raises(ScheduleError, match=r"unknown boundaries 'secret'; valid: announced, "
                                            r"hidden"):
        from_visits([(0, 1)], 1, "secret")


def test_every_interval_carries_its_index():
    np.testing.assert_array_equal(parse("repeat:2", 2, 2).interval, np.arange(8))
