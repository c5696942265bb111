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

from continual import replay
from continual.classifier import Learner, TrainState
from continual.interventions import Intervention
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
    # Rehearsal: a reservoir of past (example, task) pairs; this fraction of every batch is
    # drawn from it (masked out while it is empty). 0 capacity: off.
    replay_capacity: int = 0
    replay_fraction: float = 0.5
    # Interventions: applied every `intervention_every` steps, or between tasks when 0.
    intervention_every: int = 0

    def __post_init__(self):
        for name in ("steps_per_task", "log_every", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.replay_capacity < 0 or not 0 <= self.replay_fraction < 1:
            raise ValueError("replay_capacity must be >= 0 and replay_fraction in [0, 1)")
        if self.steps_per_task % self.log_every:
            raise ValueError(
                f"steps_per_task={self.steps_per_task} must be a multiple of "
                f"log_every={self.log_every}")

    @property
    def intervals_per_task(self) -> int:
        return self.steps_per_task // self.log_every

    @property
    def replay_batch(self) -> int:
        return round(self.batch_size * self.replay_fraction) if self.replay_capacity else 0


class Carry(NamedTuple):
    state: TrainState
    key: jax.Array
    buffer: Any = ()  # replay.ReservoirState of (train index, task) pairs when rehearsal is on
    # Divergence: once an interval produces a non-finite loss or parameter, the run is frozen at
    # its last finite log point (its evaluations stay meaningful) and flagged; others go on.
    diverged: jax.Array = False


class Train(NamedTuple):
    """Pure functions of one run; vmap them over runs (see :mod:`continual.runner`).

    Shapes in the logs: ``I`` intervals per task, ``T`` tasks.

    * ``init(key, hparams, data, task_params) -> (carry, logs0)``: logs at step 0 (R row 0).
    * ``between_tasks(carry, t, hparams, data, task_params) -> carry``: boundary hooks before
      task ``t`` (a no-op for t = 0); ``run_interval(carry, t, ...) -> (carry, logs)``: one log
      interval of task ``t``. Chunked mode drives these two from the host.
    * ``run_task(carry, t, hparams, data, task_params) -> (carry, logs[I])``.
    * ``run(key, hparams, data, task_params) -> (logs0, logs[T, I])``: the whole sequence.
    """

    init: Callable
    run_task: Callable
    run: Callable
    between_tasks: Callable
    run_interval: Callable


def make_train(spec: LoopSpec, learner: Learner, tasks: TaskSequence,
               diagnose: Diagnose | None = None,
               intervention: Intervention | None = None,
               stats_update: Callable | None = None) -> Train:
    """Builds the loop of one run. ``tasks.params`` and ``tasks.data`` are *arguments* of the
    returned functions, so a new sequence of the same shape reuses the compilation.

    ``stats_update``: the learner's update that also returns per-step optimisation statistics
    (``grad_norm``, ``update_ratio``; see ``make_classifier(optimizer_stats=...)``). It runs on
    the **last step of each log interval** only, so the logged values are that step's (a sample
    per interval, not the interval mean: measured, computing them on every step cost ~+20% of a
    matrix-bound step, sampling one step per interval ~nothing). Other steps use
    ``learner.update``."""
    buffer = replay.make_buffer(spec.replay_capacity) if spec.replay_capacity else None
    n_replay = spec.replay_batch
    n_current = spec.batch_size - n_replay

    def measure(state: TrainState, t, data, task_params) -> dict:
        def eval_one(task):
            return learner.evaluate(state, tasks.eval_batch(data, task))["acc"]

        # vmap, not lax.map: one [T·N, D] batch per layer keeps the matmuls large.
        logs = {"eval_acc": jax.vmap(eval_one)(task_params)}  # [T]
        if diagnose is not None:
            probe = tasks.probe_batch(data, task_slice(task_params, t))
            logs["diagnostics"] = diagnose(state, learner.features(state.params, probe))
        return logs

    def init(key, hparams: HParams, data, task_params):
        init_key, key = jax.random.split(key)
        state = learner.init(init_key, hparams)
        items = () if buffer is None else buffer.init(
            (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)))
        return (Carry(state, key, items, jnp.zeros((), bool)),
                measure(state, 0, data, task_params))

    def draw(carry: Carry, t, task, data, task_params, key):
        """The training batch: current-task examples plus, with rehearsal, examples drawn from
        the reservoir (each seen as in its own task); the current ones enter the reservoir."""
        if buffer is None:
            return tasks.sample(data, task, key, spec.batch_size), carry.buffer
        k_cur, k_rep, k_add = jax.random.split(key, 3)
        idx = tasks.sample_index(task, k_cur, n_current)
        task_ids = jnp.full((n_current,), t, jnp.int32)
        old_idx, old_task = buffer.sample(carry.buffer, k_rep, n_replay)
        has_old = (carry.buffer.size > 0).astype(jnp.float32)
        batch = tasks.examples(
            data, task_params, jnp.concatenate([idx, old_idx]),
            jnp.concatenate([task_ids, old_task]),
            jnp.concatenate([jnp.ones(n_current), jnp.full((n_replay,), has_old)]))
        return batch, buffer.add(carry.buffer, (idx, task_ids), k_add)

    def intervene(state, batch, hparams, key):
        return jax.lax.cond(state.step % max(spec.intervention_every, 1) == 0,
                            lambda s: intervention(s, batch, hparams, key), lambda s: s, state)

    def between_tasks(carry: Carry, t, hparams, data, task_params) -> Carry:
        """Before task t > 0: the learner's boundary hook (EWC) and boundary interventions, on
        the finished task's probe batch."""
        key, k_boundary, k_int = jax.random.split(carry.key, 3)
        probe = tasks.probe_batch(data, task_slice(task_params, jnp.maximum(t - 1, 0)))

        def apply(state):
            state = learner.boundary(state, probe, k_boundary)
            if intervention is not None and spec.intervention_every == 0:
                state = intervention(state, probe, hparams, k_int)
            return state

        state = jax.lax.cond(t > 0, apply, lambda s: s, carry.state)
        return carry._replace(state=state, key=key)

    def run_interval(carry: Carry, t, hparams: HParams, data, task_params):
        task = task_slice(task_params, t)

        def step(carry: Carry, _, update=learner.update):
            key, batch_key, update_key, int_key = jax.random.split(carry.key, 4)
            batch, items = draw(carry, t, task, data, task_params, batch_key)
            state, info = update(carry.state, batch, hparams, update_key)
            if intervention is not None and spec.intervention_every > 0:
                state = intervene(state, batch, hparams, int_key)
            return carry._replace(state=state, key=key, buffer=items), info

        start = carry
        if stats_update is None:
            carry, infos = jax.lax.scan(step, carry, length=spec.log_every)
            stats = {}
        else:  # all but the last step plain, the last one with optimisation statistics
            carry, infos = jax.lax.scan(step, carry, length=spec.log_every - 1)
            carry, last = step(carry, None, stats_update)
            infos = {k: jnp.concatenate([infos[k], last[k][None]]) for k in infos}
            stats = {k: v for k, v in last.items() if k not in infos}
        # Divergence is checked once per interval (a per-step guard over the whole state cost
        # ~20% of a matrix-bound step): a run whose loss or parameters became non-finite rolls
        # back to the start of the interval, its last logged finite state, and stays frozen.
        loss_bad = ~jnp.isfinite(infos["train_loss"])
        params_ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(p))
                                       for p in jax.tree.leaves(carry.state.params)]))
        ok = ~jnp.any(loss_bad) & params_ok & ~start.diverged
        carry = jax.lax.cond(ok, lambda: carry, lambda: start._replace(key=carry.key))
        carry = carry._replace(diverged=start.diverged | ~ok)
        logs = {"train": {**jax.tree.map(jnp.mean, infos), **stats},
                # Non-finite steps of this interval: the host reports where and which.
                "nonfinite_steps": jnp.maximum(jnp.sum(loss_bad), (~params_ok).astype(jnp.int32)),
                "nonfinite_loss": jnp.sum(loss_bad),
                "nonfinite_params": (~params_ok).astype(jnp.int32)}
        logs.update(measure(carry.state, t, data, task_params))
        return carry, logs

    def run_task(carry: Carry, t, hparams: HParams, data, task_params):
        carry = between_tasks(carry, t, hparams, data, task_params)
        return jax.lax.scan(lambda c, _: run_interval(c, t, hparams, data, task_params), carry,
                            length=spec.intervals_per_task)

    def run(key, hparams: HParams, data, task_params):
        carry, logs0 = init(key, hparams, data, task_params)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]

        def body(carry, t):
            return run_task(carry, t, hparams, data, task_params)

        _, logs = jax.lax.scan(body, carry, jnp.arange(num_tasks))
        return logs0, logs

    return Train(init, run_task, run, between_tasks, run_interval)
