"""continual.loop and continual.runner: compile once, stay on device, seeds, learning, R.

Compiling the loop dominates the cost of these tests (seconds per program on a small CPU), so one
experiment and one jitted sweep function are shared by the whole module, and new inputs of the
same shape are fed to that one executable wherever a test allows it.
"""
from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.loop import LoopSpec
from continual.runner import execute, over_runs, run_keys
from experiments.kinds.classifier import ClassifierConfig as Config
from experiments.registry import build
from metrics.results import r_matrix, to_frame
from tasks.schedule import parse

# lr 1e-2 learns a synthetic task to ~100% within 20 steps of batch 16.
CFG = Config(dataset="synthetic", family="permuted", num_tasks=3, hidden=(16,),
             steps_per_task=20, log_every=10, batch_size=16, seeds=3, eval_examples=64,
             probe_examples=32, learning_rate=(1e-2,))
SEEDS = [0, 1, 2]
T, I = CFG.num_tasks, CFG.steps_per_task // CFG.log_every
SCHEDULE = parse("sequential", T, I)
SCHED = jax.tree.map(jnp.asarray, SCHEDULE)


def _vmapped_run(train):
    """The program ``execute(mode="sweep")`` runs (a batch of one run calls ``run`` unbatched)."""
    return jax.jit(over_runs(train.run, (0, 0, None, None, None)))


def _by_task(a):
    """Interval logs ``[R, K, ...]`` of the sequential schedule as ``[R, T, I, ...]``."""
    a = np.asarray(a)
    return a.reshape(a.shape[0], T, I, *a.shape[2:])


@pytest.fixture(scope="module")
def exp():
    return build(CFG)


@pytest.fixture(scope="module")
def sweep(exp):
    """The sweep-mode program, compiled once for 3 runs."""
    return _vmapped_run(exp.train)


@pytest.fixture(scope="module")
def sweep_logs(exp, sweep):
    keys = run_keys(SEEDS)
    return jax.device_get(sweep(keys, exp.hparams, exp.tasks.data, exp.tasks.params, SCHED))


