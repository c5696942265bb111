"""Builds everything once from a :class:`Config` and runs it for all runs at once."""
from __future__ import annotations

import functools
import itertools
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from continual.classifier import make_classifier
from continual.interventions import InterventionSpec, make_intervention, with_intervention_state
from continual.loop import LoopSpec, Train, make_train
from continual.optimizers import HParams
from continual.runner import execute, run_keys
from experiments.config import Config, validate
from metrics import hooks
from metrics import results
from plasticity.networks import make_network
from tasks.base import TaskSequence
from tasks.datasets import load_dataset
from tasks.supervised import make_stream


class PartialRun(Exception):
    """Raised when a chunked run stops early (Ctrl-C, error): carries the table of the tasks that
    finished, so the caller can save it before re-raising ``cause``."""

    def __init__(self, table: pd.DataFrame, tasks_done: int, cause: BaseException):
        super().__init__(f"run stopped after {tasks_done} tasks: {cause!r}")
        self.table, self.tasks_done, self.cause = table, tasks_done, cause


class Experiment(NamedTuple):
    config: Config
    tasks: TaskSequence
    train: Train
    runs: pd.DataFrame  # one row per run: seed and vmapped hyperparameters
    hparams: HParams    # leaves [R]
    spec: LoopSpec


def run_table(cfg: Config) -> pd.DataFrame:
    """Runs are the product of hyperparameter lists and seeds (seeds vary fastest)."""
    grid = cfg.hparam_grid()
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    rows = [dict(zip(grid, values), seed=s)
            for values in itertools.product(*grid.values()) for s in seeds]
    table = pd.DataFrame(rows)
    table.index.name = "run"
    return table[["seed", *grid]]


def layer_order(network, tasks: TaskSequence) -> list[str]:
    """Hidden layers (in forward order) then ``out``, read from the features the network
    returns (shape-only evaluation, nothing computed)."""
    x = jax.ShapeDtypeStruct((1, *tasks.input_shape), jnp.float32)
    params = jax.eval_shape(network.init, jax.random.key(0))
    features = jax.eval_shape(network.apply, params, x)[1]
    return [*features, "out"]


@functools.lru_cache(maxsize=4)
def build(cfg) -> Experiment:
    """Everything of one experiment, built once (an RL config builds an RL experiment).

    Memoised per (frozen, hashable) config: running the same config again in one process (a
    notebook, a test session) reuses the built loop and with it the compiled program
    (:func:`continual.runner.compiled`), instead of tracing and compiling anew."""
    from experiments.rl_config import RLConfig
    if isinstance(cfg, RLConfig):
        from experiments.rl_experiment import build_rl
        return build_rl(cfg)
    validate(cfg)
    dataset = load_dataset(cfg.dataset, cfg.data_dir or None)
    tasks = make_stream(dataset, cfg.family, cfg.num_tasks, classes_per_task=cfg.classes_per_task,
                        eval_examples=cfg.eval_examples, probe_examples=cfg.probe_examples,
                        task_seed=cfg.task_seed,
                        random_label_examples=cfg.random_label_examples)
    network = make_network(cfg.network, tasks.input_shape, tasks.num_classes, hidden=cfg.hidden,
                           channels=cfg.channels, blocks=cfg.blocks, activation=cfg.activation,
                           layer_norm=cfg.layer_norm)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    learner = make_classifier(network, cfg.optimizer, setting=cfg.setting,
                              regularizer=cfg.regularizer)
    stats_update = make_classifier(
        network, cfg.optimizer, setting=cfg.setting, regularizer=cfg.regularizer,
        optimizer_stats=hooks.optimizer_stats).update if diagnostics.optimization else None
    diagnose = hooks.make_diagnose(diagnostics.probes, cfg.activation)
    order = layer_order(network, tasks)
    ispec = InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k, cfg.cbp_maturity,
                             cfg.cbp_replacement_rate)
    intervention = make_intervention(ispec, learner, order)
    learner = with_intervention_state(learner, ispec, order)
    spec = LoopSpec(cfg.steps_per_task, cfg.log_every, cfg.batch_size,
                    replay_capacity=cfg.replay_capacity, replay_fraction=cfg.replay_fraction,
                    intervention_every=1 if cfg.reset == "cbp" else cfg.reset_every)
    train = make_train(spec, learner, tasks, diagnose, intervention, stats_update)
    runs = run_table(cfg)
    hparams = HParams(**{name: jnp.asarray(runs[name].to_numpy(), jnp.float32)
                         for name in HParams._fields})
    return Experiment(cfg, tasks, train, runs, hparams, spec)


