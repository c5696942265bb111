"""Task schedules in the loops: one compilation for every schedule of a length, boundary hooks
only at announced switches (EWC, resets, replay emptying), drift batches in the scheduled
proportion. One tiny supervised experiment (EWC + shrink & perturb between tasks, its chunked
program compiled once) and the toy RL agent are shared by the module; the sweep program's
schedule check is in test_loop.py."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from continual.agents import RLSpec, make_rl_train
from continual.loop import current_examples, schedule_entry
from continual.runner import compiled, execute, run_keys
from experiments.experiment import hparams_of
from experiments.kinds.classifier import ClassifierConfig as Config
from experiments.registry import build
from plasticity.regularizers import EWCState
from tasks.schedule import parse
from toy_rl import random_agent, reach_sequence

# Learning rate 1e-6: parameters barely move within an interval, so a reset shows as a jump.
CFG = Config(dataset="synthetic", family="permuted", num_tasks=2, hidden=(8,), steps_per_task=4,
             log_every=2, batch_size=8, seeds=1, eval_examples=16, probe_examples=8,
             regularizer="ewc", reset="shrink_perturb", sp_shrink=(0.5,), learning_rate=(1e-6,))
# Every schedule of 4 intervals over 2 tasks (I = 2).
SCHEDULES = ["sequential", "order:0x1,1x1,0x1,1x1", "order:1,0", "drift:window=2",
             "durations:1,3", "random:dwell=1"]


@pytest.fixture(scope="module")
def exp():
    return build(CFG)


def _params(carry):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(
        jax.device_get(carry.state.params))])


def _anchor(carry):
    ewc = [s for s in jax.tree.leaves(carry.state.opt_state,
                                      is_leaf=lambda x: isinstance(x, EWCState))
           if isinstance(s, EWCState)]
    assert len(ewc) == 1
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(ewc[0].anchor))])


def test_every_schedule_of_the_same_length_runs_without_compiling(exp):
    keys = run_keys([0])
    init, interval = compiled(exp.train, "chunked")
    outs = [execute(exp.train, keys, exp.hparams, exp.tasks.data, exp.tasks.params,
                    parse(SCHEDULES[0], 2, 2), mode="chunked")]
    with jax.no_tracing(True):
        for text in SCHEDULES[1:] + ["sequential"]:
            schedule = parse(text, 2, 2, boundaries="hidden" if text == "order:1,0" else
                             "announced")
            outs.append(execute(exp.train, keys, exp.hparams, exp.tasks.data, exp.tasks.params,
                                schedule, mode="chunked"))
    assert init._cache_size() == interval._cache_size() == 1
    assert all(o[1]["eval_acc"].shape == (1, 4, 2) for o in outs)
    # The schedule is really used: another schedule trains on other batches; the same one
    # gives the same numbers.
    loss = [o[1]["train"]["train_loss"][0] for o in outs]
    assert not np.allclose(loss[0], loss[2], rtol=1e-3)
    np.testing.assert_array_equal(loss[0], loss[-1])


@pytest.mark.parametrize("text, boundaries", [("order:0x1,1x1,0x1,1x1", "announced"),
                                              ("order:0x1,1x1,0x1,1x1", "hidden"),
                                              ("sequential", "announced")])
def test_ewc_and_resets_run_at_announced_switches_only(exp, text, boundaries):
    schedule = parse(text, 2, 2, boundaries=boundaries)
    init, interval = compiled(exp.train, "chunked")
    carry, _ = init(run_keys([0]), exp.hparams, exp.tasks.data, exp.tasks.params)
    params, anchor = _params(carry), _anchor(carry)
    fired = []
    for k in range(schedule.length):
        carry, _ = interval(carry, schedule_entry(schedule, k), exp.hparams, exp.tasks.data,
                            exp.tasks.params)
        new_params, new_anchor = _params(carry), _anchor(carry)
        consolidated = not np.array_equal(new_anchor, anchor)
        if consolidated:  # EWC's anchor θ* is the parameters at the end of the finished visit
            np.testing.assert_array_equal(new_anchor, params)
        reset = np.max(np.abs(new_params - params)) > 1e-2  # lr 1e-6 moves ~1e-5 per interval
        assert consolidated == reset, k
        fired.append(reset)
        params, anchor = new_params, new_anchor
    assert fired == schedule.announce.tolist()
    assert sum(fired) == {"announced": 3 if text.startswith("order") else 1, "hidden": 0}[
        boundaries]


def test_drift_examples_come_from_the_other_task_with_the_scheduled_probability(exp):
    schedule = parse("drift:window=2", 2, 2)
    n = 4000
    for k, share in ((1, 0.25), (2, 0.25), (0, 0.0)):
        entry = schedule_entry(schedule, k)
        idx, ids = jax.jit(lambda params, e, key: current_examples(exp.tasks, params, e, key, n))(
            exp.tasks.params, entry, jax.random.key(k))
        from_other = int(np.sum(np.asarray(ids) == entry.other)) if share else 0
        if share == 0:
            assert (np.asarray(ids) == entry.task).all()
            continue
        # 99.9% binomial interval for Binomial(n, share).
        low, high = stats.binom.interval(0.999, n, share)
        assert low <= from_other <= high, (k, from_other)
        assert set(np.unique(ids)) == {0, 1}


# ---------------------------------------------------------------------------------- RL


@functools.lru_cache(maxsize=None)
def _rl_train(reset_replay: bool):
    seq = reach_sequence([0.5, -0.5])
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=2, episode_length=3, eval_envs=1,
                  eval_length=3, probe_examples=2, reset_replay=reset_replay)
    return seq, make_rl_train(spec, random_agent(seq.observation_size, seq.action_size, 2), seq)


@pytest.mark.parametrize("boundaries", ["announced", "hidden"])
def test_rl_replay_is_emptied_at_announced_switches_only_repeats_included(boundaries):
    seq, train = _rl_train(reset_replay=True)
    schedule = parse("repeat:2", 2, 2, boundaries=boundaries)   # 0 0 1 1 0 0 1 1
    init, interval = compiled(train, "chunked")
    hparams = hparams_of(pd.DataFrame({"seed": [0]}))
    carry, _ = init(run_keys([0]), hparams, (), seq.params)
    stored = []
    for k in range(schedule.length):
        carry, _ = interval(carry, schedule_entry(schedule, k), hparams, (), seq.params)
        stored.append(int(carry.memory["stored"][0]))
    # The toy memory counts env steps stored since it was last emptied (2 per interval).
    if boundaries == "announced":
        assert stored == [2, 4, 2, 4, 2, 4, 2, 4]
    else:
        assert stored == [2, 4, 6, 8, 10, 12, 14, 16]


def test_rl_envs_run_the_scheduled_task_from_the_first_interval():
    seq, train = _rl_train(reset_replay=True)   # the replay test's compiled program
    schedule = parse("order:1x1,0x2,1x1", 2, 2, boundaries="hidden")
    init, interval = compiled(train, "chunked")
    hparams = hparams_of(pd.DataFrame({"seed": [0]}))
    carry, _ = init(run_keys([0]), hparams, (), seq.params)
    targets = []   # the observation carries the target of the task the envs run
    for k in range(schedule.length):
        carry, _ = interval(carry, schedule_entry(schedule, k), hparams, (), seq.params)
        targets.append(np.unique(np.asarray(carry.first.obs)[0, :, 1]).tolist())
    assert targets == [[-0.5], [0.5], [0.5], [-0.5]]
    assert int(carry.steps[0]) == 4 * 2
