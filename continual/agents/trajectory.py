"""Trajectory replay with future-goal relabelling: the :class:`continual.agents.Memory` of
goal-conditioned agents (CRL; REFERENCE.md §9 "Relabelling").

Every env keeps its own time-ordered trajectory in a ring of ``capacity`` steps: arrays
``[C, E, ...]`` (time leading, one column per env) of the *state* part of the observation
(:class:`tasks.envs.GoalSpace`), the action, and the id of the episode the step belongs to. An
insert writes one slot for all envs (``pos``) and never moves stored data (JaxGCRL ``jnp.roll``s
the whole buffer on every insert once full). Episode ids count each env's finished episodes, so
along a column's *logical* order (oldest first) they never decrease — also across the ring's
wrap.

A batch draws ``batch_size`` (env, step) pairs uniformly over the stored steps. For each, the
steps left in its episode within the buffer, ``H``, come from a binary search for the episode's
last stored step in the column's logical order (``⌈log₂ C⌉`` gathers, not a scan of the
column); the goal is the state ``Δ`` steps later with Δ drawn from the truncated geometric law of
:func:`continual.agents.relabel.future_offsets` (``P(Δ = k) ∝ γ^k``, ``k = 1..H``; the state itself
when ``H = 0``), so a goal is never past the stored trajectory nor in another episode. The goal is
what that state achieves (``goals.achieved``); the batch's ``obs`` is ``state ‖ goal``, the input
of a goal-conditioned actor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from continual.agents.base import EnvStep, Memory
from continual.agents.relabel import future_offsets
from tasks.envs.base import GoalSpace


@dataclass(frozen=True)
class TrajectorySpec:
    """Sizes of the trajectory memory; ``capacity`` counts steps *per env* (JaxGCRL: 10,000)."""

    capacity: int = 10_000
    batch_size: int = 256
    min_steps: int = 1_000        # steps per env stored before updates start (JaxGCRL: 1,000)
    discount: float = 0.99        # γ of the goal offset law

    def __post_init__(self):
        if self.capacity < 2 or self.batch_size < 1:
            raise ValueError("capacity must be >= 2 steps per env and batch_size >= 1")
        if not 0 <= self.min_steps <= self.capacity:
            raise ValueError(f"min_steps must lie in 0..capacity ({self.capacity}), got "
                             f"{self.min_steps}")
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must lie in (0, 1), got {self.discount}")


class Trajectories(NamedTuple):
    state: jax.Array     # [C, E, state_size]
    action: jax.Array    # [C, E, action_size]
    episode: jax.Array   # [C, E] int32: the episode id of each stored step
    current: jax.Array   # [E] int32: the id the next stored step of each env gets
    pos: jax.Array       # the slot the next insert writes
    size: jax.Array      # stored steps per env (≤ C)
    # Hindsight relabelling of transitions (make_her_memory) only; () otherwise.
    goal: Any = ()        # [C, E, goal_size] the goal the episode was given
    next_state: Any = ()  # [C, E, state_size]
    discount: Any = ()    # [C, E] 0 where the step terminated its episode


class GoalBatch(NamedTuple):
    """Relabelled samples: ``obs = state ‖ goal`` (the actor's input), the action taken in the
    state, and the goal (a state achieved later in the same episode)."""

    obs: jax.Array       # [B, state_size + goal_size]
    action: jax.Array    # [B, action_size]
    goal: jax.Array      # [B, goal_size]


def last_in_episode(episode: jax.Array, start: jax.Array, size: jax.Array, env: jax.Array,
                    index: jax.Array) -> jax.Array:
    """The logical index of the last stored step of the episode that logical step ``index`` of
    env ``env`` belongs to (``episode [C, E]``; logical ``i`` at physical slot
    ``(start + i) % C``; ids non-decreasing in logical order): a binary search over
    ``[index, size)``, one gather per halving."""
    capacity = episode.shape[0]
    target = episode[(start + index) % capacity, env]

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi + 1) // 2
        inside = episode[(start + mid) % capacity, env] <= target
        return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid - 1)

    iterations = max(1, (capacity - 1).bit_length() + 1)
    lo, _ = jax.lax.fori_loop(0, iterations, halve, (index, size - 1))
    return lo


def _ring(spec: TrajectorySpec, goals: GoalSpace, num_envs: int, action_size: int,
          transitions: bool):
    """``(init, store, locate)`` of the ring shared by both memories; ``locate(memory, key, n)
    -> (env, here, start, index, left)`` draws ``n`` stored (env, step) pairs: the physical
    slot ``here``, the window's first slot ``start``, the logical ``index`` and the steps
    ``left`` in its episode within the buffer."""
    capacity, s = spec.capacity, goals.state_size

    def init() -> Trajectories:
        def zeros(*shape, dtype=jnp.float32):
            return jnp.zeros((capacity, num_envs, *shape), dtype)
        extra = ((zeros(goals.goal_size), zeros(s), zeros()) if transitions else ((), (), ()))
        return Trajectories(zeros(s), zeros(action_size), zeros(dtype=jnp.int32),
                            jnp.zeros((num_envs,), jnp.int32), jnp.zeros((), jnp.int32),
                            jnp.zeros((), jnp.int32), *extra)

    def store(memory: Trajectories, step: EnvStep, key, index) -> Trajectories:
        del key, index
        at = memory.pos
        new = memory._replace(state=memory.state.at[at].set(step.obs[:, :s]),
                              action=memory.action.at[at].set(step.action),
                              episode=memory.episode.at[at].set(memory.current),
                              current=memory.current + step.last.astype(jnp.int32),
                              pos=(at + 1) % capacity,
                              size=jnp.minimum(memory.size + 1, capacity))
        if transitions:
            new = new._replace(goal=memory.goal.at[at].set(step.obs[:, s:]),
                               next_state=memory.next_state.at[at].set(step.next_obs[:, :s]),
                               discount=memory.discount.at[at].set(step.discount))
        return new

    def locate(memory: Trajectories, key, n: int):
        k_env, k_step = jax.random.split(key)
        env = jax.random.randint(k_env, (n,), 0, num_envs)
        size = jnp.maximum(memory.size, 1)
        index = jax.random.randint(k_step, (n,), 0, size)
        start = (memory.pos - size) % capacity
        last = jax.vmap(last_in_episode, in_axes=(None, None, None, 0, 0))(
            memory.episode, start, size, env, index)
        return env, (start + index) % capacity, start, index, last - index

    return init, store, locate


def make_trajectory_memory(spec: TrajectorySpec, goals: GoalSpace, num_envs: int,
                           action_size: int) -> Memory:
    """The trajectory memory of ``num_envs`` envs whose observations follow ``goals``:
    batches of states, actions and future goals (:class:`GoalBatch`) for contrastive RL."""
    capacity = spec.capacity
    init, store, locate = _ring(spec, goals, num_envs, action_size, transitions=False)

    def sample(memory: Trajectories, key, n: int | None = None) -> GoalBatch:
        n = spec.batch_size if n is None else n
        k_locate, k_goal = jax.random.split(key)
        env, here, start, index, left = locate(memory, k_locate, n)
        offset = future_offsets(k_goal, left, spec.discount)
        there = (start + index + offset) % capacity
        state = memory.state[here, env]
        goal = goals.achieved(memory.state[there, env])
        return GoalBatch(jnp.concatenate([state, goal], axis=-1), memory.action[here, env], goal)

    def probe(memory: Trajectories, key, n):
        return sample(memory, key, n).obs, memory.size > 0

    return Memory(init, store, sample,
                  ready=lambda m: m.size >= max(spec.min_steps, 1),
                  clear=lambda m: init(), probe=probe)


HER_STRATEGIES = ("future", "final")


def make_her_memory(spec: TrajectorySpec, goals: GoalSpace, num_envs: int, action_size: int,
                    strategy: str = "future", relabel: float = 0.8) -> Memory:
    """Hindsight experience replay (Andrychowicz et al. 2017, "Hindsight Experience Replay") over
    the same ring: batches of :class:`continual.agents.sac.Transition` whose goal is, with
    probability ``relabel`` (HER's k = 4 gives 0.8), a goal achieved later in the transition's
    own episode, else the goal the episode was given; obs and next_obs carry that goal and the
    reward is the env's for it (:meth:`tasks.envs.GoalSpace.reward` of the next state).

    Strategies (:data:`HER_STRATEGIES`): ``future`` — the goal achieved by the next state of a
    step drawn uniformly from this one to the episode's last stored step (HER's "future");
    ``final`` — the goal achieved at the episode's last stored step (JaxGCRL's ``--use_her``
    relabels with the final state of its sampled segment; here of the stored episode)."""
    from continual.agents.sac import Transition

    if strategy not in HER_STRATEGIES:
        raise ValueError(f"unknown HER strategy {strategy!r}; valid: {', '.join(HER_STRATEGIES)}")
    if not 0.0 <= relabel <= 1.0:
        raise ValueError(f"relabel must lie in [0, 1], got {relabel}")
    capacity = spec.capacity
    init, store, locate = _ring(spec, goals, num_envs, action_size, transitions=True)

    def sample(memory: Trajectories, key, n: int | None = None) -> Transition:
        n = spec.batch_size if n is None else n
        k_locate, k_offset, k_relabel = jax.random.split(key, 3)
        env, here, start, index, left = locate(memory, k_locate, n)
        if strategy == "future":
            offset = jnp.floor(jax.random.uniform(k_offset, (n,)) * (left + 1)).astype(jnp.int32)
            offset = jnp.minimum(offset, left)
        else:
            offset = left
        there = (start + index + offset) % capacity
        hindsight = goals.achieved(memory.next_state[there, env])
        relabelled = jax.random.uniform(k_relabel, (n,)) < relabel
        goal = jnp.where(relabelled[:, None], hindsight, memory.goal[here, env])
        state, next_state = memory.state[here, env], memory.next_state[here, env]
        return Transition(jnp.concatenate([state, goal], axis=-1), memory.action[here, env],
                          goals.reward(next_state, goal), memory.discount[here, env],
                          jnp.concatenate([next_state, goal], axis=-1))

    def probe(memory: Trajectories, key, n):
        return sample(memory, key, n).obs, memory.size > 0

    return Memory(init, store, sample,
                  ready=lambda m: m.size >= max(spec.min_steps, 1),
                  clear=lambda m: init(), probe=probe)
