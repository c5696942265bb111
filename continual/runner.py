"""Executes a loop for many runs at once: ``vmap`` over runs, in sweep or chunked mode."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from continual.loop import Train

MODES = ("sweep", "chunked")


def run_keys(seeds) -> jax.Array:
    """One key per run, derived from the run's seed only (equal seeds give identical runs)."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def execute(train: Train, keys: jax.Array, hparams: Any, data: Any, task_params: Any, *,
            num_tasks: int, mode: str = "chunked",
            on_init: Callable[[Any], None] | None = None,
            on_task: Callable[[int, Any], None] | None = None) -> tuple[Any, Any]:
    """Runs every run of the batch and returns host arrays ``(logs0, logs)``.

    Leaves of ``logs0`` have shape ``[R, ...]`` and of ``logs`` ``[R, T, I, ...]``.

    * ``sweep``: the whole sequence is one compiled call (fastest; no progress until it ends).
    * ``chunked``: one compiled call per task, the same executable each time; ``on_init(logs0)``
      and ``on_task(t, logs_t)`` receive host logs as they arrive (progress, partial results).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "sweep":
        run = jax.jit(jax.vmap(train.run, in_axes=(0, 0, None, None)))
        logs0, logs = jax.device_get(run(keys, hparams, data, task_params))
        if on_task is not None:
            on_task(num_tasks - 1, jax.tree.map(lambda a: a[:, -1], logs))
        return logs0, logs

    init = jax.jit(jax.vmap(train.init, in_axes=(0, 0, None, None)))
    run_task = jax.jit(jax.vmap(train.run_task, in_axes=(0, None, 0, None, None)),
                       donate_argnums=0)
    carry, logs0 = init(keys, hparams, data, task_params)
    logs0 = jax.device_get(logs0)
    if on_init is not None:
        on_init(logs0)
    per_task = []
    for t in range(num_tasks):
        carry, logs_t = run_task(carry, jax.device_put(np.int32(t)), hparams, data, task_params)
        logs_t = jax.device_get(logs_t)
        per_task.append(logs_t)
        if on_task is not None:
            on_task(t, logs_t)
    logs = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *per_task)
    return logs0, logs
