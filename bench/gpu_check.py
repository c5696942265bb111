"""What only a GPU can show, in one table and at most 8 minutes on one GPU (issue 17, item 6).

Sections (``--sections`` runs a subset; they run in the order of ``SECTIONS`` — seeds,
diagnostics, crl, dreamer, dmc, sac — each with a time budget in seconds; an item that would not fit in what is
left of its section's budget is reported as skipped, and no section runs past ``--limit``):

* ``seeds`` — per-seed wall time per training step of 1, 8, 64 and 256 vmapped seeds, and its
  ratio to one seed, at two sizes: *quickstart* (the preset: digits 8×8, MLP 64-128-128-10,
  batch 64) and *permuted-mnist* (the preset: MLP 784-256-256-10, batch 128, on random uint8
  28×28 data with MNIST's split sizes, ``_common.mnist_shaped``: the cost is MNIST's, and
  nothing is downloaded). The stream is shortened to 2 tasks of the preset's steps with one log
  point per task, so the time is almost all training steps (3 log points evaluate both tasks).
  The program is ``continual.runner.execute(mode="sweep")``'s: ``jax.jit(over_runs(train.run))``
  (one seed runs unbatched, as there), compiled ahead of time; compile seconds are reported on
  their own, steady state is the median of ``--repeats`` calls after a warm-up call.
* ``diagnostics`` — the whole ``permuted-mnist`` run (10 tasks × 500 steps, 51 log points, 3
  seeds vmapped) with ``--metrics all`` against none, as ``bench/diagnostics_overhead.py`` times
  it: warm-up, then interleaved rounds; the ratio is the median of the per-round ratios.
* ``sac`` — SAC on Ant (the ``ant-directions`` preset's env: mjx backend with the fast solver,
  ``tasks.envs.brax``) with 2048 envs: env steps/s of random-action stepping alone and of
  training (acting, replay insertion, one update of batch 256 per step of all envs, SAC
  256-256), and their ratio, with ``bench/rl_throughput.py``'s own ``stepping`` and ``training``
  drivers (the RL loop's ``run_interval``, ``continual.agents.loop``).
* ``crl`` — contrastive goal-conditioned RL at JaxGCRL's Ant benchmark setting (issue 12,
  benchmark 4): the goal-conditioned Ant (spring backend, JaxGCRL's ``ant``), 256 envs, batch
  256, 2 × 256 networks, 16 updates per step of all envs (JaxGCRL's 1 per 16 transitions, with
  episodes of 993 steps so that its ratio is a whole number), one seed, through
  ``bench/crl_vs_jaxgcrl.py``'s driver: env steps/s with updates after the first interval, and
  the minutes 10M env steps take at that rate (JaxGCRL: about 10 on a V100; target ≤ 5).
* ``dmc`` — SAC on the DM Control Suite's CheetahRun through MuJoCo Playground (issue 14) with
  the platform's MJX implementation (``warp`` on a GPU, ``tasks.envs.playground``), the same
  envs, steps and networks as ``sac``: stepping alone, training, their ratio (target ≥ 1/3).
  Skipped, with the import error, where the carried wheels lack ``playground``/``warp-lang``.
* ``dreamer`` — the world-model agent (issue 13) at the ``dreamer-minigrid`` preset's
  sizes (16 envs, GRU 512, 32 × 16 latents, 512-wide MLPs, batch 16 × 64, train ratio 32,
  Plan2Explore) on its first grid, DoorKey-9x9, one seed, through
  ``bench/dreamer_throughput.py``'s driver: env steps/s and gradient updates/s after the first
  interval, and the hours the preset's 3 × 752k env steps take at that rate. Continual-Dreamer's
  ordering (reservoir + 50:50 forgets less than FIFO) is a longer run than this check:
  ``plax compare dreamer-minigrid --grid replay_eviction=fifo,reservoir
  replay_sampling=uniform,recent_mix --env-steps-per-task 96000``.

The device kind and the jax version are printed first. The table (columns: section, setting,
measure, value, unit/ratio) is printed as markdown at the end and written to ``--out`` as CSV
after every row, so a run stopped by its watchdog (``--limit`` + 60 s: a hung XLA call cannot be
cancelled; every thread's stack is dumped and the process ends) keeps what it measured.

Run, on this workplace's H200 machine (no network there; its image has Python 3.12 with jax
0.11.2, jax-cuda13-plugin/pjrt 0.11.2 and CUDA 13 libraries, flax, optax, orbax, pandas,
scikit-learn; plax's pins ask for jax 0.10.2, whose CUDA wheels — jaxlib 85 MB plus
jax-cuda13-pjrt 124 MB — exceed the 64 MiB a call may carry, so the image's jax is used and its
version is in the table). The Brax/MuJoCo wheels travel in ``.whl`` (carry it; fetched here
once with the ``pip download`` line below)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT/gpu_check.csv

    # here, once (repo root; .whl/ is ignored through .git/info/exclude):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        brax==0.14.2 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-mjx==3.17.0 \\
        jaxopt==0.8.5 trimesh==5.2.0 glfw==2.11.0          # 30 MB: what the Ant env imports
    # the dmc section also needs (not yet tried on the GPU machine):
    #   playground==0.2.0 warp-lang==1.19.0 ml-collections etils lxml mediapy

On a GPU machine with internet access and the project's pins (jax 0.10.2; its extras
``cuda12`` → jax-cuda12-plugin[with-cuda] 0.10.2 + jax-cuda12-pjrt 0.10.2 + CUDA 12 wheels, and
``cuda13`` → the same for CUDA 13, both on PyPI; ``cuda13-local`` uses installed CUDA 13)::

    python3.11 -m venv .venv && .venv/bin/pip install -e . 'jax[cuda12]==0.10.2' && .venv/bin/python bench/gpu_check.py

Smoke run of every section at tiny sizes (a CPU, under ~3 minutes on 2 cores)::

    .venv/bin/python bench/gpu_check.py --smoke --out /tmp/gpu_check_smoke.csv
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import faulthandler
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # plax's default (experiments/__init__.py)

import jax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import diagnostics_overhead as DO  # noqa: E402
import crl_vs_jaxgcrl as CV  # noqa: E402
import dreamer_throughput as DT  # noqa: E402
import rl_throughput as RL  # noqa: E402
import throughput as TP  # noqa: E402

from continual.runner import run_keys  # noqa: E402
from experiments.kinds import rl as rl_kind  # noqa: E402
from experiments.registry import from_preset  # noqa: E402

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

COLUMNS = ["section", "setting", "measure", "value", "unit/ratio"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Budget:
    """Seconds left to one section; ``fits(estimate)`` says whether an item of that cost fits."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def fits(self, estimate: float) -> bool:
        return estimate <= self.left()


