"""Executes a loop for many runs at once: ``vmap`` over runs, sharded over devices, in sweep or
chunked mode, in batches of runs when they do not all fit in memory at once.

Distribution is a property of the inputs (DESIGN.md, principle 9): the run axis of the keys and
hyperparameters is sharded over a 1-D device mesh named ``runs`` and the compiled program follows
it; the task data is replicated. Runs never communicate, so a sweep too large for the devices'
memory runs as *batches*: ``batch`` runs per device at a time, one batch after another through the
same compiled program (every batch has the same shape; the last is padded with copies of the last
run, dropped from the results, as is the padding that makes the run count divide the devices).
:func:`plan_batches` chooses the batch from the compiled program's own memory analysis.
"""
from __future__ import annotations

import functools
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from continual.loop import Train
from tasks.schedule import Schedule

MODES = ("sweep", "chunked")
# Fraction of a device's free memory a batch may plan to use: XLA's analysis leaves out
# fragmentation and the runtime's own buffers. A CPU "device" is the host's memory, which also
# holds the host copies of the logs, the compiler and Python: a quickstart sweep planned at 0.8
# of it peaked at 95% of the host's memory, hence half.
MEMORY_MARGIN = 0.8
CPU_MEMORY_MARGIN = 0.5


def run_keys(seeds) -> jax.Array:
    """One key per run, derived from the run's seed only (equal seeds give identical runs)."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def run_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (every process's, after ``jax.distributed.initialize``)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("runs",))


def _by_run(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("runs"))


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _pad_runs(tree: Any, size: int) -> Any:
    """``tree``'s run axis padded to ``size`` with copies of the last run."""
    runs = jax.tree.leaves(tree)[0].shape[0]
    if size > runs:
        tree = jax.tree.map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - runs, axis=0)]), tree)
    return tree


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
    or schedule of the same shapes, a resumed run, the next batch of runs) reuses the
    compilation instead of tracing anew.

    Every output is pinned to the run axis's sharding: left to XLA, the interval function
    returned some carry leaves replicated, so its second call saw other input shardings than
    its first (init's carry) and compiled the interval program a second time."""
    return _compiled(train, mode, run_mesh() if mesh is None else mesh)


@functools.lru_cache(maxsize=16)
def _compiled(train: Train, mode: str, mesh: Mesh) -> tuple:
    jit = functools.partial(jax.jit, out_shardings=_by_run(mesh))
    if mode == "sweep":
        return (jit(over_runs(train.run, (0, 0, None, None, None))),)
    return (jit(over_runs(train.init, (0, 0, None, None))),
            jit(over_runs(train.run_interval, (0, None, 0, None, None)), donate_argnums=0))


# --------------------------------------------------------------------------------------------
# Memory: how many runs fit at once.
# --------------------------------------------------------------------------------------------

class OutOfMemory(RuntimeError):
    """A batch of runs did not fit in device memory; the message says what to run instead."""


def format_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512 MiB"``, ``"2e9"`` → bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]i?B?|B)?\s*", text)
    if not m:
        raise ValueError(f"cannot read {text!r} as a memory size (e.g. 8GiB, 512MiB, 2e9)")
    scale = {"": 1, "B": 1}.get(m.group(2) or "", None)
    if scale is None:
        unit = m.group(2)[0]
        scale = (1024 if "i" in m.group(2) else 1000) ** ("KMGT".index(unit) + 1)
    return int(float(m.group(1)) * scale)


