"""Replay in latent space on Split digits (default), Split Fashion-MNIST or Split MNIST,
class-incremental (default) or task-incremental (``--setting task``): no replay, raw rehearsal,
stored features (Pellegrini et al. 2020), generative internal replay (van de Ven et al. 2020)
and progressive latent replay (Pawlak et al. 2022).

Every method is one preset's stream and network, ``--seeds`` seeds vmapped in one compiled
program (sweep mode): ``--dataset digits`` the ``split-digits-latent`` preset's (5 tasks × 2
classes, MLP 64-128-128-10, batch 64 of which 32 replayed, 300 steps per task);
``fashion_mnist`` / ``mnist`` the ``split-mnist-bir`` preset's (van de Ven et al.'s Split MNIST
sizes: MLP 784-400-400-10, batch 128 of which 64 replayed, 500 steps per task; prepared TFDS
data under ``$PLAX_DATA_DIR``: ``plax data prepare fashion_mnist --from DIR`` converts the IDX
files offline). Adam 1e-3 throughout. ``--setting class`` (one head over the 10 classes) or
``task`` (logits masked to the task's classes, current and replayed rows each to its own
task's: see :mod:`continual.latent_replay`):

* ``none`` — fine-tuning;
* ``raw`` — rehearsal of ``--capacity`` stored examples (reservoir), through the whole network;
* ``features`` — ``--capacity`` stored hidden/0 activations, through the layers above only,
  hidden/0 frozen after the first task (the default); ``features, equal bytes`` — as many
  features as fit in raw's bytes; ``features, slow`` — hidden/0 not frozen but its updates
  × 0.1 (Pellegrini et al.'s "slow-down" alternative);
* ``generative`` — a class-conditional VAE over hidden/0 features (BI-R; distillation T = 2);
* ``progressive`` — generated features replayed at hidden/0 every p₁ steps and at hidden/1 every
  step (periods 2, 1: ``--progressive-base 2``, the ``split-digits-progressive`` preset; and
  4, 1), one VAE whose decoder mirrors the classifier.

Columns: ``acc_avg`` (final mean accuracy over the 5 tasks) and ``forgetting_max``, mean and
IQM over seeds with 95% bootstrap intervals (of the mean); wall seconds per task (the compiled
run without compilation, all seeds together, divided by the number of tasks); replay MFLOP per
step (analytic, matmuls only, one seed: raw 3·F_net, features 3·F_up, generative F_dec (sample)
+ F_up (targets) + 3·F_up (student) + 3·(F_enc + F_dec) (the VAE on its own samples), each × the
replayed rows; progressive: Σ over levels of (F_gen,ℓ + F_up,ℓ + 3·F_up,ℓ) / p_ℓ, F_gen,ℓ the
decoder from z down to ℓ (at the lowest level, whose samples the VAE also replays, + 3·(F_enc +
F_dec) / p_lowest); F = 2·Σ in·out of the layers named; the
generator's training on *current* features is not replay and is left out for every method);
replay memory per run (raw: what the
examples would take as uint8 pixels + an int32 label — plax itself keeps only their indices into
the on-device data set; features and generative: the bytes of the state they keep). Saves
``docs/latent-replay-<dataset>.png`` (``--setting task``: ``...-task.png``).

    .venv/bin/python bench/latent_replay.py [--dataset digits|fashion_mnist|mnist] [--seeds 5]
        [--capacity N (default 200 digits, 1000 otherwise)] [--setting class|task]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import Table  # noqa: E402
from continual.latent_replay import memory_bytes  # noqa: E402
from continual.runner import run_keys  # noqa: E402
from experiments.experiment import plan, run  # noqa: E402
from experiments.registry import build, from_preset  # noqa: E402
from metrics.continual import bootstrap_ci  # noqa: E402


# The stream and network of each data set: a preset, and its input size in pixels.
TITLES = {"digits": "digits", "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
STREAMS = {"digits": ("split-digits-latent", 64), "fashion_mnist": ("split-mnist-bir", 784),
           "mnist": ("split-mnist-bir", 784)}


def methods(capacity: int, seeds: int, setting: str = "class", dataset: str = "digits") -> dict:
    preset, pixels = STREAMS[dataset]
    base = from_preset(preset, dataset=dataset, seeds=seeds, mode="sweep", replay_capacity=0,
                       latent_layer=0, latent_replay="stored", setting=setting)
    feature_bytes = base.hidden[0] * 4 + 4 + 10   # float32 features, int32 label, bool mask
    raw_bytes = pixels + 4                         # uint8 pixels, int32 label
    equal = max(1, capacity * raw_bytes // feature_bytes)
    r = dataclasses.replace
    return {
        "none": base,
        "raw": r(base, replay_capacity=capacity),
        "features": r(base, latent_layer=1, replay_capacity=capacity),
        f"features, equal bytes ({equal})": r(base, latent_layer=1, replay_capacity=equal),
        "features, slow 0.1": r(base, latent_layer=1, replay_capacity=capacity,
                                latent_lower="slow", latent_slow=0.1),
        "generative": r(base, latent_layer=1, latent_replay="generative"),
        "progressive (p = 2, 1)": r(base, latent_layer=1, latent_replay="progressive",
                                    progressive_base=2),
        "progressive (p = 4, 1)": r(base, latent_layer=1, latent_replay="progressive",
                                    progressive_base=4),
    }


def replay_mflop(cfg, name: str) -> float:
    """Analytic replay FLOPs per step of one seed (see the module docstring)."""
    widths = [STREAMS[cfg.dataset][1], *cfg.hidden, 10]

    def f(ws):
        return 2 * sum(a * b for a, b in zip(ws[:-1], ws[1:]))

    rows = cfg.replay_batch
    f_net, f_up = f(widths), f(widths[cfg.latent_layer:])
    d, h, z = cfg.hidden[0], cfg.vae_hidden, cfg.vae_latent
    f_enc, f_dec = f([d, h, 2 * z]), f([z, h, d])
    if name == "none":
        return 0.0
    if cfg.latent_layer == 0:
        return rows * 3 * f_net / 1e6
    if cfg.latent_replay == "stored":
        return rows * 3 * f_up / 1e6
    if cfg.latent_replay == "generative":
        return rows * (f_dec + f_up + 3 * f_up + 3 * (f_enc + f_dec)) / 1e6
    # Progressive: the decoder mirrors the classifier, z -> H -> D_top, then one layer
    # D_{l+1} -> D_l per level down.
    levels, periods = cfg.replay_levels, cfg.replay_periods
    dims = [widths[k] for k in levels]
    n = len(levels)

    def f_gen(i):   # the decoder from z down to level i
        return f([z, h, dims[-1]]) + sum(f([dims[j + 1], dims[j]]) for j in range(i, n - 1))

    f_dec_all = f_gen(0)
    f_enc = f([dims[0], h, 2 * z])
    total = 0.0
    for i, (k, p) in enumerate(zip(levels, periods)):
        up = f(widths[k:])
        gen = f_dec_all + 3 * (f_enc + f_dec_all) if i == 0 else f_gen(i)
        total += (gen + 4 * up) / p
    return rows * total / 1e6


def memory_per_run(exp, cfg) -> int:
    if cfg.latent_layer == 0:
        return cfg.replay_capacity * (STREAMS[cfg.dataset][1] + 4)
    carry, _ = jax.eval_shape(exp.train.init, run_keys([0])[0],
                              jax.tree.map(lambda a: a[0], exp.hparams), exp.tasks.data,
                              exp.tasks.params)
    return memory_bytes(carry.state.extras)


def seen_task_curve(table):
    """Mean accuracy over the tasks trained so far, per (run, step)."""
    acc = table[(table.metric == "eval_acc") & (table.eval_task <= table.task)]
    return acc.groupby(["run", "step"])["value"].mean().unstack("step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=tuple(STREAMS), default="digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--capacity", type=int, default=None,
                        help="stored examples / features (default 200 digits, 1000 otherwise)")
    parser.add_argument("--setting", choices=("class", "task"), default="class",
                        help="class: one head (class-IL); task: logits masked to each row's "
                        "task (task-IL)")
    parser.add_argument("--plot", default=None, help="default: docs/latent-replay-<dataset>"
                        ".png, docs/latent-replay-<dataset>-task.png with --setting task")
    args = parser.parse_args()
    args.capacity = args.capacity or (200 if args.dataset == "digits" else 1000)
    slug = args.dataset.replace("_", "-")
    args.plot = args.plot or str(ROOT / "docs" / (f"latent-replay-{slug}.png" if args.setting
                                                  == "class" else f"latent-replay-{slug}-task.png"))
    title = f"Split {TITLES[args.dataset]}"
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
          f"{title} {args.setting}-IL, 5 tasks × 2 classes, {args.seeds} seeds vmapped, "
          f"capacity {args.capacity}")
    table = Table(["method", "acc_avg mean [95% CI]", "acc_avg IQM", "forgetting_max mean "
                   "[95% CI]", "forgetting_max IQM", "s/task", "compile s",
                   "replay MFLOP/step", "replay memory/run"])
    curves, finals, flops = {}, {}, {}
    for name, cfg in methods(args.capacity, args.seeds, args.setting, args.dataset).items():
        exp = build(cfg)
        start = time.perf_counter()
        batches = plan(exp)
        compile_s = time.perf_counter() - start
        frame, per_run, wall = run(exp, batches=batches, progress=False)
        cells = []
        for metric in ("acc_avg", "forgetting_max"):
            values = per_run[metric].to_numpy(np.float64)
            mean, lo, hi = bootstrap_ci(values, statistic="mean")
            iqm_point = bootstrap_ci(values, statistic="iqm")[0]
            cells += [f"{float(mean):.3f} [{float(lo):.3f}, {float(hi):.3f}]",
                      f"{float(iqm_point):.3f}"]
        mem = memory_per_run(exp, cfg)
        flops[name] = replay_mflop(cfg, name)
        table.add(name, *cells, f"{wall / cfg.num_tasks:.2f}", f"{compile_s:.1f}",
                  f"{flops[name]:.2f}", f"{mem / 1024:.1f} KiB")
        curves[name] = seen_task_curve(frame)
        last = frame[(frame.metric == "eval_acc") & (frame.step == frame.step.max())]
        finals[name] = last.groupby(["run", "eval_task"])["value"].mean().unstack().to_numpy()
        print(f"  {name}: done", flush=True)
    print(table.render())
    for name, value in flops.items():
        if name.startswith("progressive"):
            print(f"{name}: {value:.2f} replay MFLOP/step against generative's "
                  f"{flops['generative']:.2f} at hidden/0 every step: "
                  f"{1 - value / flops['generative']:.0%} saved")
    plot(curves, finals, args.plot, from_preset(STREAMS[args.dataset][0]).steps_per_task,
         args.setting, title)
    print(f"plot: {args.plot}")


def plot(curves, finals, path, steps_per_task, setting: str = "class",
         title: str = "Split digits") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(curves)
    for i, (name, c) in enumerate(curves.items()):
        steps = c.columns.to_numpy()
        mean, sd = c.mean(axis=0).to_numpy(), c.std(axis=0).to_numpy()
        ax.plot(steps, mean, label=name, marker=".")
        ax.fill_between(steps, mean - sd, mean + sd, alpha=0.15)
        f = finals[name]
        tasks = np.arange(f.shape[1])
        bx.bar(tasks + (i - len(curves) / 2 + 0.5) * width, f.mean(0), width,
               yerr=f.std(0), label=name)
    for b in range(1, math.ceil(steps.max() / steps_per_task)):
        ax.axvline(b * steps_per_task, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="gradient step", ylabel="mean accuracy on the tasks seen so far",
           title=f"{title}, {setting}-incremental", ylim=(0, 1.02))
    bx.set(xlabel="task (2 classes each)", ylabel="accuracy after the last task",
           title="final accuracy per task (mean ± sd over seeds)", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