class Report:
    """The one table: rows of (section, setting, measure, value, unit/ratio), rewritten to the
    CSV after every row."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.rows: list[list] = []

    def add(self, section: str, setting: str, measure: str, value, unit: str) -> None:
        row = [section, setting, measure, value, unit]
        self.rows.append(row)
        log("row: " + " | ".join(_fmt(c) for c in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in self.rows:
                w.writerow(["" if (isinstance(c, float) and math.isnan(c)) else c for c in r])
        tmp.replace(self.path)

    def skipped(self, section: str, setting: str, why: str) -> None:
        self.add(section, setting, "skipped", float("nan"), why)

    def markdown(self) -> str:
        cells = [[_fmt(c) for c in r] for r in self.rows]
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
                  for i, h in enumerate(COLUMNS)]
        right = [i == 3 for i in range(len(COLUMNS))]

        def line(r):
            return "| " + " | ".join(c.rjust(w) if rt else c.ljust(w)
                                     for c, w, rt in zip(r, widths, right)) + " |"
        sep = "|" + "|".join(("-" * (w + 1) + ":") if rt else ("-" * (w + 2))
                             for w, rt in zip(widths, right)) + "|"
        return "\n".join([line(COLUMNS), sep, *(line(r) for r in cells)])


def _fmt(c) -> str:
    if isinstance(c, float):
        if math.isnan(c):
            return "-"
        if abs(c) >= 1e3:
            return f"{c:,.0f}"
        return f"{c:.3g}"
    return str(c)


def steady(fn: Callable[[], object], repeats: int, budget: Budget) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call; stops early
    (keeping at least one timing) when the next call would overrun the budget."""
    warm = C.timed(fn)
    times: list[float] = []
    for _ in range(repeats):
        last = times[-1] if times else warm
        if times and not budget.fits(1.2 * last):
            break
        times.append(C.timed(fn))
    return times


