"""Replay buffers: reservoir (Algorithm R), FIFO, uniform sampling (continual.replay)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from continual.replay import (
    ReservoirState, _reservoir_slots, fifo_add, fifo_init, make_buffer, reservoir_add,
    reservoir_init, reservoir_sample)


def _items(start, n):
    """A batch of pytree items whose content encodes their stream index t."""
    if isinstance(start, int):  # host data: no per-shape device dispatch
        t = np.arange(start, start + n, dtype=np.int32)
        return {"t": t, "x": np.stack([t, -t], 1).astype(np.float32)}
    t = start + jnp.arange(n, dtype=jnp.int32)
    return {"t": t, "x": jnp.stack([t, -t], 1).astype(jnp.float32)}


EXAMPLE = {"t": jnp.zeros((), jnp.int32), "x": jnp.zeros((2,), jnp.float32)}
_add = {"reservoir": jax.jit(reservoir_add), "fifo": jax.jit(fifo_add)}  # shared compiles
_sample = jax.jit(reservoir_sample, static_argnums=2)


def _check_consistent(state: ReservoirState):
    size = int(state.size)
    t = np.asarray(state.items["t"])
    np.testing.assert_array_equal(np.asarray(state.items["x"])[:size],
                                  np.stack([t[:size], -t[:size]], 1))
    np.testing.assert_array_equal(np.asarray(state.stamps)[:size], t[:size])
    assert np.all(np.asarray(state.stamps)[size:] == -1)
    assert len(set(t[:size])) == size  # no item stored twice


def test_reservoir_holds_everything_until_full():
    cap = 50
    state = reservoir_init(EXAMPLE, cap)
    add = _add["reservoir"]
    key = jax.random.key(0)
    for start in range(0, 49, 7):  # 49 items in batches of 7: not yet full
        state = add(state, _items(start, 7), jax.random.fold_in(key, start))
        _check_consistent(state)
        n = start + 7
        assert int(state.size) == int(state.count_seen) == n
        np.testing.assert_array_equal(np.asarray(state.items["t"])[:n], np.arange(n))
    state = add(state, _items(49, 7), jax.random.fold_in(key, 49))  # 56 offered: full
    _check_consistent(state)
    assert int(state.size) == cap and int(state.count_seen) == 56
    t = np.asarray(state.items["t"])  # slot s keeps item s unless a later item replaced it
    assert np.all((t == np.arange(cap)) | ((t >= cap) & (t < 56)))


def test_reservoir_add_is_sequential_algorithm_r():
    """The vectorised write equals Algorithm R processing the batch item by item, collisions
    inside the batch included (later items overwrite earlier ones)."""
    cap, batch = 5, 64
    state = reservoir_init(EXAMPLE, cap)
    add = _add["reservoir"]
    state = add(state, _items(0, 3), jax.random.key(1))
    key = jax.random.key(2)
    slots = np.asarray(jax.jit(_reservoir_slots, static_argnums=(1, 2))(
        state.count_seen, batch, cap, key))
    new = add(state, _items(3, batch), key)
    buf = list(np.asarray(state.items["t"]))
    for b, slot in enumerate(slots):
        n = 3 + b
        assert (slot == n) if n < cap else (0 <= slot <= cap)
        if slot < cap:
            buf[slot] = n
    np.testing.assert_array_equal(np.asarray(new.items["t"]), buf)
    _check_consistent(new)
    assert len(set(slots[slots < cap])) < np.sum(slots < cap)  # there were collisions


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    """After N ≫ C inserts, kept items are uniform over the stream: KS test on their insertion
    ages, first-half share ≈ 0.5, per-item inclusion frequency ≈ C/N (Vitter 1985)."""
    cap, n_items, batch, seeds = 50, 2000, 100, 400

    @jax.jit
    @jax.vmap
    def run(key):
        def body(state, i):
            return reservoir_add(state, _items(i * batch, batch),
                                 jax.random.fold_in(key, i)), None
        state, _ = jax.lax.scan(body, reservoir_init(EXAMPLE, cap),
                                jnp.arange(n_items // batch))
        return state

    state = run(jax.random.split(jax.random.key(0), seeds))
    assert np.all(np.asarray(state.size) == cap)
    assert np.all(np.asarray(state.count_seen) == n_items)
    kept = np.asarray(state.items["t"])                          # [seeds, C]
    np.testing.assert_array_equal(kept, np.asarray(state.stamps))
    assert all(len(set(row)) == cap for row in kept)
    ages = kept.ravel()
    # KS against U(0, 1) on (t + 0.5)/N (discretisation error 0.5/N ≪ the KS critical value)
    assert stats.kstest((ages + 0.5) / n_items, "uniform").pvalue > 0.01
    # first-half share within a 4σ binomial interval
    m = ages.size
    assert abs(np.mean(ages < n_items // 2) - 0.5) < 4 * np.sqrt(0.25 / m)
    # per-item inclusion frequency over seeds ≈ C/N, in blocks of 200 items (incl. the first C)
    p = cap / n_items
    freq = np.bincount(ages, minlength=n_items) / seeds
    sd_block = np.sqrt(p * (1 - p) / (seeds * 200))
    blocks = freq.reshape(-1, 200).mean(1)
    assert np.all(np.abs(blocks - p) < 5 * sd_block), blocks
    assert abs(freq[:cap].mean() - p) < 5 * np.sqrt(p * (1 - p) / (seeds * cap))
    assert freq.max() < 0.1  # no item (e.g. an early one) is kept much more often than C/N


def test_fifo_holds_exactly_the_last_c_items():
    cap = 10
    state = fifo_init(EXAMPLE, cap)
    seen = 0
    for n in (3, 12, 5, 17, 1):  # 12 and 17 exceed the capacity: later items win
        state = _add["fifo"](state, _items(seen, n))
        seen += n
        _check_consistent(state)
        last = np.arange(max(0, seen - cap), seen)
        t = np.asarray(state.items["t"])[:int(state.size)]
        assert int(state.size) == len(last) and int(state.count_seen) == seen
        assert set(t) == set(last)
        np.testing.assert_array_equal(np.asarray(state.items["t"])[last % cap], last)


@pytest.mark.parametrize("eviction", ["reservoir", "fifo"])
def test_sample_returns_only_stored_items_uniformly(eviction):
    cap = 50
    buf = make_buffer(cap, eviction)
    state = buf.init(EXAMPLE)
    stored = _items(100, 7)  # 7 of 50 slots filled; the rest are zeros, never sampled
    assert buf.add is (reservoir_add if eviction == "reservoir" else fifo_add)
    state = _add[eviction](state, stored, jax.random.key(0))
    sample = _sample(state, jax.random.key(1), 700)
    t = np.asarray(sample["t"])
    np.testing.assert_array_equal(np.asarray(sample["x"]), np.stack([t, -t], 1))
    assert set(t) == set(range(100, 107))
    assert stats.chisquare(np.bincount(t - 100)).pvalue > 0.001
    # full buffer: samples come from what is stored now
    for i in range(1, 30):  # 7 + 29·7 = 210 items offered: full
        state = _add[eviction](state, _items(100 + 7 * i, 7), jax.random.key(i))
    t = np.asarray(_sample(state, jax.random.key(3), 700)["t"])
    assert set(t) <= set(np.asarray(state.items["t"]))


def test_bad_input_messages():
    with pytest.raises(ValueError, match="unknown eviction 'lifo'; valid: reservoir, fifo"):
        make_buffer(10, "lifo")
    with pytest.raises(ValueError, match="unknown sampling 'reward'; valid: uniform"):
        make_buffer(10, "fifo", "reward")
    with pytest.raises(ValueError, match="capacity must be a positive int, got 0"):
        reservoir_init(EXAMPLE, 0)
    state = reservoir_init(EXAMPLE, 4)
    with pytest.raises(ValueError, match="one shared leading batch axis"):
        reservoir_add(state, {"t": jnp.zeros(3, jnp.int32), "x": jnp.zeros((2, 2))},
                      jax.random.key(0))
    with pytest.raises(ValueError, match="structure"):
        fifo_add(state, {"t": jnp.zeros(3, jnp.int32)})
