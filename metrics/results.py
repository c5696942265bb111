"""Results as a tidy pandas table, and everything derived from it.

One row per (run, seed, task, step, metric, layer[, eval_task]) with the run's varying
configuration as columns (DESIGN.md, principle 7). The performance matrix R, the continual
summaries, the per-visit metrics (:mod:`metrics.visits`) and every plot are derived from this
table alone, so a saved run can be reloaded and compared later.

Columns: ``run, seed, <hparams...>, task, step, metric, layer, eval_task, value``. ``layer`` is
``""`` for scalar metrics; ``eval_task`` is ``<NA>`` except for the per-task performance
(``eval_acc``, ``eval_return``) and, for schedules that mix tasks, ``train_share`` (task
``eval_task``'s share of the interval's training data). ``task`` is the task trained in the
log interval ending at ``step`` (for a mixture, the one with the larger share); the
evaluation at step 0 (before training) carries ``task = 0``.

A **visit** is a maximal run of consecutive log intervals (in step order) with the same
``task``; a run's schedule is its sequence of visits (:func:`visit_spans`), the same for every
run of a table. Each task once, in order, is the sequential schedule: one visit per task.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import pandas as pd

from metrics import continual

RESULT_FILES = ("results.csv", "results.parquet", "config.json", "summary.csv")


def _flatten(tree: Mapping, prefix=()) -> list[tuple[tuple[str, ...], np.ndarray]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.extend(_flatten(v, prefix + (str(k),)))
        else:
            out.append((prefix + (str(k),), np.asarray(v)))
    return out


def _metric_layer(path: tuple[str, ...]) -> tuple[str, str]:
    # {"train": {"train_loss": x}} -> ("train_loss", ""); {"diagnostics": {"srank@0.01":
    # {"hidden/0": x}}} -> ("srank@0.01", "hidden/0"); {"train": {"grad_norm": {"out": x}}} -> ...
    if path[0] in ("train", "diagnostics"):
        path = path[1:]
    return path[0], "/".join(path[1:])


def to_frame(logs0: Mapping, logs: Mapping, runs: pd.DataFrame, log_every: int,
             tasks: np.ndarray, shares: np.ndarray | None = None) -> pd.DataFrame:
    """Builds the tidy table from stacked loop logs (see :func:`continual.runner.execute`).

    Args:
      logs0: logs at step 0, leaves ``[R, ...]``.
      logs: interval logs, leaves ``[R, K, ...]`` (``K`` log intervals of the schedule).
      runs: one row per run (index 0..R-1) with ``seed`` and the hyperparameter columns.
      log_every: steps between log points.
      tasks: ``[K]`` the task trained in each interval (the larger share of a mixture): the
        ``task`` column. A *visit* is a maximal run of consecutive intervals of one task.
      shares: ``[K, T]`` each task's share of the interval's training data, written as metric
        ``train_share`` (one row per task, ``eval_task`` = the task) when given — for schedules
        that mix tasks (drift); pure schedules leave it out.
    """
    frames = []

    def add(arr: np.ndarray, task: np.ndarray, step: np.ndarray, metric: str, layer: str):
        # arr: [R, K] or [R, K, Tev] with task/step of length K.
        r_count, k = arr.shape[:2]
        eval_tasks = arr.shape[2] if arr.ndim == 3 else 1
        run = np.repeat(np.arange(r_count), k * eval_tasks)
        idx = np.tile(np.repeat(np.arange(k), eval_tasks), r_count)
        frame = pd.DataFrame({
            "run": run,
            "task": task[idx],
            "step": step[idx],
            "metric": metric,
            "layer": layer,
            "eval_task": (pd.array(np.tile(np.arange(eval_tasks), r_count * k), dtype="Int64")
                          if arr.ndim == 3 else pd.array([pd.NA] * len(run), dtype="Int64")),
            "value": arr.reshape(-1).astype(np.float64),
        })
        frames.append(frame)

    tasks = np.asarray(tasks, int)
    steps = (np.arange(len(tasks)) + 1) * log_every
    for path, arr in _flatten(logs):
        if arr.shape[1] != len(tasks):
            raise ValueError(f"logs have {arr.shape[1]} intervals, the schedule {len(tasks)}")
        add(arr, tasks, steps, *_metric_layer(path))
    if shares is not None:
        r_count = len(runs)
        add(np.broadcast_to(np.asarray(shares, np.float64), (r_count, *np.shape(shares))),
            tasks, steps, "train_share", "")
    for path, arr in _flatten(logs0):
        add(arr[:, None], np.zeros(1, int), np.zeros(1, int), *_metric_layer(path))

    df = pd.concat(frames, ignore_index=True)
    df = runs.reset_index(names="run").merge(df, on="run", how="right")
    df["metric"] = df["metric"].astype("string")
    df["layer"] = df["layer"].astype("string")
    return df.sort_values(["run", "metric", "layer", "step", "eval_task"],
                          ignore_index=True, kind="stable")


def run_columns(df: pd.DataFrame) -> list[str]:
    """The per-run configuration columns (everything before ``task``)."""
    cols = list(df.columns)
    return cols[: cols.index("task")]


class Readout(NamedTuple):
    """How a table is read: which metric is the per-task performance (the matrix R), what the
    continual summaries are called, and which of the learner's own scalars the report draws.

    A table says which readout it needs through its performance metric, the one metric logged
    per evaluated task (rows with an ``eval_task``), so a saved table is read alone. A learner
    kind with a new performance metric registers its readout with :func:`register_readout`."""

    performance: str               # per-task evaluation metric: R, curves, plasticity
    online: str                    # training-time performance: ``<prefix>_online``
    prefix: str                    # summary names ``<prefix>_avg``, ``<prefix>_online``
    label: str                     # axis label of the performance
    step_unit: str                 # what a step counts
    bounded: bool                  # performance in [0, 1] (colour scale, ``ft_auc_cw``)
    summary: tuple[str, ...]       # the summary printed per setting
    # The learner's scalar signals: the panels of the figure ``figure`` (one or two metrics
    # each; ``<performance>_current`` is the performance on the task being trained).
    figure: str = ""
    panels: tuple[tuple[str, ...], ...] = ()
    # Logged scalars that are neither diagnostics nor panels (left out of diagnostics.png).
    quiet: tuple[str, ...] = ()
    # Other per-task metrics drawn over training like the performance: (metric, axis label),
    # one figure ``curves_<metric>.png`` each.
    curves: tuple[tuple[str, str], ...] = ()
    # Per-task *losses* read as matrices like R (metric, label): ``matrix_<metric>.png`` and the
    # summary's ``<metric>_forgetting`` (final loss minus the loss right after the task's last
    # visit, mean over tasks but the final one: its rise is forgetting). World models: the
    # reconstruction, reward and KL losses on each task's probe set.
    matrices: tuple[tuple[str, str], ...] = ()

    @property
    def signals(self) -> set[str]:
        return ({m for panel in self.panels for m in panel} | set(self.quiet)
                | {m for m, _ in self.curves} | {m for m, _ in self.matrices})


ACCURACY = Readout("eval_acc", "train_acc", "acc", "accuracy", "gradient step", True,
                   ("acc_avg", "forgetting_max", "bwt", "fwt_gem", "acc_online",
                    "plasticity_first", "plasticity_last"))
# RL: the continual metrics of the return matrix (REFERENCE §5; Continual World reports
# average performance and forgetting = after-task minus final, here forgetting_last).
RETURN = Readout("eval_return", "episode_return", "return", "return", "environment step", False,
                 ("return_avg", "forgetting_last", "forgetting_max", "fwt_gem",
                  "return_online", "plasticity_first", "plasticity_last"),
                 figure="rl.png",
                 panels=(("episode_return", "eval_return_current"), ("q_estimate", "mc_return"),
                         ("q_bias", "q_bias_norm"), ("td_error_val", "td_error_train"),
                         ("alpha",), ("entropy", "explore_entropy"),
                         ("critic_loss", "explore_critic_loss"),
                         ("actor_loss", "explore_actor_loss"),
                         # World models (Dreamer): model losses, imagined returns, Plan2Explore.
                         ("model_loss",), ("model_recon", "model_reward"),
                         ("model_dyn", "model_kl"), ("return", "value"),
                         ("intrinsic_reward", "ensemble_loss")),
                 quiet=("q_bias_abs", "q_bias_sq", "td_error_gap", "alpha_loss", "q_mean",
                        "episodes", "model_cont", "model_rep", "return_scale", "explore_return",
                        "explore_value", "explore_return_scale"),
                 curves=(("buffer_tasks", "share of the replay buffer"),),
                 matrices=(("wm_recon", "world-model reconstruction loss"),
                           ("wm_reward", "world-model reward loss"),
                           ("wm_kl", "world-model KL (posterior ‖ prior)")))
# Goal-conditioned RL: the success rate is the per-task performance (REFERENCE §9 "Metrics");
# return, time near goal and final distance are logged per task beside it.
SUCCESS = Readout("eval_success", "episode_success", "success", "success rate",
                  "environment step", True,
                  ("success_avg", "forgetting_last", "forgetting_max", "fwt_gem",
                   "success_online", "plasticity_first", "plasticity_last"),
                  figure="rl.png",
                  panels=(("episode_success", "eval_success_current"),
                          ("episode_return", "eval_return_current"),
                          ("categorical_accuracy",), ("logits_pos", "logits_neg"),
                          ("logsumexp",), ("logit_scale",), ("q_estimate", "mc_return"),
                          ("q_bias", "q_bias_norm"), ("td_error_val", "td_error_train"),
                          ("alpha",), ("entropy",), ("critic_loss",), ("actor_loss",)),
                  quiet=RETURN.quiet + ("eval_return", "eval_final_distance"),
                  curves=(("eval_time_near_goal", "steps near the goal"),) + RETURN.curves,
                  matrices=RETURN.matrices)
# In priority order: a table with several per-task metrics is read by the first listed here.
READOUTS: dict[str, Readout] = {r.performance: r for r in (ACCURACY, SUCCESS, RETURN)}


def register_readout(readout: Readout) -> Readout:
    READOUTS[readout.performance] = readout
    return readout


def readout(df: pd.DataFrame) -> Readout:
    """The table's :class:`Readout`, found from its performance metric."""
    evaluated = set(df.loc[df["eval_task"].notna(), "metric"].unique())
    known = [m for m in READOUTS if m in evaluated]
    if not known:
        raise ValueError(f"the table has no known per-task performance metric (found "
                         f"{sorted(evaluated)}; known: {', '.join(READOUTS)})")
    return READOUTS[known[0]]


