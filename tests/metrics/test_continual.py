"""Golden-value tests for metrics.continual (all expected values by hand).

Tasks are 0-based: R[k, j] = accuracy on task j after training tasks 0..k-1,
row 0 = at initialisation. With a schedule of visits (tasks[v] the task of visit v),
R[v, j] = accuracy on task j after visits 0..v-1.
"""

import numpy as np
import pytest
import scipy.stats

from metrics import continual as C

nan = np.nan

# T = 3.
#            task0 task1 task2
A = np.array([[10, 20, 30],   # k=0: init
              [80, 25, 35],   # k=1: after task 0
              [72, 85, 40],   # k=2: after task 1
              [60, 75, 90]])  # k=3: after task 2
# acc_avg        = (60 + 75 + 90) / 3                      = 75
# acc_avg_curve  = [80, (72 + 85)/2, 75]                   = [80, 78.5, 75]
# plasticity     = sub-diagonal R[j+1, j] = [80, 85, 90]
# forgetting_max : f0 = max(R[1,0]=80, R[2,0]=72) - 60      = 20
#                  f1 = max(R[2,1]=85) - 75                 = 10   -> 15
# forgetting_last: ((80 - 60) + (85 - 75)) / 2             = 15
# bwt            : ((60 - 80) + (75 - 85)) / 2             = -15
# bwt_1step      : ((R[2,0]-R[1,0]) + (R[3,1]-R[2,1])) / 2 = ((72-80) + (75-85)) / 2 = -9
# fwt_gem        : ((R[1,1]-R[0,1]) + (R[2,2]-R[0,2])) / 2 = ((25-20) + (40-30)) / 2 = 7.5
A_GOLDEN = {
    "acc_avg": 75.0,
    "forgetting_max": 15.0,
    "forgetting_last": 15.0,
    "bwt": -15.0,
    "bwt_1step": -9.0,
    "fwt_gem": 7.5,
}

# Task 0 peaks after training task 1 (backward transfer), and task 1 has a high
# zero-shot accuracy (R[1,1] = 99) before its own training.
B = np.array([[10, 20, 30],
              [80, 99, 35],
              [95, 85, 40],
              [60, 75, 90]])
# forgetting_max : f0 = max(80, 95) - 60 = 35; f1 = 85 - 75 = 10 (R[1,1]=99 is
#                  zero-shot, not a peak)                      -> 22.5
# forgetting_last: ((80 - 60) + (85 - 75)) / 2                 = 15
# bwt            : -15;  bwt_1step: ((95-80) + (75-85)) / 2    = 2.5
# fwt_gem        : ((99 - 20) + (40 - 30)) / 2                 = 44.5
# acc_avg        : 75
B_GOLDEN = {
    "acc_avg": 75.0,
    "forgetting_max": 22.5,
    "forgetting_last": 15.0,
    "bwt": -15.0,
    "bwt_1step": 2.5,
    "fwt_gem": 44.5,
}


def test_summarize_golden_A():
    out = C.summarize(A)
    assert set(out) == set(A_GOLDEN)
    for key, val in A_GOLDEN.items():
        assert out[key].shape == ()
        np.testing.assert_allclose(out[key], val, err_msg=key)


def test_summarize_golden_B():
    out = C.summarize(B)
    for key, val in B_GOLDEN.items():
        np.testing.assert_allclose(out[key], val, err_msg=key)


def test_acc_avg_and_curve():
    np.testing.assert_allclose(C.acc_avg(A), 75.0)
    np.testing.assert_allclose(C.acc_avg_curve(A), [80.0, 78.5, 75.0])
    # The curve's last entry is acc_avg, and unseen (upper-triangle) entries are not read.
    A_nan = A.astype(float)
    A_nan[1, 1:] = nan
    A_nan[2, 2] = nan
    np.testing.assert_allclose(C.acc_avg_curve(A_nan), [80.0, 78.5, 75.0])


def test_plasticity_curve_is_subdiagonal():
    np.testing.assert_array_equal(C.plasticity_curve(A), [80.0, 85.0, 90.0])
    np.testing.assert_array_equal(C.plasticity_curve(B), [80.0, 85.0, 90.0])