def _leaves(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(_leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _run_slice(tree, i):
    return jax.tree.map(lambda a: np.asarray(a)[i], tree)


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------


def test_sweep_logs_have_run_interval_layout(sweep_logs):
    logs0, logs = sweep_logs
    assert logs0["eval_acc"].shape == (3, T)
    assert logs["eval_acc"].shape == (3, T * I, T)
    assert logs["nonfinite_steps"].shape == (3, T * I)
    assert set(logs["train"]) == {"train_loss", "train_acc"}
    assert logs["train"]["train_loss"].shape == (3, T * I)
    assert (logs["nonfinite_steps"] == 0).all()


# --------------------------------------------------------------------------------------------
# one compilation
# --------------------------------------------------------------------------------------------


def test_new_task_sequence_of_same_shape_does_not_retrace(exp, sweep, sweep_logs):
    other = build(dataclasses.replace(CFG, task_seed=1))
    # Every input is built before the no-tracing context: eager jax.random would count as tracing.
    assert not np.array_equal(other.tasks.params.perm, exp.tasks.params.perm)
    keys = run_keys(SEEDS)
    data, params = jax.device_put((other.tasks.data, other.tasks.params))
    size_before = sweep._cache_size()
    with jax.no_tracing(True):
        out = sweep(keys, exp.hparams, data, params, SCHED)
        jax.block_until_ready(out)
    assert sweep._cache_size() == size_before == 1
    logs0, logs = jax.device_get(out)
    # The new sequence was really used: task 1's evaluation differs from the first sequence's.
    assert not np.array_equal(logs["eval_acc"], sweep_logs[1]["eval_acc"])
    # Task 0 is the identity in both sequences, so the first task's training is the same.
    np.testing.assert_array_equal(logs["train"]["train_loss"][:, :I],
                                  sweep_logs[1]["train"]["train_loss"][:, :I])


def test_a_new_schedule_of_the_same_length_does_not_retrace(exp, sweep, sweep_logs):
    keys = run_keys(SEEDS)
    schedules = [jax.device_put(jax.tree.map(jnp.asarray, parse(text, T, I))) for text in
                 ("order:2,1,0", "drift:window=2", "durations:1,1,4")]
    with jax.no_tracing(True):
        outs = [jax.device_get(sweep(keys, exp.hparams, exp.tasks.data, exp.tasks.params, s))
                for s in schedules]
    assert sweep._cache_size() == 1
    # order:2,1,0 trains task 2 first: its accuracy after the first visit is the first
    # task's learning, far above the sequential schedule's accuracy on task 2 then.
    first_visit_acc = outs[0][1]["eval_acc"][:, I - 1]
    seq_acc = sweep_logs[1]["eval_acc"][:, I - 1]
    assert (first_visit_acc[:, 2] > seq_acc[:, 2] + 0.3).all()
    assert (seq_acc[:, 0] > first_visit_acc[:, 0] + 0.3).all()


def test_no_tracing_guard_is_effective():
    """Sanity check of the tool the retrace test relies on: a fresh trace does raise."""
    x = jnp.ones(3)
    f = jax.jit(lambda v: v * 2)
    with jax.no_tracing(True), pytest.raises(RuntimeError, match="no_tracing"):
        f(x)


def test_chunked_mode_drives_intervals_from_the_host_with_one_trace(exp, sweep_logs):
    traces = collections.Counter()

    def counted(name, fn):
        def wrapper(*args):
            traces[name] += 1  # Python runs only while tracing
            return fn(*args)
        return wrapper

    train = exp.train._replace(**{name: counted(name, getattr(exp.train, name))
                                  for name in ("init", "run_interval")})
    seen = []
    logs0, logs = execute(train, run_keys(SEEDS), exp.hparams, exp.tasks.data, exp.tasks.params,
                          SCHEDULE, mode="chunked",
                          on_interval=lambda done, k, lg: seen.append((done, k,
                                                                       lg["eval_acc"].shape)))
    assert traces == {"init": 1, "run_interval": 1}
    assert seen == [(k + 1, k, (3, T)) for k in range(T * I)]
    # Chunked and sweep modes run the same functions: the same numbers.
    s0, s = sweep_logs
    assert jax.tree.structure(logs) == jax.tree.structure(s)
    _assert_trees_equal(logs0, s0)
    for (path, x), y in zip(_leaves(logs), jax.tree.leaves(s)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # Accuracies and non-finite counts agree exactly; losses may differ in the last float bits
    # (a different program, so XLA may fuse the interval means differently).
    np.testing.assert_array_equal(logs["eval_acc"], s["eval_acc"])
    np.testing.assert_array_equal(logs["nonfinite_steps"], s["nonfinite_steps"])


def test_execute_rejects_unknown_mode_listing_valid_modes(exp):
    with pytest.raises(ValueError, match=r"unknown mode 'fast'.*sweep.*chunked"):
        execute(exp.train, run_keys([0]), exp.hparams, exp.tasks.data, exp.tasks.params,
                SCHEDULE, mode="fast")


# --------------------------------------------------------------------------------------------
# no host transfers
# --------------------------------------------------------------------------------------------


def test_compiled_loop_makes_no_implicit_host_transfer(exp, sweep, sweep_logs):
    keys, hparams, data, params, sched = jax.device_put(
        (run_keys(SEEDS), exp.hparams, exp.tasks.data, exp.tasks.params, SCHED))
    with jax.transfer_guard("disallow"):
        out = sweep(keys, hparams, data, params, sched)
        jax.block_until_ready(out)
    _assert_trees_equal(jax.device_get(out), sweep_logs)


def test_transfer_guard_catches_an_implicit_transfer(sweep, exp):
    """Sanity check: the guard does reject a host array passed to the compiled loop."""
    host_params = jax.device_get(exp.tasks.params)
    keys, hparams, data, sched = jax.device_put((run_keys(SEEDS), exp.hparams, exp.tasks.data,
                                                 SCHED))
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match="host-to-device"):
        jax.block_until_ready(sweep(keys, hparams, data, host_params, sched))


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------


def test_different_seeds_give_different_logs(sweep_logs):
    logs0, logs = sweep_logs
    loss = logs["train"]["train_loss"]
    acc = np.concatenate([logs0["eval_acc"].reshape(3, -1), logs["eval_acc"].reshape(3, -1)], 1)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.array_equal(loss[a], loss[b]), (a, b)
            assert not np.array_equal(acc[a], acc[b]), (a, b)


def test_equal_seeds_in_one_batch_match_bit_for_bit(exp, sweep, sweep_logs):
    out = jax.device_get(sweep(run_keys([1, 1, 0]), exp.hparams, exp.tasks.data,
                               exp.tasks.params, SCHED))
    _assert_trees_equal(_run_slice(out, 0), _run_slice(out, 1))
    # ... and equal the seed-1 run of the first batch, whose position in the batch differed.
    _assert_trees_equal(_run_slice(out, 0), _run_slice(sweep_logs, 1))
    _assert_trees_equal(_run_slice(out, 2), _run_slice(sweep_logs, 0))


def test_equal_hparams_in_a_grid_give_identical_runs(sweep):
    # Same run shape as CFG (3 runs, 3 tasks), so the compiled sweep is reused.
    grid = build(dataclasses.replace(CFG, seeds=1, learning_rate=(1e-2, 1e-2, 1e-2)))
    assert grid.runs["seed"].tolist() == [0, 0, 0]
    keys = run_keys(grid.runs["seed"].to_numpy())
    out = jax.device_get(sweep(keys, grid.hparams, grid.tasks.data, grid.tasks.params, SCHED))
    _assert_trees_equal(_run_slice(out, 0), _run_slice(out, 1))
    _assert_trees_equal(_run_slice(out, 0), _run_slice(out, 2))


def test_a_run_does_not_depend_on_the_other_runs_in_its_batch(exp, sweep_logs):
    alone = _vmapped_run(exp.train)(run_keys([1]), jax.tree.map(lambda h: h[:1], exp.hparams),
                                    exp.tasks.data, exp.tasks.params, SCHED)
    alone = _run_slice(jax.device_get(alone), 0)
    batched = _run_slice(sweep_logs, 1)
    for (path, x), y in zip(_leaves(alone), jax.tree.leaves(batched)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # Not bit-for-bit in general: a single run is called unbatched (runner.over_runs), a
    # different program, and interval-mean training losses differed in their last float32 bits
    # (~2e-7) while the accuracies were equal. Evaluation accuracies are counts over 64 examples, so
    # they only move if a prediction flips; require them equal.
    np.testing.assert_array_equal(alone[0]["eval_acc"], batched[0]["eval_acc"])
    np.testing.assert_array_equal(alone[1]["eval_acc"], batched[1]["eval_acc"])


def test_over_runs_calls_a_single_run_unbatched_and_keeps_the_run_axis():
    seen = []

    def fn(x, shared):
        seen.append(x.shape)
        return {"y": x * shared}

    shared = jnp.float32(3.0)
    one = over_runs(fn, (0, None))(jnp.arange(4.0)[None], shared)
    many = over_runs(fn, (0, None))(jnp.arange(8.0).reshape(2, 4), shared)
    assert seen == [(4,), (4,)]  # unbatched, then traced per example under vmap
    np.testing.assert_array_equal(one["y"], 3.0 * np.arange(4.0)[None])
    np.testing.assert_array_equal(many["y"], 3.0 * np.arange(8.0).reshape(2, 4))


# --------------------------------------------------------------------------------------------
# learning and R
# --------------------------------------------------------------------------------------------


def test_learner_learns_the_first_task_far_above_chance(sweep_logs):
    logs0, logs = sweep_logs
    chance = 1 / 10
    before = logs0["eval_acc"][:, 0]
    after = _by_task(logs["eval_acc"])[:, 0, -1, 0]
    assert (before < 0.3).all(), before
    assert (after > 0.8).all(), after
    assert (after > before + 5 * chance).all()
    # Training loss falls within the first task.
    loss = _by_task(logs["train"]["train_loss"])[:, 0]
    assert (loss[:, -1] < loss[:, 0]).all()


def test_r_matrix_from_table_equals_eval_logs_at_task_ends(exp, sweep_logs):
    logs0, logs = sweep_logs
    table = to_frame(logs0, logs, exp.runs, CFG.log_every, SCHEDULE.task)
    R, runs = r_matrix(table)
    assert R.shape == (3, T + 1, T)
    assert runs["seed"].tolist() == SEEDS
    np.testing.assert_array_equal(R[:, 0], logs0["eval_acc"])        # before training
    for t in range(T):
        np.testing.assert_array_equal(R[:, t + 1], _by_task(logs["eval_acc"])[:, t, -1])
    # Row 0 is the evaluation at step 0 of the table.
    ev0 = table[(table["metric"] == "eval_acc") & (table["step"] == 0)]
    assert len(ev0) == 3 * T and (ev0["task"] == 0).all()


# --------------------------------------------------------------------------------------------
# LoopSpec
# --------------------------------------------------------------------------------------------


def test_loop_spec_steps_not_multiple_of_log_every_names_both_fields():
    with pytest.raises(ValueError, match=r"steps_per_task=25 .*multiple of log_every=10"):
        LoopSpec(steps_per_task=25, log_every=10, batch_size=8)


@pytest.mark.parametrize("field", ["steps_per_task", "log_every", "batch_size"])
def test_loop_spec_nonpositive_size_names_the_field(field):
    sizes = dict(steps_per_task=20, log_every=10, batch_size=8)
    sizes[field] = 0
    with pytest.raises(ValueError, match=rf"{field} must be >= 1, got 0"):
        LoopSpec(**sizes)


def test_loop_spec_intervals_per_task():
    assert LoopSpec(steps_per_task=30, log_every=10, batch_size=4).intervals_per_task == 3


def test_optimization_stats_sample_the_last_step_and_leave_training_unchanged(exp, sweep_logs):
    # Same seeds with --metrics optimization: identical training, plus grad_norm/update_ratio
    # per interval taken from the interval's last step.
    with_stats = build(dataclasses.replace(CFG, metrics="optimization"))
    logs0, logs = jax.device_get(_vmapped_run(with_stats.train)(
        run_keys(SEEDS), with_stats.hparams, with_stats.tasks.data, with_stats.tasks.params,
        SCHED))
    np.testing.assert_allclose(logs["eval_acc"], sweep_logs[1]["eval_acc"], rtol=1e-6)
    np.testing.assert_allclose(logs["train"]["train_loss"], sweep_logs[1]["train"]["train_loss"],
                               rtol=1e-6)
    grad_norm = logs["train"]["grad_norm"]
    assert {"hidden/0", "out", "global"} <= set(grad_norm)
    assert grad_norm["global"].shape == (len(SEEDS), T * I)
    assert np.all(np.isfinite(grad_norm["global"])) and np.all(grad_norm["global"] > 0)
