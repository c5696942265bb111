"""How long each supervised preset takes on this machine, end to end (compile included).

Runs every supervised preset as ``plax run PRESET`` would (chunked mode, its own seeds, tasks
and steps), on its own data where it ships with the project (digits) and on generated data of
the real shapes where it comes from TFDS (MNIST: 60k 28×28; CIFAR-100: 50k 32×32×3): the cost
depends on shapes only. A preset whose full run would take longer than ``--full-limit`` seconds
(split-cifar100, meant for a GPU) runs with a tenth of its steps per task and log interval (so
training steps and evaluations both shrink ten-fold) and is reported as compile + 10 × the rest,
marked *estimated*.

    .venv/bin/python bench/preset_times.py [--presets quickstart,split-mnist]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from _common import Table, cifar_shaped, mnist_shaped  # noqa: E402
import experiments.kinds.classifier as classifier  # noqa: E402
from experiments.experiment import run  # noqa: E402
from experiments.registry import from_preset  # noqa: E402

SCALED = {"split-cifar100": 10}  # presets measured at 1/k of their steps, then extrapolated


def timed_run(cfg, dataset) -> float:
    """Seconds from building to the finished table (compile included)."""
    original = classifier.load_dataset
    if dataset is not None:
        classifier.load_dataset = lambda name, data_dir=None: dataset
    try:
        start = time.perf_counter()
        run(classifier.build(cfg), progress=False)
        return time.perf_counter() - start
    finally:
        classifier.load_dataset = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(classifier.PRESETS))
    args = parser.parse_args()
    data = {"mnist": None, "cifar100": None}
    table = Table(["preset", "seeds × tasks × steps", "wall s", "how"])
    for name in args.presets.split(","):
        cfg = from_preset(name)
        k = SCALED.get(name, 1)
        if k > 1:
            cfg = from_preset(name, steps_per_task=cfg.steps_per_task // k,
                              log_every=cfg.log_every // k)
        dataset = None
        if cfg.dataset in data:
            if data[cfg.dataset] is None:
                data[cfg.dataset] = mnist_shaped() if cfg.dataset == "mnist" else cifar_shaped()
            dataset = data[cfg.dataset]
        total = timed_run(cfg, dataset)
        wall = total
        if k > 1:  # compile time: the same shapes on a one-interval stream
            compile_s = timed_run(from_preset(name, num_tasks=1, steps_per_task=cfg.log_every,
                                              log_every=cfg.log_every), dataset)
            wall = compile_s + k * max(total - compile_s, 0.0)
        how = "measured" if k == 1 else f"estimated: compile + {k} × a 1/{k}-step run"
        table.add(name, f"{cfg.seeds} × {cfg.num_tasks} × {cfg.steps_per_task * k}", wall, how)
        print(f"  {name}: {wall:.0f} s", file=sys.stderr, flush=True)
    print(f"\nSupervised presets end to end on {os.cpu_count()} CPU cores "
          f"({jax.devices()[0].platform}; generated data of the real shapes for TFDS sets):\n")
    print(table.render())


if __name__ == "__main__":
    main()
