"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications") as
pure functions, in the shape of Brax's agents: networks, losses, acting and one training step.

:func:`make_sac` builds the networks and losses (a :class:`SAC` record);
:func:`make_sac_agent` adds the replay memory and the measurements and returns the
:class:`continual.agents.Agent` the RL loop (:mod:`continual.agents.loop`) runs. The pieces:

* ``init(key, hparams) -> SACState``
* ``act(state, obs, key) -> (action, log_prob)`` — a reparameterised tanh-Gaussian sample;
  ``act_mode(state, obs) -> action`` — the deterministic evaluation action ``tanh(mean)``;
* ``update(state, batch, hparams, key) -> (state, info)`` — temperature, critic, actor, then the
  Polyak target update (Brax's order);
* ``critic_loss(state, batch, key) -> scalar`` — the TD loss of the update, without gradients
  (for ``td_error_val``, REFERENCE §4);
* ``q_value(state, obs, action) -> [B]`` — the critic-ensemble mean (for ``q_bias``);
* ``features(state, obs) -> {"actor": {...}, "critic": {...}}`` — per-layer features of the
  actor and of critic member 0 (for diagnostics and ReDo).

The knobs of the regularized-SAC study (Nauman et al. 2024, "Overestimation, overfitting, and
plasticity in actor-critic"): ``layer_norm``, ``num_critics`` with a ``min`` or ``mean`` target,
weight decay (``adamw``), resets (:mod:`continual.interventions`), and every activation and
regularizer of :mod:`plasticity` (each network's optimizer is chained with the regularizer).

Critic ensemble. The critic is one :class:`TrainState` whose every leaf (parameters, optimizer
state, θ₀) carries a leading ``[K]`` ensemble axis, built and updated with ``vmap``; members are
independent networks with their own optimizer state, so per-layer resets and regularizers apply
to each member unchanged.

Policy: the tanh-Gaussian head of :mod:`continual.agents.policy`. The temperature α = exp(log α) is learned towards the target entropy ``−|A|``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual import replay
from continual.agents import policy as tanh_gaussian
from continual.agents import retention
from continual.agents.base import Agent, EnvStep, Memory, Rollout, memoryless
from continual.agents.optim import net_optimizer, scalar_adam, temperature_step
from continual.classifier import TrainState
from continual.optimizers import HParams
from plasticity import regularizers
from metrics import rl as rl_metrics
from plasticity.networks import ITERATIVE_NETWORKS, layer_order, layer_params, make_network

TARGET_AGGS = ("min", "mean")


class Transition(NamedTuple):
    """One environment step. ``discount`` is 0 where the episode *terminated* (a time-limit
    truncation keeps 1 and bootstraps)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array


class SACState(NamedTuple):
    actor: TrainState
    critic: TrainState    # every leaf [K, ...]
    target: Any           # target critic parameters, [K, ...]
    log_alpha: jax.Array
    alpha_opt_state: Any
    step: jax.Array       # gradient updates so far (of this run: fine-tuning restarts it)
    anchor: Any = ()      # retention.Anchor when fine-tuning with retention, else ()


class Start(NamedTuple):
    """Pre-trained starting points of fine-tuning runs (leaves ``[P, ...]``, one row per
    pre-trained run; a run starts from row ``hparams.source_run``): the networks and π*'s
    stored transitions (leaves ``[P, N, ...]``)."""

    actor: Any
    critic: Any
    target: Any
    log_alpha: jax.Array
    memory: Any   # Transition


@dataclass(frozen=True)
class SACSpec:
    """Static SAC choices (changing one recompiles)."""

    network: str = "mlp"
    hidden: tuple = (256, 256)
    blocks: int = 2
    activation: str = "relu"
    layer_norm: bool = False
    optimizer: str = "adam"
    regularizer: str = "none"
    num_critics: int = 2
    target_agg: str = "min"
    discount: float = 0.99
    tau: float = 0.005
    reward_scale: float = 1.0
    init_alpha: float = 1.0
    think_steps: int = 5          # think network: cell applications in training
    eval_think_steps: int = 0     # ... of the actor in act_mode (0 = think_steps)
    # Fine-tuning with retention (continual.agents.retention); None: no retention state.
    retention: retention.RetentionSpec | None = None

    def __post_init__(self):
        if self.target_agg not in TARGET_AGGS:
            raise ValueError(f"unknown target_agg {self.target_agg!r}; valid: "
                             f"{', '.join(TARGET_AGGS)}")
        if self.num_critics < 1:
            raise ValueError(f"num_critics must be >= 1, got {self.num_critics}")
        if not 0 <= self.discount <= 1 or not 0 < self.tau <= 1:
            raise ValueError("discount must be in [0, 1] and tau in (0, 1]")
        if regularizers.canonical_name(self.regularizer) == "ewc":
            raise ValueError("regularizer 'ewc' is the supervised EWC; SAC's is ewc_coef "
                             "(continual.agents.retention)")


class SAC(NamedTuple):
    """SAC's networks and losses as pure functions (see the module docstring)."""

    init: Callable[[jax.Array, HParams], SACState]
    act: Callable[[SACState, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    act_mode: Callable[[SACState, jax.Array], jax.Array]
    update: Callable[[SACState, Transition, HParams, jax.Array], tuple[SACState, dict]]
    critic_loss: Callable[[SACState, Transition, jax.Array], jax.Array]
    q_value: Callable[[SACState, jax.Array, jax.Array], jax.Array]
    features: Callable[[SACState, jax.Array], dict]
    networks: dict  # name -> Network ("actor", "critic"), for layer orders and resets
    discount: float  # γ, static (q_bias's soft return uses the agent's own)
    # (fresh state, Start, hparams) -> the state a fine-tuning run starts from
    start: Callable[[SACState, Start, HParams], SACState]


def make_sac(spec: SACSpec, observation_size: int, action_size: int, *,
             optimizer_stats: Callable | None = None) -> SAC:
    """The SAC agent for one observation and action size (see the module docstring)."""
    opt = net_optimizer(spec.optimizer, spec.regularizer)
    net_kwargs = dict(hidden=spec.hidden, blocks=spec.blocks, activation=spec.activation,
                      layer_norm=spec.layer_norm, think_steps=spec.think_steps)
    actor_net = make_network(spec.network, (observation_size,), 2 * action_size, **net_kwargs)
    critic_net = make_network(spec.network, (observation_size + action_size,), 1, **net_kwargs)
    # The evaluation policy of an iterative network: the same parameters at eval_think_steps.
    eval_actor = (make_network(spec.network, (observation_size,), 2 * action_size,
                               **{**net_kwargs, "think_steps": spec.eval_think_steps})
                  if spec.network in ITERATIVE_NETWORKS and spec.eval_think_steps else actor_net)
    k = spec.num_critics
    target_entropy = -float(action_size)

    def init(key, hparams: HParams) -> SACState:
        actor_key, critic_key = jax.random.split(key)
        actor = opt.init(actor_net, actor_key, hparams)
        critic = jax.vmap(lambda kk: opt.init(critic_net, kk, hparams))(
            jax.random.split(critic_key, k))
        log_alpha = jnp.log(jnp.asarray(spec.init_alpha, jnp.float32))
        anchor = ()
        if spec.retention is not None:  # filled by `start`; zeros keep the state's shape fixed
            zeros = jax.tree.map(jnp.zeros_like, actor.params)
            n = spec.retention.memory_size
            memory = Transition(jnp.zeros((n, observation_size)), jnp.zeros((n, action_size)),
                                jnp.zeros(n), jnp.zeros(n), jnp.zeros((n, observation_size)))
            anchor = retention.Anchor(zeros, zeros, memory)
        return SACState(actor, critic, critic.params, log_alpha,
                        scalar_adam(hparams).init(log_alpha), jnp.zeros((), jnp.int32), anchor)

    def sample(actor_params, obs, key):
        return tanh_gaussian.sample(actor_net.apply(actor_params, obs)[0], key)

    def q_all(critic_params, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        q = jax.vmap(lambda p: critic_net.apply(p, x)[0])(critic_params)
        return q[..., 0]  # [K, B]

    def aggregate(q):
        return jnp.min(q, axis=0) if spec.target_agg == "min" else jnp.mean(q, axis=0)

    def td_loss(critic_params, target_params, actor_params, alpha, batch: Transition, key):
        next_action, next_logp = sample(actor_params, batch.next_obs, key)
        next_v = aggregate(q_all(target_params, batch.next_obs, next_action)) - alpha * next_logp
        target = (spec.reward_scale * batch.reward
                  + batch.discount * spec.discount * next_v)
        q = q_all(critic_params, batch.obs, batch.action)
        return 0.5 * jnp.mean(jnp.square(q - jax.lax.stop_gradient(target)))

    def raw(params, obs):
        return actor_net.apply(params, obs)[0]

    def actor_loss(actor_params, critic_params, alpha, obs, state, hparams, key):
        k_sample, k_retain = jax.random.split(key)
        action, logp = sample(actor_params, obs, k_sample)
        q = aggregate(q_all(critic_params, obs, action))
        loss, logs = jnp.mean(alpha * logp - q), {}
        if spec.retention is not None:  # the actor only: no method regularises the critic
            penalty, logs = retention.actor_penalty(spec.retention, raw, actor_params,
                                                    state.anchor, obs, hparams, state.step,
                                                    k_retain)
            loss = loss + penalty
        return loss, (logp, logs)

    def update(state: SACState, batch: Transition, hparams: HParams, key):
        k_alpha, k_critic, k_actor, k_tx = jax.random.split(key, 4)
        if spec.retention is not None:  # episodic memory: π*'s transitions in every batch
            batch = retention.mix_memory(batch, state.anchor.memory, hparams.memory_share,
                                         jax.random.fold_in(k_tx, 2))
        # Temperature (Haarnoja et al. 2018b, eq. 18): α·E[−log π − H̄].
        _, logp = sample(state.actor.params, batch.obs, k_alpha)
        log_alpha, alpha_opt, alpha_loss = temperature_step(
            state.log_alpha, state.alpha_opt_state, logp, target_entropy, hparams)
        alpha = jnp.exp(log_alpha)

        c_loss, c_grads = jax.value_and_grad(td_loss)(state.critic.params, state.target,
                                                      state.actor.params, alpha, batch, k_critic)
        c_keys = jax.random.split(jax.random.fold_in(k_tx, 0), k)
        critic, c_updates = jax.vmap(lambda c, g, kk: opt.step(c, g, hparams, kk))(
            state.critic, c_grads, c_keys)

        (a_loss, (a_logp, retained)), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor.params, critic.params, alpha, batch.obs, state, hparams, k_actor)
        actor, a_updates = opt.step(state.actor, a_grads, hparams, jax.random.fold_in(k_tx, 1))

        target = jax.tree.map(lambda t, p: (1 - spec.tau) * t + spec.tau * p,
                              state.target, critic.params)
        info = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": alpha_loss,
                "alpha": alpha, "entropy": -jnp.mean(a_logp),
                "q_mean": jnp.mean(q_all(critic.params, batch.obs, batch.action)),
                **retained}
        if optimizer_stats is not None:  # actor and critic member 0, per layer
            member0 = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
            for net, (g, u, p) in {"actor": (a_grads, a_updates, state.actor.params),
                                   "critic": (member0(c_grads), member0(c_updates),
                                              member0(state.critic.params))}.items():
                stats = optimizer_stats(layer_params(g), layer_params(u), layer_params(p))
                for name, per in stats.items():
                    info.setdefault(name, {}).update(
                        {f"{net}/{layer}": v for layer, v in per.items()})
        new_state = SACState(actor, critic, target, log_alpha, alpha_opt, state.step + 1,
                             state.anchor)
        return new_state, info

    def critic_loss(state: SACState, batch: Transition, key):
        return td_loss(state.critic.params, state.target, state.actor.params,
                       jnp.exp(state.log_alpha), batch, key)

    def act(state: SACState, obs, key):
        return sample(state.actor.params, obs, key)

    def act_mode(state: SACState, obs):
        return tanh_gaussian.mode(eval_actor.apply(state.actor.params, obs)[0])

    def q_value(state: SACState, obs, action):
        return jnp.mean(q_all(state.critic.params, obs, action), axis=0)

    def features(state: SACState, obs):
        raw, actor_features = actor_net.apply(state.actor.params, obs)
        member0 = jax.tree.map(lambda a: a[0], state.critic.params)
        x = jnp.concatenate([obs, tanh_gaussian.mode(raw)], axis=-1)
        return {"actor": actor_features, "critic": critic_net.apply(member0, x)[1]}

    def start(state: SACState, pretrained: Start, hparams: HParams) -> SACState:
        """The run's pre-trained networks (row ``hparams.source_run``), also as θ₀, with fresh
        optimizer states; with retention, θ* frozen as the anchor, its Fisher on π*'s stored states."""
        row = jax.tree.map(lambda a: a[jnp.asarray(hparams.source_run).astype(jnp.int32)],
                           pretrained)
        # θ₀ (distance-from-init diagnostics, l2_init) is the pre-trained point too.
        actor = state.actor._replace(params=row.actor, init_params=row.actor)
        critic = state.critic._replace(params=row.critic, init_params=row.critic)
        new = state._replace(actor=actor, critic=critic, target=row.target,
                             log_alpha=row.log_alpha)
        if spec.retention is None:
            return new
        memory = jax.tree.map(lambda a: a[:spec.retention.memory_size], row.memory)
        fisher = retention.gaussian_fisher(lambda p, s: raw(p, s[None])[0], row.actor,
                                           memory.obs[:spec.retention.fisher_samples])
        return new._replace(anchor=retention.Anchor(row.actor, fisher, memory))

    return SAC(init, act, act_mode, update, critic_loss, q_value, features,
               {"actor": actor_net, "critic": critic_net}, spec.discount, start)


def layer_orders(agent: SAC, observation_size: int, action_size: int) -> dict[str, list[str]]:
    """Hidden layers (forward order) then ``out``, per network."""
    sizes = {"actor": observation_size, "critic": observation_size + action_size}
    return {name: layer_order(net, (sizes[name],)) for name, net in agent.networks.items()}


def make_reset(spec, agent: SAC, orders: dict[str, list[str]]):
    """The reset intervention ``(state, obs, hparams, key) -> state`` of an
    :class:`continual.interventions.InterventionSpec` for SAC, or None for ``none``.

    Applied to the actor and to every critic member (``obs``: a probe batch for ReDo's dormancy
    scores, the critic seeing the actor's mode actions). Target networks follow their critic
    (REFERENCE §6, "always reset matching target-network parameters"): after ``full``, ``head``
    and ``last_k`` the reset layers of the target are set to the new online values; after
    ``redo`` and ``shrink_perturb`` (small, function-preserving or partial changes) the Polyak
    update carries them over. A ``full`` reset also restarts the temperature. Continual
    backprop (``cbp``) is not implemented for SAC.
    """
    from continual.interventions import reset_network
    from plasticity import resets

    if spec.kind == "none":
        return None
    if spec.kind == "cbp":
        raise ValueError("reset 'cbp' (continual backprop) is supervised-only for now; valid "
                         "for SAC: none, full, head, last_k, redo, shrink_perturb")
    critic_net = agent.networks["critic"]
    touched = None
    if spec.kind in ("head", "last_k"):
        k = 1 if spec.kind == "head" else spec.last_k
        touched = resets.last_layers(orders["critic"], k)
        resets.last_layers(orders["actor"], k)

    def apply(state: SACState, obs, hparams: HParams, key) -> SACState:
        fresh = agent.init(key, hparams)
        actor = reset_network(spec, state.actor, fresh.actor,
                              lambda: agent.features(state, obs)["actor"], hparams,
                              orders["actor"])
        x = jnp.concatenate([obs, agent.act_mode(state, obs)], axis=-1)
        critic = jax.vmap(lambda s, f: reset_network(
            spec, s, f, lambda: critic_net.apply(s.params, x)[1], hparams,
            orders["critic"]))(state.critic, fresh.critic)
        new = state._replace(actor=actor, critic=critic)
        if spec.kind == "full":
            return new._replace(target=critic.params, log_alpha=fresh.log_alpha,
                                alpha_opt_state=fresh.alpha_opt_state)
        if touched is not None:
            target = jax.vmap(lambda t, c: resets.reset_layers(t, (), c, touched)[0])(
                state.target, critic.params)
            return new._replace(target=target)
        return new

    return apply


def make_ewc_consolidation(sac: SAC):
    """Continual World's EWC for SAC (Wołczyk et al. 2021, continualworld/methods/ewc.py) as a
    boundary intervention ``(state, obs, hparams, key) -> state``: at the end of every task
    θ* ← the actor now and F ← F + its Gaussian-policy Fisher
    (:func:`continual.agents.retention.gaussian_fisher`) on the probe batch of stored states, so
    the penalty ``ewc_coef · Σ F (θ − θ*)²`` sums the tasks' Fishers around the latest
    parameters (the actor only, as Continual World's default). Needs a SAC made with a
    :class:`~continual.agents.retention.RetentionSpec`: before the first boundary F = 0."""
    actor_net = sac.networks["actor"]

    def apply(state: SACState, obs, hparams: HParams, key) -> SACState:
        fisher = retention.gaussian_fisher(lambda p, s: actor_net.apply(p, s[None])[0][0],
                                           state.actor.params, obs)
        total = jax.tree.map(jnp.add, state.anchor.fisher, fisher)
        return state._replace(anchor=state.anchor._replace(actor=state.actor.params,
                                                           fisher=total))
    return apply


@dataclass(frozen=True)
class ReplaySpec:
    """SAC's replay: a buffer of single transitions (:mod:`continual.replay`), and a held-out
    buffer for ``td_error_val`` that takes every ``val_every``-th env step (0 = off) and is
    never trained on (REFERENCE §4)."""

    batch_size: int = 256
    capacity: int = 100_000
    eviction: str = "fifo"
    sampling: str = "uniform"
    min_replay: int = 1000         # transitions stored before updates start
    val_every: int = 10
    val_capacity: int = 10_000
    q_bias_keep: int = 350         # first steps of each measurement episode in q_bias

    def __post_init__(self):
        if self.batch_size < 1 or self.capacity < 1 or self.min_replay < 0:
            raise ValueError("batch_size and capacity must be >= 1 and min_replay >= 0")
        if self.val_every < 0 or (self.val_every and self.val_capacity < 1):
            raise ValueError("val_every must be >= 0, and val_capacity >= 1 when it is > 0")


class SACMemory(NamedTuple):
    buffer: Any
    val_buffer: Any  # () without a held-out buffer


def make_sac_agent(sac: SAC, replay_spec: ReplaySpec, observation_size: int,
                   action_size: int, memory: Memory | None = None) -> Agent:
    """SAC as an :class:`continual.agents.Agent`: transitions in a replay buffer with the
    spec's eviction and sampling rules (or ``memory``, any memory whose batches are
    :class:`Transition` s: goal-conditioned SAC with hindsight relabelling passes
    :func:`continual.agents.trajectory.make_her_memory`; it has no held-out buffer), one
    gradient update per batch, and per log point

    * ``q_bias``, ``q_bias_abs``, ``q_bias_sq``, ``q_bias_norm``, ``mc_return``, ``q_estimate``
      (:func:`metrics.rl.overestimation`; the critic-ensemble mean on the measurement rollout's
      first ``q_bias_keep`` steps against the soft Monte-Carlo return);
    * ``td_error_val``, ``td_error_train``, ``td_error_gap``: the critic's TD loss on a held-out
      batch and on a training batch (NaN while the buffer is empty).

    Diagnostics read the actor and critic member 0 (the critic sees the actor's mode actions)."""
    if memory is not None:
        return _agent(sac, memory, replay_spec.q_bias_keep, lambda state, mem, key: {
            "td_error_train": jnp.where(mem.size > 0, sac.critic_loss(
                state, memory.sample(mem, key), jax.random.fold_in(key, 1)), jnp.nan)})
    spec = replay_spec
    buffer = replay.make_buffer(spec.capacity, spec.eviction, spec.sampling,
                                embed_dim=observation_size if spec.eviction == "coverage_max"
                                else None)
    val_buffer = replay.make_buffer(spec.val_capacity, "fifo") if spec.val_every else None
    example = Transition(jnp.zeros(observation_size), jnp.zeros(action_size), jnp.zeros(()),
                         jnp.zeros(()), jnp.zeros(observation_size))
    ready_at = max(spec.min_replay, spec.batch_size)

    def init_memory() -> SACMemory:
        return SACMemory(buffer.init(example),
                         () if val_buffer is None else val_buffer.init(example))

    def store(memory: SACMemory, step: EnvStep, key, index) -> SACMemory:
        transition = Transition(step.obs, step.action, step.reward, step.discount,
                                step.next_obs)
        extras = {"scores": step.reward}
        if spec.eviction == "coverage_max":  # coverage over normalised observations
            extras["embeddings"] = step.obs / jnp.maximum(
                jnp.linalg.norm(step.obs, axis=-1, keepdims=True), 1e-6)
        if val_buffer is None:
            return memory._replace(buffer=buffer.add(memory.buffer, transition, key, **extras))
        held_out = index % spec.val_every == 0
        buf = jax.lax.cond(held_out, lambda b: b,
                           lambda b: buffer.add(b, transition, key, **extras), memory.buffer)
        val = jax.lax.cond(held_out, lambda v: val_buffer.add(v, transition, key),
                           lambda v: v, memory.val_buffer)
        return SACMemory(buf, val)

    def sample(memory: SACMemory, key) -> Transition:
        return buffer.sample(memory.buffer, key, spec.batch_size)

    def probe(memory: SACMemory, key, n):
        return buffer.sample(memory.buffer, key, n).obs, memory.buffer.size > 0

    replay_memory = Memory(init_memory, store, sample,
                           ready=lambda m: m.buffer.size >= ready_at,
                           # the held-out buffer too: current task only
                           clear=lambda m: init_memory(), probe=probe)

    def td_errors(state: SACState, memory: SACMemory, key) -> dict:
        k_val, k_train, k_loss = jax.random.split(key, 3)
        train_batch = buffer.sample(memory.buffer, k_train, spec.batch_size)
        train = jnp.where(memory.buffer.size > 0,
                          sac.critic_loss(state, train_batch, k_loss), jnp.nan)
        if val_buffer is None:
            return {"td_error_train": train}
        val_batch = val_buffer.sample(memory.val_buffer, k_val, spec.batch_size)
        val = jnp.where(memory.val_buffer.size > 0,
                        sac.critic_loss(state, val_batch, k_loss), jnp.nan)
        return {"td_error_val": val, "td_error_train": train, "td_error_gap": val - train}

    return _agent(sac, replay_memory, spec.q_bias_keep, td_errors)


def _agent(sac: SAC, memory: Memory, q_bias_keep: int, td_errors: Callable) -> Agent:
    """The Agent around SAC and a memory; ``td_errors(state, memory, key) -> {name: scalar}``."""

    def measure(state: SACState, memory_state, rollout: Rollout, key) -> dict:
        length = rollout.reward.shape[0]
        logs = rl_metrics.overestimation(
            rollout.record["q"], rollout.reward, rollout.done, rollout.act_info,
            gamma=sac.discount, alpha=jnp.exp(state.log_alpha),
            keep=min(q_bias_keep, length))
        logs.update(td_errors(state, memory_state, key))
        return logs

    def features(state: SACState, obs):
        out = sac.features(state, obs)
        member0 = jax.tree.map(lambda a: a[0], state.critic)
        return {"actor": (state.actor, out["actor"]), "critic": (member0, out["critic"])}

    act, act_mode = memoryless(sac.act, sac.act_mode)
    return Agent(init=sac.init, start=sac.start, act=act, act_mode=act_mode, update=sac.update,
                 memory=memory,
                 evaluate=lambda state, obs, action: {"q": sac.q_value(state, obs, action)},
                 measure=measure, features=features,
                 params=lambda state: (state.actor.params, state.critic.params),
                 loss_keys=("critic_loss", "actor_loss"))