# --------------------------------------------------------------------------------------------
# Sizes (full and --smoke)
# --------------------------------------------------------------------------------------------

class Sizes(NamedTuple):
    seed_counts: tuple
    quickstart: object          # ClassifierConfig
    mnist: object               # ClassifierConfig, seeds section
    mnist_examples: tuple       # (train, test) of the MNIST-shaped data
    sac_envs: int
    sac_steps: int              # steps of all envs per timing
    sac_hidden: tuple
    sac_batch: int
    crl: argparse.Namespace     # bench/crl_vs_jaxgcrl.py's sizes
    diagnostics: object         # ClassifierConfig, diagnostics section


def sizes(smoke: bool) -> Sizes:
    quick = from_preset("quickstart", mode="sweep")
    mnist = from_preset("permuted-mnist", mode="sweep")
    diag = mnist  # the preset itself: 10 tasks x 500 steps, 3 seeds
    if smoke:
        quick = dataclasses.replace(quick, steps_per_task=20)
        mnist = dataclasses.replace(mnist, steps_per_task=20, hidden=(32, 32))
        diag = dataclasses.replace(diag, num_tasks=2, steps_per_task=20, log_every=10,
                                   hidden=(32, 32))
    # 2 tasks, one log point per task: the time is (almost) all training steps.
    short = lambda c: dataclasses.replace(c, num_tasks=2, log_every=c.steps_per_task)  # noqa: E731
    quick, mnist = short(quick).validate(), short(mnist).validate()
    if smoke:
        crl = argparse.Namespace(envs=8, episode_length=101, unroll=25, batch=32, intervals=2)
        return Sizes((1, 4), quick, mnist, (2000, 1000), 8, 10, (32, 32), 32, crl,
                     diag.validate())
    crl = argparse.Namespace(envs=256, episode_length=993, unroll=62, batch=256, intervals=3)
    return Sizes((1, 8, 64, 256), quick, mnist, (60000, 10000), 2048, 200, (256, 256), 256,
                 crl, diag.validate())


_MNIST: dict = {}


def mnist_data(n: tuple):
    if n not in _MNIST:
        _MNIST[n] = C.mnist_shaped(n_train=n[0], n_test=n[1])
    return _MNIST[n]


def describe(p: C.Pieces) -> str:
    cfg = p.cfg
    return (f"MLP {'-'.join(map(str, C.mlp_widths(cfg, p.tasks)))}, batch {cfg.batch_size}, "
            f"{cfg.num_tasks}x{cfg.steps_per_task} steps")


# --------------------------------------------------------------------------------------------
# Sections: each is fn(args, sizes, budget, report)
# --------------------------------------------------------------------------------------------

