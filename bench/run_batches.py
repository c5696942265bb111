"""Per-seed cost against the run batch: the curve a user reads to choose ``--run-batch``.

The same sweep-mode program executed in batches of N runs (1, 8, 64, 512, all) one after
another (:func:`continual.runner.execute` with a forced :class:`~continual.runner.BatchPlan`),
at two sizes: the ``quickstart`` stream (digits, MLP 128-128) and the ``permuted-mnist`` one
(MNIST-shaped random data, MLP 784-256-256-10, batch 128), one task of a few steps each. Each
batch size runs enough runs for at least two batches (all runs for "all"); the time is steady
state (the first call, which compiles, is excluded) and the cost per seed is reported against
running every run at once (ratio > 1 = slower per seed). The last columns show what
:func:`~continual.runner.plan_batches` estimates per run and would choose on this machine.

Run::

    .venv/bin/python bench/run_batches.py           # a few minutes on 2 cores
    .venv/bin/python bench/run_batches.py --quick
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, mirror_build, mnist_shaped  # noqa: E402
from continual.runner import BatchPlan, execute, format_bytes, plan_batches, run_keys  # noqa: E402
from experiments.registry import build, from_preset  # noqa: E402


def experiment(size: str, runs: int, steps: int):
    common = dict(num_tasks=1, steps_per_task=steps, log_every=steps, seeds=runs, mode="sweep")
    if size == "quickstart":
        exp = build(from_preset("quickstart", **common))
        return exp.train, exp.hparams, exp.tasks.data, exp.tasks.params, exp.schedule
    pieces = mirror_build(from_preset("permuted-mnist", eval_examples=1000, **common),
                          mnist_shaped())
    return pieces.train, pieces.hparams, pieces.tasks.data, pieces.tasks.params, pieces.schedule


def timed(train, hparams, data, params, schedule, runs: int, batch: int) -> float:
    """Steady-state seconds of ``runs`` runs in batches of ``batch``."""
    keys = run_keys(np.arange(runs))
    hp = type(hparams)(*(a[:runs] for a in hparams))
    plan = BatchPlan(runs, 1, batch, "forced")
    execute(train, keys, hp, data, params, schedule, mode="sweep", plan=plan)  # compiles
    start = time.perf_counter()
    execute(train, keys, hp, data, params, schedule, mode="sweep", plan=plan)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and steps")
    args = parser.parse_args()
    sizes = {"quickstart": (256 if args.quick else 1024, 20 if args.quick else 50),
             "permuted-mnist": (64 if args.quick else 256, 5 if args.quick else 10)}
    table = Table(["size", "run batch", "runs timed", "batches", "s", "ms per seed",
                   "vs all at once"])
    notes = []
    for size, (total, steps) in sizes.items():
        train, hparams, data, params, schedule = experiment(size, total, steps)
        rows = []
        for batch in [b for b in (1, 8, 64, 512) if b < total] + [total]:
            runs = total if batch == total else min(total, max(2 * batch, 16))
            seconds = timed(train, hparams, data, params, schedule, runs, batch)
            rows.append((batch, runs, seconds))
            print(f"  {size}: batch {batch}: {runs} runs in {seconds:.2f} s", flush=True)
        per_seed_all = rows[-1][2] / rows[-1][1]
        for batch, runs, seconds in rows:
            table.add(size, "all" if batch == total else batch, runs, -(-runs // batch),
                      f"{seconds:.2f}", f"{1e3 * seconds / runs:.2f}",
                      f"{seconds / runs / per_seed_all:.2f}")
        plan = plan_batches(train, run_keys(np.arange(total)), hparams, data, params,
                            schedule, mode="sweep")
        notes.append(f"{size}: {steps} steps, {total} runs: {plan.describe()}")
        # A plan that must batch: the same runs with a quarter of the memory they need.
        need = plan.shared_bytes + plan.per_run_bytes * total
        small = plan_batches(train, run_keys(np.arange(total)), hparams, data, params, schedule,
                             mode="sweep", device_bytes=int(need / 4))
        notes.append(f"{size} on a device with {format_bytes(need / 4)}: {small.describe()}")
    print()
    print(table.render())
    print()
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
