"""SAC: the tanh-Gaussian density, the update's pieces and the resets (continual.agents.sac)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.interventions import InterventionSpec
from continual.optimizers import HParams
from continual.agents.policy import tanh_gaussian_log_prob
from continual.agents.sac import SACSpec, Transition, layer_orders, make_reset, make_sac
from plasticity.networks import layer_params

OBS, ACT, B = 5, 2, 32


@functools.lru_cache(maxsize=None)
def _agent(**kw):
    """The SAC record with its functions jitted, shared by the tests of one spec (eager SAC
    updates dispatch hundreds of small ops: ~10 s each on 2 cores, against one compile)."""
    sac = make_sac(SACSpec(hidden=(16, 16), **kw), OBS, ACT)
    return sac._replace(**{name: jax.jit(getattr(sac, name)) for name in (
        "init", "act", "act_mode", "update", "critic_loss", "q_value", "features")})


def _batch(key, n=B):
    k = jax.random.split(key, 4)
    return Transition(jax.random.normal(k[0], (n, OBS)),
                      jax.random.uniform(k[1], (n, ACT), minval=-1, maxval=1),
                      jax.random.normal(k[2], (n,)), jnp.ones(n),
                      jax.random.normal(k[3], (n, OBS)))


def test_tanh_gaussian_log_prob_matches_change_of_variables_in_numpy():
    rng = np.random.default_rng(0)
    u, mean, log_std = (rng.normal(size=(7, 3)) * s for s in (2.0, 1.0, 0.5))
    sigma = np.exp(log_std)
    normal = -0.5 * ((u - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    want = np.sum(normal - np.log(1 - np.tanh(u) ** 2), axis=-1)
    got = tanh_gaussian_log_prob(jnp.asarray(u), jnp.asarray(mean), jnp.asarray(log_std))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_actions_are_bounded_and_the_mode_is_deterministic():
    agent = _agent()
    state = agent.init(jax.random.key(0), HParams.defaults())
    obs = jax.random.normal(jax.random.key(1), (64, OBS)) * 10
    action, logp = agent.act(state, obs, jax.random.key(2))
    assert action.shape == (64, ACT) and logp.shape == (64,)
    assert np.all(np.abs(np.asarray(action)) <= 1)
    np.testing.assert_array_equal(agent.act_mode(state, obs), agent.act_mode(state, obs))


def test_critic_ensemble_members_are_independent_networks():
    agent = _agent(num_critics=3)
    state = agent.init(jax.random.key(0), HParams.defaults())
    kernel = layer_params(state.critic.params)["hidden/0"]["kernel"]
    assert kernel.shape == (3, OBS + ACT, 16)
    assert not np.allclose(kernel[0], kernel[1])
    q = agent.q_value(state, jnp.zeros((4, OBS)), jnp.zeros((4, ACT)))
    assert q.shape == (4,)


def test_update_is_polyak_on_targets_and_lowers_the_td_loss():
    agent = _agent(tau=0.25)
    hp = HParams.defaults(learning_rate=3e-3)
    state = agent.init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    update = jax.jit(agent.update)
    new, info = update(state, batch, hp, jax.random.key(2))
    want = jax.tree.map(lambda t, p: 0.75 * t + 0.25 * p, state.target, new.critic.params)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(new.target)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert set(info) >= {"critic_loss", "actor_loss", "alpha", "entropy", "q_mean"}
    loss0 = float(agent.critic_loss(state, batch, jax.random.key(3)))
    for i in range(100):
        new, _ = update(new, batch, hp, jax.random.key(10 + i))
    assert float(agent.critic_loss(new, batch, jax.random.key(3))) < loss0


def test_temperature_moves_toward_the_target_entropy():
    # A near-deterministic policy (entropy far below -|A|) must raise alpha, never lower it.
    agent = _agent()
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    new, info = agent.update(state, _batch(jax.random.key(1)), hp, jax.random.key(2))
    entropy, target = float(info["entropy"]), -ACT
    moved = float(new.log_alpha) - float(state.log_alpha)
    assert moved != 0 and np.sign(moved) == np.sign(target - entropy)


@pytest.mark.parametrize("kind", ["head", "full"])
def test_resets_reach_actor_every_critic_member_and_the_target(kind):
    agent = _agent(num_critics=2)
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    for i in range(3):
        state, _ = agent.update(state, _batch(jax.random.key(i)), hp, jax.random.key(9 + i))
    reset = make_reset(InterventionSpec(kind), agent, layer_orders(agent, OBS, ACT))
    new = reset(state, _batch(jax.random.key(5)).obs, hp, jax.random.key(42))
    fresh = agent.init(jax.random.key(42), hp)
    out = lambda p: layer_params(p)["out"]["kernel"]  # noqa: E731
    hidden = lambda p: layer_params(p)["hidden/0"]["kernel"]  # noqa: E731
    np.testing.assert_array_equal(out(new.actor.params), out(fresh.actor.params))
    np.testing.assert_array_equal(out(new.critic.params), out(fresh.critic.params))
    np.testing.assert_array_equal(out(new.target), out(new.critic.params))
    if kind == "head":
        np.testing.assert_array_equal(hidden(new.critic.params), hidden(state.critic.params))
        assert float(new.log_alpha) == float(state.log_alpha)
    else:
        np.testing.assert_array_equal(hidden(new.target), hidden(fresh.critic.params))
        assert float(new.log_alpha) == float(fresh.log_alpha)


def test_bad_choices_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid: min, mean"):
        SACSpec(target_agg="median")
    with pytest.raises(ValueError, match="ewc"):
        SACSpec(regularizer="ewc")
    agent = _agent()
    with pytest.raises(ValueError, match="supervised-only"):
        make_reset(InterventionSpec("cbp"), agent, layer_orders(agent, OBS, ACT))


@pytest.mark.parametrize("kind", ["redo", "shrink_perturb", "last_k"])
def test_partial_resets_run_on_actor_and_each_critic_member(kind):
    agent = _agent(num_critics=2)
    hp = HParams.defaults(learning_rate=1e-2, redo_tau=10.0, sp_shrink=0.5, sp_perturb=0.0)
    state = agent.init(jax.random.key(0), hp)
    obs = _batch(jax.random.key(5)).obs
    reset = make_reset(InterventionSpec(kind, last_k=2), agent, layer_orders(agent, OBS, ACT))
    new = jax.jit(reset)(state, obs, hp, jax.random.key(42))
    fresh = agent.init(jax.random.key(42), hp)
    hidden = lambda p: np.asarray(layer_params(p)["hidden/0"]["kernel"])  # noqa: E731
    if kind == "shrink_perturb":  # θ ← 0.5·θ (no noise), on both critic members
        np.testing.assert_allclose(hidden(new.critic.params), 0.5 * hidden(state.critic.params),
                                   rtol=1e-6)
    elif kind == "redo":  # τ = 10: every unit counts as dormant and is re-initialised
        # (the jitted re-init and the eager init are two programs: equal to the last bits)
        np.testing.assert_allclose(hidden(new.critic.params), hidden(fresh.critic.params),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(hidden(new.actor.params), hidden(fresh.actor.params),
                                   rtol=1e-6, atol=1e-7)
    else:  # last 2 layers: hidden/1 and out afresh, hidden/0 kept; targets follow
        np.testing.assert_array_equal(hidden(new.critic.params), hidden(state.critic.params))
        k1 = lambda p: np.asarray(layer_params(p)["hidden/1"]["kernel"])  # noqa: E731
        np.testing.assert_array_equal(k1(new.critic.params), k1(fresh.critic.params))
        np.testing.assert_array_equal(k1(new.target), k1(new.critic.params))