def run(exp: Experiment, *, progress: bool = True, checkpointer=None,
        checkpoint_seconds: float = 0.0):
    """Executes all runs; returns ``(table, per_run_summary, wall_seconds)``.

    In chunked mode a progress bar counts log intervals; an interruption raises
    :class:`PartialRun` carrying the table of the tasks completed so far."""
    cfg = exp.config
    keys = run_keys(exp.runs["seed"].to_numpy())
    intervals = exp.spec.intervals_per_task
    bar = None
    if progress and cfg.mode == "chunked":
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.num_tasks * intervals, desc="training", unit="interval")

    received: dict = {"logs0": None, "intervals": []}

    def on_init(logs0):
        received["logs0"] = logs0
        received["intervals"] = []
        if bar is not None:  # a resumed run starts part-way
            bar.reset()

    def on_interval(t, i, logs):
        received["intervals"].append(logs)
        if bar is not None:
            if bar.n == 0 and (t, i) != (0, 0):
                bar.update(t * intervals + i)
            bar.set_postfix(task=t, **_progress(logs, t))
            bar.update(1)

    start = time.perf_counter()
    try:
        logs0, logs = execute(exp.train, keys, exp.hparams, getattr(exp.tasks, "data", ()),
                              exp.tasks.params,
                              num_tasks=cfg.num_tasks, intervals_per_task=intervals,
                              mode=cfg.mode, checkpointer=checkpointer,
                              checkpoint_seconds=checkpoint_seconds,
                              on_init=on_init, on_interval=on_interval)
    except (Exception, KeyboardInterrupt) as err:
        done = len(received["intervals"]) // intervals
        if cfg.mode != "chunked" or received["logs0"] is None or done == 0:
            raise
        logs = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *received["intervals"][:done * intervals])
        logs = jax.tree.map(lambda a: a.reshape(a.shape[0], done, intervals, *a.shape[2:]), logs)
        table = results.mark_diverged(
            results.to_frame(received["logs0"], logs, exp.runs, cfg.log_every))
        raise PartialRun(table, done, err) from err
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    table = results.mark_diverged(results.to_frame(logs0, logs, exp.runs, cfg.log_every))
    return table, results.summarize_runs(table), wall


def _progress(logs, t) -> dict[str, str]:
    """Progress-bar fields of one interval's host logs, averaged over runs."""
    mean = lambda x: f"{np.nanmean(np.asarray(x)):.3f}"  # noqa: E731
    if "eval_acc" in logs:
        return {"loss": mean(logs["train"]["train_loss"]),
                "acc_current": mean(np.asarray(logs["eval_acc"])[:, t])}
    episodes = np.asarray(logs["train"]["episode_return"])
    return {"train_return": mean(episodes) if np.isfinite(episodes).any() else "-",
            "eval_return_current": mean(np.asarray(logs["eval_return"])[:, t])}


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


def resolved_config(cfg: Config, preset: str) -> dict:
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


def config_from_saved(saved: dict) -> tuple[Config, str]:
    """The :class:`Config` and preset of a saved ``config.json`` (for ``--resume``)."""
    from experiments.rl_config import RLConfig, validate_rl
    kind, check = (RLConfig, validate_rl) if "env" in saved else (Config, validate)
    fields = {f: saved[f] for f in kind.__dataclass_fields__ if f in saved}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return check(kind(**fields)), saved.get("preset", "quickstart")


def default_run_dir(preset: str) -> Path:
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
