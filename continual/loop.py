"""The continual training loop: one compiled program per run shape.

Nesting (DESIGN.md, principle 2)::

    vmap(runs) → scan(schedule: log intervals) → scan(steps)

The task schedule (:mod:`tasks.schedule`) is data: each log interval reads its entry (the task,
or a mixture of two, and whether a boundary is announced before it), so every schedule of the
same total length shares one compilation. The same pure pieces serve both execution modes:

* **sweep** — :attr:`Train.run` does the whole schedule in one call;
* **chunked** — a host loop calls :attr:`Train.run_interval` once per log interval (one
  compilation, because the interval's schedule entry is a traced argument).

After every log interval the loop measures accuracy on *every* task (so the visit × eval-task
matrix R is the last interval of each visit, and learning curves come for free) and runs the
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
from tasks.schedule import Schedule

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

    ``entry`` is one interval of a :class:`tasks.schedule.Schedule` (its fields as scalars; see
    :func:`schedule_entry`); ``K`` is the schedule's length.

    * ``init(key, hparams, data, task_params) -> (carry, logs0)``: logs at step 0 (R row 0).
    * ``run_interval(carry, entry, hparams, data, task_params) -> (carry, logs)``: one log
      interval, after the boundary hooks when ``entry`` announces a switch. Chunked mode drives
      it from the host.
    * ``run(key, hparams, data, task_params, schedule) -> (logs0, logs[K])``: the whole schedule.
    """

    init: Callable
    run_interval: Callable
    run: Callable


def schedule_entry(schedule: Schedule, k) -> Schedule:
    """Interval ``k`` of a schedule (``k`` may be traced)."""
    return task_slice(schedule, k)


def scan_schedule(init: Callable, run_interval: Callable) -> Callable:
    """``run``: ``init``, then ``run_interval`` scanned over every entry of the schedule."""
    def run(key, hparams, data, task_params, schedule: Schedule):
        carry, logs0 = init(key, hparams, data, task_params)
        _, logs = jax.lax.scan(
            lambda c, entry: run_interval(c, entry, hparams, data, task_params), carry,
            schedule)
        return logs0, logs
    return run


def current_examples(tasks: TaskSequence, task_params, entry: Schedule, key, n: int):
    """``n`` training-example indices of an interval and the task each is seen in: all from
    ``entry.task`` in a pure interval; in a drift mixture each independently from
    ``entry.other`` with probability ``entry.share`` (so a batch's count of ``other`` examples
    is Binomial(n, share)). A pure interval draws exactly as without a schedule."""
    def pure(k):
        return (tasks.sample_index(task_slice(task_params, entry.task), k, n),
                jnp.full((n,), entry.task, jnp.int32))

    def mixed(k):
        k_a, k_b, k_which = jax.random.split(k, 3)
        from_other = jax.random.uniform(k_which, (n,)) < entry.share
        idx = jnp.where(from_other,
                        tasks.sample_index(task_slice(task_params, entry.other), k_b, n),
                        tasks.sample_index(task_slice(task_params, entry.task), k_a, n))
        return idx, jnp.where(from_other, entry.other, entry.task).astype(jnp.int32)

    return jax.lax.cond(entry.share > 0, mixed, pure, key)


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

    def draw(carry: Carry, entry: Schedule, data, task_params, key):
        """The training batch: examples of the interval's task (:func:`current_examples`)
        plus, with rehearsal, examples drawn from the reservoir (each seen as in its own task);
        the current ones enter the reservoir."""
        if buffer is None:
            def mixed(k):
                idx, ids = current_examples(tasks, task_params, entry, k, spec.batch_size)
                return tasks.examples(data, task_params, idx, ids, jnp.ones(spec.batch_size))

            def pure(k):  # the plain sampler (and its random stream); masks per row as mixed's
                batch = tasks.sample(data, task_slice(task_params, entry.task), k,
                                     spec.batch_size)
                return batch._replace(class_mask=jnp.broadcast_to(
                    batch.class_mask, (spec.batch_size, batch.class_mask.shape[-1])))

            return jax.lax.cond(entry.share > 0, mixed, pure, key), carry.buffer
        k_cur, k_rep, k_add = jax.random.split(key, 3)
        idx, task_ids = current_examples(tasks, task_params, entry, k_cur, n_current)
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

    def at_switch(carry: Carry, entry: Schedule, hparams, data, task_params) -> Carry:
        """At the first interval of a visit: a fresh key split, and, when the schedule announces
        the boundary, the learner's boundary hook (EWC) and boundary interventions on the
        finished task's probe batch. Hidden boundaries run no hook."""
        def switch(c: Carry) -> Carry:
            key, k_boundary, k_int = jax.random.split(c.key, 3)
            probe = tasks.probe_batch(data, task_slice(task_params, entry.previous))

            def apply(state):
                state = learner.boundary(state, probe, k_boundary)
                if intervention is not None and spec.intervention_every == 0:
                    state = intervention(state, probe, hparams, k_int)
                return state

            state = jax.lax.cond(entry.announce, apply, lambda s: s, c.state)
            return c._replace(state=state, key=key)

        return jax.lax.cond(entry.switch, switch, lambda c: c, carry)

    def run_interval(carry: Carry, entry: Schedule, hparams: HParams, data, task_params):
        carry = at_switch(carry, entry, hparams, data, task_params)

        def step(carry: Carry, _, update=learner.update):
            key, batch_key, update_key, int_key = jax.random.split(carry.key, 4)
            batch, items = draw(carry, entry, data, task_params, batch_key)
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
        logs.update(measure(carry.state, entry.task, data, task_params))
        return carry, logs

    return Train(init, run_interval, scan_schedule(init, run_interval))
