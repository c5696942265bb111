"""Goal-conditioned Brax envs: an Ant that must reach goals drawn from a region, or goals in a
maze, and a Reacher whose target is the goal, as continual task sequences over goal regions or
maze layouts (REFERENCE.md §9 "Goals"; JaxGCRL's ``ant``, ``ant_u_maze`` / ``ant_big_maze`` and
``reacher``).

The physics is Brax's own Ant (its bundled XML, via :func:`tasks.envs.brax.make_env`, with the
current torso position kept in the observation), so every task runs under one compilation: a
task is only a goal region, an annulus sector ``angle ∈ [angle_low, angle_high)``, ``radius ∈
[radius_low, radius_high]`` around the start (:data:`REGIONS`: ``circle`` is JaxGCRL's radius-10
circle, ``ne`` … ``se`` its quadrants). At reset a goal is drawn from the task's region
(uniform angle and radius); observation = Brax's Ant observation (29: qpos 15 ‖ qvel 14, the
torso's x, y first) ‖ goal (2); the goal indices into the state are ``(0, 1)`` and the goal is
reached within 0.5 (JaxGCRL's threshold). Reward: 1 where reached (sparse), or ``−distance``
with ``dense``. Episodes terminate where Brax's Ant does (torso height outside [0.2, 1.0]).

Ant mazes (:func:`ant_maze`). The cell maps of :mod:`tasks.envs.pointmaze` (``u_maze``,
``big_maze``, ...) at 4 m per cell (JaxGCRL's maze scaling): cell ``(row, col)`` spans
``[4·col, 4·col + 4) × [4·row, 4·row + 4)``. The model is generated at run time from Brax's own
Ant XML with one box wall (4 × 4 × 2 m) for *every* cell of the grid, so any layout of that size
is the same model: a task's ``wall_pos`` puts the walls its layout has in their cells and sinks
the others 10 m under the floor (world geoms never collide with each other, so a sunk wall
touches nothing). The walls collide with the Ant's feet (Brax's Ant lets only its feet touch the
world). The Ant starts at the centre of the layout's first ``R`` cell (the task's ``init_q``) and
goals are the centres of its ``G`` cells, drawn uniformly.

Reacher (:func:`reacher_goals`): Brax's two-link Reacher whose target is the goal, drawn at
reset from the task's region at radius :data:`REACHER_RADIUS` (from 0.02, just beyond the
closest the tip comes to the base, 0.018 with the elbow at its ±3 rad limit, to 0.2, Brax's own
target disk) and written into the target's slide joints.
State (8) = cos θ (2) ‖ sin θ (2) ‖ θ̇ (2) ‖ fingertip x, y (2), goal indices ``(6, 7)``, reached
within 0.05 (JaxGCRL's reacher threshold); no termination (the time limit ends episodes).
JaxGCRL's reacher observes the tip's 3-D position and velocity instead of the joint velocities
(its state has 10 entries); the arm's state is the same information up to the tip's height,
which is constant.

Differences from JaxGCRL's Ant (its own XML at 6dccab2): no visual target body (JaxGCRL's adds a
body with two slide joints, so its ``q`` has 2 more entries and its simulation a little more
work), Brax's default backend choice of plax (``mjx`` with the fast solver; JaxGCRL defaults to
``generalized``; pass ``backend`` to match) and Brax's own reset noise.
"""
from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from tasks.envs import brax as brax_envs
from tasks.envs import pointmaze
from tasks.envs.base import EnvTaskSequence, GoalSpace

# Goal regions by name: annulus sectors [angle_low, angle_high) around the start; each env
# gives the radii (the Ant: JaxGCRL's radius-10 circle; the Reacher: its arm's reach).
REGIONS = {
    "circle": (0.0, 2 * math.pi),
    "ne": (0.0, 0.5 * math.pi),
    "nw": (0.5 * math.pi, math.pi),
    "sw": (math.pi, 1.5 * math.pi),
    "se": (1.5 * math.pi, 2 * math.pi),
}
ANT_RADIUS = 10.0
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


def regions(names: Sequence[str], radius: tuple[float, float] = (ANT_RADIUS, ANT_RADIUS)
            ) -> GoalRegion:
    """The ``[T]`` params of a sequence of named regions (:data:`REGIONS`) at goal distances
    ``radius = (low, high)`` from the start."""
    unknown = [n for n in names if n not in REGIONS]
    if unknown or not names:
        raise ValueError(f"unknown goal region {unknown[0] if unknown else None!r}; valid: "
                         f"{', '.join(REGIONS)}")
    columns = zip(*(REGIONS[n] + tuple(radius) for n in names))
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


# ----------------------------------------------------------------------------- reacher

