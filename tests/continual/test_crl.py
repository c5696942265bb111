"""The CRL agent (continual.agents.crl): its critic value matches the logits' diagonal, the
temperature moves toward the entropy target −|A|/2 from either side, the critic learns to pick
each state-action's own goal, the cosine scale is learned, and resets reach φ, ψ and the actor."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents import contrastive
from continual.agents.crl import CRLSpec, layer_orders, make_crl, make_reset
from continual.agents.trajectory import GoalBatch
from continual.interventions import InterventionSpec
from continual.optimizers import HParams
from plasticity.networks import layer_params
from tasks.envs.base import GoalSpace

GOALS = GoalSpace(state_size=4, indices=(0, 1), threshold=0.5)
ACT, B = 2, 32


@functools.lru_cache(maxsize=None)
def _agent(**kw):
    """The CRL record with its functions jitted, shared by the tests of one spec."""
    crl = make_crl(CRLSpec(hidden=(32, 32), repr_dim=8, **kw), GOALS, ACT)
    return crl._replace(**{name: jax.jit(getattr(crl, name)) for name in (
        "init", "act", "act_mode", "update", "critic_logits", "features")})


def _batch(key, n=B):
    k = jax.random.split(key, 2)
    state = jax.random.normal(k[0], (n, GOALS.state_size))
    goal = state[:, :2] + 0.1 * jax.random.normal(k[1], (n, 2))  # goals near their states
    action = jnp.tanh(state[:, 2:])
    return GoalBatch(jnp.concatenate([state, goal], axis=-1), action, goal)


@pytest.mark.parametrize("energy", list(contrastive.ENERGIES))
def test_pair_energy_is_the_diagonal_of_the_logits(energy):
    rng = np.random.default_rng(0)
    phi, psi = rng.normal(size=(2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(contrastive.pair_energy(energy, phi, psi, 3.0),
                               np.diagonal(contrastive.logits(energy, phi, psi, 3.0)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("deterministic", [False, True])
def test_temperature_moves_toward_half_the_negative_action_size(deterministic):
    """α falls while the policy's entropy is above −|A|/2 and rises once it is below: the
    actor's output set to mean 0 and log σ = 0 (near the widest tanh-Gaussian, entropy ≈ 0.4
    per dimension) or log σ = −5 (near-deterministic)."""
    agent = _agent()
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    params = state.actor.params
    out = params["out"]
    out["kernel"].value = jnp.zeros_like(out["kernel"].value)
    raw_std = -50.0 if deterministic else float(np.arctanh(5.0 / 3.5 - 1.0))  # log σ = 0
    out["bias"].value = jnp.zeros_like(out["bias"].value).at[ACT:].set(raw_std)
    state = state._replace(actor=state.actor._replace(params=params))
    new, info = agent.update(state, _batch(jax.random.key(1)), hp, jax.random.key(2))
    entropy, target = float(info["entropy"]), -0.5 * ACT
    assert (entropy < target) == deterministic
    moved = float(new.log_alpha) - float(state.log_alpha)
    assert moved != 0 and np.sign(moved) == np.sign(target - entropy)


def test_update_reports_the_critic_loss_of_its_logits_and_learns_to_pick_goals():
    agent = _agent()
    hp = HParams.defaults(learning_rate=3e-3)
    state = agent.init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    new, info = agent.update(state, batch, hp, jax.random.key(2))
    want, stats = contrastive.contrastive_loss(agent.critic_logits(state, batch), "fwd")
    np.testing.assert_allclose(float(info["critic_loss"]), float(want), rtol=1e-5)
    assert set(info) >= {"critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy",
                         "categorical_accuracy", "logits_pos", "logits_neg", "logsumexp"}
    assert "logit_scale" not in info  # the norm energy has no scale
    for i in range(150):
        new, info = agent.update(new, batch, hp, jax.random.key(10 + i))
    assert float(info["categorical_accuracy"]) > 0.5 > float(stats["categorical_accuracy"])


def test_the_actor_sees_the_critic_fixed():
    """φ and ψ move by the critic's own (deterministic) step only: two updates whose actor
    samples differ leave them identical, which the actor's gradient reaching them would not."""
    agent = _agent()
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    new, _ = agent.update(state, batch, hp, jax.random.key(2))
    other, _ = agent.update(state, batch, hp, jax.random.key(3))  # another actor sample
    for a, b in zip(jax.tree.leaves((new.phi.params, new.psi.params)),
                    jax.tree.leaves((other.phi.params, other.psi.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(layer_params(new.actor.params)["out"]["kernel"],
                           layer_params(other.actor.params)["out"]["kernel"])


def test_the_cosine_scale_is_learned_from_its_initial_value():
    agent = _agent(energy="cosine")
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    new, info = agent.update(state, _batch(jax.random.key(1)), hp, jax.random.key(2))
    assert float(jnp.exp(state.log_scale)) == pytest.approx(1 / 0.07, rel=1e-5)
    assert float(info["logit_scale"]) != pytest.approx(1 / 0.07, rel=1e-4)


@pytest.mark.parametrize("kind", ["head", "full"])
def test_resets_reach_the_actor_phi_and_psi(kind):
    agent = _agent()
    hp = HParams.defaults(learning_rate=1e-2)
    state = agent.init(jax.random.key(0), hp)
    for i in range(3):
        state, _ = agent.update(state, _batch(jax.random.key(i)), hp, jax.random.key(9 + i))
    reset = make_reset(InterventionSpec(kind), agent, layer_orders(agent))
    new = reset(state, _batch(jax.random.key(5)).obs, hp, jax.random.key(42))
    fresh = agent.init(jax.random.key(42), hp)
    for name in ("actor", "phi", "psi"):
        layers = lambda s: layer_params(getattr(s, name).params)  # noqa: E731
        np.testing.assert_array_equal(layers(new)["out"]["kernel"],
                                      layers(fresh)["out"]["kernel"])
        kept = layers(state) if kind == "head" else layers(fresh)
        np.testing.assert_array_equal(layers(new)["hidden/0"]["kernel"],
                                      kept["hidden/0"]["kernel"])
    assert float(new.log_alpha) == float((state if kind == "head" else fresh).log_alpha)


def test_bad_choices_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid: norm, l2, dot, cosine"):
        CRLSpec(energy="euclid")
    with pytest.raises(ValueError, match="valid: fwd, bwd, sym, binary_nce"):
        CRLSpec(loss="nce")
    with pytest.raises(ValueError, match="supervised-only"):
        make_reset(InterventionSpec("cbp"), _agent(), layer_orders(_agent()))


@pytest.mark.slow  # depth 64 (stacked layers also: test_stacked.py)
def test_depth_64_residual_crl_trains_one_step_and_resets_a_stacked_layer():
    """Wang et al.'s architecture at depth 64 (16 blocks × 4 Dense, width 64, Swish): one update
    compiles and runs (the blocks are one scan, so this costs what depth 4 does), and ReDo
    reaches the stacked block layers of φ, ψ and the actor (head and last_k resets of a stacked
    layer: tests/plasticity/test_stacked.py)."""
    crl = make_crl(CRLSpec(network="resmlp", hidden=(64,), blocks=16, repr_dim=8), GOALS, ACT)
    hp = HParams.defaults(learning_rate=1e-3, redo_tau=10.0)
    state = jax.jit(crl.init)(jax.random.key(0), hp)
    new, info = jax.jit(crl.update)(state, _batch(jax.random.key(1)), hp, jax.random.key(2))
    assert all(np.isfinite(float(info[k])) for k in ("critic_loss", "actor_loss"))
    orders = layer_orders(crl)
    assert orders["phi"][-2:] == ["blocks/15/3", "out"] and len(orders["phi"]) == 66
    obs = _batch(jax.random.key(3)).obs
    # τ = 10: every unit is dormant, so ReDo re-initialises every layer's incoming weights.
    reset = jax.jit(make_reset(InterventionSpec("redo"), crl, orders))
    out = reset(new, obs, hp, jax.random.key(4))
    for name in ("actor", "phi", "psi"):
        for layer in ("blocks/0/0", "blocks/15/3"):
            before, after = (layer_params(getattr(s, name).params)[layer]["kernel"]
                             for s in (new, out))
            assert not np.allclose(before, after), (name, layer)
