"""Golden-value tests for metrics.continual (all expected values by hand).

Tasks are 0-based: R[k, j] = accuracy on task j after training tasks 0..k-1,
row 0 = at initialisation.
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
