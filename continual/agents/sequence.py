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
(``start``), from which the host maps chunks to tasks (the buffer's task composition).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from continual import replay
from continual.agents.base import EnvStep, Memory

SEQUENCE_EVICTIONS = tuple(e for e in replay.EVICTIONS if e != "coverage_max")


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


class SequenceSpec(NamedTuple):
    length: int              # rows per chunk (T)
    capacity: int            # chunks kept
    batch_size: int          # chunks per sampled batch
    eviction: str = "fifo"
    sampling: str = "uniform"
    min_chunks: int = 1      # chunks stored before updates start


class SequenceState(NamedTuple):
    staging: Chunk           # leaves [E, T, ...]: the chunks being filled
    position: jax.Array      # next row of the staging chunks
    first: jax.Array         # [E]: the next stored o_t starts an episode
    buffer: replay.ReservoirState


def make_sequence_memory(spec: SequenceSpec, num_envs: int, observation_size: int,
                         action_size: int) -> Memory:
    """A :class:`Memory` of ``spec.length``-step chunks of ``num_envs`` envs' transitions."""
    if spec.eviction not in SEQUENCE_EVICTIONS:
        raise ValueError(f"unknown or unsupported eviction {spec.eviction!r} for sequence "
                         f"replay; valid: {', '.join(SEQUENCE_EVICTIONS)} (coverage_max needs a "
                         "chunk embedding, not built yet)")
    if spec.length < 2 or spec.capacity < 1 or spec.batch_size < 1 or spec.min_chunks < 1:
        raise ValueError(f"need length >= 2 and capacity, batch_size, min_chunks >= 1: {spec}")
    buffer = replay.make_buffer(spec.capacity, spec.eviction, spec.sampling)
    t = spec.length
    one = Chunk(jnp.zeros((t, observation_size)), jnp.zeros((t, action_size)), jnp.zeros(t),
                jnp.zeros(t), jnp.zeros((t, observation_size)), jnp.zeros(t, bool),
                jnp.zeros(t, bool), jnp.zeros((), jnp.int32))

    def init() -> SequenceState:
        staging = jax.tree.map(lambda x: jnp.zeros((num_envs,) + x.shape, x.dtype), one)
        return SequenceState(staging, jnp.zeros((), jnp.int32), jnp.ones(num_envs, bool),
                             buffer.init(one))

    def store(mem: SequenceState, step: EnvStep, key, index) -> SequenceState:
        p = mem.position
        row = (step.obs, step.action, step.reward, step.discount, step.next_obs, mem.first,
               step.last)
        staged = mem.staging
        fields = [f.at[:, p].set(r.astype(f.dtype)) for f, r in zip(staged[:7], row)]
        start = jnp.where(p == 0, jnp.full(num_envs, index, jnp.int32), staged.start)
        staging = Chunk(*fields, start)
        full = p == t - 1
        buf = jax.lax.cond(full, lambda b: buffer.add(b, staging, key,
                                                      scores=jnp.sum(staging.reward, -1)),
                           lambda b: b, mem.buffer)
        return SequenceState(staging, jnp.where(full, 0, p + 1), step.last, buf)

    def sample(mem: SequenceState, key) -> Chunk:
        batch = buffer.sample(mem.buffer, key, spec.batch_size)
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
        obs = mem.buffer.items.obs[chunks, rows]
        return obs, jnp.broadcast_to(mem.buffer.size > 0, (n,))

    return Memory(init, store, sample, ready, clear, probe)


def chunk_starts(mem: SequenceState) -> tuple[jax.Array, jax.Array]:
    """The env-step index of every stored chunk's first row and which slots hold one: the
    host maps them to tasks through the schedule (the buffer's task composition)."""
    return mem.buffer.items.start, mem.buffer.stamps >= 0


__all__ = ["Chunk", "SequenceSpec", "SequenceState", "make_sequence_memory", "chunk_starts",
           "SEQUENCE_EVICTIONS"]
