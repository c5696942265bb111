"""Is TD learning the gold standard for stitching? Bortkiewicz, Pałucki, Ostaszewski & Eysenbach
2025's question (REFERENCE.md §9 "Stitching") at CPU scale: a TD critic (goal-conditioned
double DQN + HER, the ``boxes-dqn`` preset) against a Monte-Carlo one (discrete-action
contrastive RL, ``boxes-crl``: the same trajectory replay, the same ε-greedy exploration, only
the critic differs), each at several critic sizes, on box moving 4×4 in the paper's two regimes:

* **exact**: one box, trained on trips between adjacent quarters (the agent confined to them),
  tested on diagonal trips (two trained legs chained);
* **generalised**: two boxes, trained with one of them already on its target, tested on moving
  both.

Each (regime, method, size) trains ``--seeds`` vmapped seeds through ``plax``'s own
``experiment.run`` (task 0 trained, task 1 never: ``--schedule order:0``); a run's success on a
task is its mean ``eval_success`` over the last ``--last`` log points. Printed: parameters of the
critic, success on training and held-out goals and the generalisation gap (train − held-out),
each as IQM over seeds with a 95% bootstrap interval (:func:`metrics.continual.bootstrap_ci`),
and wall seconds (compile included). Saves ``docs/stitching.png`` (held-out success against
critic parameters, per regime and method). The paper: TD stitches better in the exact regime,
yet critic size moves held-out success more than the method.

    python bench/stitching.py                         # defaults: 5 seeds, ~25 min on 2 cores
    python bench/stitching.py --regimes exact --methods dqn --sizes small --seeds 2 --steps 32000
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REGIMES = {
    "exact": dict(box_tasks=("exact:train", "exact:test"), boxes=1),
    "generalised": dict(box_tasks=("generalised:1", "generalised:0"), boxes=2),
}
SIZES = {  # the critic (DQN's Q-network, CRL's φ and ψ)
    "small": dict(network="mlp", hidden=(64, 64)),
    "medium": dict(network="mlp", hidden=(256, 256)),
    "big": dict(network="resmlp", hidden=(128,), blocks=2),   # 8 Dense layers + stem
}
METHODS = {"dqn": ("boxes-dqn", "TD (DQN)"), "crl": ("boxes-crl", "MC (CRL)")}


def one(regime: str, method: str, size: str, seeds: int, steps: int, last: int):
    """Per-seed (train, held-out) success, critic parameters and wall seconds of one cell."""
    import jax

    from experiments import experiment, registry

    preset = METHODS[method][0]
    base = registry.from_preset(preset)
    log_every = max(steps // 8 // base.num_envs, 1) * base.num_envs
    cfg = registry.from_preset(preset, **REGIMES[regime], **SIZES[size], seeds=seeds,
                               env_steps_per_task=log_every * 8, log_every=log_every)
    exp = registry.build(cfg)
    state = jax.eval_shape(exp.train.init, jax.random.key(0),
                           jax.tree.map(lambda a: a[0], exp.hparams), exp.data,
                           exp.tasks.params)[0].agent
    critic = state.q.params if method == "dqn" else (state.phi.params, state.psi.params)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(critic))
    start = time.perf_counter()
    table, _, _ = experiment.run(exp, progress=False)
    wall = time.perf_counter() - start
    ev = table[table["metric"] == "eval_success"]
    steps_logged = np.sort(ev["step"].unique())[-last:]
    final = (ev[ev["step"].isin(steps_logged)]
             .groupby(["seed", "eval_task"])["value"].mean().unstack("eval_task"))
    return final[0].to_numpy(), final[1].to_numpy(), n_params, wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", default="exact,generalised")
    parser.add_argument("--methods", default="dqn,crl")
    parser.add_argument("--sizes", default="small,medium,big")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=128_000, help="env steps of training")
    parser.add_argument("--last", type=int, default=3, help="log points averaged at the end")
    parser.add_argument("--out", default="docs/stitching.png")
    args = parser.parse_args(argv)

    from metrics.continual import bootstrap_ci

    rows = []
    for regime in args.regimes.split(","):
        for method in args.methods.split(","):
            for size in args.sizes.split(","):
                train, held, n_params, wall = one(regime, method, size, args.seeds,
                                                  args.steps, args.last)
                stats = {name: bootstrap_ci(v, statistic="iqm")
                         for name, v in (("train", train), ("held", held),
                                         ("gap", train - held))}
                rows.append(dict(regime=regime, method=method, size=size, params=n_params,
                                 wall=wall, **stats))
                print(f"[{regime} {method} {size}: {n_params} critic parameters, "
                      f"{args.seeds} seeds × {args.steps} env steps in {wall:.0f} s; "
                      f"held-out {stats['held'][0]:.2f}]", flush=True)

    fmt = lambda s: f"{s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}]"  # noqa: E731
    print(f"\nbox moving 4x4, {args.seeds} seeds × {args.steps} env steps; success = mean "
          f"eval_success over the last {args.last} log points, IQM [95% bootstrap CI]")
    header = ("regime", "method", "critic", "params", "train", "held-out", "gap", "wall s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['regime']} | {METHODS[r['method']][1]} | {r['size']} | {r['params']} | "
              f"{fmt(r['train'])} | {fmt(r['held'])} | {fmt(r['gap'])} | {r['wall']:.0f} |")
    plot(rows, Path(args.out))
    return 0


def plot(rows, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = sorted({r["regime"] for r in rows}, key=list(REGIMES).index)
    fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes), 3.6), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        for method, (_, label) in METHODS.items():
            mine = [r for r in rows if r["regime"] == regime and r["method"] == method]
            if not mine:
                continue
            x = [r["params"] for r in mine]
            held = np.array([r["held"] for r in mine])
            line, = ax.plot(x, held[:, 0], "o-", label=f"{label} held-out")
            ax.fill_between(x, held[:, 1], held[:, 2], alpha=0.2, color=line.get_color())
            ax.plot(x, [r["train"][0] for r in mine], "x--", color=line.get_color(),
                    label=f"{label} train")
        ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="critic parameters",
               ylabel="success (IQM, 95% CI)", title=f"box moving: {regime}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    raise SystemExit(main())
