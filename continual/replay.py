"""Fixed-capacity rehearsal buffers as pure functions over a pytree state (REFERENCE.md §8).

A buffer holds ``capacity`` items of one pytree shape (an example, a transition, a fixed-length
chunk of an episode) in preallocated arrays ``[C, ...]`` plus counters, so it lives inside the
compiled loop and vmaps over runs. **Eviction** (which stored item a new one replaces) and
**sampling** (which stored items a batch is drawn from) are separate rules (REFERENCE §8):

* eviction ``reservoir`` — Vitter's Algorithm R (Vitter 1985, "Random sampling with a
  reservoir", ACM TOMS 11(1)): after t ≥ C items have been offered, each of them is held with
  probability C/t, so the buffer is a uniform sample of the whole history. This is the rehearsal
  buffer of e.g. Chaudhry et al. 2019 ("On tiny episodic memories in continual learning") and the
  rule Continual-Dreamer (Kessler et al. 2023) names; its code does random replacement (below).
* eviction ``fifo`` — a ring buffer: it holds exactly the last C items.
* sampling ``uniform`` — i.i.d. uniform over the stored items (only the first ``size`` slots).

Why not *random replacement* (what skezle/continual-dreamer's "reservoir" code does: always
insert, evicting a uniformly random stored item)? Each insertion then evicts any given item with
probability 1/C, so an item survives k later insertions with probability (1 − 1/C)^k: old data
decays geometrically, and after a long stream nothing of its first half is left (REFERENCE §8:
20,000 items, C = 500: 0.000 from the first half; Algorithm R 0.482, ideal 0.5). Algorithm R keeps
a uniform sample of the stream instead, which is what rehearsal against forgetting needs.

Algorithm R over episodes is uniform over episodes, not steps: store fixed-length chunks for
step uniformity. Counters are int32 (streams up to 2³¹ − 1 items).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Buffer",
    "EVICTIONS",
    "ReservoirState",
    "SAMPLINGS",
    "fifo_add",
    "fifo_init",
    "make_buffer",
    "reservoir_add",
    "reservoir_init",
    "reservoir_sample",
    "sample_uniform",
]

EVICTIONS = ("reservoir", "fifo")
SAMPLINGS = ("uniform",)


class ReservoirState(NamedTuple):
    """A fixed-capacity buffer (used by both eviction rules).

    items: pytree with leaves ``[C, ...]``; slots ``size`` and above hold zeros.
    count_seen: int32, number of items offered so far (n of Algorithm R).
    size: int32, number of filled slots, ``min(count_seen, C)``; filled slots are ``0..size-1``.
    stamps: int32 ``[C]``, the stream index (insertion order) of the item in each slot, −1 for
      empty slots: ages for diagnostics and recency-based samplers.
    """

    items: Any
    count_seen: jax.Array
    size: jax.Array
    stamps: jax.Array


class Buffer(NamedTuple):
    """A buffer as pure functions (DESIGN.md, principle 3).

    init(example_item) -> state; add(state, items_batch, key) -> state;
    sample(state, key, batch_size) -> items batch.
    """

    init: Callable[[Any], ReservoirState]
    add: Callable[[ReservoirState, Any, jax.Array], ReservoirState]
    sample: Callable[[ReservoirState, jax.Array, int], Any]


def reservoir_init(example_item: Any, capacity: int) -> ReservoirState:
    """An empty buffer for items shaped like ``example_item`` (a pytree of arrays, no batch
    axis)."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    items = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_item)
    zero = jnp.zeros((), jnp.int32)
    return ReservoirState(items, zero, zero, jnp.full((capacity,), -1, jnp.int32))


fifo_init = reservoir_init


def _capacity(state: ReservoirState) -> int:
    return state.stamps.shape[0]


def _batch_size(state: ReservoirState, items_batch: Any) -> int:
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None
             for x in jax.tree_util.tree_leaves(items_batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"items_batch leaves need one shared leading batch axis; got leading "
                         f"sizes {sorted(map(str, sizes))}")
    got = jax.tree_util.tree_structure(items_batch)
    want = jax.tree_util.tree_structure(state.items)
    if got != want:
        raise ValueError(f"items_batch has structure {got}, the buffer holds {want}")
    return sizes.pop()


