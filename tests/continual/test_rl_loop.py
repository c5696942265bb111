"""The continual RL loop with SAC: on the toy point-mass source (seconds to compile; the default
run) and on a real Brax env (HalfCheetah, ``slow``: its physics takes minutes to compile on 2
cores): one compiled program for the whole task sequence, task switches without retrace, no
implicit host transfer, return matrix and RL diagnostics in the logs. Tiny sizes (the
``rl_tiny`` preset overrides): compilation dominates."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from continual.agents import RLSpec, make_rl_train
from continual.agents.sac import ReplaySpec, SACSpec, make_sac, make_sac_agent
from continual.runner import compiled as compiled_fns
from continual.runner import execute, run_keys
from experiments import registry
from experiments.experiment import hparams_of
from experiments.registry import from_preset
from tasks.envs import brax as brax_envs
from tasks.schedule import parse
from toy_rl import reach_sequence


def test_sac_runs_the_rl_loop_on_the_toy_source_with_its_measurements():
    seq = reach_sequence([0.5, -0.5])
    sac = make_sac(SACSpec(hidden=(8,)), seq.observation_size, seq.action_size)
    agent = make_sac_agent(sac, ReplaySpec(batch_size=4, capacity=32, min_replay=4, val_every=3,
                                           val_capacity=8, q_bias_keep=2),
                           seq.observation_size, seq.action_size)
    spec = RLSpec(num_envs=2, steps_per_task=8, log_every=4, episode_length=4, eval_envs=2,
                  eval_length=4, probe_examples=4, reset_replay=True)
    train = make_rl_train(spec, agent, seq)
    hparams = hparams_of(pd.DataFrame({"seed": [0, 1]}))
    logs0, logs = execute(train, run_keys([0, 1]), hparams, (), seq.params,
                          parse("repeat:2", 2, 2), mode="sweep")
    assert logs0["eval_return"].shape == (2, 2) and logs["eval_return"].shape == (2, 8, 2)
    for name in ("q_bias", "q_estimate", "mc_return", "td_error_val", "td_error_train"):
        assert logs[name].shape == (2, 8) and np.all(np.isfinite(logs[name])), name
    # Updates start once 4 transitions are stored (the first env step of 2 envs stores 2).
    assert np.all(np.isfinite(logs["train"]["critic_loss"]))
    assert not np.allclose(logs["q_estimate"][0], logs["q_estimate"][1])


@pytest.fixture(scope="module")
def compiled(rl_tiny):
    exp = registry.build(from_preset("cheetah-quick", **rl_tiny))
    keys = run_keys(exp.runs["seed"].to_numpy())
    logs0, logs = execute(exp.train, keys, exp.hparams, (), exp.tasks.params, exp.schedule,
                          mode="sweep")
    return exp, keys, logs0, logs


@pytest.mark.slow
def test_logs_hold_the_return_matrix_and_rl_diagnostics(compiled):
    exp, _, logs0, logs = compiled
    runs, tasks, intervals = len(exp.runs), exp.tasks.num_tasks, exp.schedule.length
    assert logs0["eval_return"].shape == (runs, tasks)
    assert logs["eval_return"].shape == (runs, intervals, tasks)
    assert np.all(np.isfinite(logs["eval_return"]))
    for name in ("q_bias", "q_bias_norm", "mc_return", "td_error_val", "td_error_train"):
        assert logs[name].shape == (runs, intervals)
        assert np.all(np.isfinite(logs[name])), name
    # Updates start after min_replay transitions (2 env steps of 4 envs) and are logged.
    assert np.all(np.isfinite(logs["train"]["critic_loss"]))
    assert np.all(logs["train"]["episodes"] >= 0)
    dormant = logs["diagnostics"]["dormant_frac@0.025"]
    assert {"actor/hidden/0", "critic/hidden/0", "actor/total"} <= set(dormant)
    assert "critic/out" in logs["diagnostics"]["sv_max"]
    # Different seeds act differently.
    assert not np.allclose(logs["q_estimate"][:, 0], logs["q_estimate"][:, 1])


@pytest.mark.slow
def test_opposite_objectives_give_different_returns_to_the_same_policy(compiled):
    # Run forward vs backward: same physics, reward sign of the velocity term flipped.
    _, _, logs0, _ = compiled
    assert not np.allclose(logs0["eval_return"][:, 0], logs0["eval_return"][:, 1])


@pytest.mark.slow
def test_a_new_task_sequence_of_the_same_shape_reuses_the_compilation(compiled):
    # execute() again with other task params: the cached executable runs, nothing is traced,
    # and nothing moves to the host implicitly.
    exp, keys, _, _ = compiled
    other = brax_envs.concat(brax_envs.dynamics_params(gravity_scales=[0.5]),
                             brax_envs.dynamics_params(mass_scales=[2.0]))
    with jax.transfer_guard("disallow"), jax.no_tracing(True):
        logs0, _ = execute(exp.train, keys, exp.hparams, (), other, exp.schedule, mode="sweep")
    assert len(compiled_fns(exp.train, "sweep")) == 1
    assert np.all(np.isfinite(logs0["eval_return"]))


def test_mode_variants_are_evaluated_on_every_task_with_their_own_policy():
    """Each of an agent's ``mode_variants`` plays every task (``eval_return_<suffix>``): a
    variant that always moves right returns more than one that moves left where the target is
    right of the start range's centre, and less where it is left."""
    from continual.agents import memoryless
    from toy_rl import random_agent

    seq = reach_sequence([0.8, -0.8])
    agent = random_agent(seq.observation_size, seq.action_size, 2)
    push = lambda sign: memoryless(None, lambda s, obs: jnp.full((obs.shape[0], 1), sign))[1]  # noqa: E731
    agent = agent._replace(mode_variants=(("right", push(1.0)), ("left", push(-1.0))))
    spec = RLSpec(num_envs=2, steps_per_task=4, log_every=4, episode_length=4, eval_envs=64,
                  eval_length=10, probe_examples=2)
    logs0, _ = execute(make_rl_train(spec, agent, seq), run_keys([0]),
                       hparams_of(pd.DataFrame({"seed": [0]})), (), seq.params,
                       parse("order:0", 2, 1), mode="sweep")
    right, left = logs0["eval_return_right"][0], logs0["eval_return_left"][0]
    assert right.shape == left.shape == logs0["eval_return"][0].shape == (2,)
    assert right[0] > left[0] + 1.0 and left[1] > right[1] + 1.0, (right, left)
