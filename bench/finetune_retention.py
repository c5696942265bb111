"""Fine-tuning with retention on a two-task protocol (Wołczyk et al. 2024, RoboticSequence-shaped):
pre-train SAC on task 1 (the far part of the task: episodes reset into the later stages), then
fine-tune from it on task 0 (the whole task from its start) with plain fine-tuning, BC,
kickstarting, EWC and episodic memory, every method × seed one vmapped program, while the loop
evaluates both tasks. Task 1's return during fine-tuning is the pre-trained capability; its drop
(``untrained_drop``, ``untrained_drop_max``) is the forgetting the paper describes.

    python bench/finetune_retention.py                        # reacher-stages-quick, 5 seeds
    python bench/finetune_retention.py --seeds 3 --set env_steps_per_task=24000

Writes ``<out>/pretrain`` (a ``plax run --snapshots`` directory), ``<out>/finetune`` (results,
summary) and the figure ``--plot`` (default docs/finetune-retention.png), and prints the summary
per method (mean [95% bootstrap CI] over seeds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

# (bc_coef, kickstart_coef, ewc_coef, memory_share) per method: the paper's SAC values where it
# gives them (BC β 1, EWC λ 100, episodic memory 10 %), kickstarting its NetHack β₀ 0.5.
METHODS = {
    "fine-tuning": (0.0, 0.0, 0.0, 0.0),
    "BC": (1.0, 0.0, 0.0, 0.0),
    "kickstarting": (0.0, 0.5, 0.0, 0.0),
    "EWC": (0.0, 0.0, 100.0, 0.0),
    "episodic memory": (0.0, 0.0, 0.0, 0.1),
}
COEFS = ("bc_coef", "kickstart_coef", "ewc_coef", "memory_share")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="reacher-stages-quick")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for both phases (JSON value), repeatable")
    parser.add_argument("--out", default="runs/finetune-retention")
    parser.add_argument("--plot", default="docs/finetune-retention.png")
    args = parser.parse_args(argv)

    from experiments import experiment, registry
    from experiments.cli import main as plax
    from metrics import results

    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        value = _value(value)
        overrides[field] = tuple(value) if isinstance(value, list) else value
    out = Path(args.out)
    pre_dir = out / "pretrain"
    argv_pre = ["run", args.preset, "--schedule", "order:1", "--seeds", str(args.seeds),
                "--snapshots", "--no-plots", "--force", "--out", str(pre_dir)]
    for k, v in overrides.items():
        argv_pre += [f"--{k.replace('_', '-')}",
                     ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]
    print("pre-training on task 1 (the later stages) ...", flush=True)
    if plax(argv_pre) != 0:
        return 1

    cfg = registry.from_preset(args.preset, **overrides, schedule="order:0", seeds=args.seeds,
                               init_from=str(pre_dir))
    exp = registry.build(cfg)
    rows = [dict(seed=s, method=m, **dict(zip(COEFS, c)))
            for m, c in METHODS.items() for s in range(cfg.seed, cfg.seed + cfg.seeds)]
    runs = pd.DataFrame(rows)
    runs["source_run"] = runs["seed"].map(dict(zip(exp.runs["seed"], exp.runs["source_run"])))
    runs.index.name = "run"
    table_runs = runs.drop(columns=["method"])
    exp = exp._replace(runs=table_runs, hparams=experiment.hparams_of(table_runs))
    print(f"fine-tuning on task 0: {len(METHODS)} methods × {args.seeds} seeds in one "
          "program ...", flush=True)
    table, per_run, wall = experiment.run(exp)
    method_of = dict(zip(runs.index, runs["method"]))
    table["method"] = table["run"].map(method_of)
    per_run["method"] = per_run.index.map(method_of)
    ft_dir = out / "finetune"
    ft_dir.mkdir(parents=True, exist_ok=True)
    results.save(ft_dir, table, {**experiment.resolved_config(cfg, args.preset),
                                 "methods": METHODS, "wall_seconds": wall}, per_run)
    avg = f"{results.readout(table).prefix}_avg"   # return_avg (success_avg with goals)
    metrics = ["untrained_start", "untrained_end", "untrained_drop", "untrained_drop_max", avg]
    agg = results.aggregate(per_run, ["method"], metrics)
    agg = agg.set_index("method").loc[list(METHODS)]
    cols = {m: [f"{r[m]:.2f} [{r[m + '_lo']:.2f}, {r[m + '_hi']:.2f}]" for _, r in agg.iterrows()]
            for m in metrics}
    shown = pd.DataFrame(cols, index=agg.index).rename(columns={
        "untrained_start": "far return at start", "untrained_end": "far return at end",
        "untrained_drop": "drop (start − end)", "untrained_drop_max": "drop (start − min)",
        avg: "task 0 at end"})
    print(f"\n{args.preset}: fine-tuning on task 0 from π* (pre-trained on task 1), "
          f"{args.seeds} seeds, {wall:.0f} s")
    print(shown.to_string())
    _plot(table, Path(args.plot), args.preset)
    print(f"\nplot: {args.plot}; results: {ft_dir}")
    return 0


def _plot(table: pd.DataFrame, path: Path, preset: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = table[table["metric"] == "eval_return"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, task, title in ((axes[0], 1, "task 1: the pre-trained (far) stages"),
                            (axes[1], 0, "task 0: the whole sequence (fine-tuned)")):
        for method in METHODS:
            sub = ev[(ev["method"] == method) & (ev["eval_task"] == task)]
            curve = sub.pivot_table(index="step", columns="run", values="value")
            mean = curve.mean(axis=1)
            ax.plot(curve.index, mean, label=method)
            ax.fill_between(curve.index, curve.min(axis=1), curve.max(axis=1), alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("fine-tuning env steps")
        ax.set_ylabel("evaluation return")
    axes[0].legend()
    fig.suptitle(f"{preset}: retention while fine-tuning (mean, range over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