REACHER_RADIUS = (0.02, 0.2)
REACHER_STATE_SIZE = 8
REACHER_THRESHOLD = 0.05
FINGERTIP = 0.11  # the fingertip's offset along the second link (Brax's reacher.xml)


def reacher_arm(pipeline_state) -> jax.Array:
    """[8] the Reacher arm's state: cos θ (2) ‖ sin θ (2) ‖ θ̇ (2) ‖ fingertip x, y (2)."""
    from brax import base

    theta, theta_dot = pipeline_state.q[:2], pipeline_state.qd[:2]
    tip_offset = base.Transform.create(pos=jnp.array([FINGERTIP, 0.0, 0.0]))
    tip = pipeline_state.x.take(1).do(tip_offset).pos[:2]
    return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), theta_dot, tip])


def reacher_init(env, key: jax.Array, target: jax.Array):
    """A Brax ``State`` of the Reacher at Brax's reset noise on the arm (uniform ±0.1 rad,
    ±0.005 rad/s), its target's slide joints holding ``target`` at rest."""
    from brax.envs.base import State

    k_q, k_qd = jax.random.split(key)
    q = env.sys.init_q + jax.random.uniform(k_q, (env.sys.q_size(),), minval=-0.1, maxval=0.1)
    qd = jax.random.uniform(k_qd, (env.sys.qd_size(),), minval=-0.005, maxval=0.005)
    pipeline_state = env.pipeline_init(q.at[2:].set(target), qd.at[2:].set(0.0))
    zero = jnp.zeros(())
    return State(pipeline_state, env._get_obs(pipeline_state), zero, zero,
                 {"reward_dist": zero, "reward_ctrl": zero})


def reacher_goals(region_names: Sequence[str] = ("circle",), *,
                  backend: Optional[str] = None, dense: bool = False) -> EnvTaskSequence:
    """The goal-conditioned Reacher over a sequence of goal regions (see the module docstring)."""
    params = regions(region_names, REACHER_RADIUS)
    env = brax_envs.make_env("reacher", backend)
    goals = GoalSpace(REACHER_STATE_SIZE, (6, 7), REACHER_THRESHOLD, dense)

    def reset(task: GoalRegion, key) -> GoalState:
        k_arm, k_goal = jax.random.split(key)
        goal = sample_goal(task, k_goal)
        inner = reacher_init(env, k_arm, goal)
        zero = jnp.zeros(())
        return GoalState(inner, jnp.concatenate([reacher_arm(inner.pipeline_state), goal]),
                         zero, zero)

    def step(task: GoalRegion, state: GoalState, action) -> GoalState:
        del task  # the goal was drawn at reset
        inner = env.step(state.inner, action)
        obs = jnp.concatenate([reacher_arm(inner.pipeline_state),
                               state.obs[REACHER_STATE_SIZE:]])
        return GoalState(inner, obs, goals.reward(obs[:REACHER_STATE_SIZE],
                                                  obs[REACHER_STATE_SIZE:]), inner.done)

    return EnvTaskSequence(f"reacher-goals-{env.backend}", env, params, reset, step,
                           len(region_names), REACHER_STATE_SIZE + 2, int(env.action_size),
                           goals=goals)


# ----------------------------------------------------------------------------- ant mazes

CELL = 4.0          # metres per maze cell
WALL_HEIGHT = 2.0
SUNK = -10.0        # z of a wall the layout does not have


class MazeTask(NamedTuple):
    """One maze layout as data (leaves ``[T, ...]`` for a sequence)."""

    wall_pos: jax.Array   # [N², 3] every potential wall's position (absent ones sunk)
    start: jax.Array      # [3] the torso's start: the first R cell's centre, Brax's height
    goal_cells: jax.Array  # [N, N] goal cell weights (the G cells)


def maze_xml(size: int) -> str:
    """Brax's Ant XML with one box wall per cell of a ``size × size`` grid (see the module
    docstring); wall ``i`` is cell ``(i // size, i % size)``."""
    from etils import epath

    xml = (epath.resource_path("brax") / "envs/assets/ant.xml").read_text()
    half = CELL / 2
    walls = "".join(
        f'<geom name="wall_{r}_{c}" type="box" size="{half} {half} {WALL_HEIGHT / 2}" '
        f'pos="{CELL * c + half} {CELL * r + half} {WALL_HEIGHT / 2}" contype="0" '
        f'conaffinity="1" rgba="0.4 0.4 0.45 1"/>'
        for r in range(size) for c in range(size))
    floor_at = xml.index('name="floor"')
    end = xml.index("/>", floor_at) + 2
    # The floor plane (40 m half-size) is centred on the grid.
    floor = xml[xml.rindex("<geom", 0, floor_at):end]
    centre = CELL * size / 2
    moved = floor.replace('pos="0 0 0"', f'pos="{centre} {centre} 0"')
    return xml[:end].replace(floor, moved) + walls + xml[end:]


