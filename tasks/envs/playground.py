"""MuJoCo Playground's DM Control Suite as an environment source
(:class:`tasks.envs.base.EnvTaskSequence`): continual RL task sequences over DMC tasks, tasks as
data, one compilation per sequence.

The tasks are the DeepMind Control Suite's (Tassa et al. 2018, arXiv 1801.00690) as MuJoCo
Playground ports them to MJX (Zakka et al. 2025, arXiv 2502.08844; PyPI ``playground`` 0.2.0,
module ``mujoco_playground``). A sequence is a list of DMC task names, e.g.
``("WalkerStand", "WalkerWalk", "WalkerRun")`` or ``("CartpoleBalance", "WalkerWalk",
"CheetahRun")``, plus physics scales per task; ``params`` is an :class:`EnvParams` pytree with a
leading task axis ``[T]`` and ``reset(task, key)`` / ``step(task, state, action)`` read one
task's slice (``t`` may be traced). As in :mod:`tasks.envs.brax`, the task's MJX model is built
from the slice at trace time and swapped into a shallow copy of the Playground env::

    env2 = copy.copy(env); env2._mjx_model = build_model(env.mjx_model, task); env2.step(...)

so no wrapper stores a per-task model and every task runs under one compilation (tested: jit
cache size 1 over a whole sequence).

Physics (``build_model``): ``gravity`` scales ``opt.gravity``; ``friction`` the sliding
friction ``geom_friction[:, 0]`` (the DMC XMLs define no explicit contact ``<pair>``, whose
friction would override it; cartpole has no contacts, so friction does nothing there); ``mass``
every body's ``body_mass``, ``body_inertia`` and ``body_subtreemass`` (a uniform density
change); ``actuator`` every ``actuator_gear`` (the DMC actuators are plain motors: a torque
scale). Only array values change, so no recompile; the solver's ``*_invweight0`` keep their base
values, as in :mod:`tasks.envs.brax`.

Objectives, as data (:data:`FAMILY_TASKS`). The reward is recomputed from the stepped state with
the task's traced objective; at each task's default value it equals Playground's own reward for
that task (tested against the env class's ``_get_reward`` on the same states):

* walker (``WalkerStand`` / ``WalkerWalk`` / ``WalkerRun``: ``move_speed`` 0 / 1 / 8 m/s) and
  hopper (``HopperStand`` / ``HopperHop``: 0 / 2): ``move_speed = 0`` is the stand reward, else
  the move term ``tolerance(v, (s, ∞), margin s/2, linear, 0.5)`` on the torso's horizontal
  velocity, times the stand terms (walker ``stand · (5 move + 1) / 6``, hopper ``standing ·
  hopping``); cheetah (``CheetahRun``: 10): ``tolerance(v, (s, ∞), margin s, linear, 0)``;
* cartpole (``CartpoleBalance``, ``…Sparse``, ``CartpoleSwingup``, ``…Sparse``): ``swing_up``
  picks the initial state (pole near upright or hanging) and ``sparse`` the reward (Playground's
  own ``_dense_reward`` and ``_sparse_reward`` on the same state, selected by the flag).

A speed may be given per task as ``NAME@SPEED`` for walker, hopper and cheetah, e.g.
``CheetahRun@3`` (a target speed of 3 m/s) or ``CheetahRun@-10``: a negative speed mirrors the
move term (``v → −v``: run backward; our extension, DMC has none). Every other DMC task
(acrobot, finger, reacher, humanoid, …) runs with Playground's own reward and no objective
parameter.

Cross-domain sequences (observation and action sizes differ). One ``lax.switch`` on the traced
``branch`` index picks the domain's reset and step; a branch is one domain of the families above
(all of its tasks share one env, the objective being data) or one other DMC task. The state
holds every branch's Playground state (``state.sims``; the inactive ones are zeros, never
stepped), so all branches share one pytree. With a single branch there is no switch at all. As
Continual World trains one network across its tasks (Wołczyk et al. 2021, arXiv 2105.10919;
Meta-World gives its tasks equal sizes, so it needs no padding), the sequence has one
observation and one action size, the largest of its tasks':

* observations are zero-padded at the end to the largest size (``obs[:n]`` is the domain's own
  observation, the rest 0); no task id is appended, so the network tells domains apart only by
  what the observations show;
* actions have the largest size and a task reads only its first ``action_size`` entries: the
  extra entries are masked (ignored by the physics and by every reward; tested).

What that does to the metrics. Returns, the return matrix and the continual metrics derived from
it (``return_avg``, ``forgetting_*``, ``fwt_gem``) are unchanged: rewards are the domain's own,
and every DMC reward lies in [0, 1] per step, so returns of different domains share a scale and
averages over them mean something. SAC's policy entropy, α and its target entropy ``−|A|`` and
the soft Monte-Carlo return inside ``q_bias`` count every action entry, the masked ones
included: on a domain with fewer actuators they include independent Gaussian entries that do
nothing, so these values are comparable across tasks of one domain, not across domains.
Representation diagnostics (dormant units, feature ranks, weight spectra) see the padded inputs:
the first layer's weights on padded inputs get no gradient from a task whose inputs there are 0
but keep what other domains wrote, and a probe batch of one domain's observations has zero
columns, which lowers an input-layer rank computed on it.

``impl`` (MJX's physics implementation), measured on this 2-core x86 CPU (jax 0.10.2, mujoco
4.0.0, mujoco-mjx 3.17.0, warp-lang 1.19.0; uniform random actions, a jitted 100-step scan of
``vmap(env.step)``, median of 3, compile excluded), env steps/s at 16 / 64 envs:

===============  ===================  ===============  =====================================
task             ``jax``              ``warp``         compile s (jax: reset + scan; warp)
===============  ===================  ===============  =====================================
CartpoleBalance  452,000 / 522,000    3,700 / 10,000   4 + 4; 18 + 2 (kernels built once)
CheetahRun       35,500 / 30,300      860 / 4,500      19 + 12; 8 + 3
WalkerWalk       8,600 / 7,500        155 / 600        14 + 12; 11 + 14
HopperHop        3,200 / 3,800        315 / 1,140      17 + 13; 5 + 6
===============  ===================  ===============  =====================================

``warp`` runs Warp's kernels on the CPU through XLA's FFI and is 3–120× slower here (the gap
narrows with more envs); with its warnings silenced it was no faster (CheetahRun 3,300,
WalkerWalk 490 at 64 envs). So the default is ``jax`` on the CPU (and on TPU, where Warp does
not run) and ``warp`` on GPUs, where Warp's kernels are meant to run and which is Playground's
own default config (``impl: warp``). No GPU was available to this project: the GPU default is
Playground's choice, not a measurement here, and ``--dmc-impl jax`` is the fallback.
:data:`DEFAULT_IMPL` maps ``jax.default_backend()`` to the impl; ``impl=`` overrides it.

Solver warnings. Warp's constraint solver prints "solver iterations limit reached" from inside
its kernels whenever a world stops at ``opt.iterations`` (the DMC XMLs set 1–4): 129k lines in
one 64-env WalkerWalk measurement. ``make_env`` clears Warp's static ``opt.warn_overflow``
flags, which silences them (and ``warp.config.quiet`` its module-load log), and ``step`` counts
them instead: ``state.metrics['solver_limit']`` is 1 where the solver hit its iteration limit in
one of the env step's physics steps (Warp's per-world ``overflow`` flags, cleared before each
step; 80% of random-action WalkerWalk steps, 0.25% of CheetahRun's). MJX's ``jax`` solver runs
at most ``opt.iterations`` too but prints nothing and does not record whether it stopped there,
so ``solver_limit`` is 0 under ``jax``.

Warp's contact buffers. Warp's MJX data holds the contact buffers of all worlds together
(``contact__*`` sized ``naconmax``, ``nacon``, ``ncollision``: no env axis under ``vmap``), which
the loop's per-env select at auto-reset cannot take (a broadcast error, found with
``bench/dmc_throughput.py``). The state stores None in their place and ``step`` hands Warp zeroed
buffers, which its collision stage refills every physics step (tested on CheetahRun and
CartpoleSwingup: trajectories identical to Playground's own ``step``).

Episodes: DMC tasks never terminate (Playground's ``done`` is 1 only on NaN physics); the RL
loop applies the time limit (``episode_length``; DMC's is 1000) and resets, so this source
implements neither.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.envs.base import EnvTaskSequence

IMPLS = ("jax", "warp")
# jax.default_backend() -> impl (anything else, e.g. tpu: jax). See the module docstring.
DEFAULT_IMPL = {"cpu": "jax", "gpu": "warp"}
INSTALL = "pip install playground==0.2.0"
_ITERATIONS = 1 << 9  # mujoco_warp OverflowType.ITERATIONS

# The tasks whose objective is data, by domain, with their default objective values
# (the move speeds are walker.WALK_SPEED / RUN_SPEED, hopper._HOP_SPEED and cheetah._RUN_SPEED
# of mujoco_playground._src.dm_control_suite; a test checks them).
FAMILY_TASKS = {
    "CartpoleBalance": ("cartpole", dict(swing_up=0.0, sparse=0.0)),
    "CartpoleBalanceSparse": ("cartpole", dict(swing_up=0.0, sparse=1.0)),
    "CartpoleSwingup": ("cartpole", dict(swing_up=1.0, sparse=0.0)),
    "CartpoleSwingupSparse": ("cartpole", dict(swing_up=1.0, sparse=1.0)),
    "WalkerStand": ("walker", dict(move_speed=0.0)),
    "WalkerWalk": ("walker", dict(move_speed=1.0)),
    "WalkerRun": ("walker", dict(move_speed=8.0)),
    "HopperStand": ("hopper", dict(move_speed=0.0)),
    "HopperHop": ("hopper", dict(move_speed=2.0)),
    "CheetahRun": ("cheetah", dict(move_speed=10.0)),
}
SPEED_DOMAINS = ("walker", "hopper", "cheetah")  # take NAME@SPEED


class EnvParams(NamedTuple):
    """One task (scalar leaves) or a sequence of tasks (leaves ``[T]``)."""

    gravity: Any     # scale of the base gravity vector
    friction: Any    # scale of every geom's sliding friction
    mass: Any        # scale of every body's mass and inertia
    actuator: Any    # scale of every actuator's gear (motor torque)
    branch: Any      # int32: which domain (or other DMC task) of the sequence
    move_speed: Any  # walker, hopper, cheetah: speed above which the move term is 1 (0: stand)
    swing_up: Any    # cartpole: 1 starts hanging down (swing-up), 0 near upright (balance)
    sparse: Any      # cartpole: 1 sparse reward, 0 dense


class State(NamedTuple):
    """The source's env state: what the RL loop reads (``obs`` padded to the sequence's size,
    ``reward``, ``done``), ``metrics`` (``speed``: the velocity the move term reads, 0 where
    none; ``solver_limit``: see the module docstring) and every branch's Playground state."""

    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: dict
    sims: tuple


