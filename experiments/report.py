"""Plots and summaries drawn from a results table alone (so any saved run can be redrawn).

* ``r_matrix.png`` — mean accuracy matrix R (one row per visit × eval task) per setting;
* ``accuracy_curves.png`` — accuracy on every task over training, task switches marked (and,
  when the schedule revisits a task, each visit's span shaded in its task's colour);
* ``plasticity.png`` — accuracy on each visit's task at the end of the visit (mean and 95% CI);
* ``relearning.png`` — only when the schedule revisits a task: steps each visit needs to reach
  the task's relearning target (:mod:`metrics.visits`), mean and 95% CI over seeds;
* ``diagnostics.png`` — each diagnostic over training, per layer, mean and spread over seeds;
* the learner's own signals figure where its :class:`metrics.results.Readout` names one (RL:
  ``rl.png`` — training and evaluation returns, critic estimate vs Monte-Carlo return and
  ``q_bias``, held-out vs training TD error, α, entropy and losses over environment steps;
  goal-conditioned RL adds the training success rate and the contrastive critic's accuracy,
  logits and logsumexp);
* ``curves_<metric>.png`` — the readout's other per-task metrics over training, like the
  accuracy curves (goal-conditioned RL: ``curves_eval_time_near_goal.png``; world models:
  ``curves_buffer_tasks.png``, the replay buffer's task composition);
* ``matrix_<metric>.png`` — per-task losses as matrices like R (world models: ``wm_recon``,
  ``wm_reward``, ``wm_kl`` on each task's probe set: world-model forgetting).

The table's readout (found from its performance metric) says what "accuracy" reads as: for RL
runs "return" throughout, the same plots over the return matrix; for goal-conditioned RL the
success rate (the success matrix).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metrics import continual, results, visits  # noqa: E402

# Logged every interval but not diagnostics: plotted elsewhere or not at all (train_share: the
# mixture weights of a drift schedule, see metrics.visits.drift_response).
_NOT_DIAGNOSTICS = {"nonfinite_steps", "nonfinite_loss", "nonfinite_params", "train_share"}


def setting_columns(df: pd.DataFrame) -> list[str]:
    """Columns that tell settings apart (the run's config columns except run and seed, and
    ``source_run``, the pre-trained run a fine-tuning run pairs with by seed) and that actually
    vary."""
    cols = [c for c in results.run_columns(df) if c not in ("run", "seed", "source_run")]
    return [c for c in cols if df[c].nunique(dropna=False) > 1]


def _label(key, cols) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c}={v}" for c, v in zip(cols, key)) or "all runs"


def _groups(df: pd.DataFrame):
    cols = setting_columns(df)
    if not cols:
        return [("all runs", df)]
    return [(_label(k, cols), g) for k, g in df.groupby(cols, sort=True)]


def summary(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run summary and its aggregate over seeds per setting (mean with 95% bootstrap CI)."""
    per_run = results.summarize_runs(df)
    return per_run, results.aggregate(per_run, setting_columns(df), results.summary_metrics(df))


# A setting "kept its plasticity" when it learns the last task at least this well relative to the
# first (for bounded performance, e.g. accuracy).
KEPT_FRACTION = 0.9


def plasticity_verdicts(df: pd.DataFrame, agg: pd.DataFrame) -> str:
    """One line per setting: plasticity-curve ends and whether the setting kept its plasticity
    (last ≥ ``KEPT_FRACTION`` × first). Empty for unbounded performance (returns), where a ratio
    means nothing, or a single task."""
    if not results.readout(df).bounded or not {"plasticity_first", "plasticity_last"} <= set(agg):
        return ""
    if df["task"].nunique() < 2:
        return ""
    cols = setting_columns(df)
    lines = []
    for _, row in agg.iterrows():
        first, last = row["plasticity_first"], row["plasticity_last"]
        if not (np.isfinite(first) and np.isfinite(last)) or first <= 0:
            continue
        verdict = "kept" if last >= KEPT_FRACTION * first else "lost"
        label = _label(tuple(row[c] for c in cols), cols)
        lines.append(f"  {label}: {first:.3f} → {last:.3f} ({100 * (last / first - 1):+.0f}%): "
                     f"{verdict}")
    return "\n".join(lines)


