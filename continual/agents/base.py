"""The agent interface of the RL loop (:mod:`continual.agents.loop`): what differs per agent, as
pure functions in one NamedTuple (the optax / Brax style; DESIGN.md, principles 3 and 11).

The loop owns what every agent shares: stepping all envs, auto-reset to the task's reset states,
truncation vs termination, the simulator blow-up guard, the evaluation of ``act_mode`` on every
task at each log point, the divergence freeze, interval logs, and interventions on a schedule or
at task boundaries. An agent owns

* how it acts (``act`` while training, ``act_mode`` when evaluated), with a per-env policy
  *carry* for recurrent agents (a world model's latent state and previous action): the loop
  keeps it beside the env state and restarts it from ``carry_init`` wherever an episode ends, so
  the step that sees an episode's first observation starts from the initial carry (an agent
  without one uses :func:`memoryless`),
* what it stores and replays (its :class:`Memory`: single transitions for SAC, trajectories with
  goals for goal-conditioned RL, fixed-length sequence chunks for a world model),
* how it learns from a batch of its own memory (``update``),
* which measurements it adds per log interval (``evaluate`` per rollout step, ``measure`` after).

A new agent is one module in ``continual/agents/`` whose builder returns an :class:`Agent`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class EnvStep(NamedTuple):
    """One step of every env, as the loop hands it to :attr:`Memory.store` (leading env axis).

    ``discount`` is 0 where the episode *terminated* (a time-limit truncation keeps 1 and
    bootstraps); ``last`` marks the last step of an episode for either reason (the env restarts
    after it). ``reward`` and ``next_obs`` are finite: a simulator blow-up is stored as a
    termination with reward 0 and ``next_obs = obs``."""

    obs: jax.Array        # [E, obs]
    action: jax.Array     # [E, act]
    reward: jax.Array     # [E]
    discount: jax.Array   # [E]
    next_obs: jax.Array   # [E, obs]
    last: jax.Array       # [E] bool
    act_info: Any         # what ``act`` returned besides the action (SAC: log π)
    task: Any = 0         # [] the task the envs run (a buffer's task composition)


class Rollout(NamedTuple):
    """Fresh episodes of the training (``act``) policy on the current task, leaves ``[L, E]``:
    what :attr:`Agent.measure` receives at each log point (SAC: for ``q_bias``)."""

    record: dict          # per step, what :attr:`Agent.evaluate` returned
    reward: jax.Array
    done: jax.Array       # 1 where the episode terminated (or the simulator blew up)
    act_info: Any


class Memory(NamedTuple):
    """What an agent stores and learns from: one pytree state, fixed shapes."""

    init: Callable[[], Any]
    # (memory, step, key, env step index) -> memory
    store: Callable[[Any, EnvStep, jax.Array, jax.Array], Any]
    # (memory, key) -> a training batch (a NamedTuple with an ``obs`` field)
    sample: Callable[[Any, jax.Array], Any]
    ready: Callable[[Any], jax.Array]     # enough stored to update
    clear: Callable[[Any], Any]           # empty it (``reset_replay`` at task switches)
    # (memory, key, n) -> (obs [n, ...], valid): stored observations for probes and resets
    probe: Callable[[Any, jax.Array, int], tuple[jax.Array, jax.Array]]


class Agent(NamedTuple):
    init: Callable[[jax.Array, Any], Any]                       # (key, hparams) -> state
    # (state, carry, obs [E, obs], key) -> (action [E, act], act_info, carry)
    act: Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, Any, Any]]
    # (state, carry, obs) -> (action, carry): the evaluation policy
    act_mode: Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]
    # One gradient update: (state, batch, hparams, key) -> (state, info of scalars)
    update: Callable[[Any, Any, Any, jax.Array], tuple[Any, dict]]
    memory: Memory
    # (state, obs, action) -> {name: [E]} recorded at every step of the measurement rollout
    evaluate: Callable[[Any, jax.Array, jax.Array], dict]
    # (state, memory, rollout, key) -> {name: scalar} logged at every log point
    measure: Callable[[Any, Any, Rollout, jax.Array], dict]
    # (state, probe obs) -> {network name: (state with .params/.init_params, features)}
    features: Callable[[Any, jax.Array], dict]
    params: Callable[[Any], Any]          # the parameters checked for divergence
    loss_keys: tuple[str, ...]            # update infos whose non-finite value is divergence
    # (num envs) -> the policy carry of that many envs at an episode's start (leaves [E, ...])
    carry_init: Callable[[int], Any] = lambda n: ()
    # (fresh state, pre-trained starting points, hparams) -> the state a fine-tuning run starts
    # from; the loop applies it when its ``data`` argument holds starting points (SAC: a
    # continual.agents.sac.Start), and an agent without it cannot be fine-tuned.
    start: Callable[[Any, Any, Any], Any] | None = None
    # ((suffix, act_mode), ...): more evaluation policies, each played on every task as
    # ``act_mode`` is and logged as ``eval_<metric>_<suffix>`` (DQN's think network at several
    # test-time step counts: ``think8``).
    mode_variants: tuple = ()


def memoryless(act: Callable, act_mode: Callable) -> tuple[Callable, Callable]:
    """:attr:`Agent.act` and :attr:`Agent.act_mode` of a policy without a carry, from
    ``act(state, obs, key) -> (action, act_info)`` and ``act_mode(state, obs) -> action``."""
    def act_(state, carry, obs, key):
        return (*act(state, obs, key), carry)

    def act_mode_(state, carry, obs):
        return act_mode(state, obs), carry

    return act_, act_mode_