def maze_tasks(layouts: Sequence[str], height: float = 0.75) -> MazeTask:
    """The ``[T]`` params of a sequence of named layouts (:data:`tasks.envs.pointmaze.MAZES`),
    the torso starting ``height`` above the floor."""
    unknown = [m for m in layouts if m not in pointmaze.MAZES]
    if unknown or not layouts:
        raise ValueError(f"unknown maze {unknown[0] if unknown else None!r}; valid: "
                         f"{', '.join(pointmaze.MAZES)}")
    parsed = [pointmaze.parse(pointmaze.MAZES[m]) for m in layouts]
    sizes = {p.walls.shape[0] for p in parsed}
    if len(sizes) != 1:
        raise ValueError(f"every maze of a sequence needs the same size, got {sorted(sizes)}")
    n = sizes.pop()
    rows, cols = jnp.divmod(jnp.arange(n * n), n)
    centres = jnp.stack([CELL * cols + CELL / 2, CELL * rows + CELL / 2], axis=1)

    def one(layout: pointmaze.Layout) -> MazeTask:
        present = layout.walls.reshape(-1) > 0.5
        z = jnp.where(present, WALL_HEIGHT / 2, SUNK)
        first_start = jnp.argmax(layout.starts.reshape(-1))
        start = jnp.concatenate([centres[first_start], jnp.full((1,), height)])
        return MazeTask(jnp.concatenate([centres, z[:, None]], axis=1), start, layout.goals)

    return jax.tree.map(lambda *xs: jnp.stack(xs), *[one(p) for p in parsed])


def _backend_settings(sys, backend: str):
    """What Brax's Ant constructor does to its System per backend, for a System loaded from
    another XML (brax/envs/ant.py at brax 0.14): the fast Newton solver for ``mjx`` (plax's
    :data:`tasks.envs.brax.FAST_SOLVER` values), a 5 ms step for ``spring`` and ``positional``,
    and ``positional``'s actuator gear of 200."""
    import mujoco

    if backend == "mjx":
        sys = sys.tree_replace({"opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                                "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
                                **brax_envs.FAST_SOLVER})
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": 0.005})
    if backend == "positional":
        sys = sys.replace(actuator=sys.actuator.replace(
            gear=200 * jnp.ones_like(sys.actuator.gear)))
    return sys


def ant_maze(layouts: Sequence[str] = ("u_maze",), *, backend: Optional[str] = None,
             dense: bool = False) -> EnvTaskSequence:
    """The goal-conditioned Ant in a sequence of maze layouts of one size (see the module
    docstring): observation = Brax's Ant observation (29) ‖ goal (2), goal reached within
    0.5, one compilation for every layout."""
    from brax.io import mjcf

    params = maze_tasks(layouts)
    size = int(params.goal_cells.shape[-1])
    env = brax_envs.make_env("ant", backend, exclude_current_positions_from_observation=False)
    base_sys = _backend_settings(mjcf.loads(maze_xml(size)), env.backend)
    params = params._replace(start=params.start.at[:, 2].set(float(base_sys.init_q[2])))
    env.sys = base_sys
    first_wall = 1  # the floor is geom 0; the walls follow it in the world body
    walls = slice(first_wall, first_wall + size * size)
    goals = GoalSpace(ANT_STATE_SIZE, (0, 1), THRESHOLD, dense)

    def env_for(task: MazeTask):
        env2 = copy.copy(env)  # shallow: the env object is never mutated
        geom_pos = jnp.asarray(base_sys.geom_pos).at[walls].set(task.wall_pos)
        init_q = jnp.asarray(base_sys.init_q).at[:3].set(task.start)
        env2.sys = base_sys.replace(geom_pos=geom_pos, init_q=init_q)
        return env2

    def reset(task: MazeTask, key) -> GoalState:
        k_env, k_goal = jax.random.split(key)
        inner = env_for(task).reset(k_env)
        cell = jax.random.categorical(k_goal, jnp.log(task.goal_cells.reshape(-1)))
        goal = CELL * jnp.stack([cell % size, cell // size]).astype(jnp.float32) + CELL / 2
        return GoalState(inner, jnp.concatenate([inner.obs, goal]), jnp.zeros(()),
                         jnp.zeros(()))

    def step(task: MazeTask, state: GoalState, action) -> GoalState:
        inner = env_for(task).step(state.inner, action)
        goal = state.obs[ANT_STATE_SIZE:]
        return GoalState(inner, jnp.concatenate([inner.obs, goal]),
                         goals.reward(inner.obs, goal), inner.done)

    return EnvTaskSequence(f"ant-maze-{env.backend}", env, params, reset, step, len(layouts),
                           ANT_STATE_SIZE + 2, int(env.action_size), goals=goals)