class Suite(NamedTuple):
    """``EnvTaskSequence.env`` of this source: the sequence's task names and its branches."""

    tasks: tuple[str, ...]
    branches: tuple[str, ...]     # a domain of FAMILY_TASKS or a DMC task name
    envs: tuple                   # one Playground env per branch
    impl: str
    observation_sizes: tuple[int, ...]
    action_sizes: tuple[int, ...]


def _playground():
    try:
        from mujoco_playground import dm_control_suite
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"the dmc env needs MuJoCo Playground: {INSTALL} ({e})") from e
    return dm_control_suite


def task_names() -> tuple[str, ...]:
    """Every DMC task name Playground registers (``registry.dm_control_suite.ALL_ENVS``)."""
    return tuple(_playground().ALL_ENVS)


def default_impl() -> str:
    return DEFAULT_IMPL.get(jax.default_backend(), "jax")


def _check(value, valid, what: str):
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")
    return value


def parse_task(name: str) -> tuple[str, str, dict]:
    """``NAME`` or ``NAME@SPEED`` -> (DMC task name, branch, objective values)."""
    base, _, speed = name.partition("@")
    _check(base, task_names(), "DMC task")
    if base not in FAMILY_TASKS:
        if speed:
            raise ValueError(f"{name!r}: a speed (@) exists for {', '.join(SPEED_DOMAINS)} "
                             f"tasks only")
        return base, base, {}
    domain, values = FAMILY_TASKS[base]
    values = dict(values)
    if speed:
        if domain not in SPEED_DOMAINS:
            raise ValueError(f"{name!r}: a speed (@) exists for {', '.join(SPEED_DOMAINS)} "
                             f"tasks only")
        try:
            values["move_speed"] = float(speed)
        except ValueError:
            raise ValueError(f"{name!r}: the speed after @ must be a number") from None
        if domain == "cheetah" and values["move_speed"] == 0:
            raise ValueError(f"{name!r}: the cheetah's speed must be nonzero (0 would reward "
                             "any forward speed fully)")
    return base, domain, values


