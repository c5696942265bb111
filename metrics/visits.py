"""Per-visit metrics: what happens each time a schedule returns to a task, from the table alone.

A *visit* is a maximal run of consecutive log intervals training one task
(:func:`metrics.results.visit_spans`); a schedule ``A, A, B, B, A, A`` has three visits, the
last a *revisit* of A. The continual summaries of :mod:`metrics.continual` read one row of R per
visit; this module follows each visit's own learning curve:

* :func:`visits` — one row per (run, visit): performance on the visit's task at its start and
  end, what was forgotten since the task's previous visit, and how fast it was (re)learnt;
* :func:`relearn_summary` — relearning speed per setting and occurrence (or visit), mean with a
  bootstrap interval over seeds and the fraction of runs that reached the target;
* :func:`drift_response` — for schedules that mix two tasks (drift), performance on each task
  against its share of the training data.

Relearning speed reads plasticity, the ability to keep learning (Dohare et al. 2024, "Loss of
plasticity in deep continual learning", Nature; Kumar et al. 2023, "Maintaining plasticity in
continual learning via regenerative regularization"), on revisited tasks: a network that kept
its plasticity relearns a task it has seen at least as fast as the first time, one that lost
it needs longer, or never gets back.

Performance is the table's per-task metric (:func:`metrics.results.performance_metric`:
accuracy, or return for RL), higher is better. Steps are table steps (multiples of
``log_every``), so relearning speed is resolved to one log interval.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from metrics import continual, results

VISIT_COLUMNS = ("visit", "task", "occurrence", "start_step", "end_step", "perf_start",
                 "perf_end", "forgetting_between", "target", "relearn_steps")
DRIFT_COLUMNS = ("step", "eval_task", "share", "performance")


def relearn_target(baseline, final, threshold: float = 0.9) -> np.ndarray:
    """The performance a visit of task ``j`` must reach to count as (re)learnt:
    ``b_j + threshold · (F_j − b_j)``, with ``b_j`` / ``F_j`` the performance on ``j`` at the
    start / end of its *first* visit.

    Baseline-relative rather than ``threshold · F_j``: RL returns can be negative (then
    ``0.9 · F_j`` lies *above* ``F_j``) and chance accuracy is not 0 (``0.9 · F_j`` may lie
    below where the task started, so it is "reached" before any learning). Measured from
    ``b_j``, the target is a fixed fraction of what the first visit gained, in any units. NaN
    where the first visit gained nothing (``F_j ≤ b_j``): there is no level to relearn."""
    b = np.asarray(baseline, np.float64)
    f = np.asarray(final, np.float64)
    return np.where(f > b, b + threshold * (f - b), np.nan)


def _steps_to_reach(curve: np.ndarray, steps: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``curve[run, i]`` at ``steps[i]`` (``steps[0]`` the start): steps from ``steps[0]``
    until ``curve`` first reaches ``target[run]``; NaN if it never does (or no target)."""
    hit = curve >= target[:, None]  # NaN compares False
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), steps[first] - steps[0], np.nan).astype(np.float64)


def visits(df: pd.DataFrame, threshold: float = 0.9) -> pd.DataFrame:
    """One row per (run, visit), sorted by run and visit.

    Columns: the run's configuration (:func:`metrics.results.run_columns`), then

    * ``visit`` (0-based), ``task``, ``occurrence`` (0 for the task's first visit, 1 for its
      first revisit, ...), ``start_step`` (the log point just before the visit: the previous
      visit's last step, 0 for the first visit) and ``end_step`` (its last log point);
    * ``perf_start`` / ``perf_end``: performance on the visit's task at those two steps;
    * ``forgetting_between``: for a revisit, ``perf_end`` of the task's previous visit minus
      this ``perf_start`` — what the visits in between cost it (NaN for first visits);
    * ``target``: :func:`relearn_target` of the task (from its first visit, per run);
    * ``relearn_steps``: steps from ``start_step`` until performance on the task first reaches
      ``target`` within the visit (``start_step`` included: 0 if it is reached already), NaN if
      never. On first visits this is the learning speed the revisits compare with.

    A ``diverged`` column (:func:`metrics.results.mark_diverged`) is carried along when the
    table has one."""
    spans = results.visit_spans(df)
    P, steps, runs = results.performance_array(df)
    columns = _visit_metrics(P, steps, spans, threshold)
    n_runs, n_visits = len(runs), len(spans)
    out = runs.reset_index().loc[np.repeat(np.arange(n_runs), n_visits)].reset_index(drop=True)
    for name in ("visit", "task", "occurrence", "start_step", "end_step"):
        out[name] = np.tile(spans[name].to_numpy(), n_runs)
    for name, values in columns.items():
        out[name] = values.reshape(-1)
    if "diverged" in df.columns:
        flags = df.groupby("run")["diverged"].any()
        out["diverged"] = out["run"].map(flags).astype(bool).to_numpy()
    return out