def relearning_table(df: pd.DataFrame, threshold: float = 0.9) -> str:
    """Relearning speed per setting and occurrence (first visit, revisit 1, ...): mean steps to
    reach the task's relearning target over seeds (:func:`metrics.visits.relearn_summary`) and
    how many visits reached it. Empty unless the schedule revisits a task."""
    if not visits.has_revisit(df):
        return ""
    cols = setting_columns(df)
    summary = visits.relearn_summary(visits.visits(df, threshold), cols)
    lines = []
    for key, group in summary.groupby(cols, sort=True) if cols else [((), summary)]:
        key = key if isinstance(key, tuple) else (key,)
        parts = [f"{'first' if o == 0 else f'revisit {o}'}: "
                 + ("-" if np.isnan(m) else f"{m:.0f} [{lo:.0f}, {hi:.0f}]")
                 + f" ({100 * r:.0f}% reached)"
                 for o, m, lo, hi, r in zip(group["occurrence"], group["relearn_steps"],
                                            group["relearn_steps_lo"],
                                            group["relearn_steps_hi"], group["reached"])]
        lines.append(f"  {_label(key, cols)}: " + "; ".join(parts))
    return "\n".join(lines)


def format_summary(agg: pd.DataFrame) -> str:
    """A compact text table: ``mean [low, high]`` per metric."""
    shown = pd.DataFrame(index=agg.index)
    for c in agg.columns:
        if c.endswith(("_lo", "_hi")):
            continue
        if f"{c}_lo" in agg.columns:
            shown[c] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
                        for m, lo, hi in zip(agg[c], agg[f"{c}_lo"], agg[f"{c}_hi"])]
        else:
            shown[c] = agg[c]
    return shown.to_string(index=False)


def _boundaries(ax, df: pd.DataFrame) -> None:
    """A thin vertical line at every task switch (the end of every visit but the last)."""
    for s in results.visit_spans(df)["end_step"].to_numpy()[:-1]:
        ax.axvline(s, color="grey", lw=0.6, ls=":")


def _task_colours(tasks) -> dict:
    """One colour per task (viridis, as the learning curves)."""
    tasks = sorted(set(tasks))
    cmap = plt.get_cmap("viridis", max(len(tasks), 1))
    return {t: cmap(i) for i, t in enumerate(tasks)}


def _shade_visits(ax, spans: pd.DataFrame, colours: dict) -> None:
    """Shades each visit's span of steps lightly in its task's colour."""
    for _, v in spans.iterrows():
        ax.axvspan(v["start_step"], v["end_step"], color=colours.get(v["task"], "grey"),
                   alpha=0.08, lw=0)


def _visit_labels(spans: pd.DataFrame) -> list[str]:
    """Names of R's rows: ``init``, then ``after v<visit> (task <task>)``."""
    return ["init"] + [f"after v{v} (task {t})" for v, t in zip(spans["visit"], spans["task"])]


def _visit_ticks(ax, spans: pd.DataFrame, max_ticks: int = 20) -> None:
    """x ticks at the visits, labelled with their task when there are few enough."""
    if len(spans) <= max_ticks:
        ax.set_xticks(spans["visit"], [f"{v}\n(task {t})" for v, t in
                                       zip(spans["visit"], spans["task"])], fontsize=7)


def _visits_width(spans: pd.DataFrame) -> float:
    """Width of a figure with one x position per visit: room for the tick labels."""
    return float(np.clip(0.4 * len(spans), 6, 12))


def _is_sequential(spans: pd.DataFrame) -> bool:
    """Each task once, in order: visits are tasks."""
    return spans["task"].tolist() == list(range(len(spans)))


