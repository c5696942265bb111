"""Golden values for the RL diagnostics (metrics.rl), computed by hand."""
import jax.numpy as jnp
import numpy as np
import pytest

from metrics import rl


def _col(*values):  # [L] -> time-major [L, 1]
    return np.asarray(values, np.float32)[:, None]


def test_soft_returns_by_hand_without_termination():
    # G2 = 3; G1 = 2 + .9 (3 - .1 * .1) = 4.691; G0 = 1 + .9 (4.691 - .1 * .2) = 5.2039
    g = rl.soft_returns(_col(1, 2, 3), _col(0, 0, 0), _col(.5, .2, .1), gamma=.9, alpha=.1)
    np.testing.assert_allclose(np.asarray(g)[:, 0], [5.2039, 4.691, 3.0], rtol=1e-6)


def test_soft_returns_stop_at_termination_and_alpha_zero_is_plain_return():
    # done at t=1: G1 = 2 (no bootstrap), G0 = 1 + .9 (2 - .1 * .2) = 2.782
    g = rl.soft_returns(_col(1, 2, 3), _col(0, 1, 0), _col(.5, .2, .1), gamma=.9, alpha=.1)
    np.testing.assert_allclose(np.asarray(g)[:2, 0], [2.782, 2.0], rtol=1e-6)
    plain = rl.soft_returns(_col(1, 2, 3), _col(0, 0, 0), _col(5, 5, 5), gamma=.5, alpha=0.)
    np.testing.assert_allclose(np.asarray(plain)[:, 0], [1 + .5 * (2 + .5 * 3), 2 + 1.5, 3])


def test_alive_mask_and_episode_return_ignore_steps_after_termination():
    done = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], np.float32)
    np.testing.assert_array_equal(np.asarray(rl.alive_mask(done)),
                                  [[1, 1], [1, 1], [0, 1], [0, 1]])
    reward = np.array([[1, 10], [2, 20], [np.nan, 30], [4, 40]], np.float32)
    np.testing.assert_allclose(np.asarray(rl.episode_return(reward, done)), [3, 100])


def test_overestimation_by_hand_on_a_tiny_trajectory():
    # Two envs, three steps, keep the first two steps; env 1 terminates at step 0.
    reward = np.array([[1, 5], [2, 7], [3, 9]], np.float32)
    done = np.array([[0, 1], [0, 0], [0, 0]], np.float32)
    logp = np.zeros((3, 2), np.float32)
    q = np.array([[10, 6], [4, 100], [50, 100]], np.float32)
    out = {k: float(v) for k, v in rl.overestimation(q, reward, done, logp, gamma=.5,
                                                     alpha=0., keep=2).items()}
    # env 0: G = [1 + .5 (2 + .5·3), 2 + .5·3] = [2.75, 3.5]; env 1: G0 = 5 (terminated).
    g = np.array([2.75, 3.5, 5.0])
    bias = np.array([10, 4, 6]) - g
    assert out["mc_return"] == pytest.approx(g.mean())
    assert out["q_estimate"] == pytest.approx(np.mean([10, 4, 6]))
    assert out["q_bias"] == pytest.approx(bias.mean())
    assert out["q_bias_abs"] == pytest.approx(np.abs(bias).mean())
    assert out["q_bias_sq"] == pytest.approx((bias ** 2).mean())
    assert out["q_bias_norm"] == pytest.approx((bias / np.maximum(np.abs(g), 10)).mean())


def test_overestimation_is_nan_when_no_step_qualifies():
    out = rl.overestimation(np.ones((2, 1)), np.ones((2, 1)), np.zeros((2, 1)),
                            np.zeros((2, 1)), gamma=.9, alpha=0., keep=0)
    assert np.isnan(float(out["q_bias"]))


def test_goal_reaching_counts_the_first_episode_only():
    """Two envs, 5 steps, threshold 0.5: env 0 reaches the goal at steps 1 and 2 and
    terminates at step 3 (after which a near step does not count); env 1 never reaches it."""
    distance = np.array([[0.9, 2.0], [0.4, 1.5], [0.3, 1.0], [0.8, 0.7], [0.1, 0.6]])
    done = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [0, 0]], float)
    out = rl.goal_reaching(jnp.asarray(distance), jnp.asarray(done), 0.5)
    np.testing.assert_allclose(out["success"], [1.0, 0.0])
    np.testing.assert_allclose(out["time_near_goal"], [2.0, 0.0])
    np.testing.assert_allclose(out["final_distance"], [0.8, 0.6])
