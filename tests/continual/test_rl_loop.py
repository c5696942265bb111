"""The continual RL loop on a real Brax env (HalfCheetah): one compiled program for the whole
task sequence, task switches without retrace, no implicit host transfer, return matrix and RL
diagnostics in the logs. Tiny sizes (the ``rl_tiny`` preset overrides): compilation dominates."""
import jax
import numpy as np
import pytest

from continual.runner import compiled as compiled_fns
from continual.runner import execute, run_keys
from experiments import registry
from experiments.registry import from_preset
from tasks.envs import brax as brax_envs


@pytest.fixture(scope="module")
def compiled(rl_tiny):
    exp = registry.build(from_preset("cheetah-quick", **rl_tiny))
    keys = run_keys(exp.runs["seed"].to_numpy())
    logs0, logs = execute(exp.train, keys, exp.hparams, (), exp.tasks.params, exp.schedule,
                          mode="sweep")
    return exp, keys, logs0, logs


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


def test_opposite_objectives_give_different_returns_to_the_same_policy(compiled):
    # Run forward vs backward: same physics, reward sign of the velocity term flipped.
    _, _, logs0, _ = compiled
    assert not np.allclose(logs0["eval_return"][:, 0], logs0["eval_return"][:, 1])


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