def _visit_metrics(P: np.ndarray, steps: np.ndarray, spans: pd.DataFrame,
                   threshold: float) -> dict[str, np.ndarray]:
    """The per-visit columns of :func:`visits`, each ``[runs, S]``, from the performance
    array ``P[run, step index, task]`` at ``steps``."""
    pos = pd.Series(np.arange(len(steps)), index=steps)
    start = pos[spans["start_step"]].to_numpy()
    end = pos[spans["end_step"]].to_numpy()
    task = spans["task"].to_numpy()
    perf_start, perf_end = P[:, start, task], P[:, end, task]
    nan = np.full_like(perf_start, np.nan)
    forgetting, target, relearn = nan.copy(), nan.copy(), nan.copy()
    first: dict[int, int] = {}     # task -> its first visit
    previous: dict[int, int] = {}  # task -> its latest visit so far
    for v, j in enumerate(task.tolist()):
        first.setdefault(j, v)
        if j in previous:
            forgetting[:, v] = perf_end[:, previous[j]] - perf_start[:, v]
        previous[j] = v
        target[:, v] = relearn_target(perf_start[:, first[j]], perf_end[:, first[j]], threshold)
        window = slice(start[v], end[v] + 1)
        relearn[:, v] = _steps_to_reach(P[:, window, j], steps[window], target[:, v])
    return {"perf_start": perf_start, "perf_end": perf_end, "forgetting_between": forgetting,
            "target": target, "relearn_steps": relearn}


def has_revisit(df: pd.DataFrame) -> bool:
    """Whether the table's schedule returns to a task it trained before."""
    return bool((results.visit_spans(df)["occurrence"] > 0).any())


def _per_run_mean(group: pd.DataFrame) -> np.ndarray:
    """Each run's mean ``relearn_steps`` over its visits in ``group`` (visits that never
    reached the target left out; NaN for a run with none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a run that reached nothing
        return group.groupby("run")["relearn_steps"].agg(
            lambda x: np.nanmean(x.to_numpy(float)) if x.notna().any() else np.nan).to_numpy()


def relearn_summary(visits_df: pd.DataFrame, by: list[str], per: str = "occurrence",
                    level: float = 0.95) -> pd.DataFrame:
    """Relearning speed per setting (the columns ``by``) and ``per`` (``"occurrence"`` or
    ``"visit"``), from :func:`visits`.

    Columns: ``by...``, ``per`` (with ``task`` and ``occurrence`` too when ``per="visit"``),
    ``runs`` (runs counted), ``reached`` (the fraction of (run, visit) pairs with a defined
    target that reached it; per visit, the fraction of runs), and ``relearn_steps`` with
    ``relearn_steps_lo`` / ``_hi``: the mean over runs (seeds) and its percentile-bootstrap
    interval (:func:`metrics.continual.bootstrap_ci`). Per occurrence, each run's visits of
    that occurrence are averaged first, so the interval is over seeds. The mean reads only
    visits that reached the target, so read it with ``reached``. Runs flagged ``diverged`` are
    left out."""
    if per not in ("occurrence", "visit"):
        raise ValueError(f"per must be 'occurrence' or 'visit', got {per!r}")
    data = visits_df
    if "diverged" in data.columns:
        data = data[~data["diverged"].astype(bool)]
    keys = [*by, per]
    rows = []
    for key, group in data.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        if per == "visit":
            row["task"] = int(group["task"].iloc[0])
            row["occurrence"] = int(group["occurrence"].iloc[0])
        defined = group["target"].notna()
        row["runs"] = int(group["run"].nunique())
        row["reached"] = (float(group.loc[defined, "relearn_steps"].notna().mean())
                          if defined.any() else np.nan)
        point, low, high = continual.bootstrap_ci(_per_run_mean(group), level=level)
        row["relearn_steps"], row["relearn_steps_lo"], row["relearn_steps_hi"] = (
            float(point), float(low), float(high))
        rows.append(row)
    columns = [*keys, *(("task", "occurrence") if per == "visit" else ()), "runs", "reached",
               "relearn_steps", "relearn_steps_lo", "relearn_steps_hi"]
    return pd.DataFrame(rows, columns=columns)


def drift_response(df: pd.DataFrame) -> pd.DataFrame:
    """For schedules that mix tasks (``train_share`` rows): one row per run, log point and
    task with the run's configuration, ``step``, ``eval_task``, ``share`` (the task's share of
    the interval's training data) and ``performance`` (on that task at that step), so
    performance can be plotted against the mixture weight. An empty frame with those columns
    when the table has no ``train_share``."""
    cols = results.run_columns(df)
    shares = df[df["metric"] == "train_share"]
    if shares.empty:
        return pd.DataFrame(columns=[*cols, *DRIFT_COLUMNS])
    shares = shares[[*cols, "step", "eval_task", "value"]].rename(columns={"value": "share"})
    perf = df[df["metric"] == results.performance_metric(df)]
    perf = perf[["run", "step", "eval_task", "value"]].rename(columns={"value": "performance"})
    out = shares.merge(perf, on=["run", "step", "eval_task"], how="left")
    return out.sort_values(["run", "step", "eval_task"], ignore_index=True)
