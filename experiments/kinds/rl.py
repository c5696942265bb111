"""What every RL learner kind shares: the environment task sequence and the loop's fields
(:class:`RLConfigBase`), the task sequence they describe and the loop's static sizes.

An RL kind's config derives from :class:`RLConfigBase` and adds its agent's fields; its
``build`` calls :func:`env_sequence` and :func:`loop_spec` and hands its
:class:`continual.agents.Agent` to :func:`continual.agents.make_rl_train`. Step counts are
**environment steps** (transitions, summed over the ``num_envs`` parallel envs of one run).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from continual.agents import RLSpec
from continual.interventions import RESETS
from experiments.config import ConfigBase, ConfigError, option, shared
from tasks.envs import brax as brax_envs
from tasks.envs import box_moving, brax_goals, brax_stages, grid, lights_out, pointmaze
from tasks.envs import playground as dmc

# Environments by source: Brax's (objective, physics and — for the Ant — goal families) and the
# pure-JAX point-mass maze (its tasks are layouts or goal regions). Goal-conditioned ones have
# observation = state ‖ goal.
# The pure-JAX Minigrid family ``grid`` (its tasks are layouts, --grids) has discrete actions:
# only agents with a discrete policy (``RLConfigBase.discrete_actions``) run it.
# ``dmc``: MuJoCo Playground's DM Control Suite (its tasks are DMC task names, --dmc-tasks).
# ``lightsout``: goal-conditioned Lights Out (tasks.envs.lights_out; its tasks are board sizes
# and press ranges, --lights-tasks), one discrete action per cell.
# ``boxes``: goal-conditioned box moving (tasks.envs.box_moving; its tasks are the stitching
# regimes, --box-tasks), six discrete actions.
ENVS = tuple(brax_envs.ENVS) + tuple(brax_envs.GOAL_ENVS) + ("pointmaze", "grid", "dmc",
                                                            "lightsout", "boxes")
DISCRETE_ENVS = ("grid", "lightsout", "boxes")  # discrete actions (a one-hot per step)
# ``stages``: the multi-stage Reacher (tasks.envs.brax_stages), tasks = the stage episodes
# start in (pre-train on the later stages, fine-tune from the first).
FAMILIES = tuple(brax_envs.FAMILIES) + ("goals", "maze", "stages")
FAMILY_ENVS = {"goals": ("ant", "reacher"), "maze": ("ant",), "stages": ("reacher",)}
GOAL_CONDITIONED = ("pointmaze, lightsout, boxes, reacher with --family goals, or ant with "
                    "--family goals or maze")


@dataclass(frozen=True)
class RLConfigBase(ConfigBase):
    # No drift schedules (ConfigBase.mixes_tasks): every env would need its own episode's task,
    # a task-batched physics step and so a second compiled variant of the simulator.

    # What to train on.
    env: str = option("halfcheetah", "environment: a Brax one (reacher: with --family goals "
                      "or stages), the goal-conditioned pointmaze (pure "
                      "JAX, fast on a CPU), grid, lightsout and boxes (pure-JAX discrete goal "
                      "tasks), or dmc (MuJoCo Playground's DM Control Suite: --dmc-tasks)",
                      ENVS)
    family: str = option("objectives", "Brax envs: how tasks differ: objective (run "
                         "direction, target velocity), physics (gravity, friction, mass, "
                         "actuator scales), goals (ant, reacher: goal-conditioned, one goal region per "
                         "task), maze "
                         "(ant: goal-conditioned, one maze layout of --mazes "
                         "per task) or stages (reacher: --stages targets in turn in one "
                         "episode, one task per --stage-starts)", FAMILIES)
    objective: str = option("direction", "objectives family: forward-velocity weights or "
                            "target velocities", brax_envs.KINDS)
    task_values: tuple = option((1.0, -1.0), "objectives family: one value per task "
                                "(direction: velocity weight, e.g. 1,-1 = forward then "
                                "backward; target_velocity: m/s)")
    gravity: tuple = option((), "dynamics family: gravity scale per task (empty: 1)")
    friction: tuple = option((), "dynamics family: friction scale per task (empty: 1)")
    mass: tuple = option((), "dynamics family: body-mass scale per task (empty: 1)")
    actuator: tuple = option((), "dynamics family: actuator-strength scale per task (empty: "
                             "1); with all four empty: base, gravity×0.5, friction×0.25, "
                             "mass×2, actuator×0.5")
    backend: str = option("", "physics backend (empty: the env's default: generalized for "
                          "halfcheetah and walker2d, mjx with the fast solver for ant and "
                          "hopper)", ("",) + brax_envs.BACKENDS)
    goal_regions: tuple = option(("circle",), "goals family: one goal region per task: "
                                 + ", ".join(brax_goals.REGIONS) + " (circle: all directions, "
                                 "at radius 10 for the ant as JaxGCRL's, 0.02–0.2 for the "
                                 "reacher; the others its quadrants)")
    grids: tuple = option(("empty-5x5", "doorkey-5x5", "lavacrossing-s5n1"), "grid: one "
                          "Minigrid task per task of the sequence (7×7 egocentric symbolic "
                          "view, 7 discrete actions): " + ", ".join(grid.GRIDS))
    lights_tasks: tuple = option(("3x3:train", "3x3:eval"), "lightsout: one task per entry, "
                                 "MxN:train (goals of 1 to ⌊mn/2⌋−1 distinct presses, "
                                 "Ghugare et al.'s training goals), MxN:eval (⌊mn/2⌋ to mn−1: "
                                 "their held-out goals), MxN:K or MxN:A-B presses; boards of "
                                 "different sizes are padded (the paper's episode is 6 steps: "
                                 "--episode-length 6; train only the first task with "
                                 "--schedule order:0)")
    lights_penalty: float = option(lights_out.STEP_PENALTY, "lightsout: reward per step is "
                                   "success − this (the paper's 0.1; 0 makes it the goal "
                                   "space's success signal, as relabelling computes it)")
    box_tasks: tuple = option(("exact:train", "exact:test"), "boxes: one task per entry, "
                              "the stitching regimes of Bortkiewicz et al. 2025: exact:train "
                              "(boxes start in a quarter, targets in an adjacent one, the agent "
                              "confined to the two), exact:test (diagonal quarters: two trained "
                              "legs chained), exact:Q1-Q2 (one pair, e.g. exact:nw-ne), "
                              "generalised:K (anywhere, K boxes already on target), "
                              "generalised:test (K = 0) or any (train only the first task with "
                              "--schedule order:0)")
    box_size: int = option(4, "boxes: board side (even; the paper's 4–6)")
    boxes: int = option(1, "boxes: boxes per episode (the paper's 1–4)")
    mazes: tuple = option(("u_maze",), "pointmaze and the ant maze family: one maze layout "
                          "per task (the same size "
                          "each): " + ", ".join(pointmaze.MAZES))
    stages: int = option(4, "stages family: targets the Reacher reaches in turn in one "
                         "episode (RoboticSequence-shaped; the stage is observed, the target "
                         "is not)")
    stage_starts: tuple = option((0, 2), "stages family: one task per value, the stage its "
                                 "episodes start in (0, 2: the whole task, and its last two "
                                 "stages to pre-train on)")
    stage_steps: int = option(50, "stages family: per-stage time limit (steps); an unsolved "
                              "stage ends the episode")
    dmc_tasks: tuple = option(("CartpoleBalance", "CartpoleSwingup"), "dmc: one DM Control "
                              "task per task (e.g. WalkerStand,WalkerWalk,WalkerRun or "
                              "CartpoleBalance,WalkerWalk,CheetahRun: other domains are "
                              "padded); walker, hopper and cheetah take NAME@SPEED (m/s, "
                              "negative: backward); with --family dynamics one task under the "
                              "physics scales")
    dmc_impl: str = option("", "dmc: MJX implementation (empty: jax on a CPU, warp on a GPU)",
                           ("",) + dmc.IMPLS)
    dense_reward: bool = option(False, "goal-conditioned envs: reward −distance to the goal "
                                "instead of the sparse success signal")
    num_envs: int = option(16, "parallel environments per run")
    episode_length: int = option(200, "time limit of a training episode (steps)")
    # The loop.
    learning_rate: tuple = shared("learning_rate", (3e-4,))
    batch_size: int = shared("batch_size", 256)
    log_every: int = shared("log_every", 4_000)
    updates_per_step: int = option(1, "gradient updates per step of all envs (replay ratio = "
                                   "this / num_envs updates per transition)")
    reset_replay: bool = option(False, "empty the replay buffer at task boundaries (Continual "
                                "World's default: old transitions carry the old task's "
                                "rewards; with --reset full: a from-scratch reference run per "
                                "task)")
    replay_capacity: int = option(100_000, "replay size in transitions over all envs")
    min_replay: int = option(1000, "transitions stored before updates start")
    env_steps_per_task: int = option(20_000, "environment steps (all envs) per task")
    eval_envs: int = option(4, "evaluation episodes per task at each log point")
    eval_length: int = option(0, "steps per evaluation episode (0 = episode_length)")

    positive = ConfigBase.positive + ("num_envs", "episode_length", "env_steps_per_task",
                                      "eval_envs", "replay_capacity")
    discrete_actions = False   # the kind's agent acts in discrete action spaces (grid, lightsout)

    @property
    def num_tasks(self) -> int:
        if self.env == "dmc" and self.family != "dynamics":
            return len(self.dmc_tasks)
        if self.env == "grid":
            return len(self.grids)
        if self.env == "lightsout":
            return len(self.lights_tasks)
        if self.env == "boxes":
            return len(self.box_tasks)
        if self.family == "stages":
            return len(self.stage_starts)
        if self.env == "pointmaze":
            return len(self.mazes)
        if self.family == "goals":
            return len(self.goal_regions)
        if self.family == "maze":
            return len(self.mazes)
        if self.family == "objectives":
            return len(self.task_values)
        lengths = [len(v) for v in (self.gravity, self.friction, self.mass, self.actuator)
                   if len(v)]
        return lengths[0] if lengths else 5

    @property
    def goal_conditioned(self) -> bool:
        """Observation = state ‖ goal, success metrics logged (:class:`tasks.envs.GoalSpace`)."""
        return (self.env in ("pointmaze", "lightsout", "boxes")
                or self.family in ("goals", "maze"))

    @property
    def discrete_env(self) -> bool:
        """The env takes discrete actions (one-hot vectors of ``action_size``)."""
        return self.env in DISCRETE_ENVS

    @property
    def update_schedule(self) -> tuple[int, int]:
        """(gradient updates per round, vector env steps between rounds): one round of
        ``updates_per_step`` every step unless a kind sets a fractional replay ratio."""
        return self.updates_per_step, 1

    @property
    def intervals_per_task(self) -> int:
        return self.env_steps_per_task // self.log_every

    @property
    def vector_steps(self) -> tuple[int, int]:
        """(steps of all envs per task, per log interval)."""
        return self.env_steps_per_task // self.num_envs, self.log_every // self.num_envs

    def describe(self) -> str:
        dmc_tasks = ", ".join(self.dmc_tasks)
        tasks = ("grids " + ", ".join(self.grids) if self.env == "grid"
                 else "boards " + ", ".join(self.lights_tasks) if self.env == "lightsout"
                 else (f"{self.box_size}x{self.box_size} boards, {self.boxes} boxes, "
                       + ", ".join(self.box_tasks)) if self.env == "boxes"
                 else (f"{dmc_tasks} dynamics" if self.family == "dynamics"
                       else f"tasks {dmc_tasks}") if self.env == "dmc"
                 else "mazes " + ", ".join(self.mazes)
                 if self.env == "pointmaze" or self.family == "maze"
                 else "goal regions " + ", ".join(self.goal_regions) if self.family == "goals"
                 else f"{self.stages} stages, starting in "
                 + ", ".join(f"{s:g}" for s in self.stage_starts) if self.family == "stages"
                 else self.family)
        return (f"{self.env} {tasks}, {self.num_tasks} tasks × {self.env_steps_per_task} "
                f"env steps ({self.num_envs} envs)")

    def check(self) -> None:
        for name in ("updates_per_step", "eval_length", "min_replay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_replay > self.replay_capacity:
            raise ConfigError(f"min_replay ({self.min_replay}) exceeds replay_capacity "
                              f"({self.replay_capacity}): updates would never start")
        if self.reset == "cbp":
            raise ConfigError("reset: 'cbp' is supervised-only for now; valid for RL: "
                              + ", ".join(r for r in RESETS if r != "cbp"))
        if self.regularizer == "ewc":
            raise ConfigError("regularizer: 'ewc' is the supervised EWC; SAC's is --ewc-coef "
                              "(Continual World's Gaussian-policy Fisher)")
        if self.reset == "last_k" and not 1 <= self.reset_last_k <= len(self.hidden) + 1:
            raise ConfigError(f"reset_last_k must be in 1..{len(self.hidden) + 1}")
        if self.env == "grid":
            if not self.discrete_actions:
                raise ConfigError(f"env: grid has discrete actions, which the {self.kind} "
                                  "agent does not take; run a dreamer preset (grid-quick)")
            unknown = [g for g in self.grids if g not in grid.GRIDS]
            if unknown or not self.grids:
                raise ConfigError(f"grids: unknown grid {unknown[0] if unknown else None!r}; "
                                  f"valid: {', '.join(grid.GRIDS)}")
        if self.env == "lightsout":
            self._check_lights_out()
        if self.env == "boxes":
            self._check_boxes()
        if self.env == "dmc":
            self._check_dmc()
        if self.env == "pointmaze" or self.family == "maze":
            if not self.mazes:
                raise ConfigError("mazes needs at least one layout (one task per layout)")
            unknown = [m for m in self.mazes if m not in pointmaze.MAZES]
            if unknown:
                raise ConfigError(f"mazes: unknown maze {unknown[0]!r}; valid: "
                                  f"{', '.join(pointmaze.MAZES)}")
            sizes = {m: len(pointmaze.MAZES[m]) for m in self.mazes}
            if len(set(sizes.values())) > 1:
                raise ConfigError("mazes: every layout of a sequence needs the same size, got "
                                  + ", ".join(f"{m} ({n})" for m, n in sizes.items()))
        if self.env in brax_envs.GOAL_ENVS and self.family not in ("goals", "stages"):
            raise ConfigError(f"env: {self.env} runs --family goals (goal-conditioned) or "
                              "stages (multi-stage)")
        if self.family == "stages":
            self._check_stages()
        if self.env != "pointmaze" and self.family in FAMILY_ENVS:
            if self.env not in FAMILY_ENVS[self.family]:
                raise ConfigError(f"family: {self.family} exists for "
                                  f"{', '.join(FAMILY_ENVS[self.family])}, not {self.env}")
            unknown = [r for r in self.goal_regions if r not in brax_goals.REGIONS]
            if self.family == "goals" and (unknown or not self.goal_regions):
                raise ConfigError(f"goal_regions: unknown region "
                                  f"{unknown[0] if unknown else None!r}; valid: "
                                  f"{', '.join(brax_goals.REGIONS)}")
        if self.family == "objectives" and not self.task_values and self.env != "dmc":
            raise ConfigError("task_values needs at least one value (one task per value)")
        scales = {n: getattr(self, n) for n in ("gravity", "friction", "mass", "actuator")
                  if getattr(self, n)}
        if len({len(v) for v in scales.values()}) > 1:
            raise ConfigError(f"gravity, friction, mass and actuator need equal lengths (one "
                              f"value per task), got {({k: len(v) for k, v in scales.items()})}")
        if any(v <= 0 for vs in scales.values() for v in vs):
            raise ConfigError("physics scales must be > 0")
        for name in ("env_steps_per_task", "log_every"):
            if getattr(self, name) % self.num_envs:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be a multiple of "
                                  f"num_envs ({self.num_envs}): every env steps equally")
        if self.env_steps_per_task % self.log_every:
            raise ConfigError(f"env_steps_per_task ({self.env_steps_per_task}) must be a "
                              f"multiple of log_every ({self.log_every})")

    def _check_task_specs(self, actions: str, field: str, example: str, parse) -> None:
        """The checks the pure-JAX discrete goal envs (lightsout, boxes) share: a kind with a
        discrete policy, task specs that ``parse``, the sparse reward, no family."""
        if not self.discrete_actions:
            raise ConfigError(f"env: {self.env} has discrete actions ({actions}), which the "
                              f"{self.kind} agent does not take; it needs a kind with a "
                              f"discrete policy")
        if not getattr(self, field):
            raise ConfigError(f"{field} needs at least one task, e.g. {example}")
        for spec in getattr(self, field):
            try:
                parse(spec)
            except ValueError as e:
                raise ConfigError(f"{field}: {e}") from None
        if self.dense_reward:
            raise ConfigError(f"dense_reward: {self.env} has only its sparse success reward")
        if self.family != "objectives":
            raise ConfigError(f"family: {self.env}'s tasks are --{field.replace('_', '-')}, not "
                              f"a family; leave family at objectives, got {self.family}")

    def _check_lights_out(self) -> None:
        self._check_task_specs("one press per cell", "lights_tasks", "3x3:train,3x3:eval",
                               lights_out.parse_task)
        if self.lights_penalty < 0:
            raise ConfigError(f"lights_penalty must be >= 0, got {self.lights_penalty}")

    def _check_boxes(self) -> None:
        self._check_task_specs("moves, pick up, put down", "box_tasks",
                               "exact:train,exact:test",
                               lambda spec: box_moving.parse_task(spec, self.box_size,
                                                                  self.boxes))

    def _check_stages(self) -> None:
        limit = len(brax_stages.TARGETS)
        if not 1 <= self.stages <= limit:
            raise ConfigError(f"stages must be in 1..{limit}, got {self.stages}")
        bad = [s for s in self.stage_starts if s != int(s) or not 0 <= s < self.stages]
        if bad or not self.stage_starts:
            raise ConfigError(f"stage_starts: one task per start stage, each an integer in "
                              f"0..{self.stages - 1}; got "
                              f"{', '.join(f'{s:g}' for s in self.stage_starts) or 'none'}")
        if self.stage_steps < 1:
            raise ConfigError(f"stage_steps must be >= 1, got {self.stage_steps}")
        if self.episode_length < self.stages * self.stage_steps:
            raise ConfigError(f"episode_length ({self.episode_length}) cuts the stages short: "
                              f"use at least stages × stage_steps = "
                              f"{self.stages * self.stage_steps}")

    def _check_dmc(self) -> None:
        if self.backend:
            raise ConfigError(f"backend: {self.backend!r} is a Brax backend; dmc takes "
                              f"--dmc-impl ({', '.join(dmc.IMPLS)})")
        if self.family not in ("objectives", "dynamics"):
            raise ConfigError(f"family: {self.family} does not exist for dmc; valid: "
                              "objectives (the tasks of --dmc-tasks), dynamics (one DMC task "
                              "under --gravity/--friction/--mass/--actuator)")
        try:
            valid = dmc.task_names()
        except ImportError:
            raise ConfigError(f"env: dmc needs MuJoCo Playground: {dmc.INSTALL}") from None
        if not self.dmc_tasks:
            raise ConfigError(f"dmc_tasks needs at least one task; valid: {', '.join(valid)}")
        for name in self.dmc_tasks:
            try:
                dmc.parse_task(name)
            except ValueError as e:
                raise ConfigError(f"dmc_tasks: {e}") from None
        if self.family == "dynamics" and len(self.dmc_tasks) != 1:
            raise ConfigError(f"dmc_tasks: --family dynamics runs one DMC task under changing "
                              f"physics, got {len(self.dmc_tasks)}: {', '.join(self.dmc_tasks)}")
        lengths = {len(getattr(self, n)) for n in ("gravity", "friction", "mass", "actuator")
                   if getattr(self, n)}
        if self.family == "objectives" and lengths and lengths != {len(self.dmc_tasks)}:
            raise ConfigError(f"gravity, friction, mass and actuator need one value per DMC "
                              f"task ({len(self.dmc_tasks)}) or none")


def check_her(cfg, not_goal_conditioned: str) -> None:
    """The checks of hindsight relabelling every kind with a ``her`` option shares (its
    trajectory replay: continual.agents.trajectory); ``not_goal_conditioned`` is the kind's own
    message for an env without goals."""
    if not cfg.goal_conditioned:
        raise ConfigError(not_goal_conditioned)
    if (cfg.replay_eviction, cfg.replay_sampling) != ("fifo", "uniform"):
        raise ConfigError("her: its trajectory replay is a FIFO ring sampled uniformly; leave "
                          "replay_eviction and replay_sampling at fifo and uniform")
    if not 0 <= cfg.her_relabel <= 1:
        raise ConfigError(f"her_relabel must lie in [0, 1], got {cfg.her_relabel}")
    if cfg.replay_capacity < 2 * cfg.num_envs:
        raise ConfigError(f"replay_capacity ({cfg.replay_capacity}) must hold at least 2 steps "
                          f"per env with her")


def env_sequence(cfg: RLConfigBase) -> brax_envs.EnvTaskSequence:
    """The config's task sequence, from the env's source."""
    if cfg.env == "grid":
        return grid.grid_sequence(cfg.grids)
    if cfg.env == "lightsout":
        return lights_out.lights_out_sequence(cfg.lights_tasks, step_penalty=cfg.lights_penalty)
    if cfg.env == "boxes":
        return box_moving.box_moving_sequence(cfg.box_tasks, size=cfg.box_size,
                                              boxes=cfg.boxes)
    if cfg.env == "pointmaze":
        return pointmaze.maze_sequence(cfg.mazes, dense=cfg.dense_reward)
    scales = {n: (getattr(cfg, n) or None) for n in ("gravity", "friction", "mass", "actuator")}
    if cfg.env == "dmc":
        impl = cfg.dmc_impl or None
        if cfg.family == "dynamics":
            return dmc.dynamics(cfg.dmc_tasks[0], impl=impl,
                                **{f"{n}_scales": v for n, v in scales.items()})
        return dmc.sequence(cfg.dmc_tasks, impl=impl,
                            **{f"{n}_scales": v for n, v in scales.items()})
    backend = cfg.backend or None
    if cfg.family == "goals":
        make = brax_goals.reacher_goals if cfg.env == "reacher" else brax_goals.ant_goals
        return make(cfg.goal_regions, backend=backend, dense=cfg.dense_reward)
    if cfg.family == "stages":
        return brax_stages.reacher_stages(tuple(int(s) for s in cfg.stage_starts),
                                          stages=cfg.stages, stage_steps=cfg.stage_steps,
                                          backend=backend)
    if cfg.family == "maze":
        return brax_goals.ant_maze(cfg.mazes, backend=backend, dense=cfg.dense_reward)
    if cfg.family == "objectives":
        return brax_envs.objectives(cfg.env, cfg.objective, cfg.task_values, backend=backend)
    return brax_envs.dynamics(cfg.env, **{f"{n}_scales": v for n, v in scales.items()},
                              backend=backend)


def loop_spec(cfg: RLConfigBase) -> RLSpec:
    """The RL loop's static sizes, in vector steps of all envs."""
    steps_per_task, log_every = cfg.vector_steps
    return RLSpec(num_envs=cfg.num_envs, steps_per_task=steps_per_task, log_every=log_every,
                  episode_length=cfg.episode_length, updates_per_step=cfg.update_schedule[0],
                  update_every=cfg.update_schedule[1],
                  eval_envs=cfg.eval_envs, eval_length=cfg.eval_length or cfg.episode_length,
                  probe_examples=cfg.probe_examples, intervention_every=cfg.reset_every,
                  reset_replay=cfg.reset_replay)


def progress(logs, t) -> dict[str, str]:
    """Progress-bar fields: training and current-task evaluation returns (goal-conditioned
    envs: also the current task's success rate), mean over runs."""
    mean = lambda x: f"{np.nanmean(np.asarray(x)):.3f}"  # noqa: E731
    episodes = np.asarray(logs["train"]["episode_return"])
    fields = {"train_return": mean(episodes) if np.isfinite(episodes).any() else "-",
              "eval_return_current": mean(np.asarray(logs["eval_return"])[:, t])}
    if "eval_success" in logs:
        fields["eval_success_current"] = mean(np.asarray(logs["eval_success"])[:, t])
    return fields
