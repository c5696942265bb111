"""The continual training loop: one compiled program per run shape.

Nesting (DESIGN.md, principle 2)::

    vmap(runs) → scan(tasks) → scan(log intervals) → scan(steps)

The same pure pieces serve both execution modes:

* **sweep** — :attr:`Train.run` does the whole sequence in one call;
* **chunked** — a host loop calls :attr:`Train.run_task` once per task (one compilation, because
  the task index is a traced argument and every task has the same shapes).

After every log interval the loop measures accuracy on *every* task (so the train-task × eval-task
matrix R is the last interval of each task, and learning curves come for free) and runs the
selected diagnostics on the current task's fixed probe batch. Nothing leaves the device inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual.classifier import Learner, TrainState
from continual.optimizers import HParams
from tasks.base import TaskSequence, task_slice

# (state, probe features) -> {metric: {layer: value}}; see metrics.probes.make_diagnose
Diagnose = Callable[[TrainState, dict], dict]


@dataclass(frozen=True)
class LoopSpec:
    """Static loop sizes: changing any of them recompiles."""

    steps_per_task: int
    log_every: int
    batch_size: int

    def __post_init__(self):
        for name in ("steps_per_task", "log_every", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_task % self.log_every:
            raise ValueError(
                f"steps_per_task={self.steps_per_task} must be a multiple of "
                f"log_every={self.log_every}")

    @property
    def intervals_per_task(self) -> int:
        return self.steps_per_task // self.log_every


class Carry(NamedTuple):
    state: TrainState
    key: jax.Array


class Train(NamedTuple):
    """Pure functions of one run; vmap them over runs (see :mod:`continual.runner`).

    Shapes in the logs: ``I`` intervals per task, ``T`` tasks.

    * ``init(key, hparams, data, task_params) -> (carry, logs0)``: logs at step 0 (R row 0).
    * ``run_task(carry, t, hparams, data, task_params) -> (carry, logs[I])``.
    * ``run(key, hparams, data, task_params) -> (logs0, logs[T, I])``: the whole sequence.
    """

    init: Callable
    run_task: Callable
    run: Callable


def make_train(spec: LoopSpec, learner: Learner, tasks: TaskSequence,
               diagnose: Diagnose | None = None) -> Train:
    """Builds the loop of one run. ``tasks.params`` and ``tasks.data`` are *arguments* of the
    returned functions, so a new sequence of the same shape reuses the compilation."""

    def measure(state: TrainState, t, data, task_params) -> dict:
        def eval_one(task):
            return learner.evaluate(state, tasks.eval_batch(data, task))["acc"]

        logs = {"eval_acc": jax.lax.map(eval_one, task_params)}  # [T]
        if diagnose is not None:
            probe = tasks.probe_batch(data, task_slice(task_params, t))
            logs["diagnostics"] = diagnose(state, learner.features(state.params, probe))
        return logs

    def init(key, hparams: HParams, data, task_params):
        init_key, key = jax.random.split(key)
        state = learner.init(init_key, hparams)
        return Carry(state, key), measure(state, 0, data, task_params)

    def run_task(carry: Carry, t, hparams: HParams, data, task_params):
        task = task_slice(task_params, t)

        def step(carry: Carry, _):
            key, batch_key = jax.random.split(carry.key)
            batch = tasks.sample(data, task, batch_key, spec.batch_size)
            state, info = learner.update(carry.state, batch, hparams)
            return Carry(state, key), info

        def interval(carry: Carry, _):
            carry, infos = jax.lax.scan(step, carry, length=spec.log_every)
            logs = {"train": jax.tree.map(jnp.mean, infos),
                    # Divergence: count non-finite losses; the host reports where they appear.
                    "nonfinite_steps": jnp.sum(~jnp.isfinite(infos["train_loss"]))}
            logs.update(measure(carry.state, t, data, task_params))
            return carry, logs

        return jax.lax.scan(interval, carry, length=spec.intervals_per_task)

    def run(key, hparams: HParams, data, task_params):
        carry, logs0 = init(key, hparams, data, task_params)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]

        def body(carry, t):
            return run_task(carry, t, hparams, data, task_params)

        _, logs = jax.lax.scan(body, carry, jnp.arange(num_tasks))
        return logs0, logs

    return Train(init, run_task, run)