def test_forgetting_max_differs_from_last_when_peak_after_training():
    assert C.forgetting_max(B) == pytest.approx(22.5)
    assert C.forgetting_last(B) == pytest.approx(15.0)
    # Without a later peak the two agree.
    assert C.forgetting_max(A) == pytest.approx(C.forgetting_last(A))


def test_forgetting_last_unclipped():
    # T = 2, task 0 improves: 50 after its training, 70 at the end -> -20.
    R = np.array([[0, 0], [50, 10], [70, 80]])
    assert C.forgetting_last(R) == pytest.approx(-20.0)
    # forgetting_max: only row l=1 in 1..T-1 -> 50 - 70 = -20 as well.
    assert C.forgetting_max(R) == pytest.approx(-20.0)


def test_bwt_is_minus_forgetting_last():
    rng = np.random.default_rng(1)
    R = rng.uniform(0, 100, size=(7, 6, 5))
    np.testing.assert_allclose(C.bwt(R), -C.forgetting_last(R))
    np.testing.assert_allclose(C.bwt(B), -15.0)


def test_bwt_1step():
    assert C.bwt_1step(A) == pytest.approx(-9.0)
    assert C.bwt_1step(B) == pytest.approx(2.5)


def test_fwt_uses_row_zero():
    assert C.fwt_gem(A) == pytest.approx(7.5)
    # Raising task 2's init accuracy by 10 lowers FWT by 10 / (T-1) = 5.
    A2 = A.astype(float)
    A2[0, 2] += 10
    assert C.fwt_gem(A2) == pytest.approx(2.5)
    # Task 0's init accuracy is not used (there is no task before it).
    A2[0, 0] = nan
    assert C.fwt_gem(A2) == pytest.approx(2.5)


def test_reference_mammoth_example():
    # REFERENCE.md §5: results [[90],[70,88],[60,75,85]], random-init 10/30/40.
    R = np.array([[10, 30, 40],
                  [90, nan, nan],
                  [70, 88, nan],
                  [60, 75, 85]])
    # BWT = ((60 - 90) + (75 - 88)) / 2 = -21.5; the upper triangle is not read.
    assert C.bwt(R) == pytest.approx(-21.5)
    assert C.forgetting_last(R) == pytest.approx(21.5)
    assert C.acc_avg(R) == pytest.approx((60 + 75 + 85) / 3)
    # FWT needs the diagonal R[j, j] (task j before its training).
    assert np.isnan(C.fwt_gem(R))
    # mammoth's pitfall: zero-padding those entries gives ((0-30)+(0-40))/2 = -35.
    assert C.fwt_gem(np.nan_to_num(R)) == pytest.approx(-35.0)
    # With real zero-shot accuracies R[1,1]=35, R[2,2]=50: ((35-30)+(50-40))/2 = 7.5.
    R_full = np.nan_to_num(R)
    R_full[1, 1], R_full[2, 2] = 35, 50
    assert C.fwt_gem(R_full) == pytest.approx(7.5)
    assert C.bwt(R_full) == pytest.approx(-21.5)


def test_batch_dims():
    R = np.stack([A, B]).astype(float)  # [2, 4, 3]
    out = C.summarize(R)
    for key in A_GOLDEN:
        np.testing.assert_allclose(out[key], [A_GOLDEN[key], B_GOLDEN[key]], err_msg=key)
    R2 = np.stack([R, R[::-1], R])  # [3, 2, 4, 3]
    out2 = C.summarize(R2)
    for key in A_GOLDEN:
        assert out2[key].shape == (3, 2)
        np.testing.assert_allclose(out2[key][1], [B_GOLDEN[key], A_GOLDEN[key]], err_msg=key)
    assert C.acc_avg_curve(R2).shape == (3, 2, 3)
    assert C.plasticity_curve(R2).shape == (3, 2, 3)
    np.testing.assert_allclose(C.acc_avg_curve(R2)[0, 1], [80.0, (95 + 85) / 2, 75.0])


def test_single_task_nan():
    R = np.array([[10.0], [80.0]])
    out = C.summarize(R)
    assert out["acc_avg"] == pytest.approx(80.0)
    for key in ("forgetting_max", "forgetting_last", "bwt", "bwt_1step", "fwt_gem"):
        assert out[key].shape == ()
        assert np.isnan(out[key]), key
    np.testing.assert_array_equal(C.acc_avg_curve(R), [80.0])
    np.testing.assert_array_equal(C.plasticity_curve(R), [80.0])
    batched = C.summarize(np.tile(R, (5, 1, 1)))
    assert batched["bwt"].shape == (5,) and np.isnan(batched["bwt"]).all()
    np.testing.assert_allclose(batched["acc_avg"], np.full(5, 80.0))


