"""Sequence replay (continual.agents.sequence): rows are the loop's transitions, chunks of T
rows per env enter the buffer together every T steps, is_first follows the episodes (and marks a
sampled chunk's start), the final observation stays on its last row, and the buffer's rules
apply per chunk; every task keeps its first chunks as a probe set."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents.base import EnvStep
from continual.agents.sequence import (SequenceSpec, chunk_starts, make_sequence_memory,
                                       task_composition)

E, T, OBS, ACT = 2, 3, 1, 1


def _steps(n: int, last_at: dict[int, set]):
    """Env e's observation at step i is 100·e + i; env e's episode ends after the steps in
    ``last_at[e]`` (terminating where the step is even, else a time limit)."""
    out = []
    for i in range(n):
        obs = jnp.array([[100.0 * e + i] for e in range(E)])
        last = jnp.array([i in last_at.get(e, set()) for e in range(E)])
        discount = jnp.where(last & (i % 2 == 0), 0.0, 1.0)
        out.append(EnvStep(obs, obs / 10, jnp.full(E, float(i)), discount, obs + 0.5, last, ()))
    return out


def _fill(spec, steps):
    memory = make_sequence_memory(spec, E, OBS, ACT)
    store = jax.jit(memory.store)
    mem = memory.init()
    for i, step in enumerate(steps):
        mem = store(mem, step, jax.random.key(i), jnp.int32(i))
    assert store._cache_size() == 1
    return memory, mem


def test_chunks_hold_the_transitions_with_episode_flags_and_their_start():
    memory, mem = _fill(SequenceSpec(T, capacity=8, batch_size=4),
                        _steps(7, {0: {1}, 1: {4}}))
    buf = mem.buffer
    assert int(buf.size) == 4  # steps 0-2 and 3-5, two envs each; step 6 is still staged
    items = jax.tree.map(np.asarray, buf.items)
    # Slot order: (chunk 0, env 0), (chunk 0, env 1), (chunk 1, env 0), (chunk 1, env 1).
    np.testing.assert_array_equal(items.obs[:4, :, 0], [[0, 1, 2], [100, 101, 102],
                                                        [3, 4, 5], [103, 104, 105]])
    np.testing.assert_array_equal(items.next_obs[0, :, 0], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(items.reward[2], [3, 4, 5])
    np.testing.assert_array_equal(items.start[:4], [0, 0, 3, 3])
    # Env 0's episode ends after step 1 (odd: a time limit, so it continues); env 1's after
    # step 4 (even: a termination, cont 0). o_t is a first observation at step 0 and after.
    np.testing.assert_array_equal(items.is_first[0], [True, False, True])
    np.testing.assert_array_equal(items.is_first[3], [False, False, True])
    np.testing.assert_array_equal(items.last[3], [False, True, False])
    np.testing.assert_array_equal(items.cont[3], [1, 0, 1])
    np.testing.assert_array_equal(items.cont[0], [1, 1, 1])
    starts, valid = chunk_starts(mem)
    np.testing.assert_array_equal(np.asarray(valid), [True] * 4 + [False] * 4)
    assert bool(memory.ready(mem))


def test_a_sampled_chunk_starts_fresh_and_fifo_keeps_the_newest_chunks():
    memory, mem = _fill(SequenceSpec(T, capacity=2, batch_size=16, min_chunks=2),
                        _steps(9, {}))
    np.testing.assert_array_equal(np.asarray(mem.buffer.items.start), [6, 6])  # the last fill
    batch = memory.sample(mem, jax.random.key(0))
    assert batch.obs.shape == (16, T, OBS) and batch.start.shape == (16,)
    assert bool(jnp.all(batch.is_first[:, 0])) and not bool(jnp.any(batch.is_first[:, 1:]))
    obs, valid = memory.probe(mem, jax.random.key(1), 5)
    assert obs.shape == (5, OBS) and bool(jnp.all(valid))
    cleared = memory.clear(mem)
    assert int(cleared.buffer.size) == 0 and not bool(memory.ready(cleared))


def test_reservoir_keeps_old_chunks_and_reward_sampling_prefers_rewarding_chunks():
    _, mem = _fill(SequenceSpec(T, capacity=2, batch_size=4, eviction="reservoir"),
                   _steps(30, {}))
    assert int(mem.buffer.count_seen) == 20 and int(mem.buffer.size) == 2
    memory, mem = _fill(SequenceSpec(T, capacity=4, batch_size=2000, sampling="reward"),
                        _steps(6, {}))
    batch = memory.sample(mem, jax.random.key(2))
    # Chunk rewards sum to 0+1+2 = 3 and 3+4+5 = 12: P ∝ exp(score) puts ~all mass on the later.
    assert float(jnp.mean(batch.start == 3)) > 0.99


def test_each_task_keeps_its_first_chunks_as_a_fixed_probe_set_and_composition_counts_tasks():
    steps = _steps(12, {})
    steps = [s._replace(task=jnp.int32(0 if i < 6 else 1)) for i, s in enumerate(steps)]
    memory, mem = _fill(SequenceSpec(T, capacity=3, batch_size=2, num_tasks=3, probe_chunks=3),
                        steps)
    np.testing.assert_array_equal(np.asarray(mem.probe_count), [3, 3, 0])
    probes = jax.tree.map(np.asarray, mem.probes)
    # Task 0's probes are its first chunks (steps 0-2 of both envs, then env 0's steps 3-5),
    # kept although FIFO has evicted them from the buffer.
    np.testing.assert_array_equal(probes.obs[0, :, :, 0], [[0, 1, 2], [100, 101, 102],
                                                           [3, 4, 5]])
    np.testing.assert_array_equal(probes.task[1], [1, 1, 1])
    np.testing.assert_array_equal(probes.obs[1, :, 0, 0], [6, 106, 9])
    # FIFO's 3 slots hold the 3 newest of the 8 chunks: all collected on task 1.
    stored_tasks = np.asarray(mem.buffer.items.task)
    share = np.asarray(task_composition(mem, 3))
    np.testing.assert_allclose(share, np.bincount(stored_tasks, minlength=3) / 3)
    np.testing.assert_allclose(share, [0, 1, 0])


def test_coverage_max_embeds_chunks_and_bad_rules_or_sizes_are_refused():
    memory, mem = _fill(SequenceSpec(T, 2, 2, eviction="coverage_max"), _steps(9, {}))
    assert int(mem.buffer.size) == 2 and mem.buffer.embeddings.shape == (2, OBS)
    np.testing.assert_allclose(np.asarray(mem.buffer.embeddings)[:, 0], 1.0)  # unit norm
    with pytest.raises(ValueError, match="valid: reservoir, fifo, random_replacement"):
        make_sequence_memory(SequenceSpec(T, 4, 2, eviction="lifo"), E, OBS, ACT)
    with pytest.raises(ValueError, match="length >= 2"):
        make_sequence_memory(SequenceSpec(1, 4, 2), E, OBS, ACT)


def test_uint8_storage_reads_back_the_same_float_observations():
    # Integer observations (as a grid view's one-hot cells): exact in uint8.
    steps = [s._replace(next_obs=s.obs + 1) for s in _steps(6, {0: {1}})]
    _, mem8 = _fill(SequenceSpec(T, 4, 4, obs_dtype="uint8"), steps)
    memory, mem32 = _fill(SequenceSpec(T, 4, 4), steps)
    assert mem8.buffer.items.obs.dtype == jnp.uint8
    assert mem8.buffer.items.obs.nbytes * 4 == mem32.buffer.items.obs.nbytes
    a = memory.sample(mem8, jax.random.key(0))
    b = memory.sample(mem32, jax.random.key(0))
    assert a.obs.dtype == jnp.float32
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.next_obs, b.next_obs)