def section_seeds(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """Per-seed wall time per training step of S vmapped seeds, and S-seed / 1-seed."""
    for size, cfg, dataset in (("quickstart", sz.quickstart, None),
                               ("permuted-mnist", sz.mnist, mnist_data(sz.mnist_examples))):
        log(f"seeds: building {size}")
        p = C.mirror_build(cfg, dataset)
        steps = cfg.num_tasks * cfg.steps_per_task
        one = None
        last_compile, last_run, last_s = 0.0, 0.0, 1
        for s in sz.seed_counts:
            setting = f"{size} ({describe(p)}), {s} seed{'s' if s > 1 else ''}"
            # Run time grows at most linearly in seeds; compile stays about the same.
            estimate = last_compile + (args.repeats + 1) * last_run * s / last_s
            if not budget.fits(estimate):
                report.skipped("seeds", setting, f"over budget ({budget.left():.0f} s left, "
                               f"~{estimate:.0f} s needed)")
                continue
            log(f"seeds: {setting}: compiling")
            keys, hp = run_keys(list(range(s))), TP.hparams_for(p, s)
            compiled, compile_s = TP.compile_sweep(p, keys, hp)
            times = steady(TP.sweep_call(compiled, p, keys, hp), args.repeats, budget)
            wall = C.median(times)
            per_seed = wall / (s * steps)
            one = per_seed if s == 1 else one
            report.add("seeds", setting, "per-seed time per step", 1e6 * per_seed, "us")
            if one is not None and s > 1:
                report.add("seeds", setting, "per-seed time / 1 seed's", per_seed / one, "ratio")
            report.add("seeds", setting, "compile", compile_s, "s")
            last_compile, last_run, last_s = compile_s, wall, s
            del compiled


def section_sac(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """SAC on Ant: env steps/s of stepping alone and of training, and training / stepping."""
    envs, steps = sz.sac_envs, sz.sac_steps
    cfg = from_preset("ant-directions", task_values=(1.0,), num_envs=envs,
                      env_steps_per_task=envs * steps, log_every=envs * steps,
                      hidden=sz.sac_hidden, batch_size=sz.sac_batch, updates_per_step=1,
                      seeds=1)
    seq = rl_kind.env_sequence(cfg)  # the preset's env: ant on mjx with the fast solver
    setting = (f"ant, {seq.env.backend}, {envs} envs x {steps} steps; SAC "
               f"{'-'.join(map(str, sz.sac_hidden))}, batch {sz.sac_batch}, 1 update/step")
    stepping_vs_training("sac", seq, setting, cfg.episode_length, args, sz, budget, report)


def section_dmc(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """SAC on the DM Control Suite's CheetahRun (MuJoCo Playground, the platform's MJX impl:
    warp on a GPU): stepping alone against training, as for the Ant (issue 14)."""
    from tasks.envs import playground

    impl = playground.default_impl()
    setting = (f"dmc CheetahRun, impl {impl}, {sz.sac_envs} envs x {sz.sac_steps} steps; SAC "
               f"{'-'.join(map(str, sz.sac_hidden))}, batch {sz.sac_batch}, 1 update/step")
    try:
        seq = playground.sequence(["CheetahRun"], impl=impl)
    except ImportError as err:  # the wheels of .whl/ lack MuJoCo Playground or warp
        report.skipped("dmc", setting, f"MuJoCo Playground not importable: {err}")
        return
    stepping_vs_training("dmc", seq, setting, 1000, args, sz, budget, report)


def stepping_vs_training(section: str, seq, setting: str, episode_length: int, args,
                         sz: Sizes, budget: Budget, report: Report) -> None:
    """Env steps/s of random-action stepping alone and of SAC training on ``seq`` (the drivers
    of ``bench/rl_throughput.py``), interleaved rounds after a warm-up, and their ratio."""
    envs, steps = sz.sac_envs, sz.sac_steps
    log(f"{section}: {setting}: compiling stepping")
    step_fn = RL.stepping(seq, envs, steps, episode_length)
    start = time.perf_counter()
    step_c = step_fn.lower(jax.random.key(1)).compile()
    step_compile = time.perf_counter() - start
    log(f"{section}: building and compiling training (init runs once)")
    start = time.perf_counter()
    train_fn, carry = RL.training(seq, envs, steps, episode_length, 1, sz.sac_batch,
                                  sz.sac_hidden)
    train_c = train_fn.lower(carry).compile()
    train_compile = time.perf_counter() - start
    state = {"carry": carry}

    def train_call():
        state["carry"] = jax.block_until_ready(train_c(state["carry"]))

    keys = iter(range(2, 10_000))
    step_call = lambda: jax.block_until_ready(step_c(jax.random.key(next(keys))))  # noqa: E731
    log(f"{section}: timing (warm-up, then interleaved rounds)")
    # The first training call also fills the buffer past min_replay.
    warm = {"stepping": C.timed(step_call), "training": C.timed(train_call)}
    times = {"stepping": [], "training": []}
    for _ in range(args.repeats):
        if times["training"] and not budget.fits(1.2 * (times["stepping"][-1]
                                                        + times["training"][-1])):
            break
        if not times["training"] and not budget.fits(1.2 * sum(warm.values())):
            break
        times["stepping"].append(C.timed(step_call))
        times["training"].append(C.timed(train_call))
    if not times["training"]:  # only the warm-up fitted: report it, marked
        times = {k: [v] for k, v in warm.items()}
        setting += " (warm-up call only)"
    n = envs * steps
    rate_step = n / C.median(times["stepping"])
    rate_train = n / C.median(times["training"])
    report.add(section, setting, "stepping alone", rate_step, "env steps/s")
    report.add(section, setting, "training", rate_train, "env steps/s")
    report.add(section, setting, "training / stepping", rate_train / rate_step, "ratio")
    report.add(section, setting, "compile stepping", step_compile, "s")
    report.add(section, setting, "compile training (+ init)", train_compile, "s")


def section_diagnostics(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """The permuted-mnist run with --metrics all against none (3 seeds vmapped)."""
    cfg = sz.diagnostics
    dataset = mnist_data(sz.mnist_examples)
    log_points = 1 + cfg.num_tasks * (cfg.steps_per_task // cfg.log_every)
    calls, compiles = {}, {}
    for m in ("", "all"):
        log(f"diagnostics: compiling metrics={m!r}")
        p = C.mirror_build(dataclasses.replace(cfg, metrics=m), dataset)
        calls[m], compiles[m] = DO.compiled_run(p)
    setting = f"permuted-mnist ({describe(p)}, {log_points} log points), {cfg.seeds} seeds"
    warm = {m: C.timed(fn) for m, fn in calls.items()}
    times: dict[str, list[float]] = {m: [] for m in calls}
    for _ in range(args.repeats):
        last = sum(t[-1] for t in times.values()) if times[""] else sum(warm.values())
        if not budget.fits(1.2 * last):
            break
        for m, fn in calls.items():
            times[m].append(C.timed(fn))
    if not times[""]:
        times = {m: [t] for m, t in warm.items()}
        setting += " (warm-up call only)"
    paired = [a / b for a, b in zip(times["all"], times[""])]
    report.add("diagnostics", setting, "wall, metrics none", C.median(times[""]), "s")
    report.add("diagnostics", setting, "wall, metrics all", C.median(times["all"]), "s")
    report.add("diagnostics", setting, "all / none", C.median(paired), "ratio")
    report.add("diagnostics", setting, "extra per log point",
               1e3 * (C.median(times["all"]) - C.median(times[""])) / log_points, "ms")
    report.add("diagnostics", setting, "compile, metrics none", compiles[""], "s")
    report.add("diagnostics", setting, "compile, metrics all", compiles["all"], "s")


# --------------------------------------------------------------------------------------------
# The sections, in order, with their time budgets in seconds on one GPU (together with start-up
# they stay under 8 minutes). A new section: write ``section_<name>(args, sizes, budget,
# report)`` like the ones above (compile reported on its own, steady state after a warm-up, rows
# through ``report.add``), give it a budget and add one entry; shrink the others' budgets so
# that the sum stays under --limit.
# --------------------------------------------------------------------------------------------

def section_crl(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """CRL on the goal-conditioned Ant at JaxGCRL's setting: env steps/s, minutes per 10M."""
    c = sz.crl
    setting = (f"ant goals (spring), {c.envs} envs, batch {c.batch}, "
               f"{CV.updates_per_step(c)} updates/step, 256-256")
    log(f"crl: {setting}: building, compiling, prefill interval, {c.intervals} timed")
    out = CV.plax(c, 1)
    report.add("crl", setting, "training (with updates)", out["sps"], "env steps/s")
    report.add("crl", setting, "10M env steps at this rate", 1e7 / out["sps"] / 60, "min")
    report.add("crl", setting, "first interval (compile + prefill)", out["first_s"], "s")


def section_dreamer(args, sz: Sizes, budget: Budget, report: Report) -> None:
    """Dreamer at the Continual-Dreamer preset's sizes: env steps/s, updates/s, hours."""
    preset = "dreamer-minigrid"
    intervals = 2 if args.smoke else 3
    overrides = dict(hidden=(32,), deter=32, stoch=4, classes=4, num_envs=4, batch_size=4,
                     sequence_length=16, log_every=1024, min_replay=256) if args.smoke else {}
    setting = (f"{preset}{' (smoke sizes)' if args.smoke else ''}: doorkey-9x9, one seed")
    log(f"dreamer: {setting}: building, compiling, prefill interval, {intervals} timed")
    exp = DT.build(preset, 1, intervals, **overrides)
    out = DT.timed_run(exp, 1)
    report.add("dreamer", setting, "training (with updates)", out["sps_per_seed"],
               "env steps/s")
    report.add("dreamer", setting, "gradient updates", out["ups_per_seed"], "updates/s")
    report.add("dreamer", setting, "the preset's 3 × 752k env steps at this rate",
               3 * 752_000 / out["sps_per_seed"] / 3600, "h")
    report.add("dreamer", setting, "first interval (compile + prefill)", out["first_s"], "s")


SECTIONS: dict[str, tuple[Callable, float]] = {
    "seeds": (section_seeds, 100.0),
    "diagnostics": (section_diagnostics, 55.0),
    "crl": (section_crl, 75.0),
    "dreamer": (section_dreamer, 65.0),
    "dmc": (section_dmc, 70.0),
    "sac": (section_sac, 125.0),  # last: its compile time is the least predictable
}


def versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in ("jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "brax", "mujoco-mjx"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma list, run in this order: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default="gpu_check.csv", help="CSV path of the table")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check on a CPU")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    ap.add_argument("--limit", type=float, default=480.0, help="seconds the whole check aims "
                    "at; the watchdog ends it at this + 60 s")
    ap.add_argument("--budget-scale", type=float, default=1.0,
                    help="multiplies every section's budget")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run the full sizes without an accelerator (far longer than 8 minutes)")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")

    t_start = time.perf_counter()
    dev = jax.devices()[0]
    print(f"plax gpu_check{' (--smoke)' if args.smoke else ''}: device {dev.device_kind} "
          f"({dev.platform}, {jax.device_count()} device(s)), jax {jax.__version__}, "
          f"{', '.join(f'{n} {v}' for n, v in versions().items())}, {os.cpu_count()} cores; "
          f"default matmul precision {jax.config.jax_default_matmul_precision or 'default'}",
          flush=True)
    if dev.platform == "cpu" and not args.smoke and not args.allow_cpu:
        print("no accelerator: the full sizes would take far longer than 8 minutes here; "
              "use --smoke (or --allow-cpu)", file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(args.limit + 60, exit=True)

    sz = sizes(args.smoke)
    report = Report(args.out)
    for name in chosen:
        fn, seconds = SECTIONS[name]
        budget = Budget(seconds * args.budget_scale)
        overall_left = args.limit - (time.perf_counter() - t_start)
        if overall_left <= 0:
            report.skipped(name, "(whole section)", f"over the {args.limit:.0f} s limit")
            continue
        budget.seconds = min(budget.seconds, overall_left)
        log(f"section {name}: budget {budget.seconds:.0f} s")
        try:
            fn(args, sz, budget, report)
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            traceback.print_exc()
            report.add(name, "(whole section)", "error", float("nan"),
                       f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
        log(f"section {name}: {budget.used():.0f} s of {budget.seconds:.0f} s")
    total = time.perf_counter() - t_start
    report.add("total", f"sections {','.join(chosen)}", "wall time incl. compile", total, "s")
    faulthandler.cancel_dump_traceback_later()
    print()
    print(report.markdown())
    print(f"\ntable written to {report.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
