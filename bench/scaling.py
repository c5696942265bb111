"""Scaling of a fixed sweep over host devices, and the cost of checkpointing.

1. **Devices**: the same sweep (16 runs of the quickstart stream, sweep mode) with its run axis
   sharded over 1, 2 and 4 CPU host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``,
   one subprocess per count since the flag must precede the jax import). On a 2-core machine
   more than 2 devices cannot be faster; the point is that sharding costs nothing and the
   numbers agree. Steady state (compile excluded, reported separately), median of repeats.
2. **Checkpoints**: chunked mode with an orbax checkpoint at the end of every visit of the
   schedule but the last (the default; one per task boundary for the sequential schedule)
   against the same chunked run without, as a fraction of run time. Target: under 5%.

Run::

    .venv/bin/python bench/scaling.py            # a few minutes on 2 cores
    .venv/bin/python bench/scaling.py --quick
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEVICE_SCRIPT = textwrap.dedent("""
    import json, statistics, sys, time
    import jax, numpy as np
    from continual.runner import execute, run_keys, run_mesh
    from experiments.registry import from_preset
    from experiments.registry import build
    runs, tasks, repeats = (int(a) for a in sys.argv[1:4])
    exp = build(from_preset("quickstart", seeds=runs, num_tasks=tasks, mode="sweep"))
    args = (exp.train, run_keys(np.arange(runs)), exp.hparams, exp.tasks.data, exp.tasks.params,
            exp.schedule)
    kw = dict(mode="sweep", mesh=run_mesh())
    start = time.perf_counter()
    _, logs = execute(*args, **kw)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, logs = execute(*args, **kw)
        times.append(time.perf_counter() - start)
    print(json.dumps({"devices": len(jax.devices()), "first": first,
                      "median": statistics.median(times), "min": min(times),
                      "acc": float(np.asarray(logs["eval_acc"]).mean())}))
""")


def device_rows(runs: int, tasks: int, repeats: int) -> list[dict]:
    rows = []
    for n in (1, 2, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", DEVICE_SCRIPT, str(runs), str(tasks),
                               str(repeats)], capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def checkpoint_rows(tasks: int, repeats: int) -> dict:
    """Chunked quickstart with and without a checkpoint at every task boundary."""
    from continual.checkpoint import Checkpointer
    from experiments.registry import from_preset
    from experiments.experiment import run
    from experiments.registry import build

    exp = build(from_preset("quickstart", num_tasks=tasks))
    run(exp, progress=False)  # compile once
    plain, saved = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        run(exp, progress=False)
        plain.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            ck = Checkpointer(Path(tmp) / "checkpoints", keep=3)
            start = time.perf_counter()
            run(exp, progress=False, checkpointer=ck)
            saved.append(time.perf_counter() - start)
            ck.close()
    p, s = statistics.median(plain), statistics.median(saved)
    return {"plain": p, "checkpointed": s, "overhead": s / p - 1, "checkpoints": tasks - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    runs, tasks, repeats = (16, 3, 1) if args.quick else (16, 10, 3)

    print(f"1. sweep of {runs} quickstart runs × {tasks} tasks over host devices "
          f"(steady state, median of {repeats})")
    rows = device_rows(runs, tasks, repeats)
    base = rows[0]["median"]
    print(f"{'devices':>8} {'compile+run s':>14} {'run s':>8} {'speed-up':>9} {'mean acc':>9}")
    for r in rows:
        print(f"{r['devices']:>8} {r['first']:>14.2f} {r['median']:>8.2f} "
              f"{base / r['median']:>9.2f} {r['acc']:>9.4f}")
    drift = max(abs(r["acc"] - rows[0]["acc"]) for r in rows)
    print(f"   max |mean accuracy - 1 device| = {drift:.2e} (float reassociation across shards)")

    ck = checkpoint_rows(tasks, repeats)
    print(f"\n2. checkpoint overhead, chunked quickstart × {tasks} tasks "
          f"({ck['checkpoints']} orbax checkpoints, median of {repeats})")
    print(f"   without {ck['plain']:.2f} s, with {ck['checkpointed']:.2f} s: overhead "
          f"{100 * ck['overhead']:.1f}% (target < 5%: {'met' if ck['overhead'] < 0.05 else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"devices": rows, "checkpoint": ck}, indent=2))


if __name__ == "__main__":
    main()
