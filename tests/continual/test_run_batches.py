"""Runs in batches (continual.runner): a sweep too large for memory runs batch after batch
through one compiled program and gives the table of one big batch; the batch size comes from
the compiled program's memory analysis; an out-of-memory becomes a clear error that keeps the
finished batches; an interrupted batched run resumes to identical results. One tiny supervised
experiment (test_loop's: 3 runs, so batches of 2 leave a padded last batch) is shared by the
module; the RL case runs the toy source with a random agent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest

from continual import runner
from continual.agents import RLSpec, make_rl_train
from continual.checkpoint import Checkpointer
from continual.runner import (BatchPlan, OutOfMemory, Stopped, execute, plan_batches,
                              run_keys)
from experiments.experiment import hparams_of
from experiments.registry import build
from tasks.schedule import parse
from oom import inject_out_of_memory
# test_loop's experiment (3 runs, 6 log intervals; registry.build returns the same loop for an
# equal config). Batches of 2 runs leave a padded last batch.
from test_loop import CFG, SCHEDULE
from toy_rl import random_agent, reach_sequence

RUNS = CFG.seeds
K = SCHEDULE.length


@pytest.fixture(scope="module")
def exp():
    return build(CFG)


def _run(exp, mode, batch=None, keys=None, **kw):
    keys = run_keys(range(RUNS)) if keys is None else keys
    runs = keys.shape[0]
    hparams = jax.tree.map(lambda a: a[:runs], exp.hparams)
    plan = None if batch is None else BatchPlan(runs, 1, batch, "forced")
    return execute(exp.train, keys, hparams, exp.tasks.data, exp.tasks.params, SCHEDULE,
                   mode=mode, plan=plan, **kw)


def _assert_trees(a, b, exact: bool):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def one_batch(exp):
    return {mode: _run(exp, mode) for mode in ("sweep", "chunked")}


@pytest.mark.parametrize("mode", ["sweep", "chunked"])
def test_batches_that_do_not_divide_the_runs_give_the_one_batch_results(exp, one_batch, mode):
    batched = _run(exp, mode, batch=2)  # batches 0-1, 2+padding
    assert jax.tree.leaves(batched[1])[0].shape[:2] == (RUNS, SCHEDULE.length)
    # Another batch shape is another program: equal up to float reassociation.
    _assert_trees(batched, one_batch[mode], exact=False)
    # The same batch composition is the same program: bit-identical.
    _assert_trees(jax.tree.map(lambda a: a[:2], batched), _run(exp, mode, keys=run_keys([0, 1])),
                  exact=True)


def test_the_rl_loop_in_batches_gives_the_one_batch_results():
    seq = reach_sequence([0.5, -0.5])
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=2, episode_length=3, eval_envs=2,
                  eval_length=3, probe_examples=2, reset_replay=True)
    train = make_rl_train(spec, random_agent(seq.observation_size, seq.action_size, 2), seq)
    hparams = hparams_of(pd.DataFrame({"seed": [0, 1, 2]}))
    args = (train, run_keys([0, 1, 2]), hparams, (), seq.params, parse("sequential", 2, 2))
    whole = execute(*args, mode="sweep")
    batched = execute(*args, mode="sweep", plan=BatchPlan(3, 1, 2, "forced"))
    _assert_trees(batched, whole, exact=False)
    assert len(np.unique(batched[1]["eval_return"][:, -1, 0])) == 3  # seeds differ


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------


def _plan(exp, **kw):
    return plan_batches(exp.train, run_keys(range(RUNS)), exp.hparams, exp.tasks.data,
                        exp.tasks.params, SCHEDULE, mode="chunked", **kw)


def test_all_runs_at_once_when_they_fit(exp):
    plan = _plan(exp, device_bytes=2**40)
    assert (plan.batch, plan.batches, plan.how) == (RUNS, 1, "fits")
    assert plan.per_run_bytes > 0 and plan.shared_bytes > 0
    assert "all 3 runs at once" in plan.describe()


def test_the_largest_balanced_batch_that_fits_when_they_do_not(exp):
    estimate = _plan(exp, device_bytes=2**40)
    # Room for 1.5 runs: 1 fits, so 3 batches of 1; room for 2.5: 2 batches of 2.
    for room, batch, batches in ((1.5, 1, 3), (2.5, 2, 2)):
        device = estimate.shared_bytes + room * estimate.per_run_bytes
        plan = _plan(exp, device_bytes=int(device / estimate.margin))
        assert (plan.batch, plan.batches, plan.how) == (batch, batches, "estimate")
        runs = "1 run" if batch == 1 else f"{batch} runs"
        assert f"{batches} batches of {runs}, the largest that fits" in plan.describe()


def test_a_forced_batch_is_kept_and_a_run_too_big_for_the_device_is_a_clear_error(exp):
    assert _plan(exp, run_batch=2, device_bytes=1).batch == 2
    with pytest.raises(OutOfMemory, match=r"one run does not fit in device memory.*make the run "
                                          r"smaller"):
        _plan(exp, device_bytes=1000)


def test_device_memory_reads_the_override_and_sizes(monkeypatch):
    assert runner.parse_bytes("8GiB") == 8 * 2**30
    assert runner.parse_bytes("512 MiB") == 512 * 2**20
    assert runner.parse_bytes("1.5GB") == 1_500_000_000
    assert runner.parse_bytes("2e9") == 2_000_000_000
    with pytest.raises(ValueError, match="memory size"):
        runner.parse_bytes("lots")
    monkeypatch.setenv("PLAX_DEVICE_MEMORY", "3MiB")
    assert runner.device_memory() == 3 * 2**20
    monkeypatch.delenv("PLAX_DEVICE_MEMORY")
    assert runner.device_memory() > 2**20  # the host's available memory on CPU


PEAK_SCRIPT = textwrap.dedent("""
    import json
    from pathlib import Path
    from continual.runner import execute, run_keys
    from experiments import experiment
    from experiments.kinds.classifier import ClassifierConfig as Config
    from experiments.registry import build

    def status(field):  # kB
        line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    out = []
    for runs in (16, 64):
        exp = build(Config(dataset="synthetic", family="permuted", num_tasks=1,
                           hidden=(512, 512), steps_per_task=2, log_every=2, batch_size=256,
                           eval_examples=512, probe_examples=8, seeds=runs, mode="sweep"))
        plan = experiment.plan(exp)  # compiles the program the run uses
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS restarts from here
        before = status("VmRSS")
        execute(exp.train, run_keys(exp.runs["seed"].to_numpy()), exp.hparams,
                exp.tasks.data, exp.tasks.params, exp.schedule, mode="sweep", plan=plan)
        out.append({"runs": runs, "measured": status("VmHWM") - before,
                    "estimate": plan.per_run_bytes * plan.batch + plan.shared_bytes})
    print(json.dumps(out))
