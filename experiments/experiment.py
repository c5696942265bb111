"""What an experiment is, what builds one, and how it runs.

* :class:`Kind` — a learner kind (the classifier, SAC, ...): its config class, presets and
  ``build(config) -> Experiment``. Kinds live in ``experiments/kinds/`` (one module each) and are
  found through :mod:`experiments.registry`; nothing here names one.
* :class:`Experiment` — everything of one experiment, built once: the task sequence, the loop
  (:class:`continual.loop.Train`), the run table and the runs' hyperparameters.
* :func:`run` — executes all runs (:func:`continual.runner.execute`) and returns the tidy table.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import pandas as pd

from continual.loop import Train
from continual.optimizers import HParams
from continual.runner import BatchPlan, Stopped, execute, plan_batches, run_keys
from metrics import results
from tasks.schedule import Schedule


class PartialRun(Exception):
    """Raised when a run stops early (Ctrl-C, an error, out of memory): carries the table of
    what finished (whole run batches, and the log intervals of the batch under way), so the
    caller can save it before re-raising ``cause``. ``progress`` says what finished."""

    def __init__(self, table: pd.DataFrame, progress: str, cause: BaseException):
        super().__init__(f"run stopped after {progress}: {cause!r}")
        self.table, self.progress, self.cause = table, progress, cause


class Experiment(NamedTuple):
    """Everything of one experiment, built once by its kind."""

    config: Any         # the kind's config (a frozen :class:`experiments.config.ConfigBase`)
    tasks: Any          # the task sequence: ``params`` with a leading task axis, shared ``data``
    train: Train
    runs: pd.DataFrame  # one row per run: seed and vmapped hyperparameters
    hparams: HParams    # leaves [R]
    spec: Any           # the loop's static sizes
    # (host logs of one interval, task index) -> progress-bar fields, averaged over runs
    progress: Callable[[dict, int], dict[str, str]]
    # What the program gets as its replicated ``data`` when not the task sequence's own: RL
    # fine-tuning's pre-trained starting points (continual.agents.Agent.start).
    start: Any = None

    @property
    def data(self) -> Any:
        """The compiled program's replicated ``data`` argument."""
        return self.tasks.data if self.start is None else self.start

    @property
    def schedule(self) -> Schedule:
        """The task schedule the config names (:mod:`tasks.schedule`)."""
        return self.config.task_schedule()


class Kind(NamedTuple):
    """A learner kind: one registered entry (:func:`experiments.registry.register`).

    The CLI, validation, compare, results, checkpoints and reports reach a kind only through
    this record. A new kind is one module with its config (a frozen dataclass deriving from
    :class:`experiments.config.ConfigBase`, ``kind`` set to ``name``), its presets and ``build``;
    its agent or learner lives in ``continual/``."""

    name: str           # registry name, also ``config.kind``
    label: str          # how messages name its presets ("supervised", "RL")
    title: str          # heading of its presets in ``plax list`` and ``--help``
    config: type        # the config dataclass
    presets: dict       # name -> (description, field values)
    build: Callable[[Any], Experiment]
    rank_by: tuple[str, ...] = ("acc_avg", "plasticity_slope", "forgetting_max")


def run_table(cfg) -> pd.DataFrame:
    """Runs are the product of hyperparameter lists and seeds (seeds vary fastest)."""
    grid = cfg.hparam_grid()
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    rows = [dict(zip(grid, values), seed=s)
            for values in itertools.product(*grid.values()) for s in seeds]
    table = pd.DataFrame(rows)
    table.index.name = "run"
    return table[["seed", *grid]]


def hparams_of(runs: pd.DataFrame) -> HParams:
    """The runs' hyperparameters as ``[R]`` arrays (a field the run table lacks takes
    :meth:`HParams.defaults`)."""
    return HParams(**{name: jnp.asarray(runs[name].to_numpy(), jnp.float32)
                      if name in runs else jnp.full((len(runs),), value, jnp.float32)
                      for name, value in HParams.defaults()._asdict().items()})


