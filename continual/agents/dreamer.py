"""A DreamerV3-style agent (Hafner et al. 2023; REFERENCE.md §11) with Continual-Dreamer's
options (Kessler et al. 2023: selective sequence replay, Plan2Explore) as a
:class:`continual.agents.Agent`: the world model (:mod:`continual.agents.world_model`) learns
from replayed chunks (:mod:`continual.agents.sequence`), the actor and critic learn in its
imagination, and everything runs inside the RL loop's compiled program.

**Acting.** The policy carry is the model state and the previous action. At each env step the
posterior sees ``o_t`` after consuming ``a_{t−1}``; the actor samples ``a_t`` from ``feat(s_t)``.
The loop restarts the carry where an episode ends, so an episode's first observation starts
from zeros (``is_first``, navix's bug (2)).

**One update** on a batch of chunks:

1. the world model's loss (:func:`~continual.agents.world_model.model_loss`) and one optimizer
   step;
2. imagination from every posterior state of the batch (held fixed): ``horizon`` prior steps
   with actions sampled from the actor; rewards and continues are the heads' predictions at the
   states reached, values the critic's; λ-returns ``R_k``
   (:func:`~continual.agents.dreamer_ops.lambda_return`);
3. the actor: REINFORCE, for discrete and continuous actions alike (DreamerV3):
   ``−w_k [log π(a_k | s_k) · sg((R_k − v(s_k)) / S) + η H[π(·|s_k)]]``, each imagined action
   scored under the policy at the state it was taken from, ``S = max(1, P95 − P5)`` of the
   returns (:class:`~continual.agents.dreamer_ops.ReturnScale`), and the weight ``w_k = Π_{j<k}
   γ ĉ_{j+1}`` the discounted probability that the imagined episode is still running at
   ``s_k`` (``w_0 = 1``: imagination starts from real, non-terminal states) (navix's bug (4));
4. the critic: two-hot cross-entropy toward ``sg(R_k)`` plus ``slow_reg`` times that toward the
   slow critic's prediction, with the same weights; the slow critic then moves toward the
   critic by ``slow_rate`` (an EMA per gradient step: bug (6)).

Discrete actions: a categorical over ``|A|`` one-hot actions with 1 % uniform mix. Continuous: a
Gaussian with mean ``tanh(μ)`` and std in ``[0.1, 1]`` (DreamerV3's bounded normal), its sample
clipped to ``[−1, 1]`` for the env. The actor's output layer starts at 1 % of its initial scale,
the critic's at zero (bug (5)).

**Plan2Explore** (Sekar et al. 2020; Continual-Dreamer's ``dreamerv2/expl.py``), with
``plan2explore``: an ensemble of ``ensemble`` MLPs learns to predict the next stochastic latent
``z_{t+1}`` from ``[feat(s_t), a_t]``; their disagreement (the standard deviation over members,
averaged over dimensions, unnormalised) is an intrinsic reward. A second actor-critic, the
*exploration* policy, learns in imagination on ``intrinsic_weight · intrinsic +
extrinsic_weight · reward`` and collects the data; the *task* policy learns on the reward alone
and is the one evaluated (Continual-Dreamer's separate exploration and evaluation policies).

Simplifications, stated: one optimizer family for all parts (plax's ``optimizer`` under its
``regularizer``, at the run's learning rate — navix's three Adams rather than DreamerV3's LaProp),
global-norm gradient clipping at 100, no ``repval`` critic loss on replayed returns, zeros as
the initial model state (DreamerV3 learns one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.agents import dreamer_ops as ops
from continual.agents.base import Agent, Memory
from continual.agents.optim import net_optimizer
from continual.agents.sequence import Chunk, as_float, task_composition
from continual.agents.world_model import (Latent, ObsLayout, WorldModel, WorldModelSpec,
                                          apply_rows, make_world_model, model_loss,
                                          zero_output)
from continual.classifier import TrainState
from continual.optimizers import HParams
from plasticity.networks import layer_order, layer_params, make_network, replace_layers

MIN_STD, MAX_STD = 0.1, 1.0
GRAD_CLIP = 100.0


@dataclass(frozen=True)
class DreamerSpec:
    """Static Dreamer choices (changing one recompiles)."""

    model: WorldModelSpec = field(default_factory=WorldModelSpec)
    discrete: bool = True
    horizon: int = 15
    discount: float = 1.0 - 1.0 / 333
    lam: float = 0.95
    entropy: float = 3e-4
    actor_unimix: float = 0.01
    slow_rate: float = 0.02
    slow_reg: float = 1.0
    optimizer: str = "adam"
    regularizer: str = "none"
    plan2explore: bool = False
    ensemble: int = 5
    intrinsic_weight: float = 0.9
    extrinsic_weight: float = 0.9

    def __post_init__(self):
        if self.horizon < 1 or not 0 < self.discount <= 1 or not 0 <= self.lam <= 1:
            raise ValueError("need horizon >= 1, discount in (0, 1] and lam in [0, 1]")
        if not 0 < self.slow_rate <= 1 or self.entropy < 0 or self.ensemble < 2:
            raise ValueError("need slow_rate in (0, 1], entropy >= 0 and ensemble >= 2")


class ActorCritic(NamedTuple):
    actor: TrainState
    critic: TrainState
    slow_critic: Any        # the critic's slow copy (parameters only)
    scale: ops.ReturnScale


class DreamerState(NamedTuple):
    model: TrainState
    task: ActorCritic
    explore: Any            # ActorCritic with Plan2Explore, else ()
    ensemble: Any           # TrainState of the stacked ensemble with Plan2Explore, else ()
    step: jax.Array


class Imagined(NamedTuple):
    """An imagined trajectory from ``N`` start states: ``feat [H + 1, N, F]``, ``action [H, N,
    A]`` (``a_k`` taken at ``s_k``), ``reward``/``cont [H, N]`` (on reaching ``s_{k+1}``)."""

    feat: jax.Array
    action: jax.Array
    reward: jax.Array
    cont: jax.Array


class Dreamer(NamedTuple):
    spec: DreamerSpec
    world_model: WorldModel
    init: Callable
    act: Callable            # (state, carry, obs, key) -> (action, (), carry)
    act_mode: Callable       # (state, carry, obs) -> (action, carry)
    carry_init: Callable     # (n) -> carry
    update: Callable         # (state, chunk, hparams, key) -> (state, info)
    imagine: Callable        # (model params, actor params, start Latent, key) -> Imagined
    actor_critic_loss: Callable
    features: Callable       # (state, obs) -> {network: (train state, features)}
    probe_feat: Callable     # (state, obs) -> feat of the obs seen as first steps
    ac_features: Callable    # (ActorCritic, feat) -> {"actor": features, "critic": features}
    networks: dict           # name -> Network (actor, critic, ensemble member)
    input_sizes: dict


def make_dreamer(spec: DreamerSpec, layout: ObsLayout, action_size: int) -> Dreamer:
    """The agent for observations laid out as ``layout`` (a grid view's one-hot cells or a
    vector) and ``action_size`` actions (one-hot when ``spec.discrete``)."""
    wm = make_world_model(spec.model, layout, action_size)
    m = spec.model
    opt = net_optimizer(spec.optimizer, spec.regularizer)
    kw = dict(hidden=(m.units,) * m.layers, activation=m.activation, layer_norm=m.layer_norm)
    f = m.feat_size
    actor_out = action_size if spec.discrete else 2 * action_size
    nets = {"actor": make_network("mlp", (f,), actor_out, **kw),
            "critic": make_network("mlp", (f,), m.bins, **kw),
            "ensemble": make_network("mlp", (f + action_size,), m.stoch * m.classes, **kw)}
    sizes = {"actor": f, "critic": f, "ensemble": f + action_size}
    bins = ops.symlog_bins(m.bins)
    sg = jax.lax.stop_gradient

    # ------------------------------------------------------------------------- init
    def small_output(params, factor=0.01):
        out = layer_params(params)["out"]
        return replace_layers(params, {"out": {k: factor * v for k, v in out.items()}})

    def init_actor_critic(key, hparams) -> ActorCritic:
        k_a, k_c, k_oa, k_oc = jax.random.split(key, 4)
        actor = opt.wrap(small_output(nets["actor"].init(k_a)), k_oa, hparams)
        critic = opt.wrap(zero_output(nets["critic"].init(k_c)), k_oc, hparams)
        return ActorCritic(actor, critic, critic.params, ops.ReturnScale.init())

    def init(key, hparams: HParams) -> DreamerState:
        k_m, k_om, k_t, k_x, k_e, k_oe = jax.random.split(key, 6)
        model = opt.wrap(wm.init(k_m), k_om, hparams)
        explore, ensemble = (), ()
        if spec.plan2explore:
            explore = init_actor_critic(k_x, hparams)
            members = jax.vmap(nets["ensemble"].init)(jax.random.split(k_e, spec.ensemble))
            ensemble = opt.wrap(members, k_oe, hparams)
        return DreamerState(model, init_actor_critic(k_t, hparams), explore, ensemble,
                            jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------------------- the policy
    def policy(actor_params, feat):
        """(sample(key) -> action, log_prob(action), entropy, mode) of π(·|feat)."""
        raw = apply_rows(nets["actor"], actor_params, feat)[0]
        if spec.discrete:
            probs = ops.unimix(raw, spec.actor_unimix)
            log_probs = jnp.log(probs)
            return (lambda key: jax.nn.one_hot(jax.random.categorical(key, log_probs),
                                               action_size),
                    lambda a: jnp.sum(a * log_probs, -1),
                    -jnp.sum(probs * log_probs, -1),
                    jax.nn.one_hot(jnp.argmax(raw, -1), action_size))
        mean, raw_std = jnp.split(raw, 2, -1)
        mean = jnp.tanh(mean)
        std = MIN_STD + (MAX_STD - MIN_STD) * jax.nn.sigmoid(raw_std + 2.0)
        log_prob = lambda a: jnp.sum(  # noqa: E731
            -0.5 * jnp.square((a - mean) / std) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), -1)
        entropy = jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e) + jnp.log(std), -1)
        return (lambda key: mean + std * jax.random.normal(key, mean.shape), log_prob, entropy,
                mean)

    def env_action(action):
        return action if spec.discrete else jnp.clip(action, -1.0, 1.0)

    def carry_init(n: int):
        return (Latent(jnp.zeros((n, m.deter)), jnp.zeros((n, m.stoch, m.classes))),
                jnp.zeros((n, action_size)))

    def observe_step(state, carry, obs, key):
        latent, prev_action = carry
        return wm.obs_step(state.model.params, latent, prev_action, obs, key)[0]

    def act(state: DreamerState, carry, obs, key):
        k_obs, k_act = jax.random.split(key)
        latent = observe_step(state, carry, obs, k_obs)
        behaviour = state.explore if spec.plan2explore else state.task
        action = env_action(policy(behaviour.actor.params, latent.feat())[0](k_act))
        return action, (), (latent, action)

    def act_mode(state: DreamerState, carry, obs):
        # The posterior sample of the evaluation policy uses a fixed key: deterministic.
        latent = observe_step(state, carry, obs, jax.random.key(0))
        action = env_action(policy(state.task.actor.params, latent.feat())[3])
        return action, (latent, action)

    # ------------------------------------------------------------------------- imagination
    def imagine(model_params, actor_params, start: Latent, key) -> Imagined:
        def step(latent, k):
            k_a, k_z = jax.random.split(k)
            feat = latent.feat()
            action = sg(policy(actor_params, feat)[0](k_a))
            return wm.imagine_step(model_params, latent, env_action(action), k_z), (feat,
                                                                                    action)

        model_params = sg(model_params)
        last, (feats, actions) = jax.lax.scan(step, sg(start), jax.random.split(key,
                                                                               spec.horizon))
        feats = jnp.concatenate([feats, last.feat()[None]])
        return Imagined(sg(feats), actions, sg(wm.reward(model_params, feats[1:])),
                        sg(wm.cont(model_params, feats[1:])))

    def actor_critic_loss(ac: ActorCritic, traj: Imagined, reward):
        """The actor's and critic's losses on one imagined trajectory with per-step
        ``reward [H, N]``; returns ``(actor loss, critic loss, new return scale, stats)``."""
        value = ops.twohot_mean(apply_rows(nets["critic"], ac.critic.params, traj.feat)[0], bins)
        returns = ops.lambda_return(reward, traj.cont, value, spec.discount, spec.lam)
        scale = ac.scale.update(returns)
        weight = jnp.cumprod(jnp.concatenate(
            [jnp.ones_like(traj.cont[:1]), spec.discount * traj.cont[:-1]]), axis=0)
        advantage = (returns - value[:-1]) / scale.scale()

        def actor_loss(params):
            _, log_prob, entropy, _ = policy(params, traj.feat[:-1])
            objective = log_prob(traj.action) * sg(advantage) + spec.entropy * entropy
            return -jnp.mean(weight * objective), jnp.mean(entropy)

        slow = ops.twohot_mean(apply_rows(nets["critic"], ac.slow_critic, traj.feat[:-1])[0], bins)

        def critic_loss(params):
            logits = apply_rows(nets["critic"], params, traj.feat[:-1])[0]
            loss = (ops.twohot_loss(logits, sg(returns), bins)
                    + spec.slow_reg * ops.twohot_loss(logits, sg(slow), bins))
            return jnp.mean(weight * loss)

        return actor_loss, critic_loss, scale, {"return": jnp.mean(returns),
                                                "value": jnp.mean(value),
                                                "return_scale": scale.scale()}

    def train_actor_critic(ac: ActorCritic, traj: Imagined, reward, hparams, key, prefix):
        actor_loss, critic_loss, scale, stats = actor_critic_loss(ac, traj, reward)
        (a_loss, entropy), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            ac.actor.params)
        c_loss, c_grads = jax.value_and_grad(critic_loss)(ac.critic.params)
        actor = opt.step(ac.actor, clip(a_grads), hparams, jax.random.fold_in(key, 0))[0]
        critic = opt.step(ac.critic, clip(c_grads), hparams, jax.random.fold_in(key, 1))[0]
        slow = jax.tree.map(lambda s, c: (1 - spec.slow_rate) * s + spec.slow_rate * c,
                            ac.slow_critic, critic.params)
        info = {"actor_loss": a_loss, "critic_loss": c_loss, "entropy": entropy, **stats}
        return (ActorCritic(actor, critic, slow, scale),
                {f"{prefix}{k}": v for k, v in info.items()})

    def ensemble_predict(params, feat, action):
        x = jnp.concatenate([feat, action], -1)
        return jax.vmap(lambda p: apply_rows(nets["ensemble"], p, x)[0])(params)  # [K, ..., S·C]

    def disagreement(params, traj: Imagined):
        """[H, N]: the ensemble's std over members, mean over latent dimensions, of its
        prediction for each imagined transition ``(s_k, a_k)``."""
        preds = ensemble_predict(params, traj.feat[:-1], env_action(traj.action))
        return jnp.mean(jnp.std(preds, axis=0), -1)

    # ------------------------------------------------------------------------- the update
    def update(state: DreamerState, chunk: Chunk, hparams: HParams, key):
        k_model, k_img, k_task, k_exp, k_ens, k_ximg = jax.random.split(key, 6)
        (model_total, (out, terms)), g_model = jax.value_and_grad(
            lambda p: model_loss(wm, p, chunk, k_model), has_aux=True)(state.model.params)
        model = opt.step(state.model, clip(g_model), hparams, jax.random.fold_in(key, 7))[0]
        start = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out.post)
        params = state.model.params
        traj = imagine(params, state.task.actor.params, start, k_img)
        task, info = train_actor_critic(state.task, traj, traj.reward, hparams, k_task, "")
        info.update({f"model_{k}": v for k, v in terms.items()})
        info["model_loss"] = model_total
        explore, ensemble = state.explore, state.ensemble
        if spec.plan2explore:
            target = sg(out.succ.z.reshape(out.succ.z.shape[:2] + (-1,)))
            feat, action = sg(out.post.feat()), chunk.action

            def ensemble_loss(p):
                return jnp.mean(jnp.sum(jnp.square(ensemble_predict(p, feat, action) - target),
                                        -1))

            e_loss, e_grads = jax.value_and_grad(ensemble_loss)(ensemble.params)
            ensemble = opt.step(ensemble, clip(e_grads), hparams, k_ens)[0]
            x_traj = imagine(params, explore.actor.params, start, k_ximg)
            intrinsic = disagreement(ensemble.params, x_traj)
            reward = (spec.intrinsic_weight * intrinsic
                      + spec.extrinsic_weight * x_traj.reward)
            explore, x_info = train_actor_critic(explore, x_traj, reward, hparams, k_exp,
                                                 "explore_")
            info.update(x_info)
            info.update({"ensemble_loss": e_loss, "intrinsic_reward": jnp.mean(intrinsic)})
        return DreamerState(model, task, explore, ensemble, state.step + 1), info

    # ------------------------------------------------------------------------- diagnostics
    def probe_feat(state: DreamerState, obs):
        """``feat`` of probe observations seen as first steps (zero history)."""
        return observe_step(state, carry_init(obs.shape[0]), obs, jax.random.key(0)).feat()

    def ac_features(ac: ActorCritic, feat):
        return {name: apply_rows(nets[name], getattr(ac, name).params, feat)[1]
                for name in ("actor", "critic")}

    def features(state: DreamerState, obs):
        """Per network (the world model, the task actor and critic), its train state and
        features on probe observations seen as first steps."""
        ac = ac_features(state.task, probe_feat(state, obs))
        return {"world_model": (state.model, wm.features(state.model.params, obs)),
                "actor": (state.task.actor, ac["actor"]),
                "critic": (state.task.critic, ac["critic"])}

    return Dreamer(spec, wm, init, act, act_mode, carry_init, update, imagine,
                   actor_critic_loss, features, probe_feat, ac_features, nets, sizes)


def clip(grads):
    """Global-norm clipping at :data:`GRAD_CLIP` (stateless)."""
    return optax.clip_by_global_norm(GRAD_CLIP).update(grads, optax.EmptyState())[0]


def layer_orders(dreamer: Dreamer) -> dict[str, list[str]]:
    """Forward layer order per network: the world model's per sub-network, actor and critic."""
    out = {name: order for name, order in dreamer.world_model.layer_orders.items()}
    for name in ("actor", "critic"):
        out[name] = layer_order(dreamer.networks[name], (dreamer.input_sizes[name],))
    return out