def performance_metric(df: pd.DataFrame) -> str:
    """The per-task evaluation metric of a table: ``eval_acc`` (supervised) or ``eval_return``
    (RL: mean undiscounted return of the deterministic policy)."""
    return readout(df).performance


def visit_spans(df: pd.DataFrame) -> pd.DataFrame:
    """The table's schedule: one row per visit with ``visit`` (0-based), ``task``,
    ``occurrence`` (0 for the task's first visit, 1 for its first revisit, ...), ``start_step``
    (the log point just before the visit: the previous visit's last step, 0 for the first) and
    ``end_step`` (the visit's last log point). Read from the ``task`` and ``step`` columns
    alone; every run of a table follows the same schedule."""
    points = df.loc[df["step"] > 0, ["step", "task"]].drop_duplicates().sort_values("step")
    if points["step"].duplicated().any():
        raise ValueError("the table's runs train different tasks at the same step: a table "
                         "holds one schedule")
    if points.empty:
        raise ValueError("the table has no log interval (no row with step > 0)")
    task = points["task"].to_numpy(int)
    step = points["step"].to_numpy(np.int64)
    starts = np.flatnonzero(np.diff(task, prepend=-1) != 0)  # first interval of each visit
    end_step = step[np.r_[starts[1:], len(task)] - 1]         # last log point of each visit
    visit_task = task[starts]
    return pd.DataFrame({
        "visit": np.arange(len(starts)),
        "task": visit_task,
        "occurrence": pd.Series(visit_task).groupby(visit_task).cumcount().to_numpy(),
        "start_step": np.r_[0, end_step[:-1]].astype(np.int64),
        "end_step": end_step,
    })