def test_bad_shape():
    with pytest.raises(ValueError):
        C.acc_avg(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        C.bwt(np.zeros(4))


def test_iqm_golden():
    # n = 8 -> cut 2 each side: middle [3, 4, 5, 6] -> 4.5 (mean would be 16.5).
    x = np.array([100, 1, 2, 3, 4, 5, 6, 7])
    assert C.iqm(x) == pytest.approx(4.5)
    # n = 5 -> cut int(1.25) = 1 each side: [2, 3, 4] -> 3.
    assert C.iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 11))
    np.testing.assert_allclose(C.iqm(y), scipy.stats.trim_mean(y, 0.25, axis=-1))
    np.testing.assert_allclose(C.iqm(y, axis=0), scipy.stats.trim_mean(y, 0.25, axis=0))


def test_bootstrap_constant_zero_width():
    for stat in ("mean", "iqm"):
        point, low, high = C.bootstrap_ci(np.full(10, 3.0), statistic=stat)
        assert point == low == high == 3.0


def test_bootstrap_contains_mean_and_iqm():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, size=30)
    point, low, high = C.bootstrap_ci(x)
    assert point == pytest.approx(x.mean())
    assert low < point < high
    # Width of a 95% CI of the mean is about 2 * 1.96 / sqrt(30) ~ 0.72.
    assert 0.4 < high - low < 1.1
    p90 = C.bootstrap_ci(x, level=0.9)
    assert p90[1] > low and p90[2] < high
    point_iqm, low_iqm, high_iqm = C.bootstrap_ci(x, statistic="iqm")
    assert point_iqm == pytest.approx(C.iqm(x))
    assert low_iqm < point_iqm < high_iqm
    # Deterministic for a given seed.
    assert C.bootstrap_ci(x, seed=3) == C.bootstrap_ci(x, seed=3)


def test_bootstrap_drops_nan_and_batches():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 12))
    x_nan = x.copy()
    x_nan[1, [2, 7]] = nan
    point, low, high = C.bootstrap_ci(x_nan)
    assert point.shape == low.shape == high.shape == (3,)
    np.testing.assert_allclose(point[1], np.delete(x[1], [2, 7]).mean())
    ref = C.bootstrap_ci(np.delete(x[1], [2, 7]))
    np.testing.assert_allclose([point[1], low[1], high[1]], ref)
    np.testing.assert_allclose(point[[0, 2]], x[[0, 2]].mean(axis=-1))
    allnan = C.bootstrap_ci(np.full((2, 4), nan))
    assert all(np.isnan(v).all() for v in allnan)


def test_bootstrap_bad_args():
    with pytest.raises(ValueError):
        C.bootstrap_ci(np.ones(5), statistic="median")
    with pytest.raises(ValueError):
        C.bootstrap_ci(np.ones(5), level=1.5)


# --------------------------------------------------------------------------------------------
# Schedules with repeats: R[v, j] has one row per visit, tasks[v] the task of visit v.
# --------------------------------------------------------------------------------------------


def sequential_reference(R):
    """The sequential formulas of REFERENCE.md §5 (0-based), written out loop by loop."""
    T = R.shape[-1]
    return {
        "acc_avg": np.mean([R[T, j] for j in range(T)]),
        "forgetting_max": np.mean([max(R[l, j] for l in range(j + 1, T)) - R[T, j]
                                   for j in range(T - 1)]),
        "forgetting_last": np.mean([R[j + 1, j] - R[T, j] for j in range(T - 1)]),
        "bwt": np.mean([R[T, j] - R[j + 1, j] for j in range(T - 1)]),
        "bwt_1step": np.mean([R[j + 2, j] - R[j + 1, j] for j in range(T - 1)]),
        "fwt_gem": np.mean([R[j, j] - R[0, j] for j in range(1, T)]),
        "plasticity": [R[j + 1, j] for j in range(T)],
        "acc_avg_curve": [np.mean(R[k, :k]) for k in range(1, T + 1)],
    }