def plan(exp: Experiment, run_batch: int | None = None) -> BatchPlan:
    """How ``exp``'s runs execute at once (:func:`continual.runner.plan_batches`): the
    config's ``run_batch`` runs per device, or with 0 the largest batch that fits. Compiles
    the programs the run then reuses."""
    return plan_batches(exp.train, run_keys(exp.runs["seed"].to_numpy()), exp.hparams,
                        exp.data, exp.tasks.params, exp.schedule, mode=exp.config.mode,
                        run_batch=exp.config.run_batch if run_batch is None else run_batch)


def run(exp: Experiment, *, batches: BatchPlan | None = None, progress: bool = True,
        checkpointer=None, checkpoint_seconds: float = 0.0, snapshots=None):
    """Executes all runs in the batches of ``batches`` (default :func:`plan`); returns
    ``(table, per_run_summary, wall_seconds)`` (planning included when done here).

    In chunked mode a progress bar counts log intervals over all batches. A run that stops
    early raises :class:`PartialRun` carrying the table of what finished."""
    cfg = exp.config
    keys = run_keys(exp.runs["seed"].to_numpy())
    schedule = exp.schedule
    start = time.perf_counter()
    batches = plan(exp) if batches is None else batches
    bar = None
    if progress and (cfg.mode == "chunked" or batches.batches > 1):
        from tqdm.auto import tqdm
        bar = tqdm(total=batches.batches * schedule.length, desc="training", unit="interval")

    def on_interval(done, k, logs):
        if bar is not None:
            t = int(schedule.task[k])
            fields = exp.progress(logs, t)
            if batches.batches > 1:
                fields = {"batch": f"{-(-done // schedule.length)}/{batches.batches}", **fields}
            bar.set_postfix(task=t, **fields)
            bar.update(done - bar.n)

    def table_of(logs, runs):
        logs0, logs = logs
        n = jax.tree.leaves(logs)[0].shape[1]
        shares = schedule.shares(cfg.num_tasks)[:n] if schedule.mixed else None
        return results.to_frame(logs0, logs, runs, cfg.log_every, schedule.task[:n], shares)

    try:
        logs = execute(exp.train, keys, exp.hparams, exp.data, exp.tasks.params,
                       schedule, mode=cfg.mode, plan=batches, checkpointer=checkpointer,
                       checkpoint_seconds=checkpoint_seconds, on_interval=on_interval,
                       snapshots=snapshots)
    except Stopped as stop:
        if stop.finished is None and stop.current is None:
            raise stop.cause from None
        tables = [] if stop.finished is None else [table_of(stop.finished, exp.runs)]
        if stop.current is not None:
            n = jax.tree.leaves(stop.current[0])[0].shape[0]
            current = table_of(stop.current, exp.runs.iloc[stop.runs_done:stop.runs_done + n]
                               .reset_index(drop=True).rename_axis("run"))
            current["run"] += stop.runs_done
            tables.append(current)
        table = results.mark_diverged(pd.concat(tables, ignore_index=True))
        raise PartialRun(table, stop.progress(), stop.cause) from stop.cause
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    table = results.mark_diverged(table_of(logs, exp.runs))
    return table, results.summarize_runs(table), wall


def fingerprint(cfg) -> str:
    """A hash of everything that determines a run's numbers (checkpoint compatibility)."""
    import hashlib
    import json
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str)
                          .encode()).hexdigest()


def _git_commit() -> str:
    """The commit of the code that made a result (``-dirty`` with uncommitted changes)."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolved_config(cfg, preset: str) -> dict:
    """Config plus provenance: package versions, Python, the git commit, the fingerprint."""
    import platform
    from importlib.metadata import version
    packages = ("plax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "pandas", "numpy")
    return {"preset": preset, **cfg.to_dict(),
            "fingerprint": fingerprint(cfg),
            "versions": {"python": platform.python_version(),
                         **{p: version(p) for p in packages}},
            "git_commit": _git_commit(),
            "devices": [str(d) for d in jax.devices()]}


def default_run_dir(preset: str) -> Path:
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
