"""Replay buffers (continual.replay): evictions reservoir (Algorithm R), FIFO, random replacement,
coverage_max; samplings uniform, recent_mix, reward."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from continual.replay import (
    EVICTIONS, SAMPLINGS, ReservoirState, _reservoir_slots, coverage_max_add, fifo_add, fifo_init,
    insertion_ranks, make_buffer, random_replacement_add, recent_mix_probs, reservoir_add,
    reservoir_init, reservoir_sample, reward_probs, sample_recent_mix, sample_reward)


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
    with pytest.raises(ValueError, match="unknown eviction 'lifo'; valid: reservoir, fifo, "
                                         "random_replacement, coverage_max$"):
        make_buffer(10, "lifo")
    with pytest.raises(ValueError, match="unknown sampling 'lifo'; valid: uniform, recent_mix, "
                                         "reward$"):
        make_buffer(10, "fifo", "lifo")
    with pytest.raises(ValueError, match="capacity must be a positive int, got 0"):
        reservoir_init(EXAMPLE, 0)
    state = reservoir_init(EXAMPLE, 4)
    with pytest.raises(ValueError, match="one shared leading batch axis"):
        reservoir_add(state, {"t": jnp.zeros(3, jnp.int32), "x": jnp.zeros((2, 2))},
                      jax.random.key(0))
    with pytest.raises(ValueError, match="structure"):
        fifo_add(state, {"t": jnp.zeros(3, jnp.int32)})


# ---------------------------------------------------------------------------------------------
# sampling rules: recent_mix, reward
#
# Compiles dominate this file's runtime on a busy CPU, so each test below compiles once: states
# with known content are built on the host where the sampler, not the add rule, is under test.


def _host_states(cap, sizes, n_stream, rng, scores=None):
    """One buffer per entry of ``sizes``: ``size`` items drawn from a stream of ``n_stream``,
    scattered over slots 0..size−1 in random order (as after reservoir/FIFO wrap-around)."""
    t = np.full((len(sizes), cap), 0, np.int32)
    stamps = np.full((len(sizes), cap), -1, np.int32)
    for i, n in enumerate(sizes):
        stamps[i, :n] = rng.permutation(np.sort(rng.choice(n_stream, n, replace=False)))
        t[i, :n] = stamps[i, :n]
    sc = np.zeros((len(sizes), cap), np.float32) if scores is None else scores
    return ReservoirState(
        {"t": t, "x": np.stack([t, -t], -1).astype(np.float32)},
        np.full(len(sizes), n_stream, np.int32), np.asarray(sizes, np.int32), stamps,
        sc, np.zeros((len(sizes), cap), np.float32), np.zeros((len(sizes), cap, 0), np.float32))


_vsample = {name: jax.jit(jax.vmap(make_buffer(1, "fifo", name).sample, in_axes=(0, 0, None)),
                          static_argnums=2) for name in SAMPLINGS}


def test_recent_mix_matches_half_uniform_half_triangular():
    """Sampled insertion ranks (oldest 0) follow ½·U + ½·triangular(0, n, n) binned:
    P(r) = 1/(2n) + (2r + 1)/(2n²), chi-square per buffer size; full buffers with scattered
    stamps and slot order ≠ insertion order, and a partly filled one (8 of 40)."""
    cap, draws = 40, 2500
    sizes = [40] * 8 + [8] * 8
    state = _host_states(cap, sizes, 300, np.random.default_rng(0))
    keys = jax.random.split(jax.random.key(4), len(sizes))
    t = np.asarray(_vsample["recent_mix"](state, keys, draws)["t"])
    ranks = []
    for row, st, n in zip(t, state.stamps, sizes):
        stored = np.sort(st[st >= 0])
        assert set(row) <= set(stored)
        ranks.append(np.searchsorted(stored, row))
    for n in (40, 8):
        counts = np.bincount(np.concatenate(
            [r for r, m in zip(ranks, sizes) if m == n]), minlength=n)
        assert len(counts) == n
        assert stats.chisquare(counts, recent_mix_probs(n) * counts.sum()).pvalue > 0.001
        # not uniform: the newest half is drawn ≈ ½·½ + ½·¾ = 5/8 of the time
        assert abs(counts[n // 2:].sum() / counts.sum() - 0.625) < 0.02
    # insertion_ranks orders slots by stamp, empty slots last
    order = np.asarray(jax.jit(jax.vmap(insertion_ranks))(state))
    for o, st, n in zip(order, state.stamps, sizes):
        np.testing.assert_array_equal(st[o[:n]], np.sort(st[:n]))
        assert np.all(st[o[n:]] == -1)


def test_reward_sampling_is_softmax_of_stored_returns():
    """P(item) ∝ exp(R − max R), temperature 1; empty slots never drawn; huge returns are
    stable (max subtracted); without scores (all R = 0) it is uniform."""
    cap, seeds, draws = 16, 8, 4000
    returns = 1000.0 + np.linspace(-4.0, 1.0, 10).astype(np.float32)  # 10 of 16 slots filled
    scores = np.zeros((2 * seeds, cap), np.float32)
    scores[:seeds, :10] = returns
    t = np.tile(np.r_[np.arange(10), np.zeros(6)].astype(np.int32), (2 * seeds, 1))
    state = ReservoirState(  # first `seeds` buffers scored, the rest all R = 0
        {"t": t, "x": np.stack([t, -t], -1).astype(np.float32)},
        np.full(2 * seeds, 10, np.int32), np.full(2 * seeds, 10, np.int32),
        np.where(np.arange(cap) < 10, t, -1).astype(np.int32), scores,
        np.zeros((2 * seeds, cap), np.float32), np.zeros((2 * seeds, cap, 0), np.float32))
    want = np.exp(returns.astype(np.float64) - returns.max())
    want /= want.sum()

    @jax.jit
    def go(state, keys):
        return jax.vmap(reward_probs)(state), _vsample["reward"](state, keys, draws)

    probs, out = go(state, jax.random.split(jax.random.key(6), 2 * seeds))
    probs, t = np.asarray(probs), np.asarray(out["t"])
    np.testing.assert_allclose(probs[:seeds, :10], np.tile(want, (seeds, 1)), rtol=1e-5)
    np.testing.assert_allclose(probs[seeds:, :10], 0.1, rtol=1e-5)
    assert np.all(probs[:, 10:] == 0) and set(t.ravel()) <= set(range(10))
    counts = np.bincount(t[:seeds].ravel(), minlength=10)
    assert stats.chisquare(counts, want * counts.sum()).pvalue > 0.001
    assert stats.chisquare(np.bincount(t[seeds:].ravel(), minlength=10)).pvalue > 0.001


# ---------------------------------------------------------------------------------------------
# eviction rules: random_replacement, coverage_max


def test_random_replacement_forgets_old_data_reservoir_does_not():
    """REFERENCE §8: random replacement keeps ≈ none of the stream's first half (survival of k
    later insertions: (1 − 1/C)^k), Algorithm R ≈ 0.5. Same stream and keys, seeds vmapped."""
    cap, n_items, batch, seeds = 50, 2000, 100, 200

    @jax.jit
    @jax.vmap
    def run(key):
        def body(states, i):
            k = jax.random.fold_in(key, i)
            return tuple(add(st, _items(i * batch, batch), k) for add, st in
                         zip((random_replacement_add, reservoir_add), states)), None
        init = reservoir_init(EXAMPLE, cap)
        states, _ = jax.lax.scan(body, (init, init), jnp.arange(n_items // batch))
        return states

    rr, res = run(jax.random.split(jax.random.key(7), seeds))
    for state in (rr, res):
        assert np.all(np.asarray(state.size) == cap)
        kept = np.asarray(state.items["t"])
        np.testing.assert_array_equal(kept, np.asarray(state.stamps))
        assert all(len(set(row)) == cap for row in kept)
    kept_rr, kept_res = np.asarray(rr.items["t"]), np.asarray(res.items["t"])
    share_rr = np.mean(kept_rr < n_items // 2)
    share_res = np.mean(kept_res < n_items // 2)
    assert share_rr < 0.01 and abs(share_res - 0.5) < 4 * np.sqrt(0.25 / kept_res.size)
    assert np.all(kept_rr.max(1) == n_items - 1)  # every item is inserted: the newest is there
    # inclusion frequency of item t: (1 − 1/C)^(N − max(t + 1, C)), checked in blocks of 50
    t = np.arange(n_items)
    p = (1 - 1 / cap) ** (n_items - np.maximum(t + 1, cap))
    freq = np.bincount(kept_rr.ravel(), minlength=n_items) / seeds
    for lo in range(n_items - 300, n_items, 50):
        blk = slice(lo, lo + 50)
        sd = np.sqrt(np.sum(p[blk] * (1 - p[blk])) / seeds) / 50
        assert abs(freq[blk].mean() - p[blk].mean()) < 5 * sd + 1e-3, (lo, freq[blk].mean())


def _coverage_reference(embs, cap):
    """Sequential NumPy coverage_max with every stored item as a neighbour (K ≥ C)."""
    slots, prios, stamps = [None] * cap, np.zeros(cap), -np.ones(cap, int)
    size = 0
    for t, e in enumerate(embs):
        d = [np.linalg.norm(e - slots[i]) for i in range(size)]
        prio = float(np.median(d)) if d else 0.0
        if size < cap:
            slot = size
            size += 1
        else:
            low = int(np.argmin(prios))
            if not prio > prios[low]:
                continue
            slot = low
        slots[slot], prios[slot], stamps[slot] = e, prio, t
    return stamps, prios


def test_coverage_max_matches_sequential_min_heap():
    """Median distance to all stored embeddings at insertion, never recomputed; full: replace
    the lowest priority if the new one is higher, else drop. Batches of 9 = item by item."""
    cap, dim = 8, 3
    rng = np.random.default_rng(0)
    embs = rng.normal(size=(45, dim)).astype(np.float32)
    buf = make_buffer(cap, "coverage_max", embed_dim=dim)
    add = jax.jit(buf.add)
    state = buf.init(EXAMPLE)
    for start in range(0, 45, 9):
        state = add(state, _items(start, 9), jax.random.key(start), None, embs[start:start + 9])
        _check_consistent(state)
    stamps, prios = _coverage_reference(embs, cap)
    np.testing.assert_array_equal(np.asarray(state.stamps), stamps)
    np.testing.assert_allclose(np.asarray(state.priorities), prios, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.embeddings), embs[stamps], rtol=1e-6)
    assert int(state.count_seen) == 45 and int(state.size) == cap
    assert len(set(stamps) - set(range(cap))) > 0  # some items were replaced, some dropped
    assert len(set(stamps)) < 45 - cap


def test_coverage_max_keeps_far_outliers():
    """Three clusters of near-duplicate embeddings plus four far outliers in a 200-item stream,
    C = 20, K = 10 random neighbours: every outlier is retained in every seed (reservoir keeps
    ≈ 20·4/200 of them), and they hold the highest priorities."""
    cap, dim, n_items, batch, seeds = 20, 8, 200, 25, 16
    outliers = np.array([40, 90, 140, 190])

    @jax.jit
    @jax.vmap
    def run(key):
        kc, kn, ko, kl = jax.random.split(key, 4)
        centres = jax.random.normal(kc, (3, dim))
        emb = (centres[jax.random.randint(kl, (n_items,), 0, 3)]
               + 0.01 * jax.random.normal(kn, (n_items, dim)))
        far = jax.random.normal(ko, (len(outliers), dim))
        emb = emb.at[outliers].set(20.0 * far / jnp.linalg.norm(far, axis=1, keepdims=True))

        def body(states, i):
            k = jax.random.fold_in(key, i)
            e = jax.lax.dynamic_slice_in_dim(emb, i * batch, batch)
            items = _items(i * batch, batch)
            return (coverage_max_add(states[0], items, k, None, e, neighbours=10),
                    reservoir_add(states[1], items, k, None, e)), None
        init = reservoir_init(EXAMPLE, cap, dim)
        states, _ = jax.lax.scan(body, (init, init), jnp.arange(n_items // batch))
        return states

    cov, res = run(jax.random.split(jax.random.key(8), seeds))
    kept = np.asarray(cov.items["t"])
    assert np.all(np.asarray(cov.size) == cap) and np.all(np.asarray(cov.count_seen) == n_items)
    for row in kept:
        assert set(outliers) <= set(row)
    assert np.mean(np.isin(np.asarray(res.items["t"]), outliers).sum(1)) < 1.0
    pr = np.asarray(cov.priorities)
    is_out = np.isin(kept, outliers)
    assert pr[is_out].min() > pr[~is_out].max()


def test_every_rule_combination_under_jit_and_vmap():
    """Every eviction rule and sampler through make_buffer (samplers paired cyclically: their
    laws are tested above), one compile, seeds vmapped; a batch that overflows the buffer; scores
    and embeddings move with their items."""
    cap, dim, seeds = 6, 3, 4
    bufs = {e: make_buffer(cap, e, SAMPLINGS[i % len(SAMPLINGS)], embed_dim=dim, neighbours=4)
            for i, e in enumerate(EVICTIONS)}

    @jax.jit
    @jax.vmap
    def run(key):
        emb = jax.random.normal(key, (16, dim))
        out = {}
        for e, buf in bufs.items():
            state = buf.add(buf.init(EXAMPLE), _items(0, 4), key, jnp.arange(4.0), emb[:4])
            k = jax.random.fold_in(key, 1)  # 12 more: overflows inside the batch
            state = buf.add(state, _items(4, 12), k, jnp.arange(4.0, 16.0), emb[4:])
            out[e] = state, {"own": buf.sample(state, jax.random.fold_in(key, 2), 5)}
        return out, emb

    out, emb = run(jax.random.split(jax.random.key(9), seeds))
    emb = np.asarray(emb)
    for e, (state, samples) in out.items():
        stored = np.asarray(state.items["t"])
        assert np.all(np.asarray(state.count_seen) == 16) and np.all(np.asarray(state.size) == 6)
        for name, sample in samples.items():
            t = np.asarray(sample["t"])
            assert t.shape == (seeds, 5)
            assert all(set(a) <= set(b) for a, b in zip(t, stored)), (e, name)
        np.testing.assert_array_equal(np.asarray(state.scores), stored.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(state.embeddings),
                                      np.take_along_axis(emb, stored[..., None], 1))
        if e == "fifo":
            assert all(set(row) == set(range(10, 16)) for row in stored)


def test_new_rule_input_checks_and_old_state_compat():
    with pytest.raises(ValueError, match="coverage_max needs embed_dim"):
        make_buffer(10, "coverage_max")
    state = reservoir_init(EXAMPLE, 4, 2)
    with pytest.raises(ValueError, match="coverage_max needs embeddings"):
        coverage_max_add(state, _items(0, 3), jax.random.key(0))
    with pytest.raises(ValueError, match=r"embeddings must have shape \(3, 2\)"):
        coverage_max_add(state, _items(0, 3), jax.random.key(0), None, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\)"):
        random_replacement_add(state, _items(0, 3), jax.random.key(0), np.zeros(4))

    @jax.jit
    def old_style(key):  # a state built the old way (four fields): old rules and samplers work
        old = ReservoirState(*reservoir_init(EXAMPLE, 4)[:4])
        old = reservoir_add(old, _items(0, 6), key)
        return old, [f(old, key, 20) for f in (reservoir_sample, sample_recent_mix,
                                               sample_reward)]

    old, samples = old_style(jax.random.key(1))
    assert old.scores is None and int(old.size) == 4
    for sample in samples:
        assert set(np.asarray(sample["t"])) <= set(np.asarray(old.items["t"]))
