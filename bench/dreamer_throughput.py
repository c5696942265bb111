"""Throughput and memory of the Dreamer agent against SAC, in one invocation (ratios, because
machines are noisy).

1. **Env steps/s and gradient updates/s** with learning on: Dreamer at the ``grid-quick``
   preset's sizes on its grid sequence, Dreamer on the point-mass maze (vector observations,
   continuous actions) and SAC on the same maze at the same env count (the ``maze-sac-her``
   sizes without HER: 64-64 networks, batch 256, one update per step of all envs). Timed over
   log intervals after the first (which holds compilation and the replay prefill); evaluation
   rollouts are kept minimal (1 env × 1 step).
2. **Per-seed cost** of 1, 4 and 16 vmapped Dreamer seeds in one program: (time of N seeds / N)
   / time of one seed (1.0 = free parallelism; a fresh process per count).
3. **On-device replay memory per run** at the grid preset and at the GPU preset
   ``dreamer-minigrid`` (shapes only, nothing allocated).

Run::

    .venv/bin/python bench/dreamer_throughput.py                 # ~6 min on 2 cores
    .venv/bin/python bench/dreamer_throughput.py --seeds 1,4     # quicker
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(exp, seeds: int) -> dict:
    """Env steps/s and updates/s of an experiment's chunked program over its intervals."""
    import jax
    import jax.numpy as jnp

    from continual.runner import compiled, run_keys

    init, interval = compiled(exp.train, "chunked")
    keys = run_keys(exp.runs["seed"].to_numpy())
    schedule = jax.tree.map(jnp.asarray, exp.schedule)
    start = time.perf_counter()
    carry, _ = init(keys, exp.hparams, exp.tasks.data, exp.tasks.params)
    times, updates = [], []
    for k in range(exp.schedule.length):
        if k:
            start = time.perf_counter()
        before = float(jnp.sum(carry.updates))
        entry = jax.tree.map(lambda a: a[k], schedule)
        carry, logs = interval(carry, entry, exp.hparams, exp.tasks.data, exp.tasks.params)
        jax.block_until_ready(logs)
        times.append(time.perf_counter() - start)
        updates.append((float(jnp.sum(carry.updates)) - before) / seeds)
    interval_steps = exp.config.log_every
    timed = statistics.median(times[1:])
    return {"seeds": seeds, "first_s": times[0], "interval_s": timed,
            "sps_per_seed": interval_steps / timed,
            "ups_per_seed": statistics.median(updates[1:]) / timed}


def build(which: str, seeds: int, intervals: int, **overrides):
    """The experiment timed for ``which``: ``dreamer-grid`` (grid-quick on its first grid),
    ``dreamer-maze`` (grid-quick's sizes on the point-mass maze), ``sac-maze`` (SAC there), or a
    Dreamer preset's name (its first task); 1 + ``intervals`` log intervals."""
    from experiments import registry

    small_eval = dict(eval_envs=1, eval_length=1, probe_examples=8, seeds=seeds,
                      mode="chunked", **overrides)
    if which == "dreamer-maze":
        cfg = registry.from_preset("grid-quick", env="pointmaze", mazes=("u_maze",),
                                   **small_eval)
    elif which == "sac-maze":  # same maze and env count, batch 256, one update per env step
        cfg = registry.from_preset("maze-sac-her", her="none", mazes=("u_maze",),
                                   num_envs=8, replay_capacity=36_000, min_replay=512,
                                   batch_size=256, hidden=(64, 64), updates_per_step=1,
                                   **small_eval)
    else:
        cfg = registry.from_preset("grid-quick" if which == "dreamer-grid" else which,
                                   **small_eval)
        cfg = replace(cfg, grids=cfg.grids[:1])   # one task: every interval times learning
    cfg = replace(cfg, env_steps_per_task=cfg.log_every * (1 + intervals))
    return registry.build(cfg.validate())


def replay_bytes(preset: str) -> tuple[float, float]:
    """(bytes per stored transition, bytes of the whole memory) of one run at ``preset``."""
    import jax

    from experiments import registry

    exp = registry.build(registry.from_preset(preset, seeds=1))
    cfg = exp.config
    # The agent's memory is the loop's; its shapes from an abstract init.
    carry = jax.eval_shape(exp.train.init, jax.random.key(0), jax.tree.map(
        lambda a: a[0], exp.hparams), exp.tasks.data, exp.tasks.params)[0]
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(carry.memory))
    return total / cfg.replay_capacity, float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=int, default=3, help="timed intervals")
    parser.add_argument("--seeds", default="1,4,16", help="vmapped seed counts (Dreamer)")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # child: "<which>:<seeds>"
    args = parser.parse_args()
    if args.one:
        which, seeds = args.one.split(":")
        print(json.dumps(timed_run(build(which, int(seeds), args.intervals), int(seeds))))
        return

    import jax
    print(f"jax {jax.__version__}, {jax.devices()}; grid-quick sizes (8 envs), "
          f"{args.intervals} timed intervals", flush=True)

    def child(which: str, seeds: int) -> dict:
        cmd = [sys.executable, __file__, "--one", f"{which}:{seeds}", "--intervals",
               str(args.intervals)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            raise SystemExit(f"{which} with {seeds} seeds failed:\n{res.stderr[-3000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {which} ({seeds} seed(s)): {row['sps_per_seed']:,.0f} env steps/s",
              flush=True)
        return row

    rows = {w: child(w, 1) for w in ("dreamer-grid", "dreamer-maze", "sac-maze")}
    sac = rows["sac-maze"]
    print("\n1. one seed, learning on (compile, prefill and evaluation excluded)")
    print(f"{'agent / env':16s} {'env steps/s':>12s} {'updates/s':>10s} {'vs SAC (steps)':>15s}")
    for name, row in rows.items():
        print(f"{name:16s} {row['sps_per_seed']:12,.0f} {row['ups_per_seed']:10,.1f} "
              f"{row['sps_per_seed'] / sac['sps_per_seed']:15.2f}")

    counts = sorted({1, *(int(s) for s in args.seeds.split(","))})
    seeded = {1: rows["dreamer-grid"], **{n: child("dreamer-grid", n) for n in counts if n > 1}}
    print("\n2. vmapped Dreamer seeds in one program (grid)")
    print(f"{'seeds':>5s} {'env steps/s (all)':>18s} {'cost per seed':>14s}")
    for n, row in seeded.items():
        cost = (row["interval_s"] / n) / seeded[1]["interval_s"]
        print(f"{n:5d} {n * row['sps_per_seed']:18,.0f} {cost:14.2f}")

    print("\n3. on-device replay memory per run (buffer, staging and probe sets)")
    print(f"{'preset':28s} {'bytes/transition':>17s} {'total':>10s}")
    for preset in ("grid-quick", "dreamer-minigrid"):
        per, total = replay_bytes(preset)
        print(f"{preset:28s} {per:17,.0f} {total / 2**30:9.2f}G")


if __name__ == "__main__":
    main()
