"""Shared helpers of the benchmarks in ``bench/`` (not part of the installed packages).

* :func:`mirror_build` runs :func:`experiments.kinds.classifier.build` on a given
  :class:`~tasks.datasets.Dataset` (``build`` loads its data set by name, and MNIST may not be on
  disk) and also returns the learner, for the Python-loop driver, and the config's task schedule
  (:mod:`tasks.schedule`); :func:`on_device` puts a schedule (or one entry) on the device;
* :func:`mnist_shaped` is random uint8 data with MNIST's shapes (the cost is the same);
* :func:`interleaved` times several variants round-robin, so that load from other processes on a
  shared machine hits every variant alike;
* :class:`Table` prints aligned plain-text tables.
"""
from __future__ import annotations

import faulthandler
import math
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import experiments.kinds.classifier as E
from continual.classifier import Learner, make_classifier
from continual.loop import LoopSpec, Train
from continual.optimizers import HParams
from continual.runner import run_keys
from experiments.kinds.classifier import ClassifierConfig as Config
from metrics import hooks
from plasticity.networks import make_network
from tasks.base import TaskSequence
from tasks.datasets import Dataset, load_dataset, make_dataset
from tasks.schedule import Schedule


class Pieces(NamedTuple):
    cfg: Config
    tasks: TaskSequence
    learner: Learner  # the classifier build() makes (for the Python-loop driver)
    train: Train
    spec: LoopSpec
    hparams: HParams  # leaves [R]
    keys: jax.Array   # [R]
    dataset: Dataset
    schedule: Schedule  # the config's task schedule (host numpy, leaves [K])


def mnist_shaped(n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> Dataset:
    """Random uint8 28×28 images with 10 random labels: MNIST's shapes and therefore its cost."""
    rng = np.random.default_rng(seed)
    return make_dataset("mnist-shaped",
                        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                        rng.integers(0, 10, n_train),
                        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                        rng.integers(0, 10, n_test), 10)


def cifar_shaped(n_train: int = 50000, n_test: int = 10000, seed: int = 0) -> Dataset:
    """Random uint8 32×32×3 images with 100 random labels: CIFAR-100's shapes and its cost."""
    rng = np.random.default_rng(seed)
    return make_dataset("cifar100-shaped", rng.integers(0, 256, (n_train, 32, 32, 3), np.uint8),
                        rng.integers(0, 100, n_train),
                        rng.integers(0, 256, (n_test, 32, 32, 3), np.uint8),
                        rng.integers(0, 100, n_test), 100)


def mirror_build(cfg: Config, dataset: Dataset | None = None) -> Pieces:
    """:func:`experiments.kinds.classifier.build` itself, with ``dataset`` in place of
    ``load_dataset(cfg.dataset)`` (``build`` loads by name; the module-level name is swapped for
    the call), plus the learner it makes, rebuilt with the same calls for the Python loop."""
    if dataset is None:
        dataset = load_dataset(cfg.dataset, cfg.data_dir or None)
    original = E.load_dataset
    E.load_dataset = lambda name, data_dir=None: dataset
    try:
        exp = E.build(cfg)
    finally:
        E.load_dataset = original
    if cfg.reset != "none" or cfg.regularizer not in ("", "none"):
        raise ValueError("the Python-loop learner mirrors build() without interventions or "
                         "regularizers only")
    network = make_network(cfg.network, exp.tasks.input_shape, exp.tasks.num_classes,
                           hidden=cfg.hidden, channels=cfg.channels, blocks=cfg.blocks,
                           activation=cfg.activation, layer_norm=cfg.layer_norm)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    learner = make_classifier(
        network, cfg.optimizer, setting=cfg.setting, regularizer=cfg.regularizer,
        optimizer_stats=hooks.optimizer_stats if diagnostics.optimization else None)
    keys = run_keys(exp.runs["seed"].to_numpy())
    return Pieces(exp.config, exp.tasks, learner, exp.train, exp.spec, exp.hparams, keys, dataset,
                  exp.schedule)


def on_device(schedule: Schedule) -> Schedule:
    """A schedule (or one entry of it, :func:`continual.loop.schedule_entry`) as device arrays,
    the form ``train.run`` / ``train.run_interval`` take it in."""
    return jax.device_put(jax.tree.map(np.asarray, schedule))


def mlp_widths(cfg: Config, tasks: TaskSequence) -> list[int]:
    return [math.prod(tasks.input_shape), *cfg.hidden, tasks.num_classes]


def sum_in_out(widths: list[int]) -> int:
    """Σ in·out over the dense layers: the multiply-adds of one example's forward pass."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def run_flops(cfg: Config, tasks: TaskSequence, seeds: int) -> float:
    """Analytic FLOPs of a whole run (see FLOP_FORMULA)."""
    s = sum_in_out(mlp_widths(cfg, tasks))
    intervals = cfg.task_schedule().length  # K = T * I for the sequential schedule
    steps = intervals * cfg.log_every
    log_points = 1 + intervals
    eval_width = int(tasks.params.test_index.shape[1])  # padded rows are computed too
    per_seed = 6 * cfg.batch_size * s * steps + 2 * eval_width * s * cfg.num_tasks * log_points
    return float(seeds * per_seed)


FLOP_FORMULA = ("FLOPs = seeds x [6*B*S*steps + 2*E*S*T*(1 + K)], S = sum(in*out) over dense "
                "layers, B batch, E eval examples per task, T tasks, K log intervals of the "
                "schedule (T*I for the sequential one, I log points per task) "
                "(train = fwd 2BS + bwd 4BS; biases, activations, softmax and optimizer ignored)")


def block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                watchdog: Callable[[str, float | None], float] | None = None
                ) -> dict[str, list[float]]:
    """Wall seconds of each variant: ``warmup`` untimed calls each, then ``repeats`` timed
    rounds in which every variant runs once (round-robin, so drifting load hits all alike).

    ``watchdog(name, previous_seconds) -> limit``: if given, a call running past ``limit`` seconds
    dumps every thread's Python stack and ends the process (a hung XLA computation cannot be
    cancelled) instead of hanging forever."""
    last: dict[str, float | None] = {name: None for name in variants}

    def call(name, fn):
        if watchdog is not None:
            faulthandler.dump_traceback_later(watchdog(name, last[name]), exit=True)
        try:
            last[name] = timed(fn)
        finally:
            if watchdog is not None:
                faulthandler.cancel_dump_traceback_later()
        return last[name]

    for name, fn in variants.items():
        for _ in range(warmup):
            call(name, fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(call(name, fn))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3g}-{max(xs):.3g}"


class Table:
    """Plain-text table with aligned columns; numbers right-aligned."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.rows: list[list[str]] = []

    def add(self, *cells: Any) -> None:
        self.rows.append([_cell(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        numeric = [all(_is_num(r[i]) for r in self.rows) and self.rows for i in
                   range(len(self.columns))]
        def line(cells):
            return "  ".join(c.rjust(w) if num else c.ljust(w)
                             for c, w, num in zip(cells, widths, numeric)).rstrip()
        sep = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.columns), sep, *(line(r) for r in self.rows)])


def _cell(c: Any) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if math.isnan(c):
            return "-"
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:.0f}"
    return str(c)


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return s == "-"
