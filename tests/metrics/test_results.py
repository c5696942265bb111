"""metrics.results: the tidy table, R from it, divergence, aggregation, and saving/loading.

Logs are hand-made NumPy arrays with the loop's layout (``logs0`` leaves ``[R, ...]``, ``logs``
leaves ``[R, K, ...]`` for ``K`` log intervals, ``tasks[k]`` the task of interval ``k``), so the
expected rows and values are known exactly. The sequential fixtures are written ``[R, T, I, ...]``
(task by task, ``I`` intervals each) and flattened to ``K = T * I`` intervals by
:func:`intervals`.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from metrics import continual
from metrics.results import (
    RESULT_FILES,
    SUMMARY_METRICS,
    aggregate,
    divergence,
    load,
    r_matrix,
    run_columns,
    save,
    summarize_runs,
    task_auc,
    to_frame,
    visit_spans,
    visit_tasks,
)

R, T, I, LOG_EVERY = 3, 2, 2, 5
TASKS = np.repeat(np.arange(T), I)  # the sequential schedule: [0, 0, 1, 1]
COLUMNS = ["run", "seed", "learning_rate", "task", "step", "metric", "layer", "eval_task", "value"]


def fake_logs(nonfinite=None):
    """Deterministic values that encode their position, so every row can be checked."""
    r, t, i, e = np.meshgrid(np.arange(R), np.arange(T), np.arange(I), np.arange(T),
                             indexing="ij")
    eval_acc = (0.1 + 0.2 * (e <= t) + 0.1 * i + 0.01 * r).astype(np.float32)  # [R, T, I, T]
    base = np.arange(R * T * I, dtype=np.float32).reshape(R, T, I)
    logs = {
        "eval_acc": eval_acc,
        "nonfinite_steps": np.zeros((R, T, I), np.int32) if nonfinite is None else nonfinite,
        "train": {"train_loss": 2.0 - base / 10, "train_acc": base / 100},
        "diagnostics": {"dead_frac": {"hidden/0": base / 1000, "total": base / 2000}},
    }
    logs0 = {
        "eval_acc": np.full((R, T), 0.1, np.float32) + 0.01 * np.arange(R)[:, None],
        "diagnostics": {"dead_frac": {"hidden/0": np.zeros(R, np.float32),
                                      "total": np.zeros(R, np.float32)}},
    }
    return logs0, logs


def intervals(logs):
    """``[R, T, I, ...]`` leaves -> ``[R, T * I, ...]``: one entry per log interval."""
    return {k: intervals(v) if isinstance(v, dict) else
            v.reshape(v.shape[0], v.shape[1] * v.shape[2], *v.shape[3:]) for k, v in logs.items()}


def runs_table(learning_rates=(1e-3, 1e-3, 1e-2), seeds=(0, 1, 0)):
    runs = pd.DataFrame({"seed": list(seeds), "learning_rate": list(learning_rates)})
    runs.index.name = "run"
    return runs


def expected_R(logs0, logs):
    return np.concatenate([logs0["eval_acc"][:, None], logs["eval_acc"][:, :, -1]], axis=1)


@pytest.fixture
def frame():
    logs0, logs = fake_logs()
    return to_frame(logs0, intervals(logs), runs_table(), LOG_EVERY, TASKS)


# --------------------------------------------------------------------------------------------
# to_frame
# --------------------------------------------------------------------------------------------


def test_to_frame_has_documented_columns_in_order(frame):
    assert list(frame.columns) == COLUMNS
    assert run_columns(frame) == ["run", "seed", "learning_rate"]
    assert str(frame["eval_task"].dtype) == "Int64"
    assert frame["value"].dtype == np.float64


def test_to_frame_row_counts_per_metric(frame):
    counts = frame.groupby(["metric", "layer"]).size().to_dict()
    assert counts == {
        ("eval_acc", ""): R * T * I * T + R * T,        # intervals plus step 0
        ("nonfinite_steps", ""): R * T * I,
        ("train_loss", ""): R * T * I,
        ("train_acc", ""): R * T * I,
        ("dead_frac", "hidden/0"): R * T * I + R,
        ("dead_frac", "total"): R * T * I + R,
    }
    assert len(frame) == sum(counts.values())


def test_to_frame_steps_tasks_and_values_match_the_logs(frame):
    logs0, logs = fake_logs()
    loss = frame[frame["metric"] == "train_loss"]
    for run in range(R):
        rows = loss[loss["run"] == run]
        # Global steps: interval k of the whole sequence ends at (k + 1) * log_every.
        np.testing.assert_array_equal(rows["step"], np.arange(1, T * I + 1) * LOG_EVERY)
        np.testing.assert_array_equal(rows["task"], np.repeat(np.arange(T), I))
        np.testing.assert_allclose(rows["value"], logs["train"]["train_loss"][run].reshape(-1))
        assert rows["eval_task"].isna().all()
        assert (rows["layer"] == "").all()
    # Run configuration columns are joined on the run index.
    assert (loss.groupby("run")["seed"].first().to_numpy() == [0, 1, 0]).all()
    assert (loss.groupby("run")["learning_rate"].first().to_numpy() == [1e-3, 1e-3, 1e-2]).all()
    # Per-layer diagnostics keep their layer, and step 0 comes from logs0.
    dead = frame[(frame["metric"] == "dead_frac") & (frame["layer"] == "hidden/0")]
    first = dead[dead["step"] == 0]
    assert len(first) == R and (first["task"] == 0).all() and (first["value"] == 0).all()
    value = dead[(dead["run"] == 1) & (dead["step"] == 3 * LOG_EVERY)]["value"].item()
    assert value == pytest.approx(logs["diagnostics"]["dead_frac"]["hidden/0"][1, 1, 0])


def test_to_frame_eval_acc_rows_carry_eval_task(frame):
    logs0, logs = fake_logs()
    ev = frame[frame["metric"] == "eval_acc"]
    assert ev["eval_task"].notna().all()
    at0 = ev[ev["step"] == 0]
    assert len(at0) == R * T and (at0["task"] == 0).all()
    for run in range(R):
        for t in range(T):
            for i in range(I):
                step = (t * I + i + 1) * LOG_EVERY
                rows = ev[(ev["run"] == run) & (ev["step"] == step)].sort_values("eval_task")
                assert (rows["task"] == t).all()
                np.testing.assert_array_equal(rows["eval_task"].to_numpy(int), np.arange(T))
                np.testing.assert_allclose(rows["value"], logs["eval_acc"][run, t, i])


# --------------------------------------------------------------------------------------------
# r_matrix
# --------------------------------------------------------------------------------------------


def test_r_matrix_on_hand_made_table():
    rows = []
    # One run, two tasks, log_every 10 with two intervals per task: the R rows are steps 0, 20, 40.
    values = {0: [0.1, 0.2], 10: [0.5, 0.15], 20: [0.9, 0.3], 30: [0.7, 0.6], 40: [0.6, 0.95]}
    for step, accs in values.items():
        task = 0 if step <= 20 else 1
        for j, v in enumerate(accs):
            rows.append(dict(run=0, seed=7, task=task, step=step, metric="eval_acc", layer="",
                             eval_task=j, value=v))
    rows.append(dict(run=0, seed=7, task=0, step=10, metric="train_loss", layer="",
                     eval_task=pd.NA, value=1.0))
    df = pd.DataFrame(rows).astype({"eval_task": "Int64"})
    R_, runs = r_matrix(df)
    np.testing.assert_allclose(R_[0], [[0.1, 0.2], [0.9, 0.3], [0.6, 0.95]])
    assert list(runs.index) == [0] and runs["seed"].tolist() == [7]


def test_r_matrix_from_to_frame_matches_logs_at_task_ends(frame):
    logs0, logs = fake_logs()
    R_, runs = r_matrix(frame)
    assert R_.shape == (R, T + 1, T)
    np.testing.assert_allclose(R_, expected_R(logs0, logs), rtol=1e-6)
    np.testing.assert_allclose(R_[:, 0], logs0["eval_acc"], rtol=1e-6)  # row 0: before training
    assert list(runs.columns) == ["seed", "learning_rate"]


# --------------------------------------------------------------------------------------------
# Schedules with repeats: visits and one R row per visit
# --------------------------------------------------------------------------------------------

REPEATS = np.array([0, 0, 1, 0, 1, 1])  # K = 6 intervals, steps 5..30


def repeated_frame():
    """Two runs on ``REPEATS``; eval_acc[r, k, j] = 0.1 * (k + 1) + 0.01 * j + 0.001 * r."""
    r, k, j = np.meshgrid(np.arange(2), np.arange(6), np.arange(2), indexing="ij")
    eval_acc = 0.1 * (k + 1) + 0.01 * j + 0.001 * r
    logs0 = {"eval_acc": np.array([[0.01, 0.02], [0.03, 0.04]])}
    logs = {"eval_acc": eval_acc, "train": {"train_acc": np.full((2, 6), 0.5)}}
    runs = runs_table(learning_rates=(0.1, 0.1), seeds=(0, 1))
    return to_frame(logs0, logs, runs, LOG_EVERY, REPEATS), logs0, logs


def test_visit_spans_of_a_repeated_schedule():
    df, _, _ = repeated_frame()
    spans = visit_spans(df)
    # Intervals 0,0 | 1 | 0 | 1,1 -> four visits ending at steps 10, 15, 20, 30.
    assert list(spans.columns) == ["visit", "task", "occurrence", "start_step", "end_step"]
    assert spans["visit"].tolist() == [0, 1, 2, 3]
    assert spans["task"].tolist() == [0, 1, 0, 1]
    assert spans["occurrence"].tolist() == [0, 0, 1, 1]
    assert spans["start_step"].tolist() == [0, 10, 15, 20]
    assert spans["end_step"].tolist() == [10, 15, 20, 30]
    np.testing.assert_array_equal(visit_tasks(df), [0, 1, 0, 1])


def test_visit_spans_of_the_sequential_schedule_are_the_tasks(frame):
    spans = visit_spans(frame)
    assert spans["task"].tolist() == [0, 1] and spans["occurrence"].tolist() == [0, 0]
    assert spans["end_step"].tolist() == [I * LOG_EVERY, T * I * LOG_EVERY]


def test_visit_spans_rejects_a_table_mixing_schedules():
    df, _, _ = repeated_frame()
    other = df[df["run"] == 0].copy()
    other["run"] = 2
    other.loc[other["step"] == 15, "task"] = 0  # run 2 trains task 0 at step 15
    with pytest.raises(ValueError, match="one schedule"):
        visit_spans(pd.concat([df, other], ignore_index=True))


def test_r_matrix_has_one_row_per_visit():
    df, logs0, logs = repeated_frame()
    R_, runs = r_matrix(df)
    assert R_.shape == (2, 5, 2)  # init + 4 visits, 2 tasks
    # Rows: step 0, then the last interval of each visit: intervals 1, 2, 3, 5.
    expected = np.concatenate([logs0["eval_acc"][:, None], logs["eval_acc"][:, [1, 2, 3, 5]]],
                              axis=1)
    np.testing.assert_allclose(R_, expected)
    np.testing.assert_allclose(R_[0, :, 1], [0.02, 0.21, 0.31, 0.41, 0.61])  # by hand, run 0
    assert runs["seed"].tolist() == [0, 1]


def test_task_auc_reads_the_first_visit_of_each_task():
    df, _, _ = repeated_frame()
    auc, _ = task_auc(df)
    # Task 0's first visit: intervals 0, 1 -> mean(0.1, 0.2) + 0.001 r; task 1's: interval 2
    # alone -> 0.3 + 0.01 + 0.001 r. The revisits (intervals 3 and 4, 5) do not count.
    np.testing.assert_allclose(auc, [[0.15, 0.31], [0.151, 0.311]])


def test_summarize_runs_reads_the_visits():
    df, _, _ = repeated_frame()
    table = summarize_runs(df)
    R_ = r_matrix(df)[0]
    tasks = np.array([0, 1, 0, 1])
    for run in range(2):
        expected = continual.summarize(R_[run], tasks)
        for name, value in expected.items():
            assert table.loc[run, name] == pytest.approx(float(value)), name
    # Run 0 by hand: final row [0.6, 0.61]; last visit trains task 1; task 0 last trained in
    # visit 2 (interval 3: 0.4) -> forgetting_last = 0.4 - 0.6 = -0.2; plasticity at the end
    # of visit 0 (interval 1, task 0: 0.2) and of visit 3 (interval 5, task 1: 0.61).
    assert table.loc[0, "acc_avg"] == pytest.approx(0.605)
    assert table.loc[0, "forgetting_last"] == pytest.approx(-0.2)
    assert table.loc[0, "fwt_gem"] == pytest.approx(0.21 - 0.02)  # task 1 before visit 1
    assert table.loc[0, "plasticity_first"] == pytest.approx(0.2)
    assert table.loc[0, "plasticity_last"] == pytest.approx(0.61)


# --------------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------------


def diverged_frame():
    """Run 1 first produces non-finite losses in task 1, interval 0 (and again later)."""
    nonfinite = np.zeros((R, T, I), np.int32)
    nonfinite[1, 1, 0] = 3
    nonfinite[1, 1, 1] = 10
    logs0, logs = fake_logs(nonfinite)
    return to_frame(logs0, intervals(logs), runs_table(), LOG_EVERY, TASKS), logs0, logs


def test_divergence_flags_first_task_and_step_of_nonfinite_loss():
    df, _, _ = diverged_frame()
    div = divergence(df)
    assert div["diverged"].tolist() == [False, True, False]
    assert div.loc[1, "diverged_task"] == 1
    assert div.loc[1, "diverged_by_step"] == (1 * I + 0 + 1) * LOG_EVERY  # end of that interval
    assert div.loc[[0, 2], "diverged_task"].isna().all()
    assert div.loc[[0, 2], "diverged_by_step"].isna().all()


def test_summarize_runs_blanks_diverged_run_and_keeps_others():
    df, logs0, logs = diverged_frame()
    table = summarize_runs(df)
    assert table["diverged"].tolist() == [False, True, False]
    assert table.loc[1, "diverged_task"] == 1
    assert table.loc[1, "diverged_by_step"] == 3 * LOG_EVERY
    metric_cols = [*continual.summarize(np.zeros((2, 1))).keys(), "plasticity_first",
                   "plasticity_last", "acc_online"]
    assert table.loc[1, metric_cols].isna().all()
    # Run configuration survives for the diverged run.
    assert table.loc[1, "seed"] == 1 and table.loc[1, "learning_rate"] == 1e-3
    R_ = expected_R(logs0, logs)
    for run in (0, 2):
        expected = continual.summarize(R_[run])
        for name, value in expected.items():
            assert table.loc[run, name] == pytest.approx(float(value), rel=1e-6), name
        assert table.loc[run, "plasticity_first"] == pytest.approx(R_[run, 1, 0], rel=1e-6)
        assert table.loc[run, "plasticity_last"] == pytest.approx(R_[run, T, T - 1], rel=1e-6)
        assert table.loc[run, "acc_online"] == pytest.approx(
            logs["train"]["train_acc"][run].mean(), rel=1e-6)


def test_summarize_runs_without_divergence_flags_nothing(frame):
    table = summarize_runs(frame)
    assert not table["diverged"].any()
    assert table[list(SUMMARY_METRICS)].notna().all().all()


# --------------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------------


def test_aggregate_excludes_diverged_runs_and_counts_them():
    df, logs0, logs = diverged_frame()
    per_run = summarize_runs(df)
    agg = aggregate(per_run, ["learning_rate"]).set_index("learning_rate")
    assert agg.loc[1e-3, "seeds"] == 1 and agg.loc[1e-3, "diverged"] == 1
    assert agg.loc[1e-2, "seeds"] == 1 and agg.loc[1e-2, "diverged"] == 0
    # lr 1e-3's mean is run 0's value alone (run 1 diverged).
    assert agg.loc[1e-3, "acc_avg"] == pytest.approx(per_run.loc[0, "acc_avg"])
    assert agg.loc[1e-3, "acc_avg_lo"] == pytest.approx(per_run.loc[0, "acc_avg"])
    for m in SUMMARY_METRICS:
        assert {m, f"{m}_lo", f"{m}_hi"} <= set(agg.columns)


def test_aggregate_without_grouping_pools_all_runs(frame):
    per_run = summarize_runs(frame)
    agg = aggregate(per_run, [])
    assert len(agg) == 1 and agg.loc[0, "seeds"] == R and agg.loc[0, "diverged"] == 0
    assert agg.loc[0, "acc_avg"] == pytest.approx(per_run["acc_avg"].mean())
    assert agg.loc[0, "acc_avg_lo"] <= agg.loc[0, "acc_avg"] <= agg.loc[0, "acc_avg_hi"]


def test_aggregate_excludes_a_run_flagged_diverged_even_if_its_metrics_are_finite():
    """The exclusion follows the ``diverged`` flag, not only the NaNs summarize_runs writes."""
    per_run = pd.DataFrame({"learning_rate": [0.1, 0.1, 0.1], "diverged": [False, False, True],
                            **{m: [0.2, 0.4, 0.9] for m in SUMMARY_METRICS}})
    agg = aggregate(per_run, ["learning_rate"])
    assert agg.loc[0, "seeds"] == 2 and agg.loc[0, "diverged"] == 1
    assert agg.loc[0, "acc_avg"] == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _leftovers(path):
    return sorted(p.name for p in path.iterdir() if p.name.startswith(".") or "tmp" in p.name)


def test_save_load_round_trip_writes_csv_parquet_and_config(frame, tmp_path):
    config = {"dataset": "synthetic", "hidden": [16], "learning_rate": [1e-3, 1e-2]}
    summary = summarize_runs(frame)
    run_dir = tmp_path / "run"
    save(run_dir, frame, config, summary)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(RESULT_FILES)
    assert _leftovers(run_dir) == []
    loaded, loaded_config = load(run_dir)
    assert loaded_config == config
    assert json.loads((run_dir / "config.json").read_text()) == config
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)
    assert str(loaded["eval_task"].dtype) == "Int64"
    csv = pd.read_csv(run_dir / "results.csv")
    assert list(csv.columns) == COLUMNS
    assert len(csv) == len(frame)
    np.testing.assert_allclose(csv["value"], frame["value"])
    # Everything derived from the table survives the round trip.
    np.testing.assert_array_equal(r_matrix(loaded)[0], r_matrix(frame)[0])
    summary_csv = pd.read_csv(run_dir / "summary.csv", index_col="run")
    np.testing.assert_allclose(summary_csv["acc_avg"], summary["acc_avg"])


def test_save_overwrites_atomically_and_a_failed_write_keeps_the_old_file(frame, tmp_path):
    save(tmp_path, frame, {"a": 1}, summarize_runs(frame))
    before = (tmp_path / "summary.csv").read_text()

    class Broken:
        def to_csv(self, path, index=True):
            with open(path, "w") as f:
                f.write("partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, frame, {"a": 2}, Broken())
    assert (tmp_path / "summary.csv").read_text() == before
    assert _leftovers(tmp_path) == []
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 2}  # written before


def test_load_directory_without_results_raises_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"results\.parquet.*plax run directory"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing").replace("\\", "\\\\")):
        load(tmp_path / "missing")


def _eval_only_table(values: np.ndarray, metric: str = "eval_acc") -> pd.DataFrame:
    """A table from interval evaluations ``values[R, T, I, T]`` (step 0 = the first row)."""
    from metrics.results import to_frame
    runs = pd.DataFrame({"seed": np.arange(values.shape[0])})
    runs.index.name = "run"
    n_tasks, n_points = values.shape[1:3]
    return to_frame({metric: values[:, 0, 0]}, intervals({metric: values}), runs, log_every=10,
                    tasks=np.repeat(np.arange(n_tasks), n_points))


def test_forward_transfer_by_hand_against_a_reference_table():
    from metrics.results import forward_transfer, task_auc
    # One run, 2 tasks, 2 log points per task: v[t, i, j] = accuracy on j at point i of task t.
    cl = np.zeros((1, 2, 2, 2))
    cl[0, 0, :, 0] = [0.2, 0.6]   # task 0 in its own window: AUC 0.4
    cl[0, 1, :, 1] = [0.7, 0.9]   # task 1 in its own window: AUC 0.8
    cl[0, 1, :, 0] = 0.99          # other tasks' evaluations do not count
    ref = np.zeros((2, 2, 2, 2))   # two reference seeds: AUC 0.5 (task 0) and 0.6 (task 1)
    ref[:, 0, :, 0] = [[0.4, 0.6], [0.4, 0.6]]
    ref[:, 1, :, 1] = [[0.5, 0.5], [0.7, 0.7]]
    auc, _ = task_auc(_eval_only_table(cl))
    np.testing.assert_allclose(auc, [[0.4, 0.8]])
    ft = forward_transfer(_eval_only_table(cl), _eval_only_table(ref))
    # CW: mean((0.4-0.5)/(1-0.5), (0.8-0.6)/(1-0.6)) = mean(-0.2, 0.5) = 0.15
    assert ft["ft_auc_cw"].iloc[0] == pytest.approx(0.15)
    assert ft["ft_auc_gap"].iloc[0] == pytest.approx(0.05)
    # Continual-Dreamer: mean((0.4-0.5)/(1-0.4), (0.8-0.6)/(1-0.8)) = mean(-1/6, 1) = 5/12
    assert ft["ft_auc_cd"].iloc[0] == pytest.approx(5 / 12)
    rl = forward_transfer(_eval_only_table(cl * 100, "eval_return"),
                          _eval_only_table(ref * 100, "eval_return"))
    assert "ft_auc_cw" not in rl.columns and rl["ft_auc_gap"].iloc[0] == pytest.approx(5.0)
    assert "ft_auc_cd" not in rl.columns   # returns beyond [0, 1]
    # Negative returns count as 0 in Continual-Dreamer's curves: the same value as above.
    neg = cl.copy()
    neg[0, 0, 0, 0] = -5.0   # task 0's first evaluation: clipped to 0 (was 0.2)
    cd = forward_transfer(_eval_only_table(neg, "eval_return"), _eval_only_table(ref, "eval_return"))
    assert cd["ft_auc_cd"].iloc[0] == pytest.approx(np.mean([(0.3 - 0.5) / 0.7, 1.0]))
    with pytest.raises(ValueError, match="tasks"):
        forward_transfer(_eval_only_table(cl), _eval_only_table(ref[:, :1, :, :1]))


def test_untrained_tasks_give_the_forgetting_of_pre_trained_capabilities():
    """Fine-tuning on task 0 while evaluating task 1 (never trained: ``order:0``): task 1's
    performance at step 0, at the end, and its drops, by hand."""
    from metrics.results import summary_metrics, to_frame
    runs = pd.DataFrame({"seed": [0, 1]})
    runs.index.name = "run"
    logs0 = {"eval_acc": np.asarray([[0.1, 0.9], [0.2, 0.8]])}
    logs = {"eval_acc": np.asarray([[[0.3, 0.5], [0.5, 0.2], [0.7, 0.6]],
                                    [[0.4, 0.8], [0.6, 0.7], [0.8, 0.7]]])}
    df = to_frame(logs0, logs, runs, log_every=10, tasks=np.zeros(3, int))
    table = summarize_runs(df)
    np.testing.assert_allclose(table["untrained_start"], [0.9, 0.8])
    np.testing.assert_allclose(table["untrained_end"], [0.6, 0.7])
    np.testing.assert_allclose(table["untrained_drop"], [0.3, 0.1])
    np.testing.assert_allclose(table["untrained_drop_max"], [0.7, 0.1])
    # Trained task 0 ends at 0.7 and 0.8: the gap to the held-out task's 0.6 and 0.7.
    np.testing.assert_allclose(table["generalisation_gap"], [0.1, 0.1])
    assert {"untrained_drop", "untrained_drop_max", "generalisation_gap"} <= set(
        summary_metrics(df))
    trained_all = to_frame(logs0, logs, runs, log_every=10, tasks=np.asarray([0, 1, 1]))
    assert "untrained_drop" not in summarize_runs(trained_all).columns
