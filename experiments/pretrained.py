"""Pre-trained states for fine-tuning: ``plax run ... --init-from RUN_DIR`` reads the snapshot a
run saved at the end of one of its task visits (``plax run --snapshots``; see
:func:`continual.runner.execute`).

A snapshot is an orbax checkpoint of the whole chunked-mode carry of a batch of runs (agent
state, replay, env states). It is restored into the structure of the *pre-training* run's own
program, rebuilt from its ``config.json`` (nothing is compiled: the structure comes from
``jax.eval_shape``), so the shapes are checked against what was saved before any array is read.
What a fine-tuning kind takes from it (networks, stored transitions) is the kind's business.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from experiments.config import ConfigError


class Pretrained(NamedTuple):
    """The state of every pre-trained run at the end of one visit."""

    config: Any          # the pre-training run's config
    runs: pd.DataFrame   # its run table (``seed`` and vmapped hyperparameters)
    state: Any           # its loop carry, leaves with leading axis [R]
    visit: int           # which visit (0-based) of its schedule
    task: int            # the task that visit trained


def visits(cfg) -> list[tuple[int, int]]:
    """``(last log interval, task)`` of every visit of ``cfg``'s schedule, in order."""
    schedule = cfg.task_schedule()
    ends = np.flatnonzero(np.append(schedule.switch[1:], True))
    return [(int(k), int(schedule.task[k])) for k in ends]


def load(run_dir: str | Path, kind, visit: int = -1) -> Pretrained:
    """The state of every run of ``run_dir``, a run of ``kind`` (an
    :class:`experiments.experiment.Kind`: its config and build), at the end of visit ``visit``
    (−1: the last)."""
    from continual.checkpoint import Checkpointer, CheckpointError
    from continual.runner import run_keys
    from experiments import experiment

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.exists():
        raise ConfigError(f"init_from: {run_dir} is not a plax run directory (no config.json)")
    saved = json.loads(config_file.read_text())
    if not saved.get("snapshots") or not (run_dir / "snapshots").exists():
        raise ConfigError(f"init_from: {run_dir} has no snapshots; run its pre-training with "
                          "--snapshots (chunked mode) to save one per task visit")
    if saved.get("kind") != kind.name:
        raise ConfigError(f"init_from: {run_dir} is a {saved.get('kind')} run; this run "
                          f"fine-tunes from a {kind.name} run")
    fields = {f: saved[f] for f in kind.config.fields() if f in saved}
    cfg = kind.config(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in fields.items()}).validate()
    ends = visits(cfg)
    if not -len(ends) <= visit < len(ends):
        listed = ", ".join(f"{i} (task {t})" for i, (_, t) in enumerate(ends))
        raise ConfigError(f"init_visit: {run_dir} has visits {listed}; got {visit}")
    visit = visit % len(ends)
    k, task = ends[visit]
    exp = kind.build(cfg)
    runs = experiment.run_table(cfg)
    total = cfg.task_schedule().length
    batch = saved["run_batches"]["batch"]
    batches = saved["run_batches"]["batches"]
    snapshots = Checkpointer(run_dir / "snapshots", keep=10_000,
                             fingerprint=f"{saved['fingerprint']}/batch{batch}")
    keys = run_keys(np.resize(runs["seed"].to_numpy(), batch))
    hparams = jax.tree.map(lambda a: np.resize(np.asarray(a), batch), exp.hparams)
    abstract = jax.eval_shape(jax.vmap(exp.train.init, in_axes=(0, 0, None, None)),
                              keys, hparams, exp.data, exp.tasks.params)[0]
    pieces = []
    for b in range(batches):
        position = b * total + k + 1
        try:
            _, carry, _ = snapshots.restore(position, abstract)
        except CheckpointError as err:
            raise ConfigError(f"init_from: {err}") from None
        pieces.append(carry)
    state = jax.tree.map(lambda *xs: jnp.concatenate(xs)[:len(runs)], *pieces)
    return Pretrained(cfg, runs, state, visit, task)


def source_runs(pretrained_seeds, seeds) -> np.ndarray:
    """For each fine-tuning run's seed, the pre-trained run it starts from: the run with the
    same seed (paired seeds), or the only one when a single run was pre-trained."""
    pretrained_seeds, seeds = [int(s) for s in pretrained_seeds], [int(s) for s in seeds]
    if len(pretrained_seeds) == 1:
        return np.zeros(len(seeds), np.int64)
    missing = sorted(set(seeds) - set(pretrained_seeds))
    if missing:
        raise ConfigError(f"init_from: the pre-trained runs have seeds {pretrained_seeds}; this "
                          f"run's seeds {missing} have no pre-trained partner (use the same "
                          "--seed/--seeds, or pre-train one run)")
    return np.asarray([pretrained_seeds.index(s) for s in seeds])