""")


@pytest.mark.slow  # two programs compiled and measured
def test_the_estimate_is_within_a_factor_of_two_of_the_measured_peak_at_two_sizes():
    """The peak resident memory of executing 16 and 64 runs (a 512-wide MLP: ~0.2 and 0.8 GB),
    in a fresh process whose peak is reset after compiling, against the plan's estimate."""
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = json.loads(proc.stdout.strip().splitlines()[-1])
    for size in sizes:
        assert 0.5 <= size["estimate"] / size["measured"] <= 2.0, sizes
    assert sizes[1]["measured"] > 2 * sizes[0]["measured"]  # the memory is the runs'


# --------------------------------------------------------------------------------------------
# out of memory, interruption, resume
# --------------------------------------------------------------------------------------------


def test_out_of_memory_is_a_clear_error_keeping_the_finished_batches(exp, monkeypatch):
    inject_out_of_memory(monkeypatch, fail_at=2)
    with pytest.raises(Stopped) as stopped:
        _run(exp, "sweep", batch=2)
    cause = stopped.value.cause
    assert isinstance(cause, OutOfMemory)
    assert "out of device memory running 2 runs at once (3 runs in all" in str(cause)
    assert "--run-batch 1" in str(cause) and "RESOURCE_EXHAUSTED" in str(cause)
    assert stopped.value.runs_done == 2 and stopped.value.current is None
    assert stopped.value.progress() == "1 of 2 run batches"
    assert jax.tree.leaves(stopped.value.finished[1])[0].shape[:2] == (2, SCHEDULE.length)


@pytest.mark.parametrize("mode, stop_at", [("sweep", 2 * K), ("chunked", K + 2)])
def test_an_interrupted_batched_run_resumes_to_identical_results(exp, tmp_path, mode, stop_at):
    uninterrupted = _run(exp, mode, batch=2)

    def stop(done, k, logs):
        if done == stop_at:
            raise KeyboardInterrupt

    with Checkpointer(tmp_path / "ck") as ck:
        with pytest.raises(Stopped) as stopped:
            _run(exp, mode, batch=2, checkpointer=ck, checkpoint_seconds=1e-9, on_interval=stop)
        assert isinstance(stopped.value.cause, KeyboardInterrupt)
        # sweep: batch 2 finished but was not saved yet; chunked: mid batch 2.
        assert ck.latest_step() == (K if mode == "sweep" else K + 1)
        resumed = _run(exp, mode, batch=2, checkpointer=ck)
    _assert_trees(resumed, uninterrupted, exact=True)