def world_model_probe_losses(dreamer: Dreamer, state: DreamerState, probes: Chunk, count,
                             key) -> dict:
    """World-model forgetting: the model's reconstruction, reward and KL losses on every task's
    fixed probe chunks (``[tasks, P, T, ...]``), ``[tasks]`` each, NaN for tasks with no probe
    chunk yet."""
    def one(chunk, k):
        chunk = as_float(chunk)._replace(is_first=chunk.is_first.at[:, 0].set(True))
        out = dreamer.world_model.observe(state.model.params, chunk, k)
        return {name: jnp.mean(out.losses[name]) for name in ("recon", "reward", "kl")}

    tasks = count.shape[0]
    losses = jax.lax.map(lambda x: one(*x), (probes, jax.random.split(key, tasks)))
    return {f"wm_{k}": jnp.where(count > 0, v, jnp.nan) for k, v in losses.items()}


def make_dreamer_agent(dreamer: Dreamer, memory: Memory, num_tasks: int) -> Agent:
    """Dreamer as an :class:`continual.agents.Agent` over a sequence memory
    (:func:`continual.agents.sequence.make_sequence_memory` with ``num_tasks`` probe sets). Per
    log point it adds ``wm_recon``, ``wm_reward``, ``wm_kl`` (``[tasks]``: world-model
    forgetting on each task's probe chunks) and ``buffer_tasks`` (``[tasks]``: the share of
    stored chunks from each task)."""

    def measure(state, mem, rollout, key):
        logs = world_model_probe_losses(dreamer, state, mem.probes, mem.probe_count, key)
        logs["buffer_tasks"] = task_composition(mem, num_tasks)
        return logs

    loss_keys = ("model_loss", "actor_loss", "critic_loss")
    return Agent(init=dreamer.init, act=dreamer.act, act_mode=dreamer.act_mode,
                 update=dreamer.update, memory=memory,
                 evaluate=lambda state, obs, action: {}, measure=measure,
                 features=dreamer.features,
                 params=lambda state: (state.model.params, state.task.actor.params,
                                       state.task.critic.params),
                 loss_keys=loss_keys, carry_init=dreamer.carry_init)


