"""Discrete CRL (continual.agents.crl with ``discrete=True``): policy-free, its action values are
the critic of every one-hot action, ``act_mode`` their argmax, ``act`` ε-greedy on DQN's
schedule; the contrastive loss is the continuous agent's on one-hot actions; φ and ψ are its
only networks; and the CRL kind runs it on Lights Out end to end (``lightsout-crl``)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents import contrastive
from continual.agents.crl import CRLSpec, layer_orders, make_crl, make_crl_agent, make_reset
from continual.agents.exploration import epsilon_schedule
from continual.agents.trajectory import GoalBatch
from continual.interventions import InterventionSpec
from continual.optimizers import HParams
from experiments.config import ConfigError
from experiments.registry import from_preset
from plasticity.networks import layer_params
from tasks.envs.base import GoalSpace

GOALS = GoalSpace(state_size=4, indices=(0, 1), threshold=0.5)
A, B = 3, 16
SPEC = dict(hidden=(16,), repr_dim=4, epsilon_start=1.0, epsilon_end=0.1, epsilon_decay=4)


@pytest.fixture(scope="module")
def agents():
    """The discrete agent (jitted), the continuous one of the same critic, a state and a
    batch of one-hot actions."""
    crl = make_crl(CRLSpec(discrete=True, **SPEC), GOALS, A)
    jitted = crl._replace(**{n: jax.jit(getattr(crl, n)) for n in (
        "init", "act", "act_mode", "update", "critic_logits", "action_values", "features")})
    hp = HParams.defaults(learning_rate=1e-2)
    state = jitted.init(jax.random.key(0), hp)
    k = jax.random.split(jax.random.key(1), 3)
    obs = jax.random.normal(k[0], (B, GOALS.state_size + GOALS.goal_size))
    action = jax.nn.one_hot(jax.random.randint(k[1], (B,), 0, A), A)
    batch = GoalBatch(obs, action, obs[:, GOALS.state_size:])
    continuous = make_crl(CRLSpec(**SPEC), GOALS, A)
    return jitted, continuous, state, batch, hp


def test_action_values_are_the_critic_of_each_one_hot_action(agents):
    crl, _, state, batch, _ = agents
    values = np.asarray(crl.action_values(state, batch.obs))
    s = GOALS.state_size
    psi = crl.networks["psi"].apply(state.psi.params, batch.obs[:, s:])[0]
    for a in range(A):   # f(s, a, g) by hand, one action at a time
        onehot = jnp.broadcast_to(jax.nn.one_hot(a, A), (B, A))
        phi = crl.networks["phi"].apply(state.phi.params,
                                        jnp.concatenate([batch.obs[:, :s], onehot], -1))[0]
        want = contrastive.pair_energy("norm", phi, psi, jnp.exp(state.log_scale))
        np.testing.assert_allclose(values[:, a], np.asarray(want), rtol=1e-5, atol=1e-6)
    greedy = np.asarray(crl.act_mode(state, batch.obs))
    np.testing.assert_array_equal(greedy, np.eye(A)[values.argmax(-1)])


def test_epsilon_is_one_until_updates_start_then_decays_linearly(agents):
    crl, _, state, batch, hp = agents
    np.testing.assert_allclose([float(crl.epsilon(jnp.asarray(u))) for u in range(6)],
                               [1.0, 0.775, 0.55, 0.325, 0.1, 0.1], rtol=1e-6)
    assert float(epsilon_schedule(jnp.asarray(7), 1.0, 0.3, 0)) == pytest.approx(0.3)
    # Before any update: ε = 1, every action uniform (log-probability log 1/A).
    actions, logp = crl.act(state, jnp.tile(batch.obs, (64, 1)), jax.random.key(3))
    np.testing.assert_allclose(np.asarray(logp), np.log(1 / A), rtol=1e-6)
    assert set(np.asarray(actions).argmax(-1)) == set(range(A))
    # After the decay: ε = 0.1, the greedy action w.p. 1 − ε + ε/A.
    late = state._replace(step=jnp.asarray(100, jnp.int32))
    obs = jnp.tile(batch.obs[:1], (2000, 1))
    actions, logp = crl.act(late, obs, jax.random.key(4))
    greedy = np.asarray(crl.act_mode(late, obs)).argmax(-1)
    hit = np.asarray(actions).argmax(-1) == greedy
    assert abs(hit.mean() - (0.9 + 0.1 / A)) < 0.03
    np.testing.assert_allclose(np.asarray(logp),
                               np.where(hit, np.log(0.9 + 0.1 / A), np.log(0.1 / A)), rtol=1e-5)


def test_the_loss_is_the_continuous_agents_on_one_hot_actions(agents):
    crl, continuous, state, batch, hp = agents
    other = jax.jit(continuous.init)(jax.random.key(0), hp)   # the same φ, ψ at the same key
    for a, b in zip(jax.tree.leaves((state.phi.params, state.psi.params)),
                    jax.tree.leaves((other.phi.params, other.psi.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    new, info = crl.update(state, batch, hp, jax.random.key(5))
    _, theirs = jax.jit(continuous.update)(other, batch, hp, jax.random.key(5))
    np.testing.assert_allclose(float(info["critic_loss"]), float(theirs["critic_loss"]),
                               rtol=1e-6)
    want, _ = contrastive.contrastive_loss(crl.critic_logits(state, batch), "fwd")
    np.testing.assert_allclose(float(info["critic_loss"]), float(want), rtol=1e-5)
    assert "actor_loss" not in info and float(info["epsilon"]) == 1.0
    assert int(new.step) == 1 and float(crl.update(new, batch, hp, jax.random.key(6))[1][
        "epsilon"]) == pytest.approx(0.775)


def test_phi_and_psi_are_the_only_networks_and_resets_reach_them(agents):
    crl, _, state, batch, hp = agents
    assert set(crl.networks) == set(layer_orders(crl)) == {"phi", "psi"}
    assert state.actor == () and state.log_alpha == ()
    agent = make_crl_agent(crl, memory=None)
    assert agent.loss_keys == ("critic_loss",)
    assert set(agent.features(state, batch.obs)) == {"phi", "psi"}
    assert len(agent.params(state)) == 2
    reset = make_reset(InterventionSpec("head"), crl, layer_orders(crl))
    new = reset(state, batch.obs, hp, jax.random.key(42))
    fresh = crl.init(jax.random.key(42), hp)
    for name in ("phi", "psi"):
        np.testing.assert_array_equal(layer_params(getattr(new, name).params)["out"]["kernel"],
                                      layer_params(getattr(fresh, name).params)["out"]["kernel"])


def test_lightsout_crl_preset_matches_dqn_and_names_bad_settings():
    crl, dqn = from_preset("lightsout-crl"), from_preset("lightsout-dqn")
    for name in ("env", "lights_tasks", "schedule", "episode_length", "num_envs",
                 "env_steps_per_task", "updates_per_step", "batch_size", "learning_rate",
                 "replay_capacity", "min_replay", "discount", "epsilon_start", "epsilon_end",
                 "epsilon_decay_steps", "hidden", "activation", "seeds"):
        assert getattr(crl, name) == getattr(dqn, name), name
    assert crl.epsilon_decay_updates == dqn.epsilon_decay_updates
    with pytest.raises(ConfigError, match="epsilon_end: ε-greedy exploration is the discrete"):
        from_preset("maze-quick", epsilon_end=0.2)
    with pytest.raises(ConfigError, match=r"epsilon_start must lie in \[0, 1\]"):
        from_preset("lightsout-crl", epsilon_start=1.5)
    with pytest.raises(ConfigError, match="crl needs a goal-conditioned env"):
        from_preset("lightsout-crl", env="grid")


def test_lightsout_crl_runs_end_to_end_with_a_finite_critic_loss():
    from experiments import experiment, registry
    cfg = from_preset("lightsout-crl", num_envs=4, episode_length=6, eval_length=6,
                      env_steps_per_task=192, log_every=96, min_replay=32, batch_size=16,
                      replay_capacity=192, hidden=(16,), repr_dim=8, eval_envs=4,
                      probe_examples=16, seeds=1, epsilon_decay_steps=96, mode="sweep",
                      metrics="dormant")
    table, summary, _ = experiment.run(registry.build(cfg), progress=False)
    loss = table.loc[table["metric"] == "critic_loss", "value"].to_numpy()
    assert loss.size and np.isfinite(loss).all()
    eps = table.loc[table["metric"] == "epsilon", "value"].to_numpy()
    assert eps.size and (eps <= 1).all() and eps.min() < 1
    assert {"eval_success", "categorical_accuracy"} <= set(table["metric"])
    assert "actor_loss" not in set(table["metric"])
    layers = {str(v).split("/")[0] for v in table["layer"].dropna().unique()}
    assert {"phi", "psi"} <= layers and "actor" not in layers