@pytest.mark.parametrize("T", [2, 3, 6])
def test_general_path_equals_sequential_formulas_on_random_R(T):
    rng = np.random.default_rng(T)
    Rs = rng.uniform(0, 100, size=(5, T + 1, T))
    tasks = np.arange(T)
    general = C.summarize(Rs, tasks)
    default = C.summarize(Rs)
    for r, R in enumerate(Rs):
        ref = sequential_reference(R)
        for key in A_GOLDEN:
            np.testing.assert_allclose(general[key][r], ref[key], err_msg=key)
            np.testing.assert_allclose(default[key][r], ref[key], err_msg=key)
        np.testing.assert_allclose(C.plasticity_curve(R, tasks), ref["plasticity"])
        np.testing.assert_allclose(C.acc_avg_curve(R, tasks), ref["acc_avg_curve"])


# Tasks 0, 1, 0, 1 (S = 4 visits, T = 2); row v = after visits 0..v-1.
#              task0 task1
REP = np.array([[10, 20],   # init
                [95, 30],   # after v0 (task 0)
                [50, 70],   # after v1 (task 1)
                [90, 40],   # after v2 (task 0)
                [60, 85]])  # after v3 (task 1): final
REP_TASKS = np.array([0, 1, 0, 1])
# The last visit trains task 1, so only task 0 can have been forgotten.
# acc_avg        : (60 + 85) / 2                                          = 72.5
# acc_avg_curve  : [95, (50+70)/2, (90+40)/2, 72.5]                       = [95, 60, 65, 72.5]
# plasticity     : [R[1,0], R[2,1], R[3,0], R[4,1]]                       = [95, 70, 90, 85]
# forgetting_max : task 0, rows 1..3 (after its first visit, before the last row):
#                  max(95, 50, 90) - 60                                   = 35
# forgetting_last: task 0's last visit is v2: R[3,0] - R[4,0] = 90 - 60   = 30
# bwt            : -30
# bwt_1step      : v0: R[2,0]-R[1,0] = -45; v1: R[3,1]-R[2,1] = -30;
#                  v2: R[4,0]-R[3,0] = -30                     -> -105/3  = -35
# fwt_gem        : first visits after v0: task 1 at v1: R[1,1] - R[0,1]   = 10
REP_GOLDEN = {"acc_avg": 72.5, "forgetting_max": 35.0, "forgetting_last": 30.0, "bwt": -30.0,
              "bwt_1step": -35.0, "fwt_gem": 10.0}

# Tasks 0, 1, 2, 0 (T = 3): the last visit revisits task 0, so tasks 1 and 2 are the earlier.
REP3 = np.array([[10, 20, 30],
                 [80, 25, 35],   # after v0 (task 0)
                 [60, 90, 40],   # after v1 (task 1)
                 [50, 70, 85],   # after v2 (task 2)
                 [88, 65, 75]])  # after v3 (task 0): final
REP3_TASKS = np.array([0, 1, 2, 0])
# acc_avg        : (88 + 65 + 75) / 3                                    = 76
# acc_avg_curve  : [80, (60+90)/2, (50+70+85)/3, 76]
# plasticity     : [R[1,0], R[2,1], R[3,2], R[4,0]]                      = [80, 90, 85, 88]
# forgetting_max : task 1: max(R[2,1], R[3,1]) - R[4,1] = 90 - 65 = 25;
#                  task 2: R[3,2] - R[4,2] = 85 - 75 = 10               -> 17.5
# forgetting_last: task 1: R[2,1] - 65 = 25; task 2: R[3,2] - 75 = 10   -> 17.5
# bwt            : -17.5
# bwt_1step      : v0: 60-80 = -20; v1: 70-90 = -20; v2: 75-85 = -10    -> -50/3
# fwt_gem        : task 1: R[1,1]-R[0,1] = 5; task 2: R[2,2]-R[0,2] = 10 -> 7.5
#                  (task 0's revisit is not forward transfer)
REP3_GOLDEN = {"acc_avg": 76.0, "forgetting_max": 17.5, "forgetting_last": 17.5, "bwt": -17.5,
               "bwt_1step": -50.0 / 3, "fwt_gem": 7.5}


@pytest.mark.parametrize("R, tasks, golden", [(REP, REP_TASKS, REP_GOLDEN),
                                              (REP3, REP3_TASKS, REP3_GOLDEN)])
