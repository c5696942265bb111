"""Sequence replay for world-model agents: fixed-length chunks of every env's stream, kept on
device in a :mod:`continual.replay` buffer, so every eviction and sampling rule applies per
chunk (FIFO, reservoir, Continual-Dreamer's random replacement, 50:50 recent/uniform, reward;
Kessler et al. 2023, REFERENCE.md §8 and §11).

A row is one transition of one env, exactly as the loop hands it over (:class:`EnvStep`):
``(o_t, a_t, r_{t+1}, c_{t+1}, o_{t+1})`` with ``is_first_t`` (``o_t`` starts an episode) and
``last_t`` (the episode ends after this step, by termination or time limit; ``c`` is 0 only on
termination). Why transitions rather than DreamerV3's rows of observations: the RL loop resets an
env in the same step in which its episode ends, so a stream of observations would have two rows
after every episode end (the final and the reset observation) and fixed-rate chunks could not
hold it; with transitions every step is one row, every env fills its chunk at the same step, and
the final observation is still there (``next_obs`` of the ``last`` row) for the model to see and
to train the continue head on termination only.

Every ``length`` steps the ``E`` staged chunks (one per env) go into the buffer at once. A
sampled chunk's first row is marked ``is_first`` (a chunk starts from a fresh latent state, as
Continual-Dreamer's windows do). Each chunk keeps the loop's env-step index of its first row
(``start``) and the task it was collected on (``task``: the buffer's task composition,
:func:`task_composition`). ``coverage_max`` eviction embeds a chunk as its mean observation,
L2-normalised (Continual-Dreamer embeds an episode with a random untrained network; a chunk's
mean observation is the parameter-free choice).

Besides the buffer, the memory keeps a fixed **probe set** per task: the first
``probe_chunks`` chunks collected on each task, never evicted, on which a world model's losses
are measured after every log interval (world-model forgetting, a matrix like the return matrix).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from continual import replay
from continual.agents.base import EnvStep, Memory

class Chunk(NamedTuple):
    """Rows of transitions: leaves ``[T, ...]`` (one chunk) or ``[B, T, ...]`` (a batch)."""

    obs: jax.Array       # o_t
    action: jax.Array    # a_t, taken at o_t
    reward: jax.Array    # r_{t+1}
    cont: jax.Array      # c_{t+1}: 0 where the episode terminated at o_{t+1}
    next_obs: jax.Array  # o_{t+1} (the final observation on a last row)
    is_first: jax.Array  # o_t starts an episode (or, in a sampled batch, the chunk)
    last: jax.Array      # the episode ends after this step
    start: jax.Array     # [] / [B]: the loop's env-step index of the chunk's first row
    task: jax.Array      # [] / [B]: the task the chunk was collected on


class SequenceSpec(NamedTuple):
    length: int              # rows per chunk (T)
    capacity: int            # chunks kept
    batch_size: int          # chunks per sampled batch
    eviction: str = "fifo"
    sampling: str = "uniform"
    min_chunks: int = 1      # chunks stored before updates start
    num_tasks: int = 1       # tasks of the sequence (probe sets)
    probe_chunks: int = 0    # chunks kept per task as its fixed probe set
    # Storage dtype of observations (read back as float32): "uint8" stores a one-hot or
    # small-integer observation (a grid view) exactly in a quarter of the memory.
    obs_dtype: str = "float32"


class SequenceState(NamedTuple):
    staging: Chunk           # leaves [E, T, ...]: the chunks being filled
    first: jax.Array         # [E]: the next stored o_t starts an episode
    buffer: replay.ReservoirState
    probes: Chunk            # leaves [tasks, probe_chunks, T, ...]: the first chunks of each task
    probe_count: jax.Array   # [tasks] probe chunks held per task


def make_sequence_memory(spec: SequenceSpec, num_envs: int, observation_size: int,
                         action_size: int) -> Memory:
    """A :class:`Memory` of ``spec.length``-step chunks of ``num_envs`` envs' transitions."""
    if spec.eviction not in replay.EVICTIONS:
        raise ValueError(f"unknown eviction {spec.eviction!r}; valid: "
                         f"{', '.join(replay.EVICTIONS)}")
    if spec.length < 2 or spec.capacity < 1 or spec.batch_size < 1 or spec.min_chunks < 1:
        raise ValueError(f"need length >= 2 and capacity, batch_size, min_chunks >= 1: {spec}")
    if spec.num_tasks < 1 or spec.probe_chunks < 0:
        raise ValueError(f"need num_tasks >= 1 and probe_chunks >= 0: {spec}")
    coverage = spec.eviction == "coverage_max"
    buffer = replay.make_buffer(spec.capacity, spec.eviction, spec.sampling,
                                embed_dim=observation_size if coverage else None)
    t = spec.length
    obs_dtype = jnp.dtype(spec.obs_dtype)
    one = Chunk(jnp.zeros((t, observation_size), obs_dtype), jnp.zeros((t, action_size)),
                jnp.zeros(t), jnp.zeros(t), jnp.zeros((t, observation_size), obs_dtype),
                jnp.zeros(t, bool),
                jnp.zeros(t, bool), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def init() -> SequenceState:
        staging = jax.tree.map(lambda x: jnp.zeros((num_envs,) + x.shape, x.dtype), one)
        probes = jax.tree.map(
            lambda x: jnp.zeros((spec.num_tasks, spec.probe_chunks) + x.shape, x.dtype), one)
        return SequenceState(staging, jnp.ones(num_envs, bool), buffer.init(one), probes,
                             jnp.zeros(spec.num_tasks, jnp.int32))

    def keep_probes(mem: SequenceState, staging: Chunk, task) -> SequenceState:
        """The staged chunks fill the task's probe slots still free (the rest is dropped)."""
        count = mem.probe_count[task]
        slots = count + jnp.arange(num_envs)
        slots = jnp.where(slots < spec.probe_chunks, slots, spec.probe_chunks)  # out: dropped
        probes = jax.tree.map(lambda p, x: p.at[task, slots].set(x, mode="drop"), mem.probes,
                              staging)
        added = jnp.minimum(num_envs, spec.probe_chunks - count)
        return mem._replace(probes=probes, probe_count=mem.probe_count.at[task].add(added))

    def add(mem: SequenceState, staging: Chunk, key, task) -> SequenceState:
        extras = {"scores": jnp.sum(staging.reward, -1)}
        if coverage:
            mean = jnp.mean(staging.obs.astype(jnp.float32), axis=1)
            extras["embeddings"] = mean / jnp.maximum(
                jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-6)
        mem = mem._replace(buffer=buffer.add(mem.buffer, staging, key, **extras))
        return keep_probes(mem, staging, task) if spec.probe_chunks else mem

    def store(mem: SequenceState, step: EnvStep, key, index) -> SequenceState:
        # The row follows from the loop's step index (shared by every run, so the chunk-full
        # branch below is a real branch under vmap, not a select over the whole buffer).
        p = index % t
        row = (step.obs, step.action, step.reward, step.discount, step.next_obs, mem.first,
               step.last)
        staged = mem.staging
        fields = [f.at[:, p].set(r.astype(f.dtype)) for f, r in zip(staged[:7], row)]
        fresh = p == 0
        start = jnp.where(fresh, jnp.full(num_envs, index, jnp.int32), staged.start)
        task = jnp.where(fresh, jnp.full(num_envs, step.task, jnp.int32), staged.task)
        staging = Chunk(*fields, start, task)
        full = p == t - 1
        mem = mem._replace(staging=staging, first=step.last)
        return jax.lax.cond(full, lambda m: add(m, staging, key, task[0]), lambda m: m, mem)

    def sample(mem: SequenceState, key) -> Chunk:
        batch = as_float(buffer.sample(mem.buffer, key, spec.batch_size))
        return batch._replace(is_first=batch.is_first.at[:, 0].set(True))

    def ready(mem: SequenceState) -> jax.Array:
        return mem.buffer.size >= spec.min_chunks

    def clear(mem: SequenceState) -> SequenceState:
        # The staging chunks keep filling (the envs go on); only stored chunks are dropped.
        return mem._replace(buffer=buffer.init(one))

    def probe(mem: SequenceState, key, n: int) -> tuple[jax.Array, jax.Array]:
        k_chunk, k_row = jax.random.split(key)
        chunks = jax.random.randint(k_chunk, (n,), 0, jnp.maximum(mem.buffer.size, 1))
        rows = jax.random.randint(k_row, (n,), 0, t)
        obs = mem.buffer.items.obs[chunks, rows].astype(jnp.float32)
        return obs, mem.buffer.size > 0

    return Memory(init, store, sample, ready, clear, probe)


def as_float(chunk: Chunk) -> Chunk:
    """A stored chunk with its observations as float32 (they may be stored as uint8)."""
    return chunk._replace(obs=chunk.obs.astype(jnp.float32),
                          next_obs=chunk.next_obs.astype(jnp.float32))


def chunk_starts(mem: SequenceState) -> tuple[jax.Array, jax.Array]:
    """The env-step index of every stored chunk's first row and which slots hold one."""
    return mem.buffer.items.start, mem.buffer.stamps >= 0


def task_composition(mem: SequenceState, num_tasks: int) -> jax.Array:
    """``[num_tasks]``: the fraction of stored chunks collected on each task (zeros while
    empty)."""
    held = (mem.buffer.stamps >= 0).astype(jnp.float32)
    counts = jnp.zeros(num_tasks).at[mem.buffer.items.task].add(held)
    return counts / jnp.maximum(jnp.sum(held), 1.0)


__all__ = ["Chunk", "SequenceSpec", "SequenceState", "make_sequence_memory", "as_float",
           "chunk_starts", "task_composition"]
