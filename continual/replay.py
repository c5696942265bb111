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
* eviction ``random_replacement`` — what skezle/continual-dreamer's "reservoir" code does: always
  insert; once full, the new item overwrites a uniformly random stored one. Implemented for
  comparison only: it is **not** a uniform sample of history (see below).
* eviction ``coverage_max`` — after Isele & Cosgun 2018 ("Selective experience replay for lifelong
  learning"), as in Continual-Dreamer: every item comes with an embedding vector (the caller's:
  for RL episodes, e.g. the L2-normalised final state of a random untrained network); at insertion
  its priority is the median Euclidean distance to ≤ K random stored items' embeddings (all of
  them when ≤ K are stored; 0 for the first item), and it is never recomputed. Until full every
  item is stored; then the new item is pushed and the lowest-priority item popped (a min-heap):
  the new item replaces the lowest-priority stored one if its own priority is higher, else it is
  dropped. Items far from what is stored (rare situations) are kept; near-duplicates are not.
* sampling ``uniform`` — i.i.d. uniform over the stored items (only the first ``size`` slots).
* sampling ``recent_mix`` — Continual-Dreamer's: with probability 1/2 an index drawn from the
  triangular(0, n, n) density over the n stored items ranked by insertion order (oldest rank 0;
  P(rank r) = (2r + 1)/n², rising toward the newest), else uniform: P(r) = 1/(2n) + (2r + 1)/(2n²).
* sampling ``reward`` — P(item) ∝ exp(R_item − max R) (softmax, temperature 1) over a per-item
  scalar return R (e.g. an episode's undiscounted return) stored in ``state.scores``; it is set at
  ``add`` time from the optional ``scores`` argument ([B]; 0 where not given).

Every ``add`` takes ``(state, items_batch, key, scores=None, embeddings=None)``: ``scores`` [B]
(stored by every rule, used by ``reward`` sampling) and ``embeddings`` [B, D] (required by
``coverage_max``, stored by every rule when the buffer was made with ``embed_dim=D``).

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

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Buffer",
    "EVICTIONS",
    "ReservoirState",
    "SAMPLINGS",
    "coverage_max_add",
    "fifo_add",
    "fifo_init",
    "insertion_ranks",
    "make_buffer",
    "random_replacement_add",
    "recent_mix_probs",
    "reservoir_add",
    "reservoir_init",
    "reservoir_sample",
    "reward_probs",
    "sample_recent_mix",
    "sample_reward",
    "sample_uniform",
]

EVICTIONS = ("reservoir", "fifo", "random_replacement", "coverage_max")
SAMPLINGS = ("uniform", "recent_mix", "reward")


class ReservoirState(NamedTuple):
    """A fixed-capacity buffer (used by both eviction rules).

    items: pytree with leaves ``[C, ...]``; slots ``size`` and above hold zeros.
    count_seen: int32, number of items offered so far (n of Algorithm R).
    size: int32, number of filled slots, ``min(count_seen, C)``; filled slots are ``0..size-1``.
    stamps: int32 ``[C]``, the stream index (insertion order) of the item in each slot, −1 for
      empty slots: ages for diagnostics and recency-based samplers.
    scores: float32 ``[C]``, each item's scalar return (``reward`` sampling); 0 if not given.
    priorities: float32 ``[C]``, each item's ``coverage_max`` priority, fixed at insertion (0 for
      the other eviction rules).
    embeddings: float32 ``[C, D]``, each item's embedding (``coverage_max``); D = 0 unless the
      buffer was made with ``embed_dim``.

    The last three default to ``None`` so that a state built from the first four still works (its
    ``add`` then stores no scores/priorities/embeddings, and ``reward`` sampling is uniform).
    """

    items: Any
    count_seen: jax.Array
    size: jax.Array
    stamps: jax.Array
    scores: Any = None
    priorities: Any = None
    embeddings: Any = None


