"""RL task sequences over JAX environments, one module per environment source.

Every source builds a :class:`tasks.envs.base.EnvTaskSequence`: ``params`` with a leading task
axis, and ``reset(task, key)`` / ``step(task, state, action)`` that take one task's slice, so the
RL loop (:mod:`continual.agents.loop`) runs any source unchanged. Brax (:mod:`tasks.envs.brax`)
is the first source; MuJoCo Playground or gridworld suites go beside it as their own modules.
"""
from tasks.envs.base import EnvTaskSequence

__all__ = ["EnvTaskSequence"]
