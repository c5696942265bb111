"""The Dreamer agent's correctness traps (REFERENCE.md §11, navix's seven bugs), each a named test
on a tiny world model: the step that sees o_t consumes a_{t−1}; is_first masks history and the
loop restarts the policy carry at the real first observation; continue targets are termination
only; imagined actions are scored at their own state with the cumulative discount (against an
independent numpy reference); zero-initialised heads; the slow critic moves per gradient step;
the model loss falls on a fixed batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents import Agent, Memory, RLSpec, make_rl_train
from continual.agents import dreamer_ops as ops
from continual.agents.dreamer import DreamerSpec, Imagined, make_dreamer
from continual.agents.sequence import Chunk
from continual.agents.world_model import Latent, ObsLayout, WorldModelSpec, model_loss
from continual.optimizers import HParams
from plasticity.networks import layer_params
from toy_rl import reach_sequence

B, T, OBS, ACT = 3, 6, 5, 4
SMALL = WorldModelSpec(deter=16, stoch=4, classes=3, units=16, layers=1, bins=15)


@pytest.fixture(scope="module")
def dreamer():
    return make_dreamer(DreamerSpec(model=SMALL, discrete=True, horizon=4),
                        ObsLayout(OBS), ACT)


@pytest.fixture(scope="module")
def state(dreamer):
    return dreamer.init(jax.random.key(0), HParams.defaults())


def chunk(key, is_first=None, last=None, cont=None, action=None) -> Chunk:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs = jax.random.normal(k1, (B, T, OBS))
    if action is None:
        action = jax.nn.one_hot(jax.random.randint(k2, (B, T), 0, ACT), ACT)
    first = jnp.zeros((B, T), bool).at[:, 0].set(True) if is_first is None else is_first
    return Chunk(obs, action, jax.random.normal(k3, (B, T)),
                 jnp.ones((B, T)) if cont is None else cont,
                 jax.random.normal(k4, (B, T, OBS)), first,
                 jnp.zeros((B, T), bool) if last is None else last,
                 jnp.zeros(B, jnp.int32), jnp.zeros(B, jnp.int32))


def test_the_step_that_sees_o_t_consumes_the_previous_action(dreamer, state):
    data = chunk(jax.random.key(1))
    changed = data._replace(action=data.action.at[:, 3].set(jnp.roll(data.action[:, 3], 1, -1)))
    observe = jax.jit(dreamer.world_model.observe)
    a = observe(state.model.params, data, jax.random.key(2))
    b = observe(state.model.params, changed, jax.random.key(2))
    # a_3 is taken at o_3: the posterior of o_3 cannot know it; that of o_4 must.
    np.testing.assert_allclose(a.post_probs[:, :4], b.post_probs[:, :4], rtol=1e-6)
    assert not np.allclose(a.post.h[:, 4], b.post.h[:, 4])
    # The successor state s'_t (reward and continue are predicted there) reads a_t.
    assert not np.allclose(a.succ.h[:, 3], b.succ.h[:, 3])


def test_is_first_forgets_everything_before_it(dreamer, state):
    first = jnp.zeros((B, T), bool).at[:, 0].set(True).at[:, 3].set(True)
    a = chunk(jax.random.key(1), is_first=first)
    b = chunk(jax.random.key(5), is_first=first)
    b = b._replace(obs=b.obs.at[:, 3:].set(a.obs[:, 3:]))  # other history, same obs from row 3
    observe = jax.jit(dreamer.world_model.observe)
    out_a = observe(state.model.params, a, jax.random.key(2))
    out_b = observe(state.model.params, b, jax.random.key(2))
    np.testing.assert_allclose(out_a.post_probs[:, 3], out_b.post_probs[:, 3], rtol=1e-5)
    np.testing.assert_allclose(out_a.post.h[:, 3], out_b.post.h[:, 3], rtol=1e-5)
    assert not np.allclose(out_a.post.h[:, 2], out_b.post.h[:, 2])


def test_the_loop_restarts_the_policy_carry_at_an_episodes_first_observation():
    """An agent whose carry counts steps since the episode began reports it as its act_info;
    with a time limit of 3 the stored counts must run 0, 1, 2, 0, 1, 2, ..."""
    seq = reach_sequence([0.5])
    steps, envs = 9, 2

    def act(state, carry, obs, key):
        return jnp.zeros((obs.shape[0], 1)), carry, carry + 1

    def store(mem, step, key, index):
        return mem.at[index].set(step.act_info)

    memory = Memory(lambda: jnp.full((steps, envs), -1), store,
                    sample=lambda m, key: Chunk(*(jnp.zeros(1),) * 9),
                    ready=lambda m: jnp.zeros((), bool), clear=lambda m: m,
                    probe=lambda m, key, n: (jnp.zeros((n, 2)), jnp.zeros((), bool)))
    agent = Agent(init=lambda key, hp: jnp.zeros(()), act=act,
                  act_mode=lambda s, c, o: (jnp.zeros((o.shape[0], 1)), c),
                  update=lambda s, b, hp, k: (s, {"loss": jnp.zeros(())}), memory=memory,
                  evaluate=lambda s, o, a: {}, measure=lambda s, m, r, k: {},
                  features=lambda s, o: {}, params=lambda s: s, loss_keys=("loss",),
                  carry_init=lambda n: jnp.zeros(n, jnp.int32))
    train = make_rl_train(RLSpec(num_envs=envs, steps_per_task=steps, log_every=steps,
                                 episode_length=3, eval_envs=1, eval_length=2,
                                 probe_examples=2), agent, seq)
    carry, _ = train.init(jax.random.key(0), HParams.defaults(), (), seq.params)
    from continual.loop import schedule_entry
    from tasks.schedule import parse
    entry = schedule_entry(parse("sequential", 1, 1), 0)
    carry, _ = jax.jit(train.run_interval)(carry, entry, HParams.defaults(), (), seq.params)
    np.testing.assert_array_equal(np.asarray(carry.memory)[:, 0], [0, 1, 2] * 3)


def test_continue_targets_are_termination_only(dreamer, state):
    """The continue loss reads ``cont`` (0 only on termination), never ``last``: a time-limit
    truncation (last, cont = 1) is trained as a continuation."""
    last = jnp.zeros((B, T), bool).at[:, 2].set(True)
    truncated = chunk(jax.random.key(1), last=last)
    terminated = truncated._replace(cont=truncated.cont.at[:, 2].set(0.0))
    running = truncated._replace(last=jnp.zeros((B, T), bool))
    observe = jax.jit(dreamer.world_model.observe)
    loss = {name: observe(state.model.params, c, jax.random.key(2)).losses["cont"]
            for name, c in (("truncated", truncated), ("terminated", terminated),
                            ("running", running))}
    np.testing.assert_allclose(loss["truncated"], loss["running"], rtol=1e-6)
    # An untrained continue head says 1/2 everywhere: either target costs log 2.
    np.testing.assert_allclose(loss["terminated"], np.log(2.0), rtol=1e-5)


def test_heads_start_at_zero_and_the_actor_near_uniform(dreamer, state):
    feat = jax.random.normal(jax.random.key(3), (7, SMALL.feat_size)) * 3
    wm = dreamer.world_model
    np.testing.assert_allclose(wm.reward(state.model.params, feat), 0.0, atol=1e-6)
    np.testing.assert_allclose(wm.cont(state.model.params, feat), 0.5, atol=1e-6)
    from continual.agents.world_model import apply_rows
    bins = ops.symlog_bins(SMALL.bins)
    value = ops.twohot_mean(apply_rows(dreamer.networks["critic"], state.task.critic.params,
                                       feat)[0], bins)
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
    logits = apply_rows(dreamer.networks["actor"], state.task.actor.params, feat)[0]
    assert float(jnp.max(jnp.abs(logits))) < 0.1   # output layer at 1 % scale


def _numpy_actor_loss(logits, actions, reward, cont, value, spec, scale):
    """REINFORCE with the cumulative discount, written out step by step in numpy."""
    h, n = reward.shape
    returns = np.zeros((h, n))
    nxt = value[h]
    for k in reversed(range(h)):
        nxt = reward[k] + spec.discount * cont[k] * ((1 - spec.lam) * value[k + 1]
                                                     + spec.lam * nxt)
        returns[k] = nxt
    total = 0.0
    for k in range(h):
        # w_k: probability (discounted) that the imagined episode still runs at s_k.
        weight = np.prod([spec.discount * cont[j] for j in range(k)], axis=0) if k else 1.0
        z = np.exp(logits[k] - logits[k].max(-1, keepdims=True))
        probs = 0.99 * z / z.sum(-1, keepdims=True) + 0.01 / logits.shape[-1]
        logp = np.log((probs * actions[k]).sum(-1))       # π(a_k | s_k): the state it came from
        entropy = -(probs * np.log(probs)).sum(-1)
        advantage = (returns[k] - value[k]) / scale
        total += np.mean(weight * (logp * advantage + spec.entropy * entropy))
    return -total / h, returns


def test_imagined_actions_are_scored_at_their_state_with_the_cumulative_discount(dreamer, state):
    h, n = 4, 5
    keys = jax.random.split(jax.random.key(7), 5)
    feat = jax.random.normal(keys[0], (h + 1, n, SMALL.feat_size))
    action = jax.nn.one_hot(jax.random.randint(keys[1], (h, n), 0, ACT), ACT)
    reward = jax.random.normal(keys[2], (h, n))
    cont = jax.random.uniform(keys[3], (h, n), minval=0.3, maxval=1.0)
    traj = Imagined(feat, action, reward, cont)
    # A critic with non-zero values, so advantages are not just returns.
    task = state.task
    actor_params = jax.tree.map(lambda x: x * 50.0, task.actor.params)
    critic_params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(keys[4], x.shape),
                                 task.critic.params)
    ac = task._replace(actor=task.actor._replace(params=actor_params),
                       critic=task.critic._replace(params=critic_params))
    actor_loss, _, scale, _ = dreamer.actor_critic_loss(ac, traj, reward)
    loss, _ = actor_loss(actor_params)

    from continual.agents.world_model import apply_rows
    bins = ops.symlog_bins(SMALL.bins)
    value = np.asarray(ops.twohot_mean(apply_rows(dreamer.networks["critic"], critic_params,
                                                  feat)[0], bins))
    logits = np.asarray(apply_rows(dreamer.networks["actor"], actor_params, feat[:-1])[0])
    expected, returns = _numpy_actor_loss(logits, np.asarray(action), np.asarray(reward),
                                          np.asarray(cont), value, dreamer.spec,
                                          float(scale.scale()))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-7)
    # The scale's EMA moved by 1 % toward the returns' percentiles.
    np.testing.assert_allclose(float(scale.high), 0.01 * np.percentile(returns, 95), rtol=1e-4)


def test_the_slow_critic_moves_per_gradient_step(dreamer, state):
    data = chunk(jax.random.key(1))
    update = jax.jit(dreamer.update)
    new, _ = update(state, data, HParams.defaults(), jax.random.key(4))
    rate = dreamer.spec.slow_rate
    expected = jax.tree.map(lambda s, c: (1 - rate) * s + rate * c, state.task.slow_critic,
                            new.task.critic.params)
    for a, b in zip(jax.tree.leaves(new.task.slow_critic), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(new.task.critic.params),
                                                     jax.tree.leaves(state.task.critic.params)))
    newer, _ = update(new, data, HParams.defaults(), jax.random.key(5))
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
             for a, b in zip(jax.tree.leaves(newer.task.slow_critic),
                             jax.tree.leaves(new.task.slow_critic))]
    assert max(moved) > 0   # every step, not every N


def test_the_model_loss_falls_on_a_fixed_batch(dreamer, state):
    data = chunk(jax.random.key(1))
    update = jax.jit(dreamer.update)
    hp = HParams.defaults()._replace(learning_rate=jnp.asarray(1e-3))
    first = None
    for i in range(40):
        state, info = update(state, data, hp, jax.random.key(i))
        first = float(info["model_loss"]) if first is None else first
    # (The batch's rewards and next observations are noise: part of the loss is irreducible.)
    assert float(info["model_loss"]) < 0.75 * first
    assert np.isfinite(float(info["actor_loss"])) and np.isfinite(float(info["critic_loss"]))


@pytest.mark.slow  # a second (continuous) Dreamer compiled
def test_continuous_actions_are_bounded_and_plan2explore_rewards_disagreement():
    d = make_dreamer(DreamerSpec(model=SMALL, discrete=False, horizon=2, plan2explore=True,
                                 ensemble=2), ObsLayout(OBS), 2)
    state = d.init(jax.random.key(0), HParams.defaults())
    carry = d.carry_init(4)
    obs = 10 * jax.random.normal(jax.random.key(1), (4, OBS))
    action, _, carry = d.act(state, carry, obs, jax.random.key(2))
    assert action.shape == (4, 2) and float(jnp.max(jnp.abs(action))) <= 1.0
    assert isinstance(carry[0], Latent)
    data = chunk(jax.random.key(1), action=jax.random.uniform(jax.random.key(3), (B, T, 2)))
    new, info = jax.jit(d.update)(state, data, HParams.defaults(), jax.random.key(4))
    # Independent ensemble members disagree: a positive intrinsic reward.
    assert float(info["intrinsic_reward"]) > 0 and np.isfinite(float(info["ensemble_loss"]))
    assert not np.allclose(jax.tree.leaves(new.explore.actor.params)[0],
                           jax.tree.leaves(state.explore.actor.params)[0])


def test_world_model_loss_terms_have_dreamers_scales(dreamer, state):
    data = chunk(jax.random.key(1))
    total, (_, terms) = model_loss(dreamer.world_model, state.model.params, data,
                                   jax.random.key(2))
    m = dreamer.spec.model
    expected = (terms["recon"] + terms["reward"] + terms["cont"] + m.kl_dyn * terms["dyn"]
                + m.kl_rep * terms["rep"])
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)
    assert float(terms["dyn"]) >= m.free_nats and float(terms["rep"]) >= m.free_nats


def test_resets_reach_the_world_model_actor_and_critic(dreamer, state):
    from continual.agents.dreamer import layer_orders, make_reset
    from continual.interventions import InterventionSpec
    orders = layer_orders(dreamer)
    obs = jax.random.normal(jax.random.key(3), (8, OBS))
    hp = HParams.defaults()
    leaves = lambda tree: jax.tree.leaves(tree)  # noqa: E731
    changed = lambda a, b: not all(np.allclose(x, y) for x, y in zip(leaves(a), leaves(b)))  # noqa: E731

    full = jax.jit(make_reset(InterventionSpec("full"), dreamer, orders))(
        state, obs, hp, jax.random.key(9))
    assert changed(full.model.params, state.model.params)
    assert changed(full.task.actor.params, state.task.actor.params)
    np.testing.assert_array_equal(leaves(full.task.slow_critic)[0],
                                  leaves(full.task.critic.params)[0])
    head = jax.jit(make_reset(InterventionSpec("head"), dreamer, orders))(
        state, obs, hp, jax.random.key(9))
    assert not changed(head.model.params, state.model.params)   # heads of the actor-critic
    out = lambda s: layer_params(s.task.actor.params)["out"]["kernel"]  # noqa: E731
    assert not np.allclose(out(head), out(state))
    hidden = lambda s: layer_params(s.task.actor.params)["hidden/0"]["kernel"]  # noqa: E731
    np.testing.assert_array_equal(hidden(head), hidden(state))
    # ReDo with τ = 1 recycles (nearly) every unit of every world-model MLP, the GRU untouched.
    redo = jax.jit(make_reset(InterventionSpec("redo"), dreamer, orders))(
        state, obs, hp._replace(redo_tau=jnp.asarray(1.0)), jax.random.key(9))
    before, after = layer_params(state.model.params), layer_params(redo.model.params)
    np.testing.assert_array_equal(before["gru"]["kernel"], after["gru"]["kernel"])
    assert not np.allclose(before["encoder/hidden/0"]["kernel"],
                           after["encoder/hidden/0"]["kernel"])
    with pytest.raises(ValueError, match="supervised-only"):
        make_reset(InterventionSpec("cbp"), dreamer, orders)
