"""The environment-source interface: a continual sequence of RL tasks as pure functions of one
task's slice (DESIGN.md, principle 1: tasks are data).

A source (Brax, MuJoCo Playground, a gridworld suite) provides ``params``, a pytree whose leaves
have a leading task axis ``[T]``, and ``reset`` / ``step`` that read one task's slice
(``tasks.base.task_slice(seq.params, t)``, ``t`` may be traced). The environment state is any
pytree with Brax's ``State`` fields ``obs [obs_size]``, ``reward []`` and ``done []`` (1.0 where
the episode terminated); the loop vmaps ``reset`` and ``step`` over its envs, resets finished
episodes itself (to the task's reset states) and applies the time limit, so a source implements
neither auto-reset nor truncation.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


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