def test_summarize_golden_repeated_schedule(R, tasks, golden):
    out = C.summarize(R, tasks)
    assert set(out) == set(golden)
    for key, val in golden.items():
        assert out[key].shape == ()
        np.testing.assert_allclose(out[key], val, err_msg=key)


def test_curves_on_repeated_schedules_have_one_entry_per_visit():
    np.testing.assert_array_equal(C.plasticity_curve(REP, REP_TASKS), [95, 70, 90, 85])
    np.testing.assert_allclose(C.acc_avg_curve(REP, REP_TASKS), [95, 60, 65, 72.5])
    np.testing.assert_array_equal(C.plasticity_curve(REP3, REP3_TASKS), [80, 90, 85, 88])
    np.testing.assert_allclose(C.acc_avg_curve(REP3, REP3_TASKS),
                               [80, 75, (50 + 70 + 85) / 3, 76])


def test_repeated_schedule_reads_only_the_entries_it_needs():
    # forgetting_max of task 0 never reads row 0 (before its first visit) nor zero-shot rows;
    # acc_avg and the forgetting metrics never read task 1 before its first visit (R[1, 1]),
    # which only fwt_gem needs.
    R = REP.astype(float)
    R[0, 0] = nan
    R[1, 1] = nan
    out = C.summarize(R, REP_TASKS)
    for key in ("acc_avg", "forgetting_max", "forgetting_last", "bwt", "bwt_1step"):
        np.testing.assert_allclose(out[key], REP_GOLDEN[key], err_msg=key)
    assert np.isnan(out["fwt_gem"])


def test_repeated_schedule_batches():
    Rs = np.stack([REP, REP[:, ::-1]]).astype(float)  # the second: tasks swapped, so 1,0,1,0
    out = C.summarize(Rs, REP_TASKS)
    swapped = C.summarize(REP[:, ::-1], REP_TASKS)
    for key in REP_GOLDEN:
        assert out[key].shape == (2,)
        np.testing.assert_allclose(out[key], [REP_GOLDEN[key], swapped[key]], err_msg=key)
    # Swapping the task columns of R is the same as the schedule 1, 0, 1, 0 on REP.
    relabelled = C.summarize(REP, 1 - REP_TASKS)
    for key in REP_GOLDEN:
        np.testing.assert_allclose(swapped[key], relabelled[key], err_msg=key)
    # Tasks 1,0,1,0 on REP: final task 0, earlier task 1: forgetting_last = R[3,1] - R[4,1].
    assert relabelled["forgetting_last"] == pytest.approx(40 - 85)
    assert C.plasticity_curve(Rs, REP_TASKS).shape == (2, 4)


def test_untrained_task_is_left_out():
    # T = 3 evaluated, only tasks 0 and 1 trained (one visit each).
    R = np.array([[10, 20, 30],
                  [80, 25, 35],
                  [70, 90, 99]])
    tasks = np.array([0, 1])
    out = C.summarize(R, tasks)
    assert out["acc_avg"] == pytest.approx((70 + 90) / 2)  # task 2's 99 is not averaged
    assert out["forgetting_last"] == pytest.approx(10.0)
    assert out["fwt_gem"] == pytest.approx(5.0)
    assert out["bwt_1step"] == pytest.approx(-10.0)


def test_one_trained_task_is_nan_except_acc_avg():
    # A single visit of task 1 with T = 2: nothing earlier, nothing after.
    R = np.array([[10.0, 20.0], [15.0, 70.0]])
    out = C.summarize(R, np.array([1]))
    assert out["acc_avg"] == pytest.approx(70.0)
    for key in ("forgetting_max", "forgetting_last", "bwt", "bwt_1step", "fwt_gem"):
        assert np.isnan(out[key]), key


def test_bad_tasks():
    with pytest.raises(ValueError, match="tasks"):
        C.summarize(REP, np.array([0, 1, 0]))       # one task per visit
    with pytest.raises(ValueError, match="tasks"):
        C.summarize(REP, np.array([0, 1, 0, 2]))    # only 2 evaluated tasks
    with pytest.raises(ValueError, match="tasks"):
        C.acc_avg(REP, np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="sequential"):
        C.acc_avg(REP)                              # 5 x 2 is not sequential
