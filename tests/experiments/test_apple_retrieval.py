"""AppleRetrieval (experiments/apple_retrieval.py): the environment, the REINFORCE gradient and
the Bernoulli KL against hand computations in numpy, and the paper's findings at small scale
from one shared compiled sweep."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import apple_retrieval as ar

L, R = 0, 1


def _walk(actions, M, x=0, phase=ar.OUT, c=0.5):
    obs, rewards, phases = [], [], []
    for a in actions:
        obs.append(float(ar.observe(phase, c)))
        x, phase, r = ar.env_step(x, phase, jnp.int32(a), M)
        rewards.append(int(r))
        phases.append(int(phase))
    return obs, rewards, phases, int(x)


def test_env_hand_written_episode():
    # M = 3: a clipped left step at home, out to the apple, one step away, back home, absorbed.
    actions = [L, R, R, R, L, R, L, L, L, R, L]
    obs, rewards, phases, x = _walk(actions, M=3)
    assert rewards == [-1, 1, 1, 1, 1, -1, 1, 1, 1, 0, 0]
    assert obs == [-0.5] * 4 + [0.5] * 7
    assert phases == [ar.OUT, ar.OUT, ar.OUT, ar.BACK, ar.BACK, ar.BACK, ar.BACK, ar.BACK,
                      ar.HOME, ar.HOME, ar.HOME]
    assert x == 0
    # Pre-training's start (x = M, phase 2): walking right is punished, there is no right wall.
    assert _walk([R, R, L], M=3, x=3, phase=ar.BACK) == ([0.5] * 3, [-1, -1, 1], [ar.BACK] * 3, 4)


def test_rollout_deterministic_policies():
    M, c = jnp.int32(3), jnp.float32(0.5)
    key = jax.random.PRNGKey(0)
    # Right in phase 1 (o = −c), left in phase 2 (o = c): the perfect episode, 2M = 6.
    perfect = jax.jit(ar.rollout)((jnp.float32(-60.0), jnp.float32(0.0)), key, M, c, 0, ar.OUT)
    np.testing.assert_array_equal(perfect.action[:6], [R, R, R, L, L, L])
    np.testing.assert_array_equal(perfect.reward, [1] * 6 + [0] * 94)
    np.testing.assert_array_equal(perfect.live, [1] * 6 + [0] * 94)
    np.testing.assert_array_equal(perfect.obs[:6], [-0.5] * 3 + [0.5] * 3)
    # Always right: 3 steps out, then 97 steps away from home.
    right = ar.rollout((jnp.float32(0.0), jnp.float32(60.0)), key, M, c, 0, ar.OUT)
    assert float(right.reward.sum()) == 3 - 97 and float(right.live.sum()) == 100


def _np_returns(r):
    return np.flip(np.cumsum(np.flip(r, -1), -1), -1)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    B, T, c = 3, 6, 0.7
    obs = rng.choice([-c, c], size=(B, T))
    action = rng.integers(0, 2, size=(B, T))
    reward = rng.choice([-1.0, 1.0], size=(B, T))
    live = np.ones((B, T))
    live[0, 4:] = 0   # the first episode ended after 4 steps
    reward[0, 4:] = 0
    traj = ar.Trajectory(*(jnp.asarray(a, jnp.float32) for a in (obs, action, reward, live)))
    return traj, (obs, action, reward, live)


def test_returns_to_go_and_advantages(batch):
    traj, (_, _, reward, live) = batch
    np.testing.assert_array_equal(np.asarray(ar.returns_to_go(jnp.asarray([[1., -1., 1., 1.]]))),
                                  [[2, 1, 2, 1]])
    g = _np_returns(reward)
    np.testing.assert_allclose(ar.advantages(traj, "return"), g, atol=1e-6)
    centred = g - g.mean(0)
    np.testing.assert_allclose(ar.advantages(traj, "baseline"), centred, atol=1e-6)
    std = np.sqrt((live * centred**2).sum() / live.sum())
    np.testing.assert_allclose(ar.advantages(traj, "normalized"), centred / std, atol=1e-5)


def test_reinforce_gradient_matches_numpy(batch):
    traj, (obs, action, reward, live) = batch
    w, b = 0.3, -0.2
    for kind in ("return", "normalized"):
        adv = ar.advantages(traj, kind)
        gw, gb = jax.grad(ar.reinforce_loss)((jnp.float32(w), jnp.float32(b)), traj, adv)
        # ∂/∂z log π(a | o) = a − σ(z) for a Bernoulli with logit z = w·o + b.
        score = action - 1 / (1 + np.exp(-(w * obs + b)))
        weight = live * np.asarray(adv)
        n = obs.shape[0] * ar.STEPS
        np.testing.assert_allclose(gw, -(score * obs * weight).sum() / n, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gb, -(score * weight).sum() / n, rtol=1e-5, atol=1e-7)
    assert abs(float(gw)) > 1e-3 and abs(float(gb)) > 1e-3   # a gradient worth comparing


def test_bernoulli_kl_and_gradient_match_numpy():
    zp = np.array([-3.0, -0.5, 0.0, 1.2, 4.0])
    zq = np.array([1.0, -2.0, 0.0, 0.3, -1.0])
    p, q = 1 / (1 + np.exp(-zp)), 1 / (1 + np.exp(-zq))
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(ar.bernoulli_kl(jnp.asarray(zp), jnp.asarray(zq)), kl, rtol=1e-5)
    np.testing.assert_allclose(ar.bernoulli_kl(jnp.asarray(zp), jnp.asarray(zp)), 0, atol=1e-6)
    # Through the policy's parameters at o = c: ∂KL/∂z_q = q − p, z_q = w·c + b.
    c, w, b, star = 0.5, 0.8, -1.1, (jnp.float32(-2.0), jnp.float32(-1.0))
    gw, gb = jax.grad(lambda prm: ar.bernoulli_kl(ar.logit(star, c), ar.logit(prm, c)))(
        (jnp.float32(w), jnp.float32(b)))
    p, q = 1 / (1 + np.exp(-(-2.0 * c - 1.0))), 1 / (1 + np.exp(-(w * c + b)))
    np.testing.assert_allclose([gw, gb], [(q - p) * c, q - p], rtol=1e-5)
    # Stable at saturated logits, where the naive formula gives inf or nan.
    assert np.isfinite(float(ar.bernoulli_kl(jnp.float32(40.0), jnp.float32(-40.0))))


SMALL, LARGE = 5, 30


@pytest.fixture(scope="module")
def rows():
    cfg = ar.Config(pretrain_updates=100, finetune_updates=100, episodes=16)
    table = ar.sweep(range(3), [SMALL, LARGE], [0.5, 1.0], [0.0, 1.0], cfg)
    assert list(table.columns) == ["seed", "M", "c", "beta", "update", "metric", "value"]
    assert len(table) == 3 * 2 * 2 * 2 * 100 * 3
    return ar.per_seed(table).groupby(level=["M", "c", "beta"]).mean()


def test_forgetting_grows_with_distance(rows):
    small, large = rows.loc[(SMALL, 0.5, 0.0)], rows.loc[(LARGE, 0.5, 0.0)]
    assert large["forgetting"] > small["forgetting"] + 0.05
    # ... and the return from x = M drops with it (a perfect one is M).
    assert large["p2 return min"] < 0.75 * LARGE


def test_bc_removes_forgetting(rows):
    plain, bc = rows.loc[(LARGE, 0.5, 0.0)], rows.loc[(LARGE, 0.5, 1.0)]
    assert bc["forgetting"] < 0.4 * plain["forgetting"]
    assert bc["p2 return min"] > 0.95 * LARGE
    # π* is the same for both: only fine-tuning differs.
    assert bc["start"] == plain["start"]


def test_smaller_scale_forgets_more(rows):
    assert rows.loc[(LARGE, 0.5, 0.0), "forgetting"] > \
        rows.loc[(LARGE, 1.0, 0.0), "forgetting"] + 0.05


def test_main_prints_table_and_saves_figure(tmp_path, capsys):
    path = tmp_path / "apple.png"
    assert ar.main(["--seeds", "2", "--distances", "3,5", "--scales", "0.5", "--betas", "0,1",
                    "--pretrain", "5", "--updates", "12", "--episodes", "2",
                    "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "forgetting" in out and "full return end" in out
    assert path.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        ar.main(["--distances", "60"])
