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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual.agents import contrastive, policy
from continual.agents.base import Agent, Memory, memoryless
from continual.agents.optim import net_optimizer, scalar_adam, temperature_step
from continual.agents.trajectory import GoalBatch
from continual.classifier import TrainState
from continual.optimizers import HParams
from plasticity import regularizers
from plasticity.networks import layer_order, layer_params, make_network
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

    def __post_init__(self):
        if self.energy not in contrastive.ENERGIES:
            raise ValueError(f"unknown energy {self.energy!r}; valid: "
                             f"{', '.join(contrastive.ENERGIES)}")
        if self.loss not in contrastive.LOSSES:
            raise ValueError(f"unknown contrastive loss {self.loss!r}; valid: "
                             f"{', '.join(contrastive.LOSSES)}")
        if self.repr_dim < 1 or self.logsumexp_penalty < 0 or self.init_alpha <= 0:
            raise ValueError("repr_dim must be >= 1, logsumexp_penalty >= 0, init_alpha > 0")
        if regularizers.canonical_name(self.regularizer) == "ewc":
            raise ValueError("regularizer 'ewc' needs a Fisher consolidation step that the CRL "
                             "agent does not implement; choose another regularizer")


class CRLState(NamedTuple):
    actor: TrainState
    phi: TrainState
    psi: TrainState
    log_scale: jax.Array        # the cosine energy's log logit scale
    scale_opt_state: Any
    log_alpha: jax.Array
    alpha_opt_state: Any
    step: jax.Array