class Buffer(NamedTuple):
    """A buffer as pure functions (DESIGN.md, principle 3).

    init(example_item) -> state; add(state, items_batch, key) -> state;
    sample(state, key, batch_size) -> items batch.
    """

    init: Callable[[Any], ReservoirState]
    add: Callable[[ReservoirState, Any, jax.Array], ReservoirState]
    sample: Callable[[ReservoirState, jax.Array, int], Any]


def reservoir_init(example_item: Any, capacity: int, embed_dim: int = 0) -> ReservoirState:
    """An empty buffer for items shaped like ``example_item`` (a pytree of arrays, no batch
    axis), with room for ``embed_dim``-dimensional embeddings (``coverage_max``)."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    if not isinstance(embed_dim, int) or embed_dim < 0:
        raise ValueError(f"embed_dim must be a non-negative int, got {embed_dim!r}")
    items = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_item)
    zero = jnp.zeros((), jnp.int32)
    return ReservoirState(items, zero, zero, jnp.full((capacity,), -1, jnp.int32),
                         jnp.zeros((capacity,), jnp.float32), jnp.zeros((capacity,), jnp.float32),
                         jnp.zeros((capacity, embed_dim), jnp.float32))


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


def _extras(state: ReservoirState, batch: int, scores: Any, embeddings: Any
            ) -> tuple[jax.Array | None, jax.Array | None]:
    """Checks and defaults the optional per-item ``scores`` [B] and ``embeddings`` [B, D]."""
    if scores is not None:
        scores = jnp.asarray(scores, jnp.float32)
        if scores.shape != (batch,):
            raise ValueError(f"scores must have shape ({batch},), got {scores.shape}")
    elif state.scores is not None:
        scores = jnp.zeros((batch,), jnp.float32)
    if embeddings is not None:
        embeddings = jnp.asarray(embeddings, jnp.float32)
        dim = None if state.embeddings is None else state.embeddings.shape[1]
        if embeddings.shape != (batch, dim):
            raise ValueError(f"embeddings must have shape ({batch}, {dim}) (the buffer's "
                             f"embed_dim), got {embeddings.shape}")
    return scores, embeddings


def _scatter(buf: Any, slots: jax.Array, values: Any) -> Any:
    if buf is None or values is None:
        return buf
    return buf.at[slots].set(jnp.asarray(values).astype(buf.dtype), mode="drop")


def _write(state: ReservoirState, items_batch: Any, slots: jax.Array, batch: int,
           scores: Any = None, embeddings: Any = None, priorities: Any = None
           ) -> ReservoirState:
    """Writes item b to ``slots[b]`` (``slots[b] == C``: not written), as if the batch were
    processed in order: when several items target one slot, the last of them wins. The losers are
    sent out of range and dropped, so the scatter has unique indices (XLA leaves the order of
    duplicate scatter indices unspecified). ``scores``/``embeddings``/``priorities`` (per item)
    are written alongside where given; priorities default to 0."""
    cap = _capacity(state)
    order = jnp.arange(batch, dtype=jnp.int32)
    last = jnp.full((cap + 1,), -1, jnp.int32).at[slots].max(order)
    slots = jnp.where(last[slots] == order, slots, cap)  # cap = out of range -> dropped
    items = jax.tree_util.tree_map(
        lambda buf, x: buf.at[slots].set(x.astype(buf.dtype), mode="drop"),
        state.items, items_batch)
    stamps = state.stamps.at[slots].set(state.count_seen + order, mode="drop")
    count = state.count_seen + batch
    if priorities is None and state.priorities is not None:
        priorities = jnp.zeros((batch,), jnp.float32)
    return ReservoirState(items, count, jnp.minimum(count, cap).astype(jnp.int32), stamps,
                          _scatter(state.scores, slots, scores),
                          _scatter(state.priorities, slots, priorities),
                          _scatter(state.embeddings, slots, embeddings))


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


def reservoir_add(state: ReservoirState, items_batch: Any, key: jax.Array,
                  scores: Any = None, embeddings: Any = None) -> ReservoirState:
    """Offers a batch of items (leaves ``[B, ...]``) in order to Algorithm R (Vitter 1985).

    Exactly the sequential algorithm, vectorised: the B slot draws are independent, and where two
    items of the batch pick the same slot the later one overwrites the earlier (last writer wins).
    """
    batch = _batch_size(state, items_batch)
    scores, embeddings = _extras(state, batch, scores, embeddings)
    slots = _reservoir_slots(state.count_seen, batch, _capacity(state), key)
    return _write(state, items_batch, slots, batch, scores, embeddings)


def fifo_add(state: ReservoirState, items_batch: Any, key: jax.Array | None = None,
             scores: Any = None, embeddings: Any = None) -> ReservoirState:
    """Ring buffer: item t of the stream goes to slot t mod C, so the buffer holds exactly the
    last C items (``key`` is unused; it keeps the :class:`Buffer` signature)."""
    del key
    batch = _batch_size(state, items_batch)
    scores, embeddings = _extras(state, batch, scores, embeddings)
    cap = _capacity(state)
    slots = ((state.count_seen + jnp.arange(batch, dtype=jnp.int32)) % cap).astype(jnp.int32)
    return _write(state, items_batch, slots, batch, scores, embeddings)


def random_replacement_add(state: ReservoirState, items_batch: Any, key: jax.Array,
                           scores: Any = None, embeddings: Any = None) -> ReservoirState:
    """Random replacement — the eviction skezle/continual-dreamer's code calls "reservoir":
    every item is inserted; item n of the stream goes to slot n while n < C, else to a uniformly
    random slot of C, evicting what was there. For comparison only: it is NOT a uniform sample of
    history. A stored item survives k later insertions with probability (1 − 1/C)^k, so old data
    decays geometrically (REFERENCE §8: 20,000 items, C = 500: none of the first half is left).

    With unit-size items this is the reference rule (draw i ~ U{0..total−1}, evict stored item i
    if i < loaded, then evict random items until under capacity) exactly: one uniformly random
    stored item is evicted per insertion once full. Batches: independent draws, last writer wins,
    as for :func:`reservoir_add`.
    """
    batch = _batch_size(state, items_batch)
    scores, embeddings = _extras(state, batch, scores, embeddings)
    cap = _capacity(state)
    n = state.count_seen + jnp.arange(batch, dtype=jnp.int32)
    j = jax.random.randint(key, (batch,), 0, cap, dtype=jnp.int32)
    slots = jnp.where(n < cap, n, j).astype(jnp.int32)
    return _write(state, items_batch, slots, batch, scores, embeddings)


def _coverage_priority(state: ReservoirState, embedding: jax.Array, key: jax.Array,
                       neighbours: int) -> jax.Array:
    """Median Euclidean distance from ``embedding`` to ≤ ``neighbours`` stored items' embeddings,
    chosen uniformly without replacement (all stored ones when ``size ≤ neighbours``); 0 for an
    empty buffer."""
    cap = _capacity(state)
    valid = jnp.arange(cap) < state.size
    if neighbours >= cap:  # static: every stored item
        idx, use = jnp.arange(cap), valid
    else:  # the `neighbours` valid slots with the smallest uniform keys
        u = jnp.where(valid, jax.random.uniform(key, (cap,)), 2.0)
        idx = jnp.argsort(u)[:neighbours]
        use = valid[idx]
    d = jnp.sqrt(jnp.sum((state.embeddings[idx] - embedding) ** 2, axis=-1))
    d = jnp.sort(jnp.where(use, d, jnp.inf))
    m = jnp.sum(use)
    lo, hi = (jnp.maximum(m - 1, 0) // 2), (m // 2)
    hi = jnp.minimum(hi, d.shape[0] - 1)
    med = 0.5 * (d[lo] + d[hi])
    return jnp.where(m > 0, med, 0.0).astype(jnp.float32)


def coverage_max_add(state: ReservoirState, items_batch: Any, key: jax.Array,
                     scores: Any = None, embeddings: Any = None, *, neighbours: int = 1000
                     ) -> ReservoirState:
    """Coverage maximisation (after Isele & Cosgun 2018; Continual-Dreamer's ``coverage_max``).

    ``embeddings`` [B, D] (required; D = the buffer's ``embed_dim``) are the caller's: any fixed
    map from an item to a vector whose Euclidean distances mean "how different" (Continual-Dreamer
    uses a random untrained ConvLSTM over the episode, final cell state, L2-normalised). Items are
    processed in order (a ``lax.scan`` over the batch). Each gets the priority
    ``median ‖e − e_j‖`` over ≤ ``neighbours`` random stored items j (0 for the first), fixed for
    good. While not full it is stored in the next slot; once full it replaces the lowest-priority
    stored item if its priority is strictly higher, else it is dropped (push, then pop the
    minimum of a min-heap). ``count_seen`` counts every offered item.
    """
    batch = _batch_size(state, items_batch)
    if embeddings is None:
        raise ValueError("coverage_max needs embeddings [B, D] for the items it is offered")
    if state.embeddings is None or state.priorities is None:
        raise ValueError("coverage_max needs a state made by reservoir_init(..., embed_dim=D)")
    scores, embeddings = _extras(state, batch, scores, embeddings)
    if not isinstance(neighbours, int) or neighbours < 1:
        raise ValueError(f"neighbours must be a positive int, got {neighbours!r}")
    cap = _capacity(state)
    keys = jax.random.split(key, batch)

    def one(st: ReservoirState, x):
        item, score, emb, k = x
        prio = _coverage_priority(st, emb, k, neighbours)
        valid = jnp.arange(cap) < st.size
        low = jnp.argmin(jnp.where(valid, st.priorities, jnp.inf)).astype(jnp.int32)
        full_slot = jnp.where(prio > st.priorities[low], low, cap)
        slot = jnp.where(st.size < cap, st.size, full_slot).astype(jnp.int32)
        one_item = jax.tree_util.tree_map(lambda v: v[None], item)
        st = _write(st, one_item, slot[None], 1, None if score is None else score[None],
                    emb[None], prio[None])
        return st, None

    state, _ = jax.lax.scan(one, state, (items_batch, scores, embeddings, keys))
    return state


def sample_uniform(state: ReservoirState, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` items drawn i.i.d. uniformly (with replacement) from the ``size`` stored
    ones. The buffer must not be empty: under ``jit`` that cannot be checked, and an empty buffer
    returns its zero-filled slot 0."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree_util.tree_map(lambda buf: buf[idx], state.items)


reservoir_sample = sample_uniform


def _take(state: ReservoirState, idx: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda buf: buf[idx], state.items)


def insertion_ranks(state: ReservoirState) -> jax.Array:
    """int32 ``[C]``: the slots ordered by insertion (``stamps``), oldest first, empty slots
    last: slot ``insertion_ranks(state)[r]`` holds the stored item of insertion rank r."""
    key = jnp.where(state.stamps < 0, jnp.iinfo(jnp.int32).max, state.stamps)
    return jnp.argsort(key).astype(jnp.int32)


def recent_mix_probs(n: int) -> Any:
    """The ``recent_mix`` law over insertion ranks 0..n−1 (oldest first), as a NumPy array:
    ½·uniform + ½·triangular(0, n, n) binned, P(r) = 1/(2n) + (2r + 1)/(2n²)."""
    r = np.arange(n)
    return 0.5 / n + 0.5 * (2 * r + 1) / n ** 2


def sample_recent_mix(state: ReservoirState, key: jax.Array, batch_size: int) -> Any:
    """Continual-Dreamer's recency-biased sampler: each draw, with probability 1/2, takes insertion
    rank ``floor(T)``, T ~ triangular(0, n, n) (density 2x/n², rising toward the newest;
    T = n·√U), else a uniform rank; n = ``size``, ranks over the stored items ordered by
    ``stamps`` (oldest 0). P(rank r) = 1/(2n) + (2r + 1)/(2n²). Empty buffer: slot 0."""
    k_mix, k_tri, k_uni = jax.random.split(key, 3)
    n = jnp.maximum(state.size, 1)
    tri = jnp.floor(n * jnp.sqrt(jax.random.uniform(k_tri, (batch_size,)))).astype(jnp.int32)
    tri = jnp.clip(tri, 0, n - 1)
    uni = jax.random.randint(k_uni, (batch_size,), 0, n)
    rank = jnp.where(jax.random.bernoulli(k_mix, 0.5, (batch_size,)), tri, uni)
    return _take(state, insertion_ranks(state)[rank])


def reward_probs(state: ReservoirState) -> jax.Array:
    """float32 ``[C]``: the ``reward`` sampling law, softmax of the stored scores over the filled
    slots, P(i) = exp(R_i − max R) / Σ_j exp(R_j − max R); 0 for empty slots."""
    valid = jnp.arange(_capacity(state)) < state.size
    scores = (jnp.zeros(valid.shape, jnp.float32) if state.scores is None else state.scores)
    top = jnp.max(jnp.where(valid, scores, -jnp.inf))
    w = jnp.where(valid, jnp.exp(jnp.where(valid, scores - top, 0.0)), 0.0)
    return w / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


def sample_reward(state: ReservoirState, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` items i.i.d. with P(item) ∝ exp(R_item − max R) (temperature 1) over the
    stored items' ``scores`` (set by ``add(..., scores=...)``; unscored items have R = 0, so
    without scores this is uniform). Empty buffer: slot 0."""
    valid = jnp.arange(_capacity(state)) < state.size
    valid = valid.at[0].set(True)  # empty buffer -> slot 0, like the other samplers
    scores = (jnp.zeros(valid.shape, jnp.float32) if state.scores is None else state.scores)
    logits = jnp.where(valid, scores - jnp.max(jnp.where(valid, scores, -jnp.inf)), -jnp.inf)
    idx = jax.random.categorical(key, logits, shape=(batch_size,))
    return _take(state, idx)


_EVICT = {"reservoir": reservoir_add, "fifo": fifo_add,
          "random_replacement": random_replacement_add, "coverage_max": coverage_max_add}
_SAMPLE = {"uniform": sample_uniform, "recent_mix": sample_recent_mix, "reward": sample_reward}


def make_buffer(capacity: int, eviction: str = "reservoir", sampling: str = "uniform", *,
                embed_dim: int | None = None, neighbours: int = 1000) -> Buffer:
    """A :class:`Buffer` from an eviction rule (``reservoir``, ``fifo``, ``random_replacement``,
    ``coverage_max``) and a sampling rule (``uniform``, ``recent_mix``, ``reward``).

    ``add(state, items, key, scores=None, embeddings=None)``. ``coverage_max`` needs
    ``embed_dim`` (the length D of the embeddings passed to ``add``) and uses ``neighbours`` (K,
    REFERENCE: 1,000) stored items per priority; other rules store embeddings only if
    ``embed_dim`` is given.
    """
    if eviction not in EVICTIONS:
        raise ValueError(f"unknown eviction {eviction!r}; valid: {', '.join(EVICTIONS)}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    if eviction == "coverage_max" and embed_dim is None:
        raise ValueError("coverage_max needs embed_dim (the length of the embeddings given to "
                         "add)")
    if embed_dim is not None and (not isinstance(embed_dim, int) or embed_dim < 1):
        raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
    if not isinstance(neighbours, int) or neighbours < 1:
        raise ValueError(f"neighbours must be a positive int, got {neighbours!r}")
    add = _EVICT[eviction]
    if eviction == "coverage_max" and neighbours != 1000:
        add = functools.partial(coverage_max_add, neighbours=neighbours)
    dim = embed_dim or 0
    return Buffer(lambda example: reservoir_init(example, capacity, dim), add, _SAMPLE[sampling])