def plot_r_matrix(df: pd.DataFrame, path: Path, metric: str | None = None,
                  value_label: str | None = None) -> None:
    """Mean R per setting (or the matrix of another per-task ``metric``): one row per visit
    (``init``, ``after v3 (task 1)``, ...)."""
    groups = _groups(df)
    spans = results.visit_spans(df)
    labelled = len(spans) < 30
    height = max(3.8, 0.22 * (len(spans) + 1) + 1.8) if labelled else 3.8
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), height), squeeze=False)
    for ax, (label, g) in zip(axes[0], groups):
        R, _ = results.r_matrix(g, metric)
        bounds = {"vmin": 0, "vmax": 1} if results.readout(df).bounded and not metric else {}
        with warnings.catch_warnings():   # a loss matrix has no row at init: all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(R, axis=0)
        im = ax.imshow(mean, cmap="viridis", aspect="auto", **bounds)
        ax.set_xlabel("evaluated task")
        if R.shape[-1] <= 20:
            ax.set_xticks(np.arange(R.shape[-1]))
        if labelled:
            ax.set_yticks(np.arange(len(spans) + 1), _visit_labels(spans), fontsize=7)
        else:
            ax.set_ylabel("after visit (0 = init)")
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, label=value_label or _performance_label(df))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_curves(df: pd.DataFrame, path: Path, metric: str | None = None,
                         label: str | None = None) -> None:
    """Each task's performance over training (or another per-task ``metric``), boundaries
    marked, one panel per setting."""
    groups = _groups(df)[:6]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups)), squeeze=False)
    read = results.readout(df)
    metric = metric or read.performance
    ev = df[df["metric"] == metric]
    bounded = read.bounded and metric == read.performance
    spans = results.visit_spans(df)
    revisit = bool((spans["occurrence"] > 0).any())
    for ax, (group, g) in zip(axes[:, 0], groups):
        g = ev[ev["run"].isin(g["run"].unique())]
        curves = g.groupby(["eval_task", "step"])["value"].mean().unstack(0)
        colours = _task_colours(curves.columns)
        for task in curves.columns:
            ax.plot(curves.index, curves[task], color=colours[task], lw=1.2, label=f"task {task}")
        _boundaries(ax, g)
        if revisit:
            _shade_visits(ax, spans, colours)
        if bounded:
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(read.step_unit)
        ax.set_ylabel(label or _performance_label(df))
        ax.set_title(group, fontsize=9)
        if curves.shape[1] <= 20:
            ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_plasticity(df: pd.DataFrame, path: Path) -> None:
    """Performance on each visit's task at the end of the visit, per setting."""
    spans = results.visit_spans(df)
    tasks = spans["task"].to_numpy(int)
    fig, ax = plt.subplots(figsize=(_visits_width(spans), 3.6))
    for label, g in _groups(df):
        R, _ = results.r_matrix(g)
        curve = continual.plasticity_curve(R, tasks)  # [runs, S]
        mean, lo, hi = continual.bootstrap_ci(curve.T)
        x = np.arange(curve.shape[1])
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
    if _is_sequential(spans):
        ax.set_xlabel("task")
        ax.set_ylabel(f"{_performance_label(df)} after its own training")
    else:
        _visit_ticks(ax, spans)
        ax.set_xlabel("visit")
        ax.set_ylabel(f"{_performance_label(df)} at the end of the visit")
    ax.set_title("plasticity curve (mean, 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_relearning(df: pd.DataFrame, path: Path, threshold: float = 0.9) -> bool:
    """Steps each visit needs to reach its task's relearning target
    (:func:`metrics.visits.visits`), a line per setting with its 95% bootstrap CI over seeds;
    a visit no seed reached is left out. Drawn only when the schedule revisits a task; returns
    whether it was."""
    if not visits.has_revisit(df):
        return False
    cols = setting_columns(df)
    per_visit = visits.relearn_summary(visits.visits(df, threshold), cols, per="visit")
    spans = results.visit_spans(df)
    fig, ax = plt.subplots(figsize=(_visits_width(spans), 3.6))
    for key, s in per_visit.groupby(cols, sort=True, dropna=False) if cols else [((), per_visit)]:
        line, = ax.plot(s["visit"], s["relearn_steps"], marker="o", ms=3, label=_label(key, cols))
        ax.fill_between(s["visit"], s["relearn_steps_lo"], s["relearn_steps_hi"], alpha=0.2,
                        color=line.get_color())
    for v in spans.loc[spans["occurrence"] > 0, "visit"]:
        ax.axvspan(v - 0.5, v + 0.5, color="grey", alpha=0.08, lw=0)  # the revisits
    _visit_ticks(ax, spans)
    ax.set_xlabel("visit (shaded: revisits)")
    ax.set_ylabel(f"{results.readout(df).step_unit}s to (re)learn")
    ax.set_title(f"steps to reach {threshold:.0%} of the first visit's gain "
                 f"(mean, 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _performance_label(df: pd.DataFrame) -> str:
    return results.readout(df).label


def diagnostic_metrics(df: pd.DataFrame) -> list[str]:
    read = results.readout(df)
    return sorted(set(df["metric"].unique()) - _NOT_DIAGNOSTICS - read.signals
                  - {read.performance, read.online})


def plot_signals(df: pd.DataFrame, path: Path) -> None:
    """The learner's scalar signals (its readout's panels) over training, task boundaries
    marked; mean and min–max over seeds per setting. RL: training-episode and current-task
    evaluation return, critic estimate vs Monte-Carlo return and the bias (``q_bias``),
    held-out vs training TD error, α, entropy and losses."""
    read = results.readout(df)
    ev = df[(df["metric"] == read.performance) & (df["step"] > 0)]
    current = ev[ev["eval_task"] == ev["task"]].assign(metric=f"{read.performance}_current")
    data = pd.concat([df[df["metric"].isin(read.signals)], current], ignore_index=True)
    data = data[data["step"] > 0]
    panels = [p for p in read.panels if data["metric"].isin(p).any()] or [read.panels[0]]
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 2.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for label, g in _groups(data):
            for metric, ls in zip(panel, ("-", "--")):
                m = g[g["metric"] == metric]
                if m.empty:
                    continue
                by = m.groupby(["step", "run"])["value"].mean().unstack("run")
                line, = ax.plot(by.index, by.mean(axis=1), ls=ls, lw=1.2,
                                label=f"{metric} ({label})" if len(_groups(data)) > 1 else metric)
                ax.fill_between(by.index, by.min(axis=1), by.max(axis=1), alpha=0.15,
                                color=line.get_color())
        _boundaries(ax, df)
        ax.set_xlabel(read.step_unit)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_diagnostics(df: pd.DataFrame, path: Path, aggregate_only: bool = False) -> bool:
    """One panel per diagnostic: a line per layer (or only the ``total``/``global`` aggregate),
    mean over seeds with a min–max band, for the first setting of each group."""
    names = diagnostic_metrics(df)
    if not names:
        return False
    groups = _groups(df)
    cols = min(3, len(names))  # laid out for the panels there are
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        d = df[df["metric"] == name]
        for label, g in groups:
            gd = d[d["run"].isin(g["run"].unique())]
            layers = sorted(gd["layer"].unique())
            if aggregate_only and {"total", "global"} & set(layers):
                layers = [l for l in layers if l in ("total", "global")]
            for layer in layers:
                stats = gd[gd["layer"] == layer].groupby("step")["value"].agg(["mean", "min", "max"])
                name_parts = [p for p in (label if len(groups) > 1 else "", layer) if p] or [name]
                line, = ax.plot(stats.index, stats["mean"], lw=1.1, label=" · ".join(name_parts))
                ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15,
                                color=line.get_color())
        _boundaries(ax, d)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_comparison(rank: pd.DataFrame, by: list[str], metrics, path: Path) -> None:
    """One horizontal bar chart per metric: a bar per setting with its confidence interval."""
    labels = [_label(tuple(r[c] for c in by), by) for _, r in rank.iterrows()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.5 * len(rank) + 1.5),
                             squeeze=False)
    y = np.arange(len(rank))
    for ax, m in zip(axes[0], metrics):
        mean = rank[m].to_numpy(float)
        err = np.stack([mean - rank[f"{m}_lo"].to_numpy(float),
                        rank[f"{m}_hi"].to_numpy(float) - mean])
        ax.barh(y, mean, xerr=np.nan_to_num(err), color="tab:blue", alpha=0.7, capsize=3)
        ax.set_yticks(y, labels if ax is axes[0, 0] else [""] * len(y), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_plots(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Draws every plot into ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "r_matrix.png", out_dir / "accuracy_curves.png", out_dir / "plasticity.png"]
    plot_r_matrix(df, paths[0])
    plot_accuracy_curves(df, paths[1])
    plot_plasticity(df, paths[2])
    if plot_relearning(df, out_dir / "relearning.png"):
        paths.append(out_dir / "relearning.png")
    read = results.readout(df)
    for metric, label in read.curves:
        if (df["metric"] == metric).any():
            paths.append(out_dir / f"curves_{metric}.png")
            plot_accuracy_curves(df, paths[-1], metric, label)
    for metric, label in read.matrices:
        if (df["metric"] == metric).any():
            paths.append(out_dir / f"matrix_{metric}.png")
            plot_r_matrix(df, paths[-1], metric, label)
    if read.figure and read.panels:
        paths.append(out_dir / read.figure)
        plot_signals(df, paths[-1])
    if plot_diagnostics(df, out_dir / "diagnostics.png"):
        paths.append(out_dir / "diagnostics.png")
    return paths