def make_reset(spec, dreamer: Dreamer, orders: dict[str, list[str]]):
    """The reset intervention ``(state, obs, hparams, key) -> state`` of an
    :class:`continual.interventions.InterventionSpec` for Dreamer (``obs``: probe observations,
    for ReDo's dormancy scores), or None for ``none``.

    * ``full`` — everything afresh: world model, actor-critics (slow critics too), ensemble;
    * ``shrink_perturb`` — every network toward a fresh initialisation;
    * ``redo`` — dormant units of the actor and critic and of every MLP of the world model
      (encoder, ``img_in``, prior, posterior, decoder, reward, continue), each in its own forward
      order; the GRU's gates have no units in ReDo's sense and are left as they are;
    * ``head`` / ``last_k`` — the last layers of the actor and critic (the exploration ones too);
      the world model's "last layers" would be its heads' outputs, which an actor-critic reset
      does not touch.

    Continual backprop (``cbp``) is not implemented for Dreamer."""
    from continual.interventions import reset_network
    from plasticity import resets

    if spec.kind == "none":
        return None
    if spec.kind == "cbp":
        raise ValueError("reset 'cbp' (continual backprop) is supervised-only for now; valid "
                         "for Dreamer: none, full, head, last_k, redo, shrink_perturb")
    if spec.kind in ("head", "last_k"):
        for name in ("actor", "critic"):
            resets.last_layers(orders[name], 1 if spec.kind == "head" else spec.last_k)
    model_parts = list(dreamer.world_model.layer_orders)

    def reset_ac(ac: ActorCritic, fresh: ActorCritic, feat: Callable, hparams) -> ActorCritic:
        actor = reset_network(spec, ac.actor, fresh.actor,
                              lambda: dreamer.ac_features(ac, feat())["actor"], hparams,
                              orders["actor"])
        critic = reset_network(spec, ac.critic, fresh.critic,
                               lambda: dreamer.ac_features(ac, feat())["critic"], hparams,
                               orders["critic"])
        slow = critic.params if spec.kind == "full" else ac.slow_critic
        return ac._replace(actor=actor, critic=critic, slow_critic=slow)

    def apply(state: DreamerState, obs, hparams: HParams, key) -> DreamerState:
        fresh = dreamer.init(key, hparams)
        feat = lambda: dreamer.probe_feat(state, obs)  # noqa: E731
        if spec.kind == "full":
            return fresh._replace(
                model=fresh.model._replace(init_params=state.model.init_params),
                step=state.step)
        model = state.model
        if spec.kind == "shrink_perturb":
            model = reset_network(spec, model, fresh.model, None, hparams, [])
        elif spec.kind == "redo":
            wm_feats = dreamer.world_model.features(model.params, obs)
            params, opt_state = model.params, model.opt_state
            for part in model_parts:
                params, opt_state, _ = resets.redo(params, opt_state, wm_feats,
                                                   fresh.model.params, orders[part],
                                                   hparams.redo_tau)
            model = model._replace(params=params, opt_state=opt_state)
        new = state._replace(model=model, task=reset_ac(state.task, fresh.task, feat, hparams))
        if dreamer.spec.plan2explore:
            new = new._replace(explore=reset_ac(state.explore, fresh.explore, feat, hparams))
            if spec.kind == "shrink_perturb":
                new = new._replace(ensemble=reset_network(spec, state.ensemble,
                                                          fresh.ensemble, None, hparams, []))
        return new

    return apply
