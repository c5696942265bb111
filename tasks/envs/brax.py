"""Brax as an environment source (:class:`tasks.envs.base.EnvTaskSequence`): continual RL task
sequences over Brax environments, tasks as data, one compile per sequence.

A sequence is one Brax env plus ``params``, an :class:`EnvParams` pytree whose leaves have a
leading task axis ``[T]``: physics scales (gravity, friction, mass, actuator strength) and
objective parameters (forward-velocity weight or target velocity). ``reset(task, key)`` and
``step(task, state, action)`` take one task's slice (``tasks.base.task_slice(seq.params, t)``,
``t`` may be traced) and, at trace time, swap the System built from that slice into a shallow
copy of the env (REFERENCE.md §10)::

    env2 = copy.copy(env); env2.sys = build_sys(env.sys, task); env2.step(state, action)

so every task of a sequence runs under one compilation (no wrapper stores a per-task System).

Physics (``build_sys``). ``brax.base.System`` subclasses ``mjx.Model`` and the backends read
different copies of some fields; ``build_sys`` scales both copies so the same params mean the same
thing on every backend. Only array values change (no shape or static field), so no recompile:

=============  ==============================================  ==================================
parameter      mjx reads                                       generalized / positional / spring
=============  ==============================================  ==================================
gravity        ``opt.gravity``                                 ``gravity``
mass           ``body_mass``, ``body_inertia``,                ``link.inertia.mass``,
               ``body_subtreemass``                            ``link.inertia.i``
friction       ``geom_friction[:, 0]`` (all backends: contacts come from mjx's collision code)
actuator       ``actuator_gear`` (moment arm of the joint     ``actuator.gear``
               transmission; scales the applied torque)
=============  ==============================================  ==================================

Mass scales every body's mass and rotational inertia together (a uniform density change).
Joint armature and the solver's precomputed ``*_invweight0`` (constraint regularisation) keep
their base values. The actuator scale multiplies the gear, i.e. the joint torque of a motor; all
supported envs use plain motors (brax's generalized formula also applies the gear to position
actuators' bias term, so a gear scale there would not be a pure strength scale).

Backends. ``mjx`` is the default for ant and hopper (REFERENCE.md §10: with the fast solver it
is the fastest or near-fastest on CPU). For ``mjx`` the fast solver settings
``opt.iterations=1, opt.ls_iterations=4`` (brax's own ant settings) are applied ONCE when the
sequence is built; they are static fields, so changing them later would recompile, and they trade
solver accuracy for ~10x speed. halfcheetah and walker2d default to brax's own default,
``generalized``: measured here (``plax run cheetah-quick``, one task, 8 envs, one update per
transition), SAC learned HalfCheetah on ``generalized`` (evaluation return −142 → +106 in 32k
steps, critic loss 0.7–2.4) but not on ``mjx`` with the fast solver (−43 after 48k steps,
critic loss rising to 37: the cheap solver makes the dynamics erratic under a learning policy,
and the untrained policy's return there was +348, not the ≈ −140 of ``generalized``).
Validate returns before trusting ``--backend mjx`` on an env.

Objectives. The reward is recomputed from the state, purely (no wrapper)::

    reward = env_reward - env_forward_term + objective
    objective = (1 - use_target) * forward_weight * v  -  use_target * |v - target_velocity|

with ``v = state.metrics['x_velocity']`` and ``env_forward_term`` the env's own forward term in
``state.metrics`` (halfcheetah ``reward_run``, ant ``forward_reward``, hopper/walker2d
``reward_forward``). The env's other terms (control cost, healthy reward, contact cost) are kept.
With ``forward_weight=1, use_target=0`` (every ``dynamics`` task) the reward equals the env's own
one. The objective term is also stored in ``state.metrics['reward_task']``.

Out of scope: auto-reset. ``step`` does not reset terminated episodes (ant/hopper/walker2d set
``done``); a learner wraps it (e.g. ``lax.cond`` on ``done`` with ``reset(task, key)``), keeping the
task as an argument.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.envs.base import EnvTaskSequence

BACKENDS = ("mjx", "generalized", "positional", "spring")
KINDS = ("direction", "target_velocity")
FAST_SOLVER = {"opt.iterations": 1, "opt.ls_iterations": 4}


class _EnvSpec(NamedTuple):
    default_backend: str
    forward_metric: str  # the env's forward-reward term in state.metrics


ENVS = {
    "halfcheetah": _EnvSpec("generalized", "reward_run"),
    "ant": _EnvSpec("mjx", "forward_reward"),
    "hopper": _EnvSpec("mjx", "reward_forward"),
    "walker2d": _EnvSpec("generalized", "reward_forward"),
}
# Envs only goal-conditioned sequences use (tasks.envs.brax_goals): no forward objective.
GOAL_ENVS = {"reacher": _EnvSpec("generalized", "")}


class EnvParams(NamedTuple):
    """One task (scalar leaves) or a sequence of tasks (leaves ``[T]``). float32 throughout."""

    gravity: Any         # scale of the base gravity vector
    friction: Any        # scale of the sliding friction of every geom
    mass: Any            # scale of every body's mass and inertia
    actuator: Any        # scale of every actuator's gear (joint torque)
    forward_weight: Any  # weight w of the forward velocity ("direction" objective)
    target_velocity: Any  # target forward velocity ("target_velocity" objective)
    use_target: Any      # 0: w * v objective, 1: -|v - target| objective


def build_sys(base_sys, task: EnvParams):
    """The System of one task: ``base_sys`` with both copies of each physical field scaled.

    ``task`` holds scalars (traced or not); only array values change, so any task reuses the
    compilation of any other.
    """
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    g, fr, m, a = f32(task.gravity), f32(task.friction), f32(task.mass), f32(task.actuator)
    link = base_sys.link
    inertia = link.inertia.replace(mass=link.inertia.mass * m, i=link.inertia.i * m)
    return base_sys.replace(
        opt=base_sys.opt.replace(gravity=base_sys.opt.gravity * g),
        gravity=base_sys.gravity * g,
        body_mass=base_sys.body_mass * m,
        body_inertia=base_sys.body_inertia * m,
        body_subtreemass=base_sys.body_subtreemass * m,
        link=link.replace(inertia=inertia),
        geom_friction=jnp.asarray(base_sys.geom_friction).at[:, 0].multiply(fr),
        actuator_gear=base_sys.actuator_gear * a,
        actuator=base_sys.actuator.replace(gear=base_sys.actuator.gear * a),
    )


def _check(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def make_env(env_name: str, backend: Optional[str] = None, **env_kwargs):
    """The brax env for ``env_name`` on ``backend`` (default per ``ENVS``), fast solver for mjx."""
    from brax import envs

    known = {**ENVS, **GOAL_ENVS}
    spec = known[_check(env_name, tuple(known), "env")]
    backend = _check(backend or spec.default_backend, BACKENDS, "backend")
    env = envs.get_environment(env_name, backend=backend, **env_kwargs)
    if backend == "mjx":  # static solver fields: set once here, never per task
        env.sys = env.sys.tree_replace(FAST_SOLVER)
    return env


def params(num_tasks: int, **values) -> EnvParams:
    """An :class:`EnvParams` with leaves ``[num_tasks]``; unspecified fields take the base value
    (scales 1, forward weight 1, target 0, use_target 0). Each value is a scalar or length-T."""
    defaults = dict(gravity=1.0, friction=1.0, mass=1.0, actuator=1.0, forward_weight=1.0,
                    target_velocity=0.0, use_target=0.0)
    bad = sorted(set(values) - set(defaults))
    if bad:
        raise ValueError(f"unknown params {bad}; valid: {', '.join(defaults)}")
    out = {}
    for k, d in defaults.items():
        v = np.asarray(d if values.get(k) is None else values[k], np.float32)
        if v.ndim == 0:
            v = np.full((num_tasks,), v, np.float32)
        if v.shape != (num_tasks,):
            raise ValueError(f"{k} has shape {v.shape}; expected ({num_tasks},) or a scalar")
        out[k] = jnp.asarray(v)
    return EnvParams(**out)


def sequence(env_name: str, task_params: EnvParams, backend: Optional[str] = None,
             name: Optional[str] = None, **env_kwargs) -> EnvTaskSequence:
    """An :class:`EnvTaskSequence` over ``env_name`` with the given ``[T]`` params."""
    env = make_env(env_name, backend, **env_kwargs)
    fwd_key = ENVS[env_name].forward_metric

    def env_for(task):
        env2 = copy.copy(env)  # shallow: the env object is never mutated
        env2.sys = build_sys(env.sys, task)
        return env2

    def objective(task, v):
        w, tgt, u = task.forward_weight, task.target_velocity, task.use_target
        return (1.0 - u) * w * v - u * jnp.abs(v - tgt)

    def reset(task, key):
        state = env_for(task).reset(key)
        metrics = dict(state.metrics, reward_task=jnp.zeros_like(state.reward))
        return state.replace(metrics=metrics)

    def step(task, state, action):
        state = env_for(task).step(state, action)
        term = objective(task, state.metrics["x_velocity"])
        reward = state.reward - state.metrics[fwd_key] + term
        return state.replace(reward=reward, metrics=dict(state.metrics, reward_task=term))

    obs_shape = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32)).obs.shape
    t = int(task_params.gravity.shape[0])
    return EnvTaskSequence(
        name=name or f"{env_name}-{env.backend}", env=env, params=task_params, reset=reset,
        step=step, num_tasks=t, observation_size=int(obs_shape[-1]),
        action_size=int(env.action_size))


def dynamics_params(gravity_scales=None, friction_scales=None, mass_scales=None,
                    actuator_scales=None) -> EnvParams:
    """The ``[T]`` params of a physics family (see :func:`dynamics`)."""
    scales = dict(gravity=gravity_scales, friction=friction_scales, mass=mass_scales,
                  actuator=actuator_scales)
    if all(v is None for v in scales.values()):
        scales = dict(gravity=[1, .5, 1, 1, 1], friction=[1, 1, .25, 1, 1],
                      mass=[1, 1, 1, 2, 1], actuator=[1, 1, 1, 1, .5])
    lengths = {k: np.size(v) for k, v in scales.items() if v is not None and np.ndim(v) > 0}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"scale sequences differ in length: {lengths}")
    return params(next(iter(lengths.values()), 1), **scales)


def dynamics(env_name: str = "halfcheetah", gravity_scales=None, friction_scales=None,
             mass_scales=None, actuator_scales=None, backend: Optional[str] = None,
             **env_kwargs) -> EnvTaskSequence:
    """Tasks that differ in physics. Each ``*_scales`` is ``None`` (1), a scalar, or a length-T
    sequence; the given sequences must have equal length T. With none given: a 5-task sequence
    that changes one parameter at a time: base, gravity x0.5, friction x0.25, mass x2,
    actuator x0.5."""
    p = dynamics_params(gravity_scales, friction_scales, mass_scales, actuator_scales)
    return sequence(env_name, p, backend, name=f"{env_name}-dynamics", **env_kwargs)


def objective_params(kind: str = "direction", values: Optional[Sequence[float]] = None
                     ) -> EnvParams:
    """The ``[T]`` params of an objective family (see :func:`objectives`)."""
    _check(kind, KINDS, "objective kind")
    if kind == "direction":
        v = np.asarray((1.0, -1.0) if values is None else values, np.float32).reshape(-1)
        return params(v.size, forward_weight=v)
    v = np.asarray((0.5, 1.0, 2.0, 3.0) if values is None else values, np.float32).reshape(-1)
    return params(v.size, target_velocity=v, use_target=1.0)


def objectives(env_name: str = "halfcheetah", kind: str = "direction",
               values: Optional[Sequence[float]] = None, backend: Optional[str] = None,
               **env_kwargs) -> EnvTaskSequence:
    """Tasks that differ in objective, same physics. ``kind="direction"``: ``values`` are the
    forward-velocity weights (default ``(1, -1)``: run forward, then backward).
    ``kind="target_velocity"``: ``values`` are target velocities (default ``(0.5, 1, 2, 3)``),
    objective ``-|v - target|``."""
    p = objective_params(kind, values)
    return sequence(env_name, p, backend, name=f"{env_name}-{kind}", **env_kwargs)


def concat(*task_params: EnvParams) -> EnvParams:
    """Join families along the task axis (all share one structure, so one env runs them all)."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *task_params)


FAMILIES = {"dynamics": dynamics, "objectives": objectives}
