"""metrics.visits: per-visit metrics (relearning speed, forgetting between visits, drift) on
hand-made tables, every expected value worked out by hand below.

Tables come from :func:`metrics.results.to_frame` with logs ``{"eval_acc": [R, K, T]}``, one
entry per log interval, and ``tasks[k]`` the task trained in interval ``k``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metrics import continual, results, visits as V

nan = np.nan
LOG_EVERY = 10
TASKS = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # visits: 0 | 1 | 0 | 1, each two intervals

# Accuracy on task 0 / task 1 at steps 0, 10, ..., 80 (step 0 = init).
#                    0    10   20   30   40   50   60   70   80
ACC = np.array([
    [[0.1, 0.5, 0.9, 0.8, 0.6, 0.85, 0.95, 0.7, 0.5],    # run 0, task 0
     [0.2, 0.2, 0.3, 0.6, 0.8, 0.5, 0.4, 0.7, 0.9]],     # run 0, task 1
    [[0.1, 0.6, 0.7, 0.65, 0.68, 0.5, 0.55, 0.66, 0.6],  # run 1, task 0
     [0.0, 0.1, 0.2, 0.5, 0.6, 0.62, 0.4, 0.3, 0.35]],   # run 1, task 1
    [[0.1, 0.5, 0.9, 0.8, 0.6, 0.85, 0.95, 0.7, 0.5],    # run 2, task 0 (= run 0)
     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]],     # run 2, task 1: never learnt
])
LEARNING_RATES = [0.1, 0.1, 0.2]

# Visits (start_step -> end_step): v0 task 0 (0 -> 20), v1 task 1 (20 -> 40),
# v2 task 0 (40 -> 60, first revisit), v3 task 1 (60 -> 80, first revisit).
#
# Targets b + 0.9 (F - b) from each task's first visit (b at its start, F at its end):
#   run 0: task 0: 0.1 + 0.9 (0.9 - 0.1) = 0.82; task 1: 0.3 + 0.9 (0.8 - 0.3) = 0.75
#   run 1: task 0: 0.1 + 0.9 (0.7 - 0.1) = 0.64; task 1: 0.2 + 0.9 (0.6 - 0.2) = 0.56
#   run 2: task 0: 0.82 as run 0; task 1: F = b = 0.5, nothing learnt -> no target (NaN)
#
# relearn_steps (first step in [start, end] reaching the target, minus start):
#   run 0: v0: 0.1, 0.5, 0.9 -> step 20 -> 20    v1: 0.3, 0.6, 0.8 -> step 40 -> 20
#          v2: 0.6, 0.85     -> step 50 -> 10    v3: 0.4, 0.7, 0.9 -> step 80 -> 20
#   run 1: v0: 0.1, 0.6, 0.7 -> 20               v1: 0.2, 0.5, 0.6 -> 20
#          v2: 0.68 >= 0.64 at its start -> 0    v3: 0.4, 0.3, 0.35 < 0.56 -> never, NaN
#   run 2: v0 20, v2 10 (as run 0); v1, v3: no target -> NaN
#
# forgetting_between (revisits: previous visit's perf_end - this perf_start):
#   run 0: v2: 0.9 - 0.6 = 0.3;   v3: 0.8 - 0.4 = 0.4
#   run 1: v2: 0.7 - 0.68 = 0.02; v3: 0.6 - 0.4 = 0.2
#   run 2: v2: 0.3;               v3: 0.5 - 0.5 = 0
EXPECTED = {  # [run][visit]
    "perf_start": [[0.1, 0.3, 0.6, 0.4], [0.1, 0.2, 0.68, 0.4], [0.1, 0.5, 0.6, 0.5]],
    "perf_end": [[0.9, 0.8, 0.95, 0.9], [0.7, 0.6, 0.55, 0.35], [0.9, 0.5, 0.95, 0.5]],
    "forgetting_between": [[nan, nan, 0.3, 0.4], [nan, nan, 0.02, 0.2], [nan, nan, 0.3, 0.0]],
    "target": [[0.82, 0.75, 0.82, 0.75], [0.64, 0.56, 0.64, 0.56], [0.82, nan, 0.82, nan]],
    "relearn_steps": [[20, 20, 10, 20], [20, 20, 0, nan], [20, nan, 10, nan]],
}


def runs_table(learning_rates=LEARNING_RATES):
    runs = pd.DataFrame({"seed": np.arange(len(learning_rates)),
                         "learning_rate": list(learning_rates)})
    runs.index.name = "run"
    return runs


def table(acc=ACC, tasks=TASKS, extra=None, shares=None, learning_rates=LEARNING_RATES):
    """``acc[run, task, step index]`` (step index 0 = init) -> the tidy table."""
    per_interval = np.swapaxes(acc, 1, 2)  # [R, 1 + K, T]
    logs = {"eval_acc": per_interval[:, 1:], **(extra or {})}
    return results.to_frame({"eval_acc": per_interval[:, 0]}, logs, runs_table(learning_rates),
                            LOG_EVERY, tasks, shares)


@pytest.fixture
def visits_df():
    return V.visits(table())


# --------------------------------------------------------------------------------------------
# visits
# --------------------------------------------------------------------------------------------


def test_visits_columns_and_boundaries(visits_df):
    assert list(visits_df.columns) == ["run", "seed", "learning_rate", *V.VISIT_COLUMNS]
    assert len(visits_df) == 3 * 4
    assert visits_df["run"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert visits_df["learning_rate"].tolist() == [0.1] * 8 + [0.2] * 4
    for run in range(3):
        rows = visits_df[visits_df["run"] == run]
        assert rows["visit"].tolist() == [0, 1, 2, 3]
        assert rows["task"].tolist() == [0, 1, 0, 1]
        assert rows["occurrence"].tolist() == [0, 0, 1, 1]
        assert rows["start_step"].tolist() == [0, 20, 40, 60]
        assert rows["end_step"].tolist() == [20, 40, 60, 80]


@pytest.mark.parametrize("column", list(EXPECTED))
def test_visits_values_by_hand(visits_df, column):
    got = visits_df.pivot(index="run", columns="visit", values=column).to_numpy(float)
    np.testing.assert_allclose(got, EXPECTED[column], err_msg=column)


def test_relearn_already_reached_is_zero_and_never_reached_is_nan(visits_df):
    run1 = visits_df[visits_df["run"] == 1].set_index("visit")
    assert run1.loc[2, "perf_start"] >= run1.loc[2, "target"]
    assert run1.loc[2, "relearn_steps"] == 0
    assert np.isnan(run1.loc[3, "relearn_steps"]) and np.isfinite(run1.loc[3, "target"])


def test_threshold_moves_the_target():
    # threshold 0.45: run 0 task 0 target 0.1 + 0.45 * 0.8 = 0.46 -> reached at step 10 in v0;
    # in v2 (0.6 at its start) already -> 0. Task 1: 0.3 + 0.45 * 0.5 = 0.525 -> v1 at step 30
    # (10 steps), v3: 0.4, 0.7 -> step 70 (10 steps).
    run0 = V.visits(table(), threshold=0.45)
    run0 = run0[run0["run"] == 0]
    np.testing.assert_allclose(run0["target"], [0.46, 0.525, 0.46, 0.525])
    np.testing.assert_allclose(run0["relearn_steps"], [10, 10, 0, 10])


def test_relearn_target_is_baseline_relative_and_works_for_negative_returns():
    # Returns from -100 to -20: 0.9 * F = -18 would lie above F; the baseline-relative
    # target is -100 + 0.9 * 80 = -28.
    np.testing.assert_allclose(V.relearn_target(-100.0, -20.0), -28.0)
    # Chance accuracy 0.5 reaching 0.6: 0.9 * F = 0.54; relative: 0.5 + 0.09 = 0.59.
    np.testing.assert_allclose(V.relearn_target(0.5, 0.6), 0.59)
    assert np.isnan(V.relearn_target(0.5, 0.5)) and np.isnan(V.relearn_target(0.5, 0.4))


def test_visits_on_returns_table():
    # The same numbers as returns (x 100 - 50, some negative): same steps, targets shifted.
    rl = table(acc=ACC * 100 - 50)
    rl["metric"] = rl["metric"].replace({"eval_acc": "eval_return"})
    got = V.visits(rl)
    np.testing.assert_allclose(
        got.pivot(index="run", columns="visit", values="relearn_steps").to_numpy(float),
        EXPECTED["relearn_steps"])
    np.testing.assert_allclose(got.loc[got["run"] == 0, "target"], [32, 25, 32, 25])


def test_visits_of_a_sequential_table_have_no_revisits():
    df = table(tasks=np.repeat([0, 1], 4))  # task 0 for steps 10..40, task 1 for 50..80
    got = V.visits(df)
    assert not V.has_revisit(df) and V.has_revisit(table())
    run0 = got[got["run"] == 0]
    assert run0["start_step"].tolist() == [0, 40] and run0["end_step"].tolist() == [40, 80]
    assert run0["occurrence"].tolist() == [0, 0]
    assert run0["forgetting_between"].isna().all()
    # Task 1 of run 0 from step 40 (0.8) to 80 (0.9): target 0.8 + 0.09 = 0.89 -> step 80.
    np.testing.assert_allclose(run0["perf_start"], [0.1, 0.8])
    np.testing.assert_allclose(run0["relearn_steps"], [20, 40])


# --------------------------------------------------------------------------------------------
# relearn_summary
# --------------------------------------------------------------------------------------------


def test_relearn_summary_per_occurrence(visits_df):
    got = V.relearn_summary(visits_df, ["learning_rate"]).set_index(["learning_rate",
                                                                     "occurrence"])
    # lr 0.1 (runs 0, 1): first visits all 20 steps. Revisits: run 0 mean(10, 20) = 15, run 1
    # mean(0) = 0 (v3 never reached) -> 7.5; reached 3 of 4 visits.
    assert got.loc[(0.1, 0), "relearn_steps"] == pytest.approx(20.0)
    assert got.loc[(0.1, 0), "relearn_steps_lo"] == got.loc[(0.1, 0), "relearn_steps_hi"] == 20
    assert got.loc[(0.1, 0), "reached"] == 1.0 and got.loc[(0.1, 0), "runs"] == 2
    assert got.loc[(0.1, 1), "relearn_steps"] == pytest.approx(7.5)
    assert got.loc[(0.1, 1), "reached"] == pytest.approx(0.75)
    _, low, high = continual.bootstrap_ci(np.array([15.0, 0.0]))
    assert got.loc[(0.1, 1), "relearn_steps_lo"] == pytest.approx(low)
    assert got.loc[(0.1, 1), "relearn_steps_hi"] == pytest.approx(high)
    assert 0.0 <= low <= 7.5 <= high <= 15.0
    # lr 0.2 (run 2): task 1 has no target, so only task 0's visits count: 20 and 10.
    assert got.loc[(0.2, 0), "relearn_steps"] == 20 and got.loc[(0.2, 0), "reached"] == 1.0
    assert got.loc[(0.2, 1), "relearn_steps"] == 10 and got.loc[(0.2, 1), "reached"] == 1.0
    assert got.loc[(0.2, 1), "runs"] == 1


def test_relearn_summary_per_visit(visits_df):
    got = V.relearn_summary(visits_df, ["learning_rate"], per="visit")
    assert list(got.columns) == ["learning_rate", "visit", "task", "occurrence", "runs",
                                 "reached", "relearn_steps", "relearn_steps_lo",
                                 "relearn_steps_hi"]
    got = got.set_index(["learning_rate", "visit"])
    assert got.loc[(0.1, 2), "relearn_steps"] == pytest.approx(5.0)   # runs 0, 1: 10 and 0
    assert got.loc[(0.1, 2), "reached"] == 1.0
    assert got.loc[(0.1, 3), "relearn_steps"] == pytest.approx(20.0)  # run 1 never reached
    assert got.loc[(0.1, 3), "reached"] == 0.5
    assert got.loc[(0.1, 3), "task"] == 1 and got.loc[(0.1, 3), "occurrence"] == 1
    # Run 2, visit 1: no target at all -> nothing to average, reached undefined.
    assert np.isnan(got.loc[(0.2, 1), "relearn_steps"]) and np.isnan(got.loc[(0.2, 1), "reached"])
    with pytest.raises(ValueError, match="per"):
        V.relearn_summary(visits_df, [], per="task")


def test_relearn_summary_without_settings_pools_runs(visits_df):
    got = V.relearn_summary(visits_df, []).set_index("occurrence")
    # Revisits per run: 15, 0, 10 -> 25/3; reached: 4 of the 5 visits with a target.
    assert got.loc[1, "relearn_steps"] == pytest.approx(25 / 3)
    assert got.loc[1, "reached"] == pytest.approx(0.8)
    assert got.loc[1, "runs"] == 3


def test_relearn_summary_leaves_diverged_runs_out():
    nonfinite = np.zeros((3, len(TASKS)), np.int32)
    nonfinite[1, 5] = 2  # run 1 diverges in interval 5
    df = results.mark_diverged(table(extra={"nonfinite_steps": nonfinite}))
    got_visits = V.visits(df)
    assert got_visits.groupby("run")["diverged"].first().tolist() == [False, True, False]
    got = V.relearn_summary(got_visits, ["learning_rate"]).set_index(["learning_rate",
                                                                      "occurrence"])
    assert got.loc[(0.1, 1), "runs"] == 1
    assert got.loc[(0.1, 1), "relearn_steps"] == pytest.approx(15.0)  # run 0 alone


# --------------------------------------------------------------------------------------------
# drift_response
# --------------------------------------------------------------------------------------------


def test_drift_response_pairs_share_and_performance():
    shares = np.array([[1.0, 0.0], [0.7, 0.3], [0.4, 0.6], [0.0, 1.0]])
    acc = ACC[:2, :, :5]  # two runs, steps 0..40
    df = table(acc=acc, tasks=np.array([0, 0, 1, 1]), shares=shares, learning_rates=[0.1, 0.2])
    got = V.drift_response(df)
    assert list(got.columns) == ["run", "seed", "learning_rate", *V.DRIFT_COLUMNS]
    assert len(got) == 2 * 4 * 2  # runs x log points (step 0 has no share) x tasks
    run1 = got[got["run"] == 1]
    assert run1["step"].tolist() == [10, 10, 20, 20, 30, 30, 40, 40]
    assert run1["eval_task"].tolist() == [0, 1] * 4
    np.testing.assert_allclose(run1["share"], shares.reshape(-1))
    # Run 1's accuracy at steps 10..40 on tasks 0, 1 (ACC[1, :, 1:5]).
    np.testing.assert_allclose(run1["performance"],
                               [0.6, 0.1, 0.7, 0.2, 0.65, 0.5, 0.68, 0.6])
    assert (run1["learning_rate"] == 0.2).all()


def test_drift_response_of_a_pure_schedule_is_empty():
    got = V.drift_response(table())
    assert got.empty
    assert list(got.columns) == ["run", "seed", "learning_rate", *V.DRIFT_COLUMNS]


# --------------------------------------------------------------------------------------------
# A sequential table: summarize_runs as before visits existed
# --------------------------------------------------------------------------------------------


def old_summary(R):
    """The per-run summary of the sequential formulas (REFERENCE.md §5), before schedules:
    R [T+1, T], row k = after task k-1."""
    T = R.shape[1]
    return {
        "acc_avg": R[T].mean(),
        "forgetting_max": np.mean([R[j + 1:T, j].max() - R[T, j] for j in range(T - 1)]),
        "forgetting_last": np.mean([R[j + 1, j] - R[T, j] for j in range(T - 1)]),
        "bwt": np.mean([R[T, j] - R[j + 1, j] for j in range(T - 1)]),
        "bwt_1step": np.mean([R[j + 2, j] - R[j + 1, j] for j in range(T - 1)]),
        "fwt_gem": np.mean([R[j, j] - R[0, j] for j in range(1, T)]),
        "plasticity_first": R[1, 0],
        "plasticity_last": R[T, T - 1],
    }


def test_sequential_table_summarize_runs_matches_the_old_formulas():
    n_runs, T, I = 4, 3, 2
    rng = np.random.default_rng(0)
    eval_acc = rng.uniform(size=(n_runs, T * I, T))
    train_acc = rng.uniform(size=(n_runs, T * I))
    logs0 = {"eval_acc": rng.uniform(size=(n_runs, T))}
    runs = pd.DataFrame({"seed": np.arange(n_runs)})
    runs.index.name = "run"
    df = results.to_frame(logs0, {"eval_acc": eval_acc, "train": {"train_acc": train_acc}},
                          runs, LOG_EVERY, np.repeat(np.arange(T), I))
    got = results.summarize_runs(df)
    # Row k of the old R: the evaluation at the last interval of task k-1.
    R_old = np.concatenate([logs0["eval_acc"][:, None], eval_acc[:, I - 1::I]], axis=1)
    np.testing.assert_allclose(results.r_matrix(df)[0], R_old)
    for run in range(n_runs):
        for name, value in old_summary(R_old[run]).items():
            assert got.loc[run, name] == pytest.approx(value), name
        assert got.loc[run, "acc_online"] == pytest.approx(train_acc[run].mean())


# --------------------------------------------------------------------------------------------
# The report draws the per-visit R and, with revisits only, relearning.png
# --------------------------------------------------------------------------------------------


def test_report_plots_visits_and_relearning_only_with_revisits(tmp_path):
    from experiments import report

    spans = results.visit_spans(table())
    assert report._visit_labels(spans) == ["init", "after v0 (task 0)", "after v1 (task 1)",
                                           "after v2 (task 0)", "after v3 (task 1)"]
    written = report.make_plots(table(), tmp_path / "repeats")
    assert {p.name for p in written} >= {"r_matrix.png", "accuracy_curves.png",
                                         "plasticity.png", "relearning.png"}
    assert all(p.stat().st_size > 0 for p in written)
    sequential = report.make_plots(table(tasks=np.repeat([0, 1], 4)), tmp_path / "sequential")
    assert "relearning.png" not in {p.name for p in sequential}
    assert not (tmp_path / "sequential" / "relearning.png").exists()