class CRL(NamedTuple):
    """CRL's networks and losses as pure functions."""

    init: Callable[[jax.Array, HParams], CRLState]
    act: Callable[[CRLState, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    act_mode: Callable[[CRLState, jax.Array], jax.Array]
    update: Callable[[CRLState, GoalBatch, HParams, jax.Array], tuple[CRLState, dict]]
    critic_logits: Callable[[CRLState, GoalBatch], jax.Array]   # [B, B]
    features: Callable[[CRLState, jax.Array], dict]             # network -> per-layer features
    networks: dict          # name -> Network ("actor", "phi", "psi")
    input_sizes: dict       # name -> input width


def make_crl(spec: CRLSpec, goals: GoalSpace, action_size: int, *,
             optimizer_stats: Callable | None = None) -> CRL:
    """The CRL agent for one goal space and action size (see the module docstring)."""
    opt = net_optimizer(spec.optimizer, spec.regularizer)
    s, g = goals.state_size, goals.goal_size
    kw = dict(hidden=spec.hidden, blocks=spec.blocks, activation=spec.activation,
              layer_norm=spec.layer_norm)
    sizes = {"actor": s + g, "phi": s + action_size, "psi": g}
    outputs = {"actor": 2 * action_size, "phi": spec.repr_dim, "psi": spec.repr_dim}
    nets = {name: make_network(spec.network, (sizes[name],), outputs[name], **kw)
            for name in sizes}
    target_entropy = -0.5 * action_size

    def init(key, hparams: HParams) -> CRLState:
        keys = jax.random.split(key, 3)
        actor, phi, psi = (opt.init(nets[n], k, hparams) for n, k in zip(sizes, keys))
        log_scale = jnp.log(jnp.asarray(contrastive.COSINE_SCALE_INIT, jnp.float32))
        log_alpha = jnp.log(jnp.asarray(spec.init_alpha, jnp.float32))
        return CRLState(actor, phi, psi, log_scale, scalar_adam(hparams).init(log_scale),
                        log_alpha, scalar_adam(hparams).init(log_alpha), jnp.zeros((), jnp.int32))

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

    def update(state: CRLState, batch: GoalBatch, hparams: HParams, key):
        k_actor, k_tx = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        # Actor, with the critic fixed; then α on the actor's log-probabilities.
        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor.params, state, alpha, batch, k_actor)
        actor, a_updates = opt.step(state.actor, a_grads, hparams, jax.random.fold_in(k_tx, 0))
        log_alpha, alpha_opt, alpha_loss = temperature_step(
            state.log_alpha, state.alpha_opt_state, logp, target_entropy, hparams)
        # Critic: φ, ψ and the cosine scale on one contrastive loss.
        (c_loss, stats), (g_phi, g_psi, g_scale) = jax.value_and_grad(
            critic_loss, has_aux=True)((state.phi.params, state.psi.params, state.log_scale),
                                       batch)
        phi, phi_updates = opt.step(state.phi, g_phi, hparams, jax.random.fold_in(k_tx, 1))
        psi, psi_updates = opt.step(state.psi, g_psi, hparams, jax.random.fold_in(k_tx, 2))
        step_scale, scale_opt = scalar_adam(hparams).update(g_scale, state.scale_opt_state)
        log_scale = optax.apply_updates(state.log_scale, step_scale)

        info = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": alpha_loss,
                "alpha": jnp.exp(log_alpha), "entropy": -jnp.mean(logp), **stats}
        if spec.energy == "cosine":
            info["logit_scale"] = jnp.exp(log_scale)
        if optimizer_stats is not None:
            for name, (grads, upd, params) in {
                    "actor": (a_grads, a_updates, state.actor.params),
                    "phi": (g_phi, phi_updates, state.phi.params),
                    "psi": (g_psi, psi_updates, state.psi.params)}.items():
                per_metric = optimizer_stats(layer_params(grads), layer_params(upd),
                                             layer_params(params))
                for metric, per in per_metric.items():
                    info.setdefault(metric, {}).update(
                        {f"{name}/{layer}": v for layer, v in per.items()})
        new = CRLState(actor, phi, psi, log_scale, scale_opt, log_alpha, alpha_opt,
                       state.step + 1)
        return new, info

    def act(state: CRLState, obs, key):
        return policy.sample(nets["actor"].apply(state.actor.params, obs)[0], key)

    def act_mode(state: CRLState, obs):
        return policy.mode(nets["actor"].apply(state.actor.params, obs)[0])

    def critic_logits(state: CRLState, batch: GoalBatch):
        phi, psi = embed(state.phi.params, state.psi.params, batch.obs[:, :s], batch.action,
                         batch.goal)
        return contrastive.logits(spec.energy, phi, psi, jnp.exp(state.log_scale))

    def features(state: CRLState, obs):
        raw, actor_features = nets["actor"].apply(state.actor.params, obs)
        x = jnp.concatenate([obs[:, :s], policy.mode(raw)], axis=-1)
        return {"actor": actor_features, "phi": nets["phi"].apply(state.phi.params, x)[1],
                "psi": nets["psi"].apply(state.psi.params, obs[:, s:])[1]}

    return CRL(init, act, act_mode, update, critic_logits, features, nets, sizes)


def layer_orders(crl: CRL) -> dict[str, list[str]]:
    """Hidden layers (forward order) then ``out``, per network."""
    return {name: layer_order(net, (crl.input_sizes[name],)) for name, net in crl.networks.items()}


def make_reset(spec, crl: CRL, orders: dict[str, list[str]]):
    """The reset intervention ``(state, obs, hparams, key) -> state`` of an
    :class:`continual.interventions.InterventionSpec` for CRL (``obs``: a probe batch of
    ``state ‖ goal`` for ReDo's dormancy scores), or None for ``none``: applied to the actor,
    φ and ψ alike; ``full`` also restarts the temperature and the cosine scale. Continual
    backprop (``cbp``) is not implemented for CRL."""
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
               for name in ("actor", "phi", "psi")}
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
    what CRL reports."""

    def features(state: CRLState, obs):
        out = crl.features(state, obs)
        return {name: (getattr(state, name), out[name]) for name in ("actor", "phi", "psi")}

    act, act_mode = memoryless(crl.act, crl.act_mode)
    return Agent(init=crl.init, act=act, act_mode=act_mode, update=crl.update,
                 memory=memory, evaluate=lambda state, obs, action: {},
                 measure=lambda state, memory_, rollout, key: {}, features=features,
                 params=lambda state: (state.actor.params, state.phi.params, state.psi.params),
                 loss_keys=("critic_loss", "actor_loss"))
