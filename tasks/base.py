"""The task-sequence record shared by every family of tasks.

A task sequence is *data*: ``params`` is a pytree whose leaves have a leading task axis ``[T, ...]``.
Switching task is indexing that axis inside the compiled program, so a whole sequence (or a new
sequence of the same shape) runs under one compilation (DESIGN.md, principle 1).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Batch(NamedTuple):
    """A batch of examples. ``weight`` is 0 for padding rows (fixed-shape evaluation sets)."""

    x: jax.Array          # float32 [B, H, W, C], normalised
    y: jax.Array          # int32 [B]
    class_mask: jax.Array  # bool [C] or per row [B, C]: the task's classes (task-incremental heads)
    weight: jax.Array     # float32 [B]


class TaskSequence(NamedTuple):
    """A continual sequence of tasks as pure functions over device arrays.

    ``params`` (leading task axis) and ``data`` (shared by all tasks) are passed *into* the compiled
    program as arguments; ``sample``, ``eval_batch`` and ``probe_batch`` read one task's slice
    (``jax.tree.map(lambda a: a[t], params)``).
    """

    name: str
    params: Any
    data: Any
    sample: Callable[[Any, Any, jax.Array, int], Batch]  # (data, task, key, batch_size) -> Batch
    # Rehearsal: draw example indices of one task, and build a batch of examples each seen as in
    # its own task: (data, all task params, idx [B], task_ids [B], weight [B]) -> Batch.
    sample_index: Callable[[Any, jax.Array, int], jax.Array]
    examples: Callable[[Any, Any, jax.Array, jax.Array, jax.Array], Batch]
    eval_batch: Callable[[Any, Any], Batch]              # (data, task) -> the task's fixed test set
    probe_batch: Callable[[Any, Any], Batch]             # (data, task) -> fixed training probe batch
    num_tasks: int
    num_classes: int
    input_shape: tuple[int, ...]


def task_slice(params: Any, t) -> Any:
    """The parameters of task ``t`` (a traced index is fine: this is a gather, not a retrace)."""
    return jax.tree.map(lambda a: a[t], params)
