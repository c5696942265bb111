"""Deep Q-networks (Mnih et al. 2015, "Human-level control through deep reinforcement
learning") with double-DQN targets (van Hasselt, Guez & Silver 2016, "Deep Reinforcement
Learning with Double Q-learning") for discrete actions, goal-conditioned with hindsight
relabelling where the source has a :class:`tasks.envs.GoalSpace` — the TD agent of Ghugare et
al. 2026's iterative-computation study (REFERENCE.md §13) and of the stitching benchmark's
GCDQN (§9, "Stitching").

:func:`make_dqn` builds the network and the loss (a :class:`DQN` record); :func:`make_dqn_agent`
adds a memory and the measurements and returns the :class:`continual.agents.Agent` the RL loop
runs. The pieces:

* ``Q(obs) -> [A]``: any :func:`plasticity.networks.make_network` kind. The iterative ``think``
  network trains (update, ``act``, diagnostics) at ``think_steps`` cell applications and is
  evaluated (``act_mode``) at ``eval_think_steps`` (0: the same) — the same parameters, more
  or less test-time compute. :attr:`DQN.greedy` takes any step count.
* actions are one-hot vectors of ``action_size`` (:mod:`tasks.envs.grid` and
  :mod:`tasks.envs.lights_out` read their argmax); a stored action's index is its argmax.
* ``act``: ε-greedy. ε decays linearly from ``epsilon_start`` to ``epsilon_end`` over the
  first ``epsilon_decay`` gradient updates (Mnih et al.'s schedule; it stays at the start value
  until updates begin, so the warm-up is uniform exploration at ε = 1). ε is static, not a
  vmapped hyperparameter: :class:`continual.optimizers.HParams` has no field for it. With
  probability ε the action is uniform over all ``A`` actions (the greedy one included), so the
  greedy action is taken with probability ``1 − ε + ε/A``. ``act_info`` is the log-probability
  of the chosen action under that policy. ``act_mode``: greedy (ε = 0).
* ``update``: one Adam (or configured optimizer) step on the TD loss
  ``ℓ(Q(s, a) − y)``, ``y = r + γ·d·Q_target(s', argmax_a' Q(s', a'))`` (double DQN; with
  ``double=False`` Mnih et al.'s ``max_a' Q_target(s', a')``), ``d`` the stored discount (0 where
  the episode terminated). ``ℓ`` is the Huber loss with δ = 1 (``huber``, default: Mnih et al.'s
  clipping of the TD error to [−1, 1] is its gradient) or ``½x²`` (``mse``), averaged over the
  batch; then the target network: Polyak ``θ⁻ ← (1 − τ)θ⁻ + τθ`` every update (``polyak``,
  default, as SAC's critic) or a copy every ``target_period`` updates (``periodic``, Mnih et
  al.'s C = 10,000).

Memories. SAC's transition replay (:func:`transition_memory`: the same buffer, eviction and
sampling rules and held-out buffer) on sources without goals; on goal-conditioned sources SAC's
hindsight relabelling (:func:`continual.agents.trajectory.make_her_memory`) through
:func:`goal_rewards`, which makes a relabelled transition's reward and termination the env's own
for that goal: Lights Out rewards ``success − step_penalty`` and ends the episode on success,
while ``GoalSpace.reward`` is the bare success signal, so the penalty is subtracted from every
sampled reward (for the episode's own goal this gives back the env's reward exactly) and, with
``terminal_on_success``, the discount is ``1 − success`` for the batch's goal (exactly the
stored one for the episode's own goal; for a relabelled goal the step where that goal is
reached ends its episode, and one where only the original goal was reached does not).

Diagnostics and resets see one network, ``critic`` (as SAC's critic: ``critic/hidden/0``…);
the target follows resets as SAC's does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from continual import replay
from continual.agents.base import Agent, Memory, Rollout, memoryless
from continual.agents.exploration import epsilon_greedy, epsilon_schedule
from continual.agents.optim import net_optimizer
from continual.agents.sac import SAC, ReplaySpec, Transition, make_sac_agent
from continual.classifier import TrainState
from continual.optimizers import HParams
from metrics import rl as rl_metrics
from plasticity import regularizers
from plasticity.networks import ITERATIVE_NETWORKS, layer_order, layer_params, make_network

TD_LOSSES = ("huber", "mse")
TARGET_UPDATES = ("polyak", "periodic")


@dataclass(frozen=True)
class DQNSpec:
    """Static DQN choices (changing one recompiles)."""

    network: str = "mlp"
    hidden: tuple = (256, 256)
    blocks: int = 2
    activation: str = "relu"
    layer_norm: bool = False
    optimizer: str = "adam"
    regularizer: str = "none"
    think_steps: int = 5          # think network: cell applications in training
    eval_think_steps: int = 0     # ... in act_mode (0 = think_steps)
    discount: float = 0.99
    double: bool = True           # van Hasselt et al.'s target (False: Mnih et al.'s max)
    td_loss: str = "huber"
    huber_delta: float = 1.0
    target_update: str = "polyak"
    tau: float = 0.005            # polyak
    target_period: int = 1000     # periodic: updates between copies
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay: int = 10_000   # gradient updates from start to end

    def __post_init__(self):
        if self.td_loss not in TD_LOSSES:
            raise ValueError(f"unknown td_loss {self.td_loss!r}; valid: {', '.join(TD_LOSSES)}")
        if self.target_update not in TARGET_UPDATES:
            raise ValueError(f"unknown target_update {self.target_update!r}; valid: "
                             f"{', '.join(TARGET_UPDATES)}")
        if not 0 <= self.discount <= 1 or not 0 < self.tau <= 1:
            raise ValueError("discount must be in [0, 1] and tau in (0, 1]")
        if self.target_period < 1 or self.epsilon_decay < 0 or self.huber_delta <= 0:
            raise ValueError("target_period must be >= 1, epsilon_decay >= 0, huber_delta > 0")
        if not (0 <= self.epsilon_end <= 1 and 0 <= self.epsilon_start <= 1):
            raise ValueError(f"epsilon_start and epsilon_end must lie in [0, 1], got "
                             f"{self.epsilon_start}, {self.epsilon_end}")
        if self.eval_think_steps < 0:
            raise ValueError(f"eval_think_steps must be >= 0, got {self.eval_think_steps}")
        if regularizers.canonical_name(self.regularizer) == "ewc":
            raise ValueError("regularizer 'ewc' is the supervised EWC (a classifier's Fisher); "
                             "DQN has no consolidation step: choose another regularizer")


class DQNState(NamedTuple):
    q: TrainState
    target: Any           # target network parameters
    step: jax.Array       # gradient updates so far (ε schedule, periodic target copies)


class DQN(NamedTuple):
    """DQN's network and loss as pure functions (see the module docstring)."""

    init: Callable[[jax.Array, HParams], DQNState]
    act: Callable[[DQNState, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    act_mode: Callable[[DQNState, jax.Array], jax.Array]
    update: Callable[[DQNState, Transition, HParams, jax.Array], tuple[DQNState, dict]]
    td_loss: Callable[[DQNState, Transition], jax.Array]       # no gradients (td_error_*)
    q_values: Callable[[DQNState, jax.Array], jax.Array]       # [B, A], training steps
    greedy: Callable[..., jax.Array]     # (state, obs, steps=None) -> one-hot [B, A]
    epsilon: Callable[[jax.Array], jax.Array]                  # updates -> ε
    features: Callable[[DQNState, jax.Array], dict]            # per-layer, training steps
    network: Any
    action_size: int
    discount: float


def make_dqn(spec: DQNSpec, observation_size: int, action_size: int, *,
             optimizer_stats: Callable | None = None) -> DQN:
    """The DQN of one observation and (discrete) action size."""
    if action_size < 2:
        raise ValueError(f"DQN needs at least 2 discrete actions, got {action_size}")
    opt = net_optimizer(spec.optimizer, spec.regularizer)
    iterative = spec.network in ITERATIVE_NETWORKS
    if spec.eval_think_steps and not iterative:
        raise ValueError(f"eval_think_steps applies to iterative networks "
                         f"({', '.join(ITERATIVE_NETWORKS)}), not {spec.network!r}")
    net = make_network(spec.network, (observation_size,), action_size, hidden=spec.hidden,
                       blocks=spec.blocks, activation=spec.activation,
                       layer_norm=spec.layer_norm, think_steps=spec.think_steps)
    eval_steps = (spec.eval_think_steps or spec.think_steps) if iterative else None

    def apply(params, obs, steps=None):
        return net.apply(params, obs, steps) if iterative else net.apply(params, obs)

    def epsilon(updates):
        return epsilon_schedule(updates, spec.epsilon_start, spec.epsilon_end,
                                spec.epsilon_decay)

    def init(key, hparams: HParams) -> DQNState:
        q = opt.init(net, key, hparams)
        return DQNState(q, q.params, jnp.zeros((), jnp.int32))

    def loss_fn(params, target_params, batch: Transition):
        index = jnp.argmax(batch.action, axis=-1)
        q = jnp.take_along_axis(apply(params, batch.obs)[0], index[:, None], axis=-1)[:, 0]
        next_target = apply(target_params, batch.next_obs)[0]
        if spec.double:   # the online network picks a', the target network values it
            best = jnp.argmax(apply(params, batch.next_obs)[0], axis=-1)
            next_q = jnp.take_along_axis(next_target, best[:, None], axis=-1)[:, 0]
        else:
            next_q = jnp.max(next_target, axis=-1)
        target = jax.lax.stop_gradient(batch.reward + spec.discount * batch.discount * next_q)
        error = q - target
        loss = (optax.huber_loss(error, delta=spec.huber_delta) if spec.td_loss == "huber"
                else 0.5 * jnp.square(error))
        return jnp.mean(loss), q

    def update(state: DQNState, batch: Transition, hparams: HParams, key):
        (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.q.params, state.target, batch)
        new_q, updates = opt.step(state.q, grads, hparams, key)
        step = state.step + 1
        if spec.target_update == "polyak":
            target = jax.tree.map(lambda t, p: (1 - spec.tau) * t + spec.tau * p,
                                  state.target, new_q.params)
        else:
            copy = step % spec.target_period == 0
            target = jax.tree.map(lambda t, p: jnp.where(copy, p, t), state.target,
                                  new_q.params)
        info = {"critic_loss": loss, "q_mean": jnp.mean(q), "epsilon": epsilon(state.step)}
        if optimizer_stats is not None:
            stats = optimizer_stats(layer_params(grads), layer_params(updates),
                                    layer_params(state.q.params))
            for name, per in stats.items():
                info.setdefault(name, {}).update({f"critic/{layer}": v
                                                  for layer, v in per.items()})
        return DQNState(new_q, target, step), info

    def td_loss(state: DQNState, batch: Transition):
        return loss_fn(state.q.params, state.target, batch)[0]

    def q_values(state: DQNState, obs):
        return apply(state.q.params, obs)[0]

    def greedy(state: DQNState, obs, steps=None):
        q = apply(state.q.params, obs, steps if steps is not None else eval_steps)[0]
        return jax.nn.one_hot(jnp.argmax(q, axis=-1), action_size)

    def act(state: DQNState, obs, key):
        return epsilon_greedy(q_values(state, obs), epsilon(state.step), key)

    def act_mode(state: DQNState, obs):
        return greedy(state, obs)

    def features(state: DQNState, obs):
        return apply(state.q.params, obs)[1]

    return DQN(init, act, act_mode, update, td_loss, q_values, greedy, epsilon, features, net,
               action_size, spec.discount)


def layer_orders(dqn: DQN, observation_size: int) -> dict[str, list[str]]:
    """Hidden layers (forward order) then ``out``."""
    return {"critic": layer_order(dqn.network, (observation_size,))}


def make_reset(spec, dqn: DQN, orders: dict[str, list[str]]):
    """The reset intervention ``(state, obs, hparams, key) -> state`` of an
    :class:`continual.interventions.InterventionSpec` for DQN, or None for ``none``: the
    Q-network as SAC's critic, the target following it as SAC's (``full``: the target becomes
    the new network; ``head``/``last_k``: its reset layers do; ``redo``/``shrink_perturb``:
    the target update carries them over). Continual backprop (``cbp``) is not implemented."""
    from continual.interventions import reset_network
    from plasticity import resets

    if spec.kind == "none":
        return None
    if spec.kind == "cbp":
        raise ValueError("reset 'cbp' (continual backprop) is supervised-only for now; valid "
                         "for DQN: none, full, head, last_k, redo, shrink_perturb")
    touched = None
    if spec.kind in ("head", "last_k"):
        touched = resets.last_layers(orders["critic"], 1 if spec.kind == "head"
                                     else spec.last_k)

    def apply(state: DQNState, obs, hparams: HParams, key) -> DQNState:
        fresh = dqn.init(key, hparams)
        q = reset_network(spec, state.q, fresh.q, lambda: dqn.features(state, obs), hparams,
                          orders["critic"])
        if spec.kind == "full":
            return state._replace(q=q, target=q.params)
        if touched is not None:
            return state._replace(q=q, target=resets.reset_layers(state.target, (), q.params,
                                                                  touched)[0])
        return state._replace(q=q)

    return apply


def transition_memory(spec: ReplaySpec, observation_size: int,
                      action_size: int) -> tuple[Memory, Callable | None]:
    """SAC's transition replay (:func:`continual.agents.sac.make_sac_agent`'s memory: its
    buffer, eviction and sampling rules and held-out buffer), without SAC's networks; and
    ``val_batch(memory, key) -> (batch, nonempty)`` of its held-out buffer (None without one)."""
    stub = SAC(*(None,) * len(SAC._fields))
    memory = make_sac_agent(stub, spec, observation_size, action_size).memory
    if not spec.val_every:
        return memory, None
    val_buffer = replay.make_buffer(spec.val_capacity, "fifo")  # as make_sac_agent's

    def val_batch(state, key):
        return (val_buffer.sample(state.val_buffer, key, spec.batch_size),
                state.val_buffer.size > 0)

    return memory, val_batch


def goal_rewards(memory: Memory, step_penalty: float = 0.0,
                 terminal_on_success: bool = False) -> Memory:
    """A HER memory (:func:`continual.agents.trajectory.make_her_memory`, sparse goals) whose
    batches carry the env's reward and termination for their goal: reward
    ``success − step_penalty`` and, with ``terminal_on_success`` (an env whose episodes end on
    success, as Lights Out's), discount ``1 − success``. The success of a sparse goal space's
    reward is the HER reward itself (1 within the threshold, else 0)."""
    if step_penalty == 0 and not terminal_on_success:
        return memory

    def adjust(batch: Transition) -> Transition:
        success = batch.reward
        discount = (jnp.where(success > 0.5, 0.0, 1.0) if terminal_on_success
                    else batch.discount)
        return batch._replace(reward=success - step_penalty, discount=discount)

    return memory._replace(sample=lambda m, key: adjust(memory.sample(m, key)))


def make_dqn_agent(dqn: DQN, memory: Memory, q_bias_keep: int = 1_000,
                   val_batch: Callable | None = None, think_sweep: tuple[int, ...] = ()
                   ) -> Agent:
    """DQN as an :class:`continual.agents.Agent` over ``memory`` (:func:`transition_memory`,
    or a HER memory through :func:`goal_rewards`). ``think_sweep``: step counts at which an
    iterative network's greedy policy is also evaluated at every log point (the loop's
    ``mode_variants``: ``eval_success_think<M>`` per task; one compilation, each count a branch
    of the evaluation rollout). Per log point:

    * ``q_bias``, ``q_bias_abs``, ``q_bias_sq``, ``q_bias_norm``, ``mc_return``, ``q_estimate``
      (:func:`metrics.rl.overestimation` with α = 0: Q(s, a) of the ε-greedy measurement rollout
      against its discounted Monte-Carlo return, first ``q_bias_keep`` steps);
    * ``td_error_train`` (the TD loss on a memory batch; NaN while empty) and, given
      ``val_batch(memory, key) -> (batch, nonempty)``, ``td_error_val`` and ``td_error_gap``."""

    def measure(state: DQNState, memory_state, rollout: Rollout, key) -> dict:
        k_train, k_val = jax.random.split(key)
        logs = rl_metrics.overestimation(
            rollout.record["q"], rollout.reward, rollout.done, rollout.act_info,
            gamma=dqn.discount, alpha=0.0, keep=min(q_bias_keep, rollout.reward.shape[0]))
        _, nonempty = memory.probe(memory_state, k_train, 1)
        train = jnp.where(nonempty, dqn.td_loss(state, memory.sample(memory_state, k_train)),
                          jnp.nan)
        logs["td_error_train"] = train
        if val_batch is not None:
            batch, has_val = val_batch(memory_state, k_val)
            val = jnp.where(has_val, dqn.td_loss(state, batch), jnp.nan)
            logs.update(td_error_val=val, td_error_gap=val - train)
        return logs

    def evaluate(state: DQNState, obs, action):
        q = dqn.q_values(state, obs)
        return {"q": jnp.sum(q * action, axis=-1)}

    act, act_mode = memoryless(dqn.act, dqn.act_mode)

    def greedy_at(steps):
        return memoryless(dqn.act, lambda state, obs: dqn.greedy(state, obs, steps))[1]

    variants = tuple((f"think{m}", greedy_at(m)) for m in think_sweep)
    return Agent(init=dqn.init, act=act, act_mode=act_mode, update=dqn.update, memory=memory,
                 evaluate=evaluate, measure=measure,
                 features=lambda state, obs: {"critic": (state.q, dqn.features(state, obs))},
                 params=lambda state: state.q.params, loss_keys=("critic_loss",),
                 mode_variants=variants)