def visit_tasks(df: pd.DataFrame) -> np.ndarray:
    """``[S]``: the task of each visit, the ``tasks`` argument of the :mod:`metrics.continual`
    functions for :func:`r_matrix`'s rows."""
    return visit_spans(df)["task"].to_numpy(int)


def performance_array(df: pd.DataFrame, steps=None, metric: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``P[run, i, j]``: the performance (:func:`performance_metric`, or another per-task
    ``metric``) on evaluated task ``j`` at log step ``steps[i]`` (default: every log step, 0
    included, ascending); NaN where not evaluated. Returns ``(P, steps, runs)`` with the run
    table (index ``run``)."""
    ev = df[df["metric"] == (metric or performance_metric(df))]
    steps = np.sort(ev["step"].unique()) if steps is None else np.asarray(steps)
    ev = ev[ev["step"].isin(steps)]
    runs = ev[run_columns(df)].drop_duplicates("run").set_index("run").sort_index()
    n_tasks = int(ev["eval_task"].max()) + 1
    P = np.full((len(runs), len(steps), n_tasks), np.nan)
    run_pos = pd.Series(np.arange(len(runs)), index=runs.index)
    row_of_step = pd.Series(np.arange(len(steps)), index=steps)
    P[run_pos[ev["run"]].to_numpy(), row_of_step[ev["step"]].to_numpy(),
      ev["eval_task"].to_numpy(dtype=int)] = ev["value"].to_numpy()
    return P, steps, runs


def r_matrix(df: pd.DataFrame, metric: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The performance matrix ``R[run, v, j]``, ``[runs, S+1, T]``, and the run table:
    accuracy, or return for RL (:func:`performance_metric`; or any per-task ``metric``, e.g. a
    world model's probe losses), one row per visit.

    Row 0 is the evaluation at initialisation; row ``v ≥ 1`` the evaluation at the last log
    point of visit ``v-1`` (:func:`visit_spans`; :func:`visit_tasks` gives the task of each
    visit). ``T`` counts the evaluated tasks. For the sequential schedule ``S = T`` and row
    ``k`` is "after training task ``k-1``".
    """
    ends = visit_spans(df)["end_step"].to_numpy()
    R, _, runs = performance_array(df, np.r_[0, ends], metric)
    return R, runs


def matrix_metrics(df: pd.DataFrame) -> list[str]:
    """The readout's loss matrices the table holds (:attr:`Readout.matrices`)."""
    present = set(df["metric"].unique())
    return [m for m, _ in readout(df).matrices if m in present]


def task_auc(df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """``AUC[run, i]``: mean performance on task ``i`` over the log points of its *first*
    visit (its own window; step 0 excluded), and the run table — the area under each task's
    learning curve for Continual World's forward transfer (:func:`metrics.continual.ft_auc_cw`,
    Wołczyk et al. 2021). Forward transfer is about learning a task not seen before, so later
    visits (relearning, see :mod:`metrics.visits`) do not count. Columns: the trained tasks,
    ascending."""
    ev = df[(df["metric"] == performance_metric(df)) & (df["step"] > 0)]
    spans = visit_spans(df)
    visit = np.searchsorted(spans["end_step"].to_numpy(), ev["step"].to_numpy())
    first = spans["occurrence"].to_numpy()[visit] == 0
    own = ev[first & (ev["eval_task"] == ev["task"]).to_numpy(bool, na_value=False)]
    auc = own.groupby(["run", "task"])["value"].mean().unstack("task").sort_index(axis=1)
    runs = ev[run_columns(df)].drop_duplicates("run").set_index("run").sort_index()
    return auc.reindex(runs.index).to_numpy(), runs


def forward_transfer(df: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per run of ``df``: forward transfer against ``reference``, a table of the same sequence
    trained task by task from scratch (e.g. ``--reset full --reset-replay true``; its AUCs are
    averaged over its runs): ``ft_auc_gap`` always, ``ft_auc_cw`` when the performance is an
    accuracy (in [0, 1]), and Continual-Dreamer's ``ft_auc_cd`` when the performance, clipped
    at 0, lies in [0, 1] (:func:`metrics.continual.ft_auc_cd`)."""
    auc, runs = task_auc(df)
    ref_auc, _ = task_auc(reference)
    if ref_auc.shape[1] != auc.shape[1]:
        raise ValueError(f"the reference has {ref_auc.shape[1]} tasks, the run {auc.shape[1]}")
    ref = np.nanmean(ref_auc, axis=0)
    out = runs.copy()
    out["ft_auc_gap"] = continual.ft_auc_gap(auc, ref)
    if readout(df).bounded:
        out["ft_auc_cw"] = continual.ft_auc_cw(auc, ref)
    perf = performance_metric(df)
    clipped = [t.assign(value=np.where(t["metric"] == perf, t["value"].clip(lower=0.0),
                                       t["value"])) for t in (df, reference)]
    if all(t.loc[t["metric"] == perf, "value"].max() <= 1.0 for t in clipped):
        # Performance in [0, 1] (after clipping returns at 0, as Continual-Dreamer does).
        cd_auc, cd_ref = task_auc(clipped[0])[0], np.nanmean(task_auc(clipped[1])[0], axis=0)
        out["ft_auc_cd"] = continual.ft_auc_cd(cd_auc, cd_ref)
    return out


def divergence(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: whether training hit a non-finite loss or parameter, the first (task, log step)
    where, and which quantity (``loss``, ``params`` or both). The loop froze such a run at its
    last finite state."""
    bad = df[(df["metric"] == "nonfinite_steps") & (df["value"] > 0)]
    first = bad.sort_values("step").drop_duplicates("run").set_index("run")
    out = pd.DataFrame(index=pd.Index(sorted(df["run"].unique()), name="run"))
    out["diverged"] = out.index.isin(first.index)
    out["diverged_task"] = first["task"].reindex(out.index).astype("Int64")
    out["diverged_by_step"] = first["step"].reindex(out.index).astype("Int64")
    which = pd.Series(pd.NA, index=out.index, dtype="string")
    for run, step in first["step"].items():
        at = df[(df["run"] == run) & (df["step"] == step)]
        parts = [q for q in ("loss", "params")
                 if (at.loc[at["metric"] == f"nonfinite_{q}", "value"] > 0).any()]
        which[run] = "+".join(parts) or "loss"
    out["diverged_quantity"] = which
    return out


def mark_diverged(df: pd.DataFrame) -> pd.DataFrame:
    """Adds a last column ``diverged``: True on every row of a run that diverged (after
    ``value``, so it is not a configuration column)."""
    df = df.copy()
    df["diverged"] = df["run"].map(divergence(df)["diverged"]).astype(bool)
    return df


def summarize_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: continual metrics from R over the table's visits
    (:func:`metrics.continual.summarize` with :func:`visit_tasks`), the plasticity at the end
    of the first and the last visit, online accuracy and divergence.

    Where some evaluated tasks are never trained (``--schedule order:0`` of two tasks), their
    mean performance at step 0 (``untrained_start``), at the end (``untrained_end``), the drop
    between them (``untrained_drop``) and from the start to the curve's minimum
    (``untrained_drop_max``), and ``generalisation_gap``: the final mean performance on the
    trained tasks minus ``untrained_end`` (held-out goals: Lights Out's harder boards, box
    moving's stitched trips). Fine-tuning a pre-trained policy on task 0 while evaluating the
    task it was pre-trained on makes the first four the forgetting of pre-trained capabilities
    (Wołczyk et al. 2024)."""
    R, runs = r_matrix(df)
    tasks = visit_tasks(df)
    read = readout(df)
    table = runs.copy()
    for name, values in continual.summarize(R, tasks).items():
        table[name] = values
    plasticity = continual.plasticity_curve(R, tasks)
    table["plasticity_first"] = plasticity[:, 0]
    table["plasticity_last"] = plasticity[:, -1]
    # Kumar et al. 2023: mean training-batch accuracy while learning each task (RL: mean
    # return of the training episodes).
    online = df[df["metric"] == read.online]
    table["acc_online"] = online.groupby("run")["value"].mean().reindex(table.index)
    for metric in matrix_metrics(df):
        # A loss: its rise after the task is forgetting (the negative of forgetting_last).
        L, _ = r_matrix(df, metric)
        table[f"{metric}_forgetting"] = -continual.forgetting_last(L, tasks)
    untrained = sorted(set(range(R.shape[-1])) - set(tasks.tolist()))
    if untrained:  # e.g. fine-tuning: the pre-trained task, evaluated but never trained here
        P, _, _ = performance_array(df)
        held = P[:, :, untrained]  # [run, step, task]
        table["untrained_start"] = np.nanmean(held[:, 0], axis=-1)
        table["untrained_end"] = np.nanmean(held[:, -1], axis=-1)
        table["untrained_drop"] = table["untrained_start"] - table["untrained_end"]
        table["untrained_drop_max"] = table["untrained_start"] - np.nanmean(
            np.nanmin(held, axis=1), axis=-1)
        # The generalisation gap of held-out goals (Lights Out, box moving): the final
        # performance on the trained tasks minus that on the never-trained ones.
        trained = sorted(set(tasks.tolist()))
        table["generalisation_gap"] = (np.nanmean(P[:, -1, trained], axis=-1)
                                       - table["untrained_end"])
    table = table.join(divergence(df))
    # A diverged run's accuracies are not averaged into anything: blank them.
    metric_cols = [c for c in table.columns if c not in runs.columns and not c.startswith("diverged")]
    table.loc[table["diverged"], metric_cols] = np.nan
    # The same formulas over any performance: say which in the names (acc_avg, return_avg).
    return table.rename(columns={"acc_avg": f"{read.prefix}_avg",
                                 "acc_online": f"{read.prefix}_online"})


SUMMARY_METRICS = ACCURACY.summary


def summary_metrics(df: pd.DataFrame) -> tuple[str, ...]:
    extra = ()
    if performance_array(df)[0].shape[-1] > len(set(visit_tasks(df).tolist())):
        extra = ("untrained_drop", "untrained_drop_max", "generalisation_gap")
    return (readout(df).summary + tuple(f"{m}_forgetting" for m in matrix_metrics(df))
            + extra)


def aggregate(per_run: pd.DataFrame, by: list[str], metrics=SUMMARY_METRICS,
              level: float = 0.95) -> pd.DataFrame:
    """Mean and bootstrap confidence interval over seeds for each setting (diverged runs
    excluded and counted)."""
    rows = []
    for key, group in per_run.groupby(by, dropna=False, sort=True) if by else [((), per_run)]:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["seeds"] = int((~group["diverged"]).sum())
        row["diverged"] = int(group["diverged"].sum())
        for m in metrics:
            values = group.loc[~group["diverged"], m].to_numpy(float)
            point, low, high = continual.bootstrap_ci(values, level=level)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = float(point), float(low), float(high)
        rows.append(row)
    return pd.DataFrame(rows)


def _atomic_write(path: Path, write) -> None:
    """Writes through a temporary file in the same directory, then renames over ``path``: an
    interrupted write leaves the previous version intact."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_config(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Writes ``config.json`` atomically (creating the run directory)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "config.json",
                  lambda p: Path(p).write_text(json.dumps(config, indent=2, default=str)))


def save(run_dir: str | os.PathLike, df: pd.DataFrame, config: Mapping[str, Any],
         summary: pd.DataFrame | None = None) -> None:
    """Writes ``results.csv``, ``results.parquet``, ``config.json`` (and ``summary.csv``)."""
    run_dir = Path(run_dir)
    save_config(run_dir, config)
    _atomic_write(run_dir / "results.csv", lambda p: df.to_csv(p, index=False))
    _atomic_write(run_dir / "results.parquet", lambda p: df.to_parquet(p, index=False))
    if summary is not None:
        _atomic_write(run_dir / "summary.csv", lambda p: summary.to_csv(p, index=True))


def load(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Reloads a saved run's table (Parquet) and resolved config."""
    run_dir = Path(run_dir)
    table = run_dir / "results.parquet"
    if not table.exists():
        raise FileNotFoundError(f"{run_dir} holds no results.parquet: is it a plax run directory?")
    config = json.loads((run_dir / "config.json").read_text())
    return pd.read_parquet(table), config
