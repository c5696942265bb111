"""Plots and summaries drawn from a results table alone (so any saved run can be redrawn).

* ``r_matrix.png`` — mean accuracy matrix R (train task × eval task) per setting;
* ``accuracy_curves.png`` — accuracy on every task over training, task boundaries marked;
* ``plasticity.png`` — accuracy on each task at the end of its own training (mean and 95% CI);
* ``diagnostics.png`` — each diagnostic over training, per layer, mean and spread over seeds;
* the learner's own signals figure where its :class:`metrics.results.Readout` names one (RL:
  ``rl.png`` — training and evaluation returns, critic estimate vs Monte-Carlo return and
  ``q_bias``, held-out vs training TD error, α, entropy and losses over environment steps).

The table's readout (found from its performance metric) says what "accuracy" reads as: for RL
runs "return" throughout, the same plots over the return matrix.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metrics import continual, results  # noqa: E402

# Logged every interval but not diagnostics: plotted elsewhere or not at all.
_NOT_DIAGNOSTICS = {"nonfinite_steps", "nonfinite_loss", "nonfinite_params"}


def setting_columns(df: pd.DataFrame) -> list[str]:
    """Columns that tell settings apart (the run's config columns except run and seed) and that
    actually vary."""
    cols = [c for c in results.run_columns(df) if c not in ("run", "seed")]
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
    ends = df[df["step"] > 0].groupby("task")["step"].max().sort_index().to_numpy()
    for s in ends[:-1]:
        ax.axvline(s, color="grey", lw=0.6, ls=":")


def plot_r_matrix(df: pd.DataFrame, path: Path) -> None:
    groups = _groups(df)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for ax, (label, g) in zip(axes[0], groups):
        R, _ = results.r_matrix(g)
        bounds = {"vmin": 0, "vmax": 1} if results.readout(df).bounded else {}
        im = ax.imshow(np.nanmean(R, axis=0), cmap="viridis", aspect="auto", **bounds)
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task (0 = init)")
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, label=_performance_label(df))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_curves(df: pd.DataFrame, path: Path) -> None:
    groups = _groups(df)[:6]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups)), squeeze=False)
    read = results.readout(df)
    ev = df[df["metric"] == read.performance]
    for ax, (label, g) in zip(axes[:, 0], groups):
        g = ev[ev["run"].isin(g["run"].unique())]
        curves = g.groupby(["eval_task", "step"])["value"].mean().unstack(0)
        cmap = plt.get_cmap("viridis", curves.shape[1])
        for i, task in enumerate(curves.columns):
            ax.plot(curves.index, curves[task], color=cmap(i), lw=1.2, label=f"task {task}")
        _boundaries(ax, g)
        if read.bounded:
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(read.step_unit)
        ax.set_ylabel(_performance_label(df))
        ax.set_title(label, fontsize=9)
        if curves.shape[1] <= 20:
            ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_plasticity(df: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, g in _groups(df):
        R, _ = results.r_matrix(g)
        curve = continual.plasticity_curve(R)  # [runs, T]
        mean, lo, hi = continual.bootstrap_ci(curve.T)
        x = np.arange(curve.shape[1])
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xlabel("task")
    ax.set_ylabel(f"{_performance_label(df)} after its own training")
    ax.set_title("plasticity curve (mean, 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    read = results.readout(df)
    if read.figure and read.panels:
        paths.append(out_dir / read.figure)
        plot_signals(df, paths[-1])
    if plot_diagnostics(df, out_dir / "diagnostics.png"):
        paths.append(out_dir / "diagnostics.png")
    return paths
