"""Contrastive RL (CRL; Eysenbach et al. 2022, "Contrastive Learning as Goal-Conditioned
Reinforcement Learning"; the JaxGCRL form of Bortkiewicz et al. 2024, REFERENCE.md §9) as a
:class:`continual.agents.Agent`.

The critic is ``f(s, a, g) = energy(φ(s, a), ψ(g))`` (:mod:`continual.agents.contrastive`):
φ reads the state part of the observation and the action, ψ a goal, both map to ``repr_dim``
(64). It is trained with a contrastive loss on batches of the trajectory memory
(:mod:`continual.agents.trajectory`), whose goals are future states of the same episode: a Monte
Carlo critic, no TD, no target networks. The actor ``π(a | s, g)`` (tanh-Gaussian,
:mod:`continual.agents.policy`) minimises ``E[α log π(a|s,g) − f(s, a, g)]`` on the batch's
relabelled goals with the critic fixed, and α is learned towards the entropy target
``H̄ = −0.5 |A|`` with ``α · E[sg(−log π − H̄)]``. Per batch: actor and α, then the critic
(JaxGCRL's order), all with one learning rate (JaxGCRL's default; its paper benchmark uses
6e-4 for the policy).

The cosine energy's logit scale is learned as ``exp(log_scale)``, initialised to 1/0.07 (JaxGCRL
PR #64); the other energies ignore it. Networks: any of :mod:`plasticity.networks` (``mlp`` 256-256
with Swish by default, as JaxGCRL; ``resmlp`` for Wang et al. 2025's deep residual critics), each
with its own optimizer chained with the configured regularizer. Diagnostics and resets see three
networks, ``actor``, ``phi`` and ``psi``; the update logs the critic's own statistics
(``categorical_accuracy``, ``logits_pos``, ``logits_neg``, ``logsumexp``).

Discrete actions (``CRLSpec(discrete=True)``; the CRL kind sets it on every discrete env): CRL
becomes policy-free, the Monte Carlo counterpart of the goal-conditioned DQN
(:mod:`continual.agents.dqn`, TD) on the same trajectory replay, as in Bortkiewicz, Pałucki,
Ostaszewski & Eysenbach 2025, "Is TD learning the gold standard for stitching?"
(arXiv:2510.21995). There is no actor and no temperature: the critic is unchanged,
``f(s, a, g) = energy(φ(s ‖ onehot(a)), ψ(g))``, trained by the same contrastive loss on the
memory's batches, whose stored actions are one-hots (the φ and ψ of ``init`` are the continuous
agent's at the same key). Acting evaluates ``f`` for all ``A`` one-hot actions
(:attr:`CRL.action_values`: φ on ``[B·A, s + A]`` inputs, ψ once per goal) and is ε-greedy with
DQN's schedule: ε decays linearly from ``epsilon_start`` to ``epsilon_end`` over the first
``epsilon_decay`` gradient updates and stays at the start value until updates begin; with
probability ε the action is uniform over all ``A`` (the greedy one included) and ``act_info`` is
the chosen action's log-probability under that policy. ``act_mode`` is ``argmax_a f(s, a, g)``.
Why ε-greedy rather than the paper's softmax over the critic with a tuned temperature: it is the
TD agent's exploration exactly, so a TD-versus-MC comparison differs in the critic only (and has
no temperature to tune, whose right value would depend on each critic's scale of values).
Diagnostics and resets then see
two networks, ``phi`` and ``psi``; the update logs ``critic_loss``, the critic's statistics and
``epsilon``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.agents import contrastive, policy
from continual.agents.base import Agent, Memory, memoryless
from continual.agents.exploration import epsilon_greedy, epsilon_schedule
from continual.agents.optim import net_optimizer, scalar_adam, temperature_step
from continual.agents.trajectory import GoalBatch
from continual.classifier import TrainState
from continual.optimizers import HParams
from plasticity import regularizers
from plasticity.networks import ITERATIVE_NETWORKS, layer_order, layer_params, make_network
from tasks.envs.base import GoalSpace


@dataclass(frozen=True)
class CRLSpec:
    """Static CRL choices (changing one recompiles)."""

    network: str = "mlp"
    hidden: tuple = (256, 256)
    blocks: int = 2
    activation: str = "swish"
    layer_norm: bool = False
    optimizer: str = "adam"
    regularizer: str = "none"
    energy: str = "norm"
    loss: str = "fwd"
    repr_dim: int = 64
    logsumexp_penalty: float = contrastive.LOGSUMEXP_PENALTY
    init_alpha: float = 1.0
    think_steps: int = 5          # think network: cell applications in training
    eval_think_steps: int = 0     # ... in act_mode (0 = think_steps)
    discrete: bool = False        # one-hot actions: policy-free and ε-greedy (no actor)
    epsilon_start: float = 1.0    # discrete: ε when updates start (DQN's schedule)
    epsilon_end: float = 0.05     # ... after the decay
    epsilon_decay: int = 10_000   # ... gradient updates from start to end

    def __post_init__(self):
        if self.energy not in contrastive.ENERGIES:
            raise ValueError(f"unknown energy {self.energy!r}; valid: "
                             f"{', '.join(contrastive.ENERGIES)}")
        if self.loss not in contrastive.LOSSES:
            raise ValueError(f"unknown contrastive loss {self.loss!r}; valid: "
                             f"{', '.join(contrastive.LOSSES)}")
        if self.repr_dim < 1 or self.logsumexp_penalty < 0 or self.init_alpha <= 0:
            raise ValueError("repr_dim must be >= 1, logsumexp_penalty >= 0, init_alpha > 0")
        if not (0 <= self.epsilon_end <= 1 and 0 <= self.epsilon_start <= 1):
            raise ValueError(f"epsilon_start and epsilon_end must lie in [0, 1], got "
                             f"{self.epsilon_start}, {self.epsilon_end}")
        if self.epsilon_decay < 0:
            raise ValueError(f"epsilon_decay must be >= 0, got {self.epsilon_decay}")
        if regularizers.canonical_name(self.regularizer) == "ewc":
            raise ValueError("regularizer 'ewc' needs a Fisher consolidation step that the CRL "
                             "agent does not implement; choose another regularizer")


class CRLState(NamedTuple):
    actor: Any                  # TrainState; () in the discrete (policy-free) mode
    phi: TrainState
    psi: TrainState
    log_scale: jax.Array        # the cosine energy's log logit scale
    scale_opt_state: Any
    log_alpha: Any              # the temperature; () in the discrete mode
    alpha_opt_state: Any
    step: jax.Array             # gradient updates so far (discrete: the ε schedule)


class CRL(NamedTuple):
    """CRL's networks and losses as pure functions."""

    init: Callable[[jax.Array, HParams], CRLState]
    act: Callable[[CRLState, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    act_mode: Callable[[CRLState, jax.Array], jax.Array]
    update: Callable[[CRLState, GoalBatch, HParams, jax.Array], tuple[CRLState, dict]]
    critic_logits: Callable[[CRLState, GoalBatch], jax.Array]   # [B, B]
    features: Callable[[CRLState, jax.Array], dict]             # network -> per-layer features
    networks: dict          # name -> Network ("actor", "phi", "psi"; discrete: "phi", "psi")
    input_sizes: dict       # name -> input width
    discrete: bool = False
    # Discrete only (None otherwise): (state, obs [B, s + g]) -> f(s, a, g) [B, A] for every
    # one-hot a; and gradient updates -> ε.
    action_values: Callable[[CRLState, jax.Array], jax.Array] | None = None
    epsilon: Callable[[jax.Array], jax.Array] | None = None


def make_crl(spec: CRLSpec, goals: GoalSpace, action_size: int, *,
             optimizer_stats: Callable | None = None) -> CRL:
    """The CRL agent for one goal space and action size (see the module docstring)."""
    if spec.discrete and action_size < 2:
        raise ValueError(f"discrete CRL needs at least 2 actions, got {action_size}")
    opt = net_optimizer(spec.optimizer, spec.regularizer)
    s, g = goals.state_size, goals.goal_size
    kw = dict(hidden=spec.hidden, blocks=spec.blocks, activation=spec.activation,
              layer_norm=spec.layer_norm, think_steps=spec.think_steps)
    sizes = {"actor": s + g, "phi": s + action_size, "psi": g}
    if spec.discrete:
        del sizes["actor"]
    outputs = {"actor": 2 * action_size, "phi": spec.repr_dim, "psi": spec.repr_dim}
    nets = {name: make_network(spec.network, (sizes[name],), outputs[name], **kw)
            for name in sizes}
    # The evaluation policy of an iterative network: the same parameters at eval_think_steps.
    eval_nets = ({name: make_network(spec.network, (sizes[name],), outputs[name],
                                     **{**kw, "think_steps": spec.eval_think_steps})
                  for name in sizes}
                 if spec.network in ITERATIVE_NETWORKS and spec.eval_think_steps else nets)
    target_entropy = -0.5 * action_size

    def init(key, hparams: HParams) -> CRLState:
        # One key per network of the continuous agent (actor, φ, ψ) in both modes: the
        # discrete critic starts where the continuous one does.
        keys = dict(zip(("actor", "phi", "psi"), jax.random.split(key, 3)))
        trained = {n: opt.init(nets[n], keys[n], hparams) for n in nets}
        log_scale = jnp.log(jnp.asarray(contrastive.COSINE_SCALE_INIT, jnp.float32))
        log_alpha = alpha_opt = ()
        if not spec.discrete:
            log_alpha = jnp.log(jnp.asarray(spec.init_alpha, jnp.float32))
            alpha_opt = scalar_adam(hparams).init(log_alpha)
        return CRLState(trained.get("actor", ()), trained["phi"], trained["psi"], log_scale,
                        scalar_adam(hparams).init(log_scale), log_alpha, alpha_opt,
                        jnp.zeros((), jnp.int32))

    def epsilon(updates):
        return epsilon_schedule(updates, spec.epsilon_start, spec.epsilon_end,
                                spec.epsilon_decay)

    def embed(phi_params, psi_params, state, action, goal):
        phi = nets["phi"].apply(phi_params, jnp.concatenate([state, action], axis=-1))[0]
        return phi, nets["psi"].apply(psi_params, goal)[0]

    def critic_loss(critic, batch: GoalBatch):
        phi_params, psi_params, log_scale = critic
        phi, psi = embed(phi_params, psi_params, batch.obs[:, :s], batch.action, batch.goal)
        logits = contrastive.logits(spec.energy, phi, psi, jnp.exp(log_scale))
        return contrastive.contrastive_loss(logits, spec.loss, spec.logsumexp_penalty)

    def actor_loss(actor_params, state: CRLState, alpha, batch: GoalBatch, key):
        action, logp = policy.sample(nets["actor"].apply(actor_params, batch.obs)[0], key)
        phi, psi = embed(state.phi.params, state.psi.params, batch.obs[:, :s], action,
                         batch.goal)
        f = contrastive.pair_energy(spec.energy, phi, psi, jnp.exp(state.log_scale))
        return jnp.mean(alpha * logp - f), logp

    def critic_step(state: CRLState, batch: GoalBatch, hparams: HParams, k_tx):
        """φ, ψ and the cosine scale on one contrastive loss."""
        (c_loss, stats), (g_phi, g_psi, g_scale) = jax.value_and_grad(
            critic_loss, has_aux=True)((state.phi.params, state.psi.params, state.log_scale),
                                       batch)
        phi, phi_updates = opt.step(state.phi, g_phi, hparams, jax.random.fold_in(k_tx, 1))
        psi, psi_updates = opt.step(state.psi, g_psi, hparams, jax.random.fold_in(k_tx, 2))
        step_scale, scale_opt = scalar_adam(hparams).update(g_scale, state.scale_opt_state)
        log_scale = optax.apply_updates(state.log_scale, step_scale)
        new = state._replace(phi=phi, psi=psi, log_scale=log_scale, scale_opt_state=scale_opt,
                             step=state.step + 1)
        info = {"critic_loss": c_loss, **stats}
        if spec.energy == "cosine":
            info["logit_scale"] = jnp.exp(log_scale)
        grads = {"phi": (g_phi, phi_updates, state.phi.params),
                 "psi": (g_psi, psi_updates, state.psi.params)}
        return new, info, grads

    def add_optimizer_stats(info, grads):
        if optimizer_stats is None:
            return info
        for name, (grad, upd, params) in grads.items():
            per_metric = optimizer_stats(layer_params(grad), layer_params(upd),
                                         layer_params(params))
            for metric, per in per_metric.items():
                info.setdefault(metric, {}).update(
                    {f"{name}/{layer}": v for layer, v in per.items()})
        return info

    def update(state: CRLState, batch: GoalBatch, hparams: HParams, key):
        k_actor, k_tx = jax.random.split(key)
        if spec.discrete:  # policy-free: the critic alone
            new, info, grads = critic_step(state, batch, hparams, k_tx)
            info["epsilon"] = epsilon(state.step)
            return new, add_optimizer_stats(info, grads)
        alpha = jnp.exp(state.log_alpha)
        # Actor, with the critic fixed; then α on the actor's log-probabilities.
        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor.params, state, alpha, batch, k_actor)
        actor, a_updates = opt.step(state.actor, a_grads, hparams, jax.random.fold_in(k_tx, 0))
        log_alpha, alpha_opt, alpha_loss = temperature_step(
            state.log_alpha, state.alpha_opt_state, logp, target_entropy, hparams)
        # Critic: φ, ψ and the cosine scale on one contrastive loss.
        new, c_info, c_grads = critic_step(state, batch, hparams, k_tx)
        info = {"critic_loss": c_info.pop("critic_loss"), "actor_loss": a_loss,
                "alpha_loss": alpha_loss, "alpha": jnp.exp(log_alpha),
                "entropy": -jnp.mean(logp), **c_info}
        grads = {"actor": (a_grads, a_updates, state.actor.params), **c_grads}
        new = new._replace(actor=actor, log_alpha=log_alpha, alpha_opt_state=alpha_opt)
        return new, add_optimizer_stats(info, grads)

    def action_values(state: CRLState, obs, nets=nets):
        batch = obs.shape[0]
        states = jnp.broadcast_to(obs[:, None, :s], (batch, action_size, s))
        onehots = jnp.broadcast_to(jnp.eye(action_size), (batch, action_size, action_size))
        x = jnp.concatenate([states, onehots], axis=-1).reshape(batch * action_size, -1)
        phi = nets["phi"].apply(state.phi.params, x)[0].reshape(batch, action_size, -1)
        psi = nets["psi"].apply(state.psi.params, obs[:, s:])[0]
        return contrastive.pair_energy(spec.energy, phi, psi[:, None, :],
                                       jnp.exp(state.log_scale))

    def act(state: CRLState, obs, key):
        if spec.discrete:
            return epsilon_greedy(action_values(state, obs), epsilon(state.step), key)
        return policy.sample(nets["actor"].apply(state.actor.params, obs)[0], key)

    def act_mode(state: CRLState, obs):
        if spec.discrete:
            values = action_values(state, obs, eval_nets)
            return jax.nn.one_hot(jnp.argmax(values, axis=-1), action_size)
        return policy.mode(eval_nets["actor"].apply(state.actor.params, obs)[0])

    def critic_logits(state: CRLState, batch: GoalBatch):
        phi, psi = embed(state.phi.params, state.psi.params, batch.obs[:, :s], batch.action,
                         batch.goal)
        return contrastive.logits(spec.energy, phi, psi, jnp.exp(state.log_scale))

    def features(state: CRLState, obs):
        """Per network; φ at the evaluation action (the actor's mode; discrete: the argmax)."""
        out = {}
        if spec.discrete:   # the greedy action at the training step count
            action = jax.nn.one_hot(jnp.argmax(action_values(state, obs), axis=-1),
                                    action_size)
        else:
            raw, out["actor"] = nets["actor"].apply(state.actor.params, obs)
            action = policy.mode(raw)
        x = jnp.concatenate([obs[:, :s], action], axis=-1)
        return {**out, "phi": nets["phi"].apply(state.phi.params, x)[1],
                "psi": nets["psi"].apply(state.psi.params, obs[:, s:])[1]}

    return CRL(init, act, act_mode, update, critic_logits, features, nets, sizes,
               discrete=spec.discrete,
               action_values=action_values if spec.discrete else None,
               epsilon=epsilon if spec.discrete else None)


def layer_orders(crl: CRL) -> dict[str, list[str]]:
    """Hidden layers (forward order) then ``out``, per network."""
    return {name: layer_order(net, (crl.input_sizes[name],)) for name, net in crl.networks.items()}


def make_reset(spec, crl: CRL, orders: dict[str, list[str]]):
    """The reset intervention ``(state, obs, hparams, key) -> state`` of an
    :class:`continual.interventions.InterventionSpec` for CRL (``obs``: a probe batch of
    ``state ‖ goal`` for ReDo's dormancy scores), or None for ``none``: applied to every
    network (the actor, φ and ψ; discrete: φ and ψ) alike; ``full`` also restarts the
    temperature and the cosine scale. Continual backprop (``cbp``) is not implemented for
    CRL."""
    from continual.interventions import reset_network
    from plasticity import resets

    if spec.kind == "none":
        return None
    if spec.kind == "cbp":
        raise ValueError("reset 'cbp' (continual backprop) is supervised-only for now; valid "
                         "for CRL: none, full, head, last_k, redo, shrink_perturb")
    if spec.kind in ("head", "last_k"):
        for order in orders.values():  # validate k against every network now
            resets.last_layers(order, 1 if spec.kind == "head" else spec.last_k)

    def apply(state: CRLState, obs, hparams: HParams, key) -> CRLState:
        fresh = crl.init(key, hparams)
        new = {name: reset_network(spec, getattr(state, name), getattr(fresh, name),
                                   lambda name=name: crl.features(state, obs)[name], hparams,
                                   orders[name])
               for name in crl.networks}
        state = state._replace(**new)
        if spec.kind == "full":
            state = state._replace(log_scale=fresh.log_scale,
                                   scale_opt_state=fresh.scale_opt_state,
                                   log_alpha=fresh.log_alpha,
                                   alpha_opt_state=fresh.alpha_opt_state)
        return state

    return apply


def make_crl_agent(crl: CRL, memory: Memory) -> Agent:
    """CRL as an :class:`continual.agents.Agent` over a trajectory memory
    (:func:`continual.agents.trajectory.make_trajectory_memory`). It adds no measurement of its
    own per log point: the loop's goal-reaching metrics and the update's critic statistics are
    what CRL reports. Its networks are :attr:`CRL.networks` (discrete: φ and ψ, no actor)."""
    names = tuple(crl.networks)

    def features(state: CRLState, obs):
        out = crl.features(state, obs)
        return {name: (getattr(state, name), out[name]) for name in names}

    act, act_mode = memoryless(crl.act, crl.act_mode)
    return Agent(init=crl.init, act=act, act_mode=act_mode, update=crl.update,
                 memory=memory, evaluate=lambda state, obs, action: {},
                 measure=lambda state, memory_, rollout, key: {}, features=features,
                 params=lambda state: tuple(getattr(state, n).params for n in names),
                 loss_keys=("critic_loss",) if crl.discrete else ("critic_loss", "actor_loss"))