def make_env(task: str, impl: Optional[str] = None):
    """Playground's env for a DMC task name on ``impl`` (default: :func:`default_impl`), Warp's
    solver warnings silenced (they are counted in ``metrics['solver_limit']``)."""
    impl = _check(impl or default_impl(), IMPLS, "impl")
    env = _playground().load(task, config_overrides={"impl": impl})
    if impl == "warp":
        import warp
        warp.config.quiet = True
        # A static kernel flag: set once here, never per task.
        env._mjx_model = env.mjx_model.tree_replace({"opt._impl.warn_overflow": 0})
    return env


def build_model(base, task: EnvParams):
    """The MJX model of one task: ``base`` with its physics scaled (scalars, traced or not;
    only array values change, so any task reuses any other's compilation)."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    g, fr, m, a = f32(task.gravity), f32(task.friction), f32(task.mass), f32(task.actuator)
    return base.replace(
        opt=base.opt.replace(gravity=base.opt.gravity * g),
        body_mass=base.body_mass * m,
        body_inertia=base.body_inertia * m,
        body_subtreemass=base.body_subtreemass * m,
        geom_friction=jnp.asarray(base.geom_friction).at[:, 0].multiply(fr),
        actuator_gear=base.actuator_gear * a,
    )


# ----------------------------------------------------------------------------- objectives
def above(x, lower, margin, value_at_margin):
    """dm_control's ``tolerance(x, bounds=(lower, inf), margin, sigmoid='linear',
    value_at_margin)`` with traced ``lower`` and ``margin > 0`` (Playground's ``reward.tolerance``
    needs Python floats)."""
    scaled = (lower - x) / margin * (1.0 - value_at_margin)
    return jnp.where(x >= lower, 1.0, jnp.where(jnp.abs(scaled) < 1, 1.0 - scaled, 0.0))


def move_term(v, speed, margin_ratio, value_at_margin):
    """The move term at a signed target ``speed`` (negative: the same term on ``-v``)."""
    s = jnp.abs(speed)
    return above(jnp.where(speed < 0, -v, v), s, jnp.maximum(s * margin_ratio, 1e-6),
                 value_at_margin)


def _velocity(env, data):
    from mujoco_playground._src import mjx_env
    return mjx_env.get_sensor_data(env.mj_model, data, "torso_subtreelinvel")[0]


def _cartpole_reward(env, data, action, task):
    dense = env._dense_reward(data, action, {}, {})
    sparse = env._sparse_reward(data, action, {}, {})
    return jnp.where(task.sparse > 0, sparse, dense), jnp.zeros(())


def _walker_reward(env, data, action, task):
    stand = env._get_stand_reward(data, action, {}, {})
    v = _velocity(env, data)
    move = move_term(v, task.move_speed, 0.5, 0.5)
    return jnp.where(task.move_speed == 0, stand, stand * (5 * move + 1) / 6), v


def _hopper_reward(env, data, action, task):
    terms = {}
    stand = env._stand_reward(data, action, {}, terms)
    v = env._speed(data)
    hop = terms["reward/standing"] * move_term(v, task.move_speed, 0.5, 0.5)
    return jnp.where(task.move_speed == 0, stand, hop), v


def _cheetah_reward(env, data, action, task):
    v = _velocity(env, data)
    return move_term(v, task.move_speed, 1.0, 0.0), v


REWARDS = {"cartpole": _cartpole_reward, "walker": _walker_reward, "hopper": _hopper_reward,
           "cheetah": _cheetah_reward}


# ----------------------------------------------------------------------------- branches
class _Branch(NamedTuple):
    reset: Callable   # (task, key) -> Playground state
    step: Callable    # (task, sim, action[own size]) -> (Playground state, metrics)
    observation_size: int
    action_size: int


def _branch(name: str, env, impl: str) -> _Branch:
    reward_fn = REWARDS.get(name)  # None: a DMC task with its own reward

    def env_for(task):
        env2 = copy.copy(env)  # shallow: the env object is never mutated
        env2._mjx_model = build_model(env.mjx_model, task)
        if name == "cartpole":  # the initial state is data too
            env2._reset_randomize = lambda rng: jnp.where(
                task.swing_up > 0, env._reset_swing_up(rng), env._reset_balance(rng))
        return env2

    template = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))
    shared = _shared_buffers(template.data) if impl == "warp" else {}

    def with_buffers(sim, buffers):
        return sim.replace(data=sim.data.replace(_impl=sim.data._impl.replace(**buffers)))

    def reset(task, key):
        return with_buffers(env_for(task).reset(key), dict.fromkeys(shared))

    def step(task, sim, action):
        if impl == "warp":  # fresh contact buffers; the overflow flags are sticky: cleared to
            # count per step
            sim = with_buffers(sim, {f: jnp.zeros(x.shape, x.dtype) for f, x in shared.items()})
            sim = sim.replace(data=sim.data.tree_replace(
                {"_impl.overflow": jnp.zeros_like(sim.data._impl.overflow)}))
        nxt = env_for(task).step(sim, action)
        speed = jnp.zeros(())
        if reward_fn is not None:
            reward, speed = reward_fn(env, nxt.data, action, task)
            nxt = nxt.replace(reward=jnp.asarray(reward, jnp.float32))
        limit = (((nxt.data._impl.overflow & _ITERATIONS) != 0).astype(jnp.float32)
                 if impl == "warp" else jnp.zeros(()))
        nxt = with_buffers(nxt, dict.fromkeys(shared))
        return nxt, {"speed": jnp.asarray(speed, jnp.float32), "solver_limit": limit}

    return _Branch(reset, step, int(template.obs.shape[-1]), int(env.action_size))


def _shared_buffers(data) -> dict:
    """Warp's Data fields that all worlds share (no env axis: the contact buffers, sized
    ``naconmax`` for all worlds together, and their counters), as shape structs. The state
    stores None in their place, so every leaf has the env axis the loop selects on at
    auto-reset; ``step`` hands the kernels zeroed buffers (collision refills them every physics
    step; tested: the same trajectories as Playground's own step)."""
    from mujoco.mjx.warp import types
    impl = data._impl
    return {f: getattr(impl, f) for f, batched in types._BATCH_DIM["Data"].items()
            if not batched and isinstance(getattr(impl, f, None), jax.ShapeDtypeStruct)}


def _raw(key):
    """Playground's envs store their key in ``info``: keep legacy uint32 keys there, so every
    leaf of the state has a plain dtype (zeros for the inactive branches)."""
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


# ----------------------------------------------------------------------------- sequences
def params(num_tasks: int, **values) -> EnvParams:
    """An :class:`EnvParams` with leaves ``[num_tasks]``; unspecified fields take the base value
    (scales 1, branch 0, move speed 0, swing_up 0, sparse 0). Each value is a scalar or
    length-T."""
    defaults = dict(gravity=1.0, friction=1.0, mass=1.0, actuator=1.0, branch=0,
                    move_speed=0.0, swing_up=0.0, sparse=0.0)
    bad = sorted(set(values) - set(defaults))
    if bad:
        raise ValueError(f"unknown params {bad}; valid: {', '.join(defaults)}")
    out = {}
    for k, d in defaults.items():
        dtype = np.int32 if k == "branch" else np.float32
        v = np.asarray(d if values.get(k) is None else values[k], dtype)
        if v.ndim == 0:
            v = np.full((num_tasks,), v, dtype)
        if v.shape != (num_tasks,):
            raise ValueError(f"{k} has shape {v.shape}; expected ({num_tasks},) or a scalar")
        out[k] = jnp.asarray(v)
    return EnvParams(**out)


def sequence(tasks: Sequence[str], gravity_scales=None, friction_scales=None, mass_scales=None,
             actuator_scales=None, impl: Optional[str] = None,
             name: Optional[str] = None) -> EnvTaskSequence:
    """An :class:`EnvTaskSequence` over DMC task names (``NAME`` or ``NAME@SPEED``), one task
    each; each ``*_scales`` is ``None`` (1), a scalar or one value per task."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"no DMC tasks given; valid: {', '.join(task_names())}")
    impl = _check(impl or default_impl(), IMPLS, "impl")
    parsed = [parse_task(t) for t in tasks]
    branches = tuple(dict.fromkeys(b for _, b, _ in parsed))
    first = {b: base for base, b, _ in reversed(parsed)}  # the env each branch loads
    envs = tuple(make_env(first[b], impl) for b in branches)
    parts = [_branch(b, env, impl) for b, env in zip(branches, envs)]
    obs_size = max(p.observation_size for p in parts)
    act_size = max(p.action_size for p in parts)

    objective = {k: [v.get(k, 0.0) for _, _, v in parsed]
                 for k in ("move_speed", "swing_up", "sparse")}
    task_params = params(len(tasks), branch=[branches.index(b) for _, b, _ in parsed],
                         gravity=gravity_scales, friction=friction_scales, mass=mass_scales,
                         actuator=actuator_scales, **objective)

    def pad(obs):
        return jnp.pad(obs, (0, obs_size - obs.shape[-1]))

    def reset_branch(i):
        def fn(task, key):
            sims = tuple(
                parts[j].reset(task, key) if j == i else
                jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                             jax.eval_shape(parts[j].reset, task, key))
                for j in range(len(parts)))
            sim = sims[i]
            metrics = {"speed": jnp.zeros(()), "solver_limit": jnp.zeros(())}
            return State(pad(sim.obs), jnp.asarray(sim.reward, jnp.float32),
                         jnp.asarray(sim.done, jnp.float32), metrics, sims)
        return fn

    def step_branch(i):
        def fn(task, state, action):
            sim, metrics = parts[i].step(task, state.sims[i], action[:parts[i].action_size])
            sims = state.sims[:i] + (sim,) + state.sims[i + 1:]
            return State(pad(sim.obs), sim.reward, jnp.asarray(sim.done, jnp.float32),
                         metrics, sims)
        return fn

    resets = [reset_branch(i) for i in range(len(parts))]
    steps = [step_branch(i) for i in range(len(parts))]

    def reset(task, key):
        key = _raw(key)
        if len(parts) == 1:
            return resets[0](task, key)
        return jax.lax.switch(task.branch, resets, task, key)

    def step(task, state, action):
        if len(parts) == 1:
            return steps[0](task, state, action)
        return jax.lax.switch(task.branch, steps, task, state, action)

    suite = Suite(tasks, branches, envs, impl, tuple(p.observation_size for p in parts),
                  tuple(p.action_size for p in parts))
    return EnvTaskSequence(
        name=name or "dmc-" + "-".join(branches), env=suite, params=task_params, reset=reset,
        step=step, num_tasks=len(tasks), observation_size=obs_size, action_size=act_size)


def dynamics(task: str = "CheetahRun", gravity_scales=None, friction_scales=None,
             mass_scales=None, actuator_scales=None, impl: Optional[str] = None
             ) -> EnvTaskSequence:
    """One DMC task under changing physics. Each ``*_scales`` is ``None`` (1), a scalar or a
    length-T sequence (equal lengths). With none given: base, gravity ×0.5, friction ×0.25,
    mass ×2, actuator ×0.5 (the default of :func:`tasks.envs.brax.dynamics`)."""
    from tasks.envs.brax import dynamics_params  # the same defaults and length checks

    p = dynamics_params(gravity_scales, friction_scales, mass_scales, actuator_scales)
    n = int(p.gravity.shape[0])
    scales = dict(gravity=p.gravity, friction=p.friction, mass=p.mass, actuator=p.actuator)
    return sequence((task,) * n, **{f"{k}_scales": np.asarray(v) for k, v in scales.items()},
                    impl=impl,
                    name=f"dmc-{task}-dynamics")


def objectives(tasks: Sequence[str] = ("WalkerStand", "WalkerWalk", "WalkerRun"),
               impl: Optional[str] = None) -> EnvTaskSequence:
    """Tasks that differ in objective (within a domain: one env, the objective as data) or in
    domain (padded, one ``lax.switch``), base physics."""
    return sequence(tasks, impl=impl)
