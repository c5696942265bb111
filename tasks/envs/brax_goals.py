"""Goal-conditioned Brax envs: an Ant that must reach goals drawn from a region, as a continual
task sequence over goal regions (REFERENCE.md §9 "Goals"; JaxGCRL's ``ant``).

The physics is Brax's own Ant (its bundled XML, via :func:`tasks.envs.brax.make_env`, with the
current torso position kept in the observation), so every task runs under one compilation: a
task is only a goal region, an annulus sector ``angle ∈ [angle_low, angle_high)``, ``radius ∈
[radius_low, radius_high]`` around the start (:data:`REGIONS`: ``circle`` is JaxGCRL's radius-10
circle, ``ne`` … ``se`` its quadrants). At reset a goal is drawn from the task's region
(uniform angle and radius); observation = Brax's Ant observation (29: qpos 15 ‖ qvel 14, the
torso's x, y first) ‖ goal (2); the goal indices into the state are ``(0, 1)`` and the goal is
reached within 0.5 (JaxGCRL's threshold). Reward: 1 where reached (sparse), or ``−distance``
with ``dense``. Episodes terminate where Brax's Ant does (torso height outside [0.2, 1.0]).

Differences from JaxGCRL's Ant (its own XML at 6dccab2): no visual target body (JaxGCRL's adds a
body with two slide joints, so its ``q`` has 2 more entries and its simulation a little more
work), Brax's default backend choice of plax (``mjx`` with the fast solver; JaxGCRL defaults to
``generalized``; pass ``backend`` to match) and Brax's own reset noise.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from tasks.envs import brax as brax_envs
from tasks.envs.base import EnvTaskSequence, GoalSpace

ANT_RADIUS = 10.0
REGIONS = {
    "circle": (0.0, 2 * math.pi, ANT_RADIUS, ANT_RADIUS),
    "ne": (0.0, 0.5 * math.pi, ANT_RADIUS, ANT_RADIUS),
    "nw": (0.5 * math.pi, math.pi, ANT_RADIUS, ANT_RADIUS),
    "sw": (math.pi, 1.5 * math.pi, ANT_RADIUS, ANT_RADIUS),
    "se": (1.5 * math.pi, 2 * math.pi, ANT_RADIUS, ANT_RADIUS),
}
ANT_STATE_SIZE = 29
THRESHOLD = 0.5


class GoalRegion(NamedTuple):
    """One task's goal distribution (scalars), or a sequence's (leaves ``[T]``)."""

    angle_low: Any
    angle_high: Any
    radius_low: Any
    radius_high: Any


class GoalState(NamedTuple):
    inner: Any          # the Brax state
    obs: jax.Array      # Brax's observation ‖ goal
    reward: jax.Array
    done: jax.Array


def regions(names: Sequence[str]) -> GoalRegion:
    """The ``[T]`` params of a sequence of named regions (:data:`REGIONS`)."""
    unknown = [n for n in names if n not in REGIONS]
    if unknown or not names:
        raise ValueError(f"unknown goal region {unknown[0] if unknown else None!r}; valid: "
                         f"{', '.join(REGIONS)}")
    columns = zip(*(REGIONS[n] for n in names))
    return GoalRegion(*(jnp.asarray(c, jnp.float32) for c in columns))


def sample_goal(region: GoalRegion, key: jax.Array) -> jax.Array:
    """A goal ``[x, y]`` drawn from one region (uniform angle, uniform radius)."""
    k_angle, k_radius = jax.random.split(key)
    angle = jax.random.uniform(k_angle, minval=region.angle_low, maxval=region.angle_high)
    radius = jax.random.uniform(k_radius, minval=region.radius_low, maxval=region.radius_high)
    return radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])


def ant_goals(region_names: Sequence[str] = ("circle",), *, backend: Optional[str] = None,
              dense: bool = False) -> EnvTaskSequence:
    """The goal-conditioned Ant over a sequence of goal regions (see the module docstring)."""
    params = regions(region_names)
    env = brax_envs.make_env("ant", backend, exclude_current_positions_from_observation=False)
    obs_size = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32)).obs.shape[-1]
    if obs_size != ANT_STATE_SIZE:
        raise RuntimeError(f"Brax's Ant observation has {obs_size} entries; expected "
                           f"{ANT_STATE_SIZE} (qpos 15 ‖ qvel 14): a Brax version change?")
    goals = GoalSpace(ANT_STATE_SIZE, (0, 1), THRESHOLD, dense)

    def reset(task: GoalRegion, key) -> GoalState:
        k_env, k_goal = jax.random.split(key)
        inner = env.reset(k_env)
        goal = sample_goal(task, k_goal)
        return GoalState(inner, jnp.concatenate([inner.obs, goal]), jnp.zeros(()),
                         jnp.zeros(()))

    def step(task: GoalRegion, state: GoalState, action) -> GoalState:
        del task  # the goal was drawn at reset
        inner = env.step(state.inner, action)
        goal = state.obs[ANT_STATE_SIZE:]
        return GoalState(inner, jnp.concatenate([inner.obs, goal]),
                         goals.reward(inner.obs, goal), inner.done)

    return EnvTaskSequence(f"ant-goals-{env.backend}", env, params, reset, step,
                           len(region_names), ANT_STATE_SIZE + 2, int(env.action_size),
                           goals=goals)
