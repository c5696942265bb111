"""Do iterated weight-tied blocks keep their plasticity across a task sequence? plax's own
question about Ghugare et al. 2026's iterative ``think`` network (REFERENCE.md §13; no paper
answers it): goal-conditioned double DQN + HER on Lights Out 3×3, then 4×4 (the 3×3 board padded
into the 4×4 one, the same goal difficulty: 1–3 presses), for an MLP and the think network.

Per network, three runs of ``--seeds`` vmapped seeds through ``plax``'s ``experiment.run``, each
task ``--steps`` env steps:

* **continual**: 3×3, then 4×4 (``--schedule order:0,1``), diagnostics ``dormant,srank`` on the
  Q-network (the think network's per-step residual streams ``step/<s>`` included);
* **fresh**: 4×4 only from a new network (``order:1``), the plasticity reference: a continual
  network that learns 4×4 worse than a fresh one has lost plasticity.

Printed per network: parameters; success on 3×3 at the end of its visit and after 4×4
(forgetting); success on 4×4 at the end, continual against fresh (the plasticity gap); and, at
the end of each visit, the dormant fraction (τ = 0.025) and srank (δ = 0.01) of each layer —
IQM over seeds with 95% bootstrap intervals (:func:`metrics.continual.bootstrap_ci`). Saves
``docs/think-plasticity.png``: srank and dormant fraction per think step after each task, with
the MLP's hidden layers beside them.

    python bench/think_plasticity.py                 # defaults: 5 seeds × 96k steps, ~12 min
    python bench/think_plasticity.py --seeds 2 --steps 19200
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TASKS = ("3x3:train", "4x4:1-3")
NETWORKS = {"mlp": "lightsout-dqn", "think": "lightsout-think"}
DORMANT, SRANK = "dormant_frac@0.025", "srank@0.01"


def run(preset: str, schedule: str, seeds: int, steps: int):
    from experiments import experiment, registry

    cfg = registry.from_preset(preset, lights_tasks=TASKS, schedule=schedule, seeds=seeds,
                               env_steps_per_task=steps, log_every=steps // 4 // 32 * 32,
                               metrics="dormant,srank")
    table, _, _ = experiment.run(registry.build(cfg), progress=False)
    return table


def at_end_of_visits(table, metric: str) -> dict:
    """{(visit end step, layer or eval_task): per-seed values}."""
    from metrics.results import visit_spans
    rows = table[table["metric"] == metric]
    out = {}
    for end in visit_spans(table)["end_step"]:
        at = rows[rows["step"] == end]
        key = "eval_task" if metric == "eval_success" else "layer"
        for name, group in at.groupby(key):
            out[(int(end), name)] = group.sort_values("seed")["value"].to_numpy()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=96_000, help="env steps per task")
    parser.add_argument("--out", default="docs/think-plasticity.png")
    args = parser.parse_args(argv)

    from metrics.continual import bootstrap_ci

    def cell(values) -> str:
        m, lo, hi = bootstrap_ci(np.asarray(values, float), statistic="iqm")
        return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"

    results = {}
    for name, preset in NETWORKS.items():
        continual = run(preset, "order:0,1", args.seeds, args.steps)
        fresh = run(preset, "order:1", args.seeds, args.steps)
        results[name] = (continual, fresh)
        print(f"[{name}: continual and fresh runs done]", flush=True)

    print(f"\nLights Out 3×3 → 4×4 (1–3 presses), DQN + HER, {args.seeds} seeds × {args.steps} "
          f"env steps per task; IQM [95% bootstrap CI] over seeds")
    print("| network | 3×3 after 3×3 | 3×3 after 4×4 | 4×4, continual | 4×4, fresh |\n"
          "|---|---|---|---|---|")
    per_layer = {}
    for name, (continual, fresh) in results.items():
        success = at_end_of_visits(continual, "eval_success")
        ends = sorted({end for end, _ in success})
        fresh_success = at_end_of_visits(fresh, "eval_success")
        fresh_end = max(end for end, _ in fresh_success)
        print(f"| {name} | {cell(success[(ends[0], 0)])} | {cell(success[(ends[1], 0)])} | "
              f"{cell(success[(ends[1], 1)])} | {cell(fresh_success[(fresh_end, 1)])} |")
        per_layer[name] = {m: at_end_of_visits(continual, m) for m in (DORMANT, SRANK)}

    print("\n| network | layer | dormant after 3×3 | dormant after 4×4 | srank after 3×3 | "
          "srank after 4×4 |\n|---|---|---|---|---|---|")
    for name, metrics in per_layer.items():
        ends = sorted({end for end, _ in metrics[SRANK]})
        layers = sorted({layer for _, layer in metrics[SRANK]}, key=_layer_key)
        for layer in layers:
            cells = [cell(metrics[m][(end, layer)]) for m in (DORMANT, SRANK) for end in ends]
            print(f"| {name} | {layer} | " + " | ".join(cells) + " |")
    plot(per_layer, Path(args.out))
    return 0


def _layer_key(layer: str):
    parts = layer.split("/")
    return (parts[1] != "step", int(parts[-1]) if parts[-1].isdigit() else 0, layer)


def plot(per_layer, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metrics.continual import iqm

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, label in ((axes[0], SRANK, "srank (δ = 0.01)"),
                              (axes[1], DORMANT, "dormant fraction (τ = 0.025)")):
        values = per_layer["think"][metric]
        ends = sorted({end for end, _ in values})
        steps = sorted({int(layer.split("/")[-1]) for _, layer in values if "/step/" in layer})
        for end, task, color in zip(ends, ("3×3", "4×4"), ("C0", "C1")):
            ax.plot(steps, [iqm(values[(end, f"critic/step/{s}")]) for s in steps], "o-",
                    color=color, label=f"think, after {task}")
            for i, layer in enumerate(sorted(layer for e, layer in per_layer["mlp"][metric]
                                             if e == end)):
                if layer.startswith("critic/hidden"):
                    ax.axhline(iqm(per_layer["mlp"][metric][(end, layer)]), color=color,
                               ls=("--", ":")[i % 2], lw=1, label=f"mlp {layer[7:]}, after {task}")
        ax.set(xlabel="think step (residual stream h)", ylabel=label)
        ax.legend(fontsize=6)
    fig.suptitle("Lights Out 3×3 → 4×4: the think network's features per step (IQM over seeds)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    raise SystemExit(main())
