"""Executes a loop for many runs at once: ``vmap`` over runs, sharded over devices, in sweep or
chunked mode.

Distribution is a property of the inputs (DESIGN.md, principle 9): the run axis of the keys and
hyperparameters is sharded over a 1-D device mesh named ``runs`` and the compiled program follows
it; the task data is replicated. Runs never communicate. A run count that does not divide the
device count is padded with copies of the last run, dropped from the results.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from continual.loop import Train
from tasks.schedule import Schedule

MODES = ("sweep", "chunked")


def run_keys(seeds) -> jax.Array:
    """One key per run, derived from the run's seed only (equal seeds give identical runs)."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def run_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (every process's, after ``jax.distributed.initialize``)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("runs",))


def _pad_runs(tree: Any, multiple: int) -> tuple[Any, int]:
    runs = jax.tree.leaves(tree)[0].shape[0]
    pad = -runs % multiple
    if pad:
        tree = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), tree)
    return tree, runs


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """``device_put`` that also works when the mesh spans several processes: every process
    holds the same full host value and contributes the shards of its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(leaf) if is_key else leaf)
        out = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(leaf)) if is_key else out

    return jax.tree.map(put, tree)


def shard_inputs(mesh: Mesh, keys, hparams, data, task_params):
    """Puts the run axis on the mesh and replicates the shared inputs."""
    (keys, hparams), runs = _pad_runs((keys, hparams), mesh.size)
    by_run = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    keys, hparams = _put((keys, hparams), by_run)
    data, task_params = _put((data, task_params), replicated)
    return keys, hparams, data, task_params, runs


def to_host(tree: Any, runs: int) -> Any:
    """Host numpy copies of the first ``runs`` entries (gathered from all processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(lambda a: np.asarray(a)[:runs], jax.device_get(tree))


def over_runs(fn: Callable, in_axes: tuple) -> Callable:
    """``jax.vmap(fn, in_axes)`` over the leading run axis, except that a single run (known at
    trace time) calls ``fn`` unbatched and adds the axis back. Why: with a batch of one, XLA on
    CPU computed the weight gradients transposed and copied them back every step; the
    unbatched program ran a one-seed ``permuted-mnist`` sweep ~10% faster (same results up to
    float reassociation)."""
    batched = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        run_axes = [a for a, axis in zip(args, in_axes) if axis == 0]
        if {leaf.shape[0] for leaf in jax.tree.leaves(run_axes)} != {1}:
            return batched(*args)
        one = [jax.tree.map(lambda a: a[0], a) if axis == 0 else a
               for a, axis in zip(args, in_axes)]
        return jax.tree.map(lambda a: a[None], fn(*one))

    return call


def compiled(train: Train, mode: str, mesh: Mesh | None = None) -> tuple:
    """The jitted, run-vmapped functions of ``train`` for ``mode`` (see :func:`over_runs`) on
    ``mesh`` (default :func:`run_mesh`), cached so that executing it again (a new task sequence
    or schedule of the same shapes, a resumed run) reuses the compilation instead of tracing
    anew.

    Every output is pinned to the run axis's sharding: left to XLA, the interval function
    returned some carry leaves replicated, so its second call saw other input shardings than
    its first (init's carry) and compiled the interval program a second time."""
    return _compiled(train, mode, run_mesh() if mesh is None else mesh)


@functools.lru_cache(maxsize=16)
def _compiled(train: Train, mode: str, mesh: Mesh) -> tuple:
    jit = functools.partial(jax.jit, out_shardings=NamedSharding(mesh, PartitionSpec("runs")))
    if mode == "sweep":
        return (jit(over_runs(train.run, (0, 0, None, None, None))),)
    return (jit(over_runs(train.init, (0, 0, None, None))),
            jit(over_runs(train.run_interval, (0, None, 0, None, None)), donate_argnums=0))


def execute(train: Train, keys: jax.Array, hparams: Any, data: Any, task_params: Any,
            schedule: Schedule, *, mode: str = "chunked", mesh: Mesh | None = None,
            checkpointer: Any = None, checkpoint_seconds: float = 0.0,
            on_init: Callable[[Any], None] | None = None,
            on_interval: Callable[[int, Any], None] | None = None) -> tuple[Any, Any]:
    """Runs every run of the batch through the ``K`` intervals of ``schedule`` and returns host
    arrays ``(logs0, logs)``.

    Leaves of ``logs0`` have shape ``[R, ...]`` and of ``logs`` ``[R, K, ...]``.

    * ``sweep``: the whole schedule is one compiled call (fastest; no progress until it ends).
    * ``chunked``: a host loop over log intervals calling the same compiled interval function.
      ``on_init(logs0)`` and ``on_interval(k, logs)`` get host logs as they arrive. With a
      ``checkpointer`` (see :mod:`continual.checkpoint`) the state and logs are saved at the end
      of every visit and whenever ``checkpoint_seconds`` have passed, and a run resumes from its
      latest checkpoint with identical results.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    mesh = run_mesh() if mesh is None else mesh
    keys, hparams, data, task_params, runs = shard_inputs(mesh, keys, hparams, data, task_params)
    total = schedule.length
    on_device = _put(jax.tree.map(np.asarray, schedule), NamedSharding(mesh, PartitionSpec()))
    if mode == "sweep":
        run, = compiled(train, mode, mesh)
        logs0, logs = to_host(run(keys, hparams, data, task_params, on_device), runs)
        if on_init is not None:
            on_init(logs0)
        if on_interval is not None:
            on_interval(total - 1, jax.tree.map(lambda a: a[:, -1], logs))
        return logs0, logs

    init, interval = compiled(train, mode, mesh)
    carry, logs0 = init(keys, hparams, data, task_params)
    received: list = []
    position = 0
    if checkpointer is not None and checkpointer.latest_step() is not None:
        position, carry, (logs0, received) = checkpointer.restore(None, carry)
        carry = _put(carry, NamedSharding(mesh, PartitionSpec("runs")))
    else:
        logs0 = to_host(logs0, runs)
    if on_init is not None:
        on_init(logs0)
    last_save = time.monotonic()
    visit_ends = np.append(schedule.switch[1:], True)
    for k in range(position, total):
        carry, logs_k = interval(carry, jax.tree.map(lambda a: a[k], on_device), hparams, data,
                                 task_params)
        logs_k = to_host(logs_k, runs)
        received.append(logs_k)
        if on_interval is not None:
            on_interval(k, logs_k)
        due = checkpoint_seconds > 0 and time.monotonic() - last_save >= checkpoint_seconds
        if checkpointer is not None and (visit_ends[k] or due) and k + 1 < total:
            checkpointer.save(k + 1, carry, (logs0, received))
            last_save = time.monotonic()
    return logs0, stack_intervals(received)


def stack_intervals(received: list) -> Any:
    """Host logs of consecutive intervals (leaves ``[R, ...]``) as leaves ``[R, K, ...]``."""
    return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *received)
