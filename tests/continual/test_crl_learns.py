"""CRL learns the point-mass U-maze far above a random policy's success (slow: minutes)."""
import jax.numpy as jnp
import pytest

from experiments import experiment, registry
from experiments.registry import from_preset
from metrics import rl
from toy_rl import random_rollout


def random_policy_success(seq, episodes: int, length: int) -> float:
    """The fraction of uniformly random episodes that come within the goal threshold."""
    steps = random_rollout(seq, episodes, length)
    return float(jnp.mean(rl.goal_reaching(seq.goals.distance(steps.obs), steps.done,
                                           seq.goals.threshold)["success"]))


@pytest.mark.slow
def test_crl_reaches_the_u_maze_goal_far_above_a_random_policy():
    cfg = from_preset("maze-quick", mode="sweep")
    exp = registry.build(cfg)
    table, per_run, _ = experiment.run(exp, progress=False)
    assert not per_run["diverged"].any()
    final = per_run["plasticity_last"].to_numpy()  # success at the end of the task
    baseline = random_policy_success(exp.tasks, 1024, cfg.episode_length)
    # The goal cell lies behind the U's wall, about 6 units of path away (24 steps at full
    # speed): random actions rarely get there in 100 steps. Not every seed solves it in 48k
    # steps (measured: seed 0 by 14k, seed 1 not yet; 2 of 5 seeds by 77k), so the bar is on
    # the best seed and the mean.
    assert baseline < 0.2, baseline
    assert final.max() > baseline + 0.5 and final.mean() > baseline + 0.25, (final, baseline)