def device_memory(mesh: Mesh | None = None) -> int | None:
    """Bytes one device of ``mesh`` can give a run, or ``None`` when unknown.

    ``$PLAX_DEVICE_MEMORY`` (e.g. ``8GiB``: a shared GPU, a test) wins; else the accelerator
    allocator's limit less what is in use; else (CPU devices, which report no memory) the
    host's available memory shared by its CPU devices."""
    if os.environ.get("PLAX_DEVICE_MEMORY"):
        return parse_bytes(os.environ["PLAX_DEVICE_MEMORY"])
    mesh = run_mesh() if mesh is None else mesh
    device = mesh.devices.flat[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    host = _host_available()
    if host is None:
        return None
    local_cpus = sum(d.platform == "cpu" for d in jax.local_devices())
    return host // max(local_cpus, 1)


def _host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class BatchPlan(NamedTuple):
    """How the runs of an experiment execute: in batches of ``batch`` runs per device, one
    after another through one compiled program.

    ``per_run_bytes`` and ``shared_bytes`` are the estimate behind the choice (per device:
    what one more run adds, and the replicated task data); ``None`` when not estimated."""

    runs: int
    devices: int
    batch: int
    how: str = "all"                  # "all" (every run at once), "fits", "estimate", "forced"
    per_run_bytes: float | None = None
    shared_bytes: float | None = None
    device_bytes: int | None = None
    margin: float = MEMORY_MARGIN     # the fraction of device_bytes a batch may use

    @staticmethod
    def all_at_once(runs: int, devices: int = 1) -> "BatchPlan":
        return BatchPlan(runs, devices, -(-runs // devices))

    @property
    def batch_runs(self) -> int:
        """Runs of one batch over all devices."""
        return self.batch * self.devices

    @property
    def batches(self) -> int:
        return -(-self.runs // self.batch_runs)

    def estimate(self) -> str:
        if self.per_run_bytes is None:
            return "memory not estimated"
        return (f"≈ {format_bytes(self.per_run_bytes)} per run + "
                f"{format_bytes(self.shared_bytes)} shared, device "
                f"{format_bytes(self.device_bytes)} free")

    def describe(self) -> str:
        if self.batches == 1:
            choice = f"all {self.runs} runs at once"
        else:
            per = f"{self.batch} run{'s' if self.batch > 1 else ''}"
            per += " per device" if self.devices > 1 else ""
            choice = f"{self.batches} batches of {per}"
        note = {"forced": ", as run_batch says", "estimate": ", the largest that fits"}.get(
            self.how, "")
        return f"{self.estimate()} → {choice}{note}"

    def fitting(self) -> int | None:
        """The most runs per device the estimate says fit, ``None`` without an estimate."""
        if self.per_run_bytes is None or self.device_bytes is None:
            return None
        room = self.margin * self.device_bytes - (self.shared_bytes or 0)
        return int(room // max(self.per_run_bytes, 1.0))


def _abstract(tree: Any, sharding: NamedSharding, runs: int | None = None) -> Any:
    def sds(a):
        shape = a.shape if runs is None else (runs, *a.shape[1:])
        return jax.ShapeDtypeStruct(shape, a.dtype, sharding=sharding)
    return jax.tree.map(sds, tree)


def _nbytes(tree: Any) -> int:
    def size(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.eval_shape(jax.random.key_data, a)
        return math.prod(a.shape) * np.dtype(a.dtype).itemsize
    return sum(size(a) for a in jax.tree.leaves(tree))


def _program_bytes(executable) -> int | None:
    """Peak device bytes of one call of a compiled program (per device), from XLA."""
    stats = executable.memory_analysis()
    if stats is None:
        return None
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _entry(schedule_on_device: Any, k: int) -> Any:
    return jax.tree.map(lambda a: a[k], schedule_on_device)


def _batch_bytes(train: Train, mode: str, mesh: Mesh, batch: int, keys, hparams, data,
                 task_params, schedule: Schedule) -> int | None:
    """Device bytes (per device) of a batch of ``batch`` runs per device: the compiled
    programs' memory analyses (compiling them, which the batch's execution then reuses)."""
    size = batch * mesh.size
    by_run, replicated = _by_run(mesh), _replicated(mesh)
    run_args = _abstract((keys, hparams), by_run, size)
    shared = _abstract((data, task_params), replicated)
    host_schedule = jax.tree.map(np.asarray, schedule)
    if mode == "sweep":
        run, = compiled(train, mode, mesh)
        return _program_bytes(run.lower(*run_args, *shared,
                                        _abstract(host_schedule, replicated)).compile())
    init, interval = compiled(train, mode, mesh)
    init_lowered = init.lower(*run_args, *shared)
    carry, _ = jax.eval_shape(init, *run_args, *shared)
    entry = _abstract(_entry(host_schedule, 0), replicated)
    sizes = [_program_bytes(init_lowered.compile()),
             _program_bytes(interval.lower(_abstract(carry, by_run), entry, run_args[1],
                                           *shared).compile())]
    return None if None in sizes else max(sizes)


def plan_batches(train: Train, keys: jax.Array, hparams: Any, data: Any, task_params: Any,
                 schedule: Schedule, *, mode: str = "chunked", mesh: Mesh | None = None,
                 run_batch: int = 0, device_bytes: int | None = None) -> BatchPlan:
    """How many runs to execute at once: ``run_batch`` runs per device when given, else all
    runs when they fit, else the largest batch that fits, balanced over the batches (so the
    last one is nearly full).

    The estimate comes from XLA's memory analysis of the programs compiled for the first
    candidate (all runs, or ``run_batch``), which execution then reuses: nothing is compiled
    twice unless the runs do not fit. What the analysis holds beyond the replicated task data
    is divided by the runs, an upper bound on what one run adds. ``device_bytes`` defaults to
    :func:`device_memory`; a batch may use :data:`MEMORY_MARGIN` of it
    (:data:`CPU_MEMORY_MARGIN` on CPU devices).

    Raises :class:`OutOfMemory` when not even one run fits."""
    mesh = run_mesh() if mesh is None else mesh
    runs = jax.tree.leaves(keys)[0].shape[0]
    per_device = -(-runs // mesh.size)
    if run_batch < 0:
        raise ValueError(f"run_batch must be >= 0, got {run_batch}")
    batch = min(run_batch, per_device) if run_batch else per_device
    available = device_memory(mesh) if device_bytes is None else device_bytes
    need = _batch_bytes(train, mode, mesh, batch, keys, hparams, data, task_params, schedule)
    if need is None:
        return BatchPlan(runs, mesh.size, batch, "forced" if run_batch else "all")
    shared = _nbytes((data, task_params))
    margin = CPU_MEMORY_MARGIN if mesh.devices.flat[0].platform == "cpu" else MEMORY_MARGIN
    plan = BatchPlan(runs, mesh.size, batch, "forced" if run_batch else "fits",
                     max(need - shared, 0) / batch, shared, available, margin)
    if run_batch or available is None or need <= margin * available:
        return plan
    fit = plan.fitting()
    if fit < 1:
        raise OutOfMemory(
            f"one run does not fit in device memory: it needs {format_bytes(plan.per_run_bytes)}"
            f" on top of {format_bytes(shared)} of task data shared by all runs, and the device "
            f"has {format_bytes(available)} free ({margin:.0%} of it may be planned); "
            "make the run smaller (replay buffer, batch size, network, evaluation examples)")
    batches = -(-per_device // fit)
    return plan._replace(batch=-(-per_device // batches), how="estimate")


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(err)


def _out_of_memory(plan: BatchPlan, err: BaseException) -> OutOfMemory:
    fit = plan.fitting()
    smaller = max(1, min(plan.batch // 2, fit if fit is not None else plan.batch))
    where = f"{plan.batch} runs per device" if plan.devices > 1 else f"{plan.batch} runs"
    advice = (f"run fewer at once: --run-batch {smaller}" if plan.batch > 1 else
              "a single run does not fit: make it smaller (replay buffer, batch size, network)")
    first_line = str(err).strip().splitlines()[0][:200]
    return OutOfMemory(f"out of device memory running {where} at once ({plan.runs} runs in "
                       f"all; {plan.estimate()}); {advice}. XLA said: {first_line}")


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------

class Stopped(Exception):
    """A run stopped early (Ctrl-C, an error, out of memory): the host logs of what finished.

    ``finished`` is ``(logs0, logs)`` of the first ``runs_done`` runs, every interval (``None``
    if no batch finished); ``current`` the ``(logs0, logs)`` of the next batch's runs for its
    first intervals (chunked mode; ``None`` if none). ``cause`` is what stopped it, an XLA
    out-of-memory error turned into :class:`OutOfMemory`."""

    def __init__(self, finished, current, runs_done: int, plan: BatchPlan, intervals: int,
                 cause: BaseException):
        self.finished, self.current, self.runs_done = finished, current, runs_done
        self.plan, self.intervals, self.cause = plan, intervals, cause
        super().__init__(f"stopped after {self.progress()}: {cause!r}")

    def progress(self) -> str:
        """What finished, in words."""
        done = self.runs_done // self.plan.batch_runs
        text = (f"{done} of {self.plan.batches} run batches" if self.plan.batches > 1 else "")
        if self.current is not None:
            k = jax.tree.leaves(self.current[1])[0].shape[1]
            intervals = f"{k} of {self.intervals} log intervals"
            text = f"{text} and {intervals} of the next" if text else intervals
        return text or "nothing"


def execute(train: Train, keys: jax.Array, hparams: Any, data: Any, task_params: Any,
            schedule: Schedule, *, mode: str = "chunked", mesh: Mesh | None = None,
            plan: BatchPlan | None = None, checkpointer: Any = None,
            checkpoint_seconds: float = 0.0,
            on_interval: Callable[[int, int, Any], None] | None = None,
            snapshots: Any = None) -> tuple[Any, Any]:
    """Runs every run through the ``K`` intervals of ``schedule`` and returns host arrays
    ``(logs0, logs)``: leaves of ``logs0`` have shape ``[R, ...]``, of ``logs`` ``[R, K, ...]``.

    * ``sweep``: the whole schedule is one compiled call per batch (fastest; no progress until
      it ends).
    * ``chunked``: a host loop over log intervals calling the same compiled interval function.

    ``plan`` (:func:`plan_batches`; default every run at once) says how many runs execute at
    once. ``on_interval(done, k, logs)`` gets each interval's host logs as they arrive (in
    sweep mode only the last interval of each batch), ``done`` counting the intervals finished
    over all batches (``plan.batches * K`` in all). With a ``checkpointer`` (see
    :mod:`continual.checkpoint`) the state and logs are saved at the end of every batch, and in
    chunked mode at the end of every visit and whenever ``checkpoint_seconds`` have passed; a
    run resumes from its latest checkpoint with identical results. With ``snapshots`` (a second
    checkpointer, keeping all it saves) chunked mode also saves the state at the end of every
    visit, the last interval's included, at the same positions, with empty host logs: the
    pre-trained states a later run fine-tunes from (``plax run --init-from``).

    Raises :class:`Stopped` with the logs of what finished when anything stops the run.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    mesh = run_mesh() if mesh is None else mesh
    runs = jax.tree.leaves(keys)[0].shape[0]
    plan = BatchPlan.all_at_once(runs, mesh.size) if plan is None else plan
    if (plan.runs, plan.devices) != (runs, mesh.size):
        raise ValueError(f"the batch plan is for {plan.runs} runs on {plan.devices} devices, "
                         f"not {runs} on {mesh.size}")
    size, total = plan.batch_runs, schedule.length
    by_run, replicated = _by_run(mesh), _replicated(mesh)
    visit_ends = np.append(schedule.switch[1:], True)
    finished: list = []          # host (logs0, logs) of each finished batch
    logs0, received = None, []   # the current batch's host logs (chunked)
    position = checkpointer.latest_step() if checkpointer is not None else None
    if position is not None:
        checkpointer.check(position)  # its fingerprint says what its positions mean
        if position >= plan.batches * total:
            from continual.checkpoint import CheckpointError
            raise CheckpointError(f"checkpoint position {position} is past the end of this run "
                                  f"({plan.batches} batches × {total} log intervals)")
    start = 0 if position is None else position // total

    def save(done: int, carry: Any) -> None:
        current = None if carry is None else (logs0, received)
        checkpointer.save(done, {} if carry is None else carry,
                          {"finished": finished, "current": current})

    if position is not None and position % total == 0:  # resuming at a batch boundary
        _, _, host = checkpointer.restore(position, {})
        finished = list(host["finished"])
    try:
        keys, hparams = _pad_runs((keys, hparams), plan.batches * size)
        data, task_params = _put((data, task_params), replicated)
        on_device = _put(jax.tree.map(np.asarray, schedule), replicated)
        for b in range(start, plan.batches):
            first = b * size
            n = min(size, runs - first)  # real runs in this batch
            batch_keys, batch_hparams = _put(
                jax.tree.map(lambda a: a[first:first + size], (keys, hparams)), by_run)
            if mode == "sweep":
                run, = compiled(train, mode, mesh)
                logs0, logs = to_host(run(batch_keys, batch_hparams, data, task_params,
                                          on_device), n)
                finished.append((logs0, logs))
                logs0 = None
                if on_interval is not None:
                    on_interval((b + 1) * total, total - 1,
                                jax.tree.map(lambda a: a[:, -1], logs))
                if checkpointer is not None and b + 1 < plan.batches:
                    save((b + 1) * total, None)
                continue

            init, interval = compiled(train, mode, mesh)
            carry, logs0 = init(batch_keys, batch_hparams, data, task_params)
            k_start, received = 0, []
            if b == start and position is not None and position % total:
                _, carry, host = checkpointer.restore(position, carry)
                carry = _put(carry, by_run)
                finished = list(host["finished"])
                logs0, received = host["current"]
                received, k_start = list(received), position % total
            else:
                logs0 = to_host(logs0, n)
            last_save = time.monotonic()
            for k in range(k_start, total):
                carry, logs_k = interval(carry, _entry(on_device, k), batch_hparams, data,
                                         task_params)
                received.append(to_host(logs_k, n))
                if on_interval is not None:
                    on_interval(b * total + k + 1, k, received[-1])
                due = checkpoint_seconds > 0 and time.monotonic() - last_save >= checkpoint_seconds
                if checkpointer is not None and (visit_ends[k] or due) and k + 1 < total:
                    save(b * total + k + 1, carry)
                    last_save = time.monotonic()
                if snapshots is not None and visit_ends[k] and \
                        b * total + k + 1 > (snapshots.latest_step() or 0):
                    snapshots.save(b * total + k + 1, carry, {})
            finished.append((logs0, stack_intervals(received)))
            logs0, received = None, []
            if checkpointer is not None and b + 1 < plan.batches:
                save((b + 1) * total, None)
    except (Exception, KeyboardInterrupt) as err:
        cause = _out_of_memory(plan, err) if _is_out_of_memory(err) else err
        current = (logs0, stack_intervals(received)) if received else None
        raise Stopped(_concat_runs(finished), current, min(len(finished) * size, runs), plan,
                      total, cause) from err
    return _concat_runs(finished)


def _concat_runs(pieces: list) -> Any:
    """Host ``(logs0, logs)`` of consecutive batches as one, along the run axis."""
    if not pieces:
        return None
    if len(pieces) == 1:
        return pieces[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *pieces)


def stack_intervals(received: list) -> Any:
    """Host logs of consecutive intervals (leaves ``[R, ...]``) as leaves ``[R, K, ...]``."""
    return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *received)
