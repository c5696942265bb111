"""SAC learns HalfCheetah running forward well above a random policy (slow: minutes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import experiment, registry
from experiments.registry import from_preset
from metrics import rl
from tasks.base import task_slice


def random_policy_return(seq, episodes: int, length: int) -> float:
    task = task_slice(seq.params, 0)

    @jax.jit
    def rollout(key):
        k_reset, k_act = jax.random.split(key)
        env = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(k_reset, episodes))

        def body(env, k):
            a = jax.random.uniform(k, (episodes, seq.action_size), minval=-1, maxval=1)
            nxt = jax.vmap(seq.step, (None, 0, 0))(task, env, a)
            return nxt, (nxt.reward, nxt.done)

        _, (reward, done) = jax.lax.scan(body, env, jax.random.split(k_act, length))
        return jnp.mean(rl.episode_return(reward, done))

    return float(rollout(jax.random.key(123)))


@pytest.mark.slow
def test_sac_runs_forward_far_above_a_random_policy():
    cfg = from_preset("cheetah-quick", task_values=(1.0,), seeds=2, mode="sweep")
    exp = registry.build(cfg)
    table, per_run, _ = experiment.run(exp, progress=False)
    assert not per_run["diverged"].any()
    final = per_run["plasticity_last"].to_numpy()  # eval return at the end of the task
    baseline = random_policy_return(exp.tasks, cfg.eval_envs, cfg.episode_length)
    # Random actions pay the control cost and go nowhere (about -40 per 200 steps). Measured
    # with seeds 0 and 1 after 24k steps: +175 and -20 (one seed of two had not taken off yet),
    # so the bar is on the mean and the best seed.
    assert final.mean() > baseline + 50 and final.max() > baseline + 100, (final, baseline)
