"""RL task sequences over JAX environments, one module per environment source.

Every source builds a :class:`tasks.envs.base.EnvTaskSequence`: ``params`` with a leading task
axis, and ``reset(task, key)`` / ``step(task, state, action)`` that take one task's slice, so the
RL loop (:mod:`continual.agents.loop`) runs any source unchanged. Sources: Brax
(:mod:`tasks.envs.brax`: dynamics and objective families), a multi-stage Reacher
(:mod:`tasks.envs.brax_stages`: tasks are the stage episodes start in), the goal-conditioned point-mass
maze (:mod:`tasks.envs.pointmaze`: layouts and goal regions as data) and Minigrid's gridworlds
(:mod:`tasks.envs.grid`: Empty, DoorKey and the Lava / Simple Crossings as data), MuJoCo
Playground's DM Control Suite (:mod:`tasks.envs.playground`: physics and objectives as data,
cross-domain sequences padded to one network) and goal-conditioned Lights Out
(:mod:`tasks.envs.lights_out`: board sizes and goal press ranges as data, one discrete action
per cell).
"""
from tasks.envs.base import EnvTaskSequence, GoalSpace

__all__ = ["EnvTaskSequence", "GoalSpace"]