def _write(state: ReservoirState, items_batch: Any, slots: jax.Array, batch: int
           ) -> ReservoirState:
    """Writes item b to ``slots[b]`` (``slots[b] == C``: not written), as if the batch were
    processed in order: when several items target one slot, the last of them wins. The losers are
    sent out of range and dropped, so the scatter has unique indices (XLA leaves the order of
    duplicate scatter indices unspecified)."""
    cap = _capacity(state)
    order = jnp.arange(batch, dtype=jnp.int32)
    last = jnp.full((cap + 1,), -1, jnp.int32).at[slots].max(order)
    slots = jnp.where(last[slots] == order, slots, cap)  # cap = out of range -> dropped
    items = jax.tree_util.tree_map(
        lambda buf, x: buf.at[slots].set(x.astype(buf.dtype), mode="drop"),
        state.items, items_batch)
    stamps = state.stamps.at[slots].set(state.count_seen + order, mode="drop")
    count = state.count_seen + batch
    return ReservoirState(items, count, jnp.minimum(count, cap).astype(jnp.int32), stamps)


def _reservoir_slots(count_seen: jax.Array, batch: int, capacity: int, key: jax.Array
                     ) -> jax.Array:
    """Algorithm R's target slot for each item of a batch (``capacity`` = not stored).

    Item b is the (n_b + 1)-th of the stream, n_b = count_seen + b: if n_b < C it goes to slot
    n_b; else j ~ U{0..n_b} and it goes to slot j if j < C. The draws are independent, exactly as
    in the sequential algorithm.
    """
    n = count_seen + jnp.arange(batch, dtype=jnp.int32)
    j = jax.random.randint(key, (batch,), 0, n + 1, dtype=jnp.int32)
    return jnp.where(n < capacity, n, jnp.where(j < capacity, j, capacity)).astype(jnp.int32)


def reservoir_add(state: ReservoirState, items_batch: Any, key: jax.Array) -> ReservoirState:
    """Offers a batch of items (leaves ``[B, ...]``) in order to Algorithm R (Vitter 1985).

    Exactly the sequential algorithm, vectorised: the B slot draws are independent, and where two
    items of the batch pick the same slot the later one overwrites the earlier (last writer wins).
    """
    batch = _batch_size(state, items_batch)
    slots = _reservoir_slots(state.count_seen, batch, _capacity(state), key)
    return _write(state, items_batch, slots, batch)


def fifo_add(state: ReservoirState, items_batch: Any, key: jax.Array | None = None
             ) -> ReservoirState:
    """Ring buffer: item t of the stream goes to slot t mod C, so the buffer holds exactly the
    last C items (``key`` is unused; it keeps the :class:`Buffer` signature)."""
    del key
    batch = _batch_size(state, items_batch)
    cap = _capacity(state)
    slots = ((state.count_seen + jnp.arange(batch, dtype=jnp.int32)) % cap).astype(jnp.int32)
    return _write(state, items_batch, slots, batch)


def sample_uniform(state: ReservoirState, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` items drawn i.i.d. uniformly (with replacement) from the ``size`` stored
    ones. The buffer must not be empty: under ``jit`` that cannot be checked, and an empty buffer
    returns its zero-filled slot 0."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree_util.tree_map(lambda buf: buf[idx], state.items)


reservoir_sample = sample_uniform


def make_buffer(capacity: int, eviction: str = "reservoir", sampling: str = "uniform") -> Buffer:
    """A :class:`Buffer` from an eviction rule (``reservoir``, ``fifo``) and a sampling rule
    (``uniform``)."""
    if eviction not in EVICTIONS:
        raise ValueError(f"unknown eviction {eviction!r}; valid: {', '.join(EVICTIONS)}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    add = reservoir_add if eviction == "reservoir" else fifo_add
    return Buffer(lambda example: reservoir_init(example, capacity), add, sample_uniform)
