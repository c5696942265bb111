"""The environment-source interface: a continual sequence of RL tasks as pure functions of one
task's slice (DESIGN.md, principle 1: tasks are data).

A source (Brax, MuJoCo Playground, a gridworld suite) provides ``params``, a pytree whose leaves
have a leading task axis ``[T]``, and ``reset`` / ``step`` that read one task's slice
(``tasks.base.task_slice(seq.params, t)``, ``t`` may be traced). The environment state is any
pytree with Brax's ``State`` fields ``obs [obs_size]``, ``reward []`` and ``done []`` (1.0 where
the episode terminated); the loop vmaps ``reset`` and ``step`` over its envs, resets finished
episodes itself (to the task's reset states, or fresh resets where the source sets
``fresh_resets``) and applies the time limit, so a source implements neither auto-reset nor
truncation.

A goal-conditioned source also declares its :class:`GoalSpace`: where the goal sits in the
observation and when it counts as reached, so the loop measures success on any such source and a
goal-conditioned agent relabels stored states as goals.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class GoalSpace(NamedTuple):
    """How a goal-conditioned observation is laid out (REFERENCE.md §9 "Goals").

    ``obs = state ‖ goal`` with ``state = obs[:state_size]`` and ``goal = obs[state_size:]``; a
    state *achieves* ``state[indices]`` (the goal's coordinates in the state), and the goal is
    reached where ``‖state[indices] − goal‖ < threshold``. The env's reward is the success
    signal (1 within the threshold, else 0), or ``−‖state[indices] − goal‖`` where ``dense``:
    :meth:`reward`, which hindsight relabelling uses to reward a relabelled goal exactly as the
    env would."""

    state_size: int
    indices: tuple[int, ...]
    threshold: float
    dense: bool = False

    @property
    def goal_size(self) -> int:
        return len(self.indices)

    def achieved(self, state: jax.Array) -> jax.Array:
        """``[..., state_size]`` → ``[..., goal_size]``: the goal a state achieves."""
        return state[..., list(self.indices)]

    def distance(self, obs: jax.Array) -> jax.Array:
        """``[..., obs]`` → ``[...]``: the distance between the achieved goal and the goal."""
        state, goal = obs[..., :self.state_size], obs[..., self.state_size:]
        return jnp.linalg.norm(self.achieved(state) - goal, axis=-1)

    def reward(self, state: jax.Array, goal: jax.Array) -> jax.Array:
        """``[..., state_size]``, ``[..., goal_size]`` → ``[...]``: the env's reward in
        ``state`` for ``goal``."""
        distance = jnp.linalg.norm(self.achieved(state) - goal, axis=-1)
        return -distance if self.dense else (distance < self.threshold).astype(jnp.float32)


class EnvTaskSequence(NamedTuple):
    """A continual sequence of RL tasks over one environment."""

    name: str
    env: Any                                     # the source's env object (for inspection)
    params: Any                                  # leaves [T]
    reset: Callable[[Any, jax.Array], Any]       # (task, key) -> env state
    step: Callable[[Any, Any, jax.Array], Any]   # (task, state, action) -> env state
    num_tasks: int
    observation_size: int
    action_size: int
    data: Any = ()                               # shared by all tasks (none for simulators)
    goals: GoalSpace | None = None               # set by goal-conditioned sources
    # Where an episode ends, the loop restarts the env from a fresh ``reset`` (a new board,
    # layout or goal per episode: procedurally generated tasks) instead of the env's one reset
    # state of the current visit (Brax's AutoResetWrapper convention, the default: a physics
    # reset costs a simulator initialisation per step).
    fresh_resets: bool = False


def distinct_rank(scores: jax.Array) -> jax.Array:
    """``[C]`` → each entry's rank (0 = smallest; ties broken by index): the cells whose rank
    is below ``k`` are the ``k`` smallest, a uniform draw of ``k`` distinct cells for iid
    scores. ``C²`` comparisons, cheaper than two sorts for board-sized ``C``."""
    index = jnp.arange(scores.shape[0])
    before = (scores[None, :] < scores[:, None]) | ((scores[None, :] == scores[:, None])
                                                   & (index[None, :] < index[:, None]))
    return jnp.sum(before, axis=1)
