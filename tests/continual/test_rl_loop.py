"""The continual RL loop on a real Brax env (HalfCheetah, MJX): one compiled program for the
whole task sequence, task switches without retrace, no implicit host transfer, return matrix
and RL diagnostics in the logs. Tiny sizes: compilation dominates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.optimizers import HParams
from continual.rl_loop import RLSpec, make_rl_train
from continual.runner import run_keys
from continual.sac import SACSpec, make_sac
from metrics import hooks
from tasks import brax_envs

SPEC = RLSpec(num_envs=4, steps_per_task=8, log_every=4, episode_length=6, batch_size=8,
              replay_capacity=64, min_replay=8, val_every=3, val_capacity=16, eval_envs=2,
              eval_length=6, q_bias_keep=3, probe_examples=8)


@pytest.fixture(scope="module")
def compiled():
    seq = brax_envs.objectives("halfcheetah", "direction", (1.0, -1.0))
    agent = make_sac(SACSpec(hidden=(8,)), seq.observation_size, seq.action_size)
    diagnose = hooks.make_diagnose(hooks.parse_metrics("dormant,weight_sv").probes, "relu")
    train = make_rl_train(SPEC, agent, seq, diagnose)
    run = jax.jit(jax.vmap(train.run, in_axes=(0, 0, None, None)))
    hp = HParams(**{k: jnp.full((2,), v, jnp.float32)
                    for k, v in HParams.defaults(learning_rate=1e-3)._asdict().items()})
    keys = run_keys([0, 1])
    logs0, logs = jax.device_get(run(keys, hp, (), seq.params))
    return seq, run, keys, hp, logs0, logs


def test_logs_hold_the_return_matrix_and_rl_diagnostics(compiled):
    seq, _, _, _, logs0, logs = compiled
    runs, tasks, intervals = 2, seq.num_tasks, SPEC.intervals_per_task
    assert logs0["eval_return"].shape == (runs, tasks)
    assert logs["eval_return"].shape == (runs, tasks, intervals, tasks)
    assert np.all(np.isfinite(logs["eval_return"]))
    for name in ("q_bias", "q_bias_norm", "mc_return", "td_error_val", "td_error_train"):
        assert logs[name].shape == (runs, tasks, intervals)
        assert np.all(np.isfinite(logs[name])), name
    # Updates start after min_replay transitions (2 env steps of 4 envs) and are logged.
    assert np.all(np.isfinite(logs["train"]["critic_loss"]))
    assert np.all(logs["train"]["episodes"] >= 0)
    dormant = logs["diagnostics"]["dormant_frac@0.025"]
    assert {"actor/hidden/0", "critic/hidden/0", "actor/total"} <= set(dormant)
    assert "critic/out" in logs["diagnostics"]["sv_max"]
    # Different seeds act differently.
    assert not np.allclose(logs["q_estimate"][0], logs["q_estimate"][1])


def test_opposite_objectives_give_different_returns_to_the_same_policy(compiled):
    # Run forward vs backward: same physics, reward sign of the velocity term flipped.
    _, _, _, _, logs0, _ = compiled
    assert not np.allclose(logs0["eval_return"][:, 0], logs0["eval_return"][:, 1])


def test_a_new_task_sequence_of_the_same_shape_reuses_the_compilation(compiled):
    seq, run, keys, hp, _, _ = compiled
    other = brax_envs.concat(brax_envs.dynamics_params(gravity_scales=[0.5]),
                             brax_envs.dynamics_params(mass_scales=[2.0]))
    with jax.transfer_guard("disallow"), jax.no_tracing(True):
        logs0, _ = run(keys, hp, (), other)
    assert np.all(np.isfinite(np.asarray(logs0["eval_return"])))
