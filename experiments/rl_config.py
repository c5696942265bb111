"""The continual-RL experiment configuration: a frozen dataclass, presets and validation.

The RL counterpart of :mod:`experiments.config` (same conventions: every field is a command-line
override, *vmapped* fields take comma lists and become runs of one compiled program). Step counts
are **environment steps** (transitions, summed over the ``num_envs`` parallel envs of one run).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from continual.interventions import RESETS
from continual.optimizers import OPTIMIZERS
from continual.replay import EVICTIONS, SAMPLINGS
from continual.runner import MODES
from continual.sac import TARGET_AGGS
from experiments.config import ConfigError, ConfigMethods, _f
from metrics.hooks import parse_metrics
from plasticity.activations import ACTIVATIONS
from plasticity.networks import NETWORKS
from plasticity.regularizers import ALIASES, REGULARIZERS
from tasks.brax_envs import BACKENDS, ENVS, FAMILIES, KINDS


@dataclass(frozen=True)
class RLConfig(ConfigMethods):
    # What to train on.
    env: str = _f("halfcheetah", "Brax environment", tuple(ENVS))
    family: str = _f("objectives", "how tasks differ: objective (run direction, target "
                     "velocity) or physics (gravity, friction, mass, actuator scales)",
                     tuple(FAMILIES))
    objective: str = _f("direction", "objectives family: forward-velocity weights or target "
                        "velocities", KINDS)
    task_values: tuple = _f((1.0, -1.0), "objectives family: one value per task (direction: "
                            "velocity weight, e.g. 1,-1 = forward then backward; "
                            "target_velocity: m/s)")
    gravity: tuple = _f((), "dynamics family: gravity scale per task (empty: 1)")
    friction: tuple = _f((), "dynamics family: friction scale per task (empty: 1)")
    mass: tuple = _f((), "dynamics family: body-mass scale per task (empty: 1)")
    actuator: tuple = _f((), "dynamics family: actuator-strength scale per task (empty: 1); "
                         "with all four empty: base, gravity×0.5, friction×0.25, mass×2, "
                         "actuator×0.5")
    backend: str = _f("", "physics backend (empty: the env's default: generalized for "
                      "halfcheetah and walker2d, mjx with the fast solver for ant and hopper)",
                      ("",) + BACKENDS)
    num_envs: int = _f(16, "parallel environments per run")
    episode_length: int = _f(200, "time limit of a training episode (steps)")
    # The agent (SAC).
    network: str = _f("mlp", "actor and critic architecture", NETWORKS)
    hidden: tuple = _f((256, 256), "hidden widths of actor and critic")
    blocks: int = _f(2, "residual blocks (resmlp network only)")
    activation: str = _f("relu", "hidden activation", tuple(ACTIVATIONS))
    layer_norm: bool = _f(False, "layer norm before every hidden activation")
    num_critics: int = _f(2, "critic ensemble size")
    target_agg: str = _f("min", "aggregate of the critic ensemble in targets and the actor "
                         "loss", TARGET_AGGS)
    discount: float = _f(0.99, "discount γ")
    tau: float = _f(0.005, "Polyak rate of the target critic")
    reward_scale: float = _f(1.0, "reward multiplier in the TD target")
    optimizer: str = _f("adam", "optimizer of actor and critic", OPTIMIZERS)
    learning_rate: tuple = _f((3e-4,), "learning rate(s) of actor, critic and α",
                              vmapped=True)
    weight_decay: tuple = _f((0.0,), "decoupled weight decay(s) (adamw only)", vmapped=True)
    regularizer: str = _f("none", "parameter regularizer chained with both optimizers (ewc is "
                          "supervised-only)", REGULARIZERS + tuple(ALIASES))
    reg_strength: tuple = _f((1e-2,), "regularizer strength λ", vmapped=True)
    reset: str = _f("none", "reset of actor and critic (targets follow): full, head, last_k, "
                    "redo, shrink_perturb (cbp is supervised-only)", RESETS)
    reset_every: int = _f(0, "apply the reset every N gradient updates; 0 = between tasks")
    reset_last_k: int = _f(2, "layers re-initialised by last_k")
    redo_tau: tuple = _f((0.1,), "ReDo dormancy threshold τ", vmapped=True)
    sp_shrink: tuple = _f((0.8,), "shrink & perturb: θ ← shrink·θ + perturb·ε", vmapped=True)
    sp_perturb: tuple = _f((0.01,), "shrink & perturb noise scale", vmapped=True)
    # Replay and the loop.
    updates_per_step: int = _f(1, "gradient updates per step of all envs (replay ratio = "
                               "this / num_envs updates per transition)")
    batch_size: int = _f(256, "replay batch size")
    replay_capacity: int = _f(100_000, "replay buffer size in transitions")
    replay_eviction: str = _f("fifo", "which stored transition a new one replaces: fifo, "
                              "reservoir (Vitter's Algorithm R), random_replacement, "
                              "coverage_max (Isele & Cosgun 2018, over observations)", EVICTIONS)
    replay_sampling: str = _f("uniform", "how batches are drawn: uniform, recent_mix (50:50 "
                              "recent/uniform), reward (softmax of the reward)", SAMPLINGS)
    reset_replay: bool = _f(False, "empty the replay buffer at task boundaries (Continual "
                            "World's default: old transitions carry the old task's rewards; with "
                            "--reset full: a from-scratch reference run per task)")
    min_replay: int = _f(1000, "transitions in the buffer before updates start")
    val_every: int = _f(10, "every N-th env step goes to the held-out buffer for td_error_val "
                        "(0 = off)")
    env_steps_per_task: int = _f(20_000, "environment steps (all envs) per task")
    log_every: int = _f(4_000, "environment steps between log points (evaluation on all "
                        "tasks, overestimation, diagnostics)")
    eval_envs: int = _f(4, "evaluation episodes per task at each log point")
    eval_length: int = _f(0, "steps per evaluation episode (0 = episode_length)")
    q_bias_keep: int = _f(0, "first steps of each evaluation episode in q_bias (0 = 35% of "
                          "eval_length, as REDQ's 350 of 1,000)")
    probe_examples: int = _f(256, "replay observations in the diagnostics probe batch")
    seeds: int = _f(3, "number of seeds (runs per hyperparameter setting)")
    seed: int = _f(0, "first seed; runs use seed, seed+1, ...")
    mode: str = _f("chunked", "chunked: one compiled call per log interval with progress; "
                   "sweep: the whole sequence in one call", MODES)
    metrics: str = _f("", "diagnostics per log interval on actor and critic, comma-separated "
                      "(see `plax list`)")
    dormant_tau: float = _f(0.025, "τ of the dormant-unit probe")

    @property
    def num_tasks(self) -> int:
        if self.family == "objectives":
            return len(self.task_values)
        lengths = [len(v) for v in (self.gravity, self.friction, self.mass, self.actuator)
                   if len(v)]
        return lengths[0] if lengths else 5

    @property
    def vector_steps(self) -> tuple[int, int]:
        """(steps of all envs per task, per log interval)."""
        return self.env_steps_per_task // self.num_envs, self.log_every // self.num_envs

    def describe(self) -> str:
        return (f"{self.env} {self.family}, {self.num_tasks} tasks × {self.env_steps_per_task} "
                f"env steps ({self.num_envs} envs)")


RL_FIELDS = {f.name: f for f in dataclasses.fields(RLConfig)}

_POSITIVE = ("num_envs", "episode_length", "hidden", "num_critics", "batch_size",
             "replay_capacity", "env_steps_per_task", "log_every", "eval_envs", "probe_examples",
             "seeds", "blocks")


def validate_rl(cfg: RLConfig) -> RLConfig:
    """Checks choices and ranges; raises :class:`ConfigError` naming the field."""
    for name, f in RL_FIELDS.items():
        value = getattr(cfg, name)
        choices = f.metadata["choices"]
        if choices and value not in choices:
            raise ConfigError(f"{name}: unknown value {value!r}; valid: "
                              f"{', '.join(repr(c) if c == '' else str(c) for c in choices)}")
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{name} must be finite, got {value}")
    for name in _POSITIVE:
        value = getattr(cfg, name)
        if (min(value) if isinstance(value, tuple) and value else value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    for name in ("updates_per_step", "min_replay", "val_every", "eval_length", "q_bias_keep",
                 "reset_every", "seed"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    try:
        parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    except ValueError as err:
        raise ConfigError(f"metrics: {err}") from None
    if cfg.family == "objectives" and not cfg.task_values:
        raise ConfigError("task_values needs at least one value (one task per value)")
    scales = {n: getattr(cfg, n) for n in ("gravity", "friction", "mass", "actuator")
              if getattr(cfg, n)}
    if len({len(v) for v in scales.values()}) > 1:
        raise ConfigError(f"gravity, friction, mass and actuator need equal lengths (one value "
                          f"per task), got {({k: len(v) for k, v in scales.items()})}")
    if any(v <= 0 for vs in scales.values() for v in vs):
        raise ConfigError("physics scales must be > 0")
    for name in ("env_steps_per_task", "log_every"):
        if getattr(cfg, name) % cfg.num_envs:
            raise ConfigError(f"{name} ({getattr(cfg, name)}) must be a multiple of num_envs "
                              f"({cfg.num_envs}): every env steps equally")
    if cfg.env_steps_per_task % cfg.log_every:
        raise ConfigError(f"env_steps_per_task ({cfg.env_steps_per_task}) must be a multiple of "
                          f"log_every ({cfg.log_every})")
    if cfg.reset == "cbp":
        raise ConfigError("reset: 'cbp' is supervised-only for now; valid for RL: "
                          + ", ".join(r for r in RESETS if r != "cbp"))
    if cfg.regularizer == "ewc":
        raise ConfigError("regularizer: 'ewc' is supervised-only for now")
    if cfg.reset == "last_k" and not 1 <= cfg.reset_last_k <= len(cfg.hidden) + 1:
        raise ConfigError(f"reset_last_k must be in 1..{len(cfg.hidden) + 1}")
    if not 0 <= cfg.discount <= 1 or not 0 < cfg.tau <= 1:
        raise ConfigError("discount must be in [0, 1] and tau in (0, 1]")
    for name, values in cfg.hparam_grid().items():
        if not values:
            raise ConfigError(f"{name} needs at least one value")
    if any(lr <= 0 for lr in cfg.learning_rate):
        raise ConfigError(f"learning_rate must be > 0, got {cfg.learning_rate}")
    if any(v < 0 for v in cfg.weight_decay + cfg.reg_strength + cfg.redo_tau + cfg.sp_perturb):
        raise ConfigError("weight_decay, reg_strength, redo_tau and sp_perturb must be >= 0")
    if cfg.min_replay > cfg.replay_capacity:
        raise ConfigError(f"min_replay ({cfg.min_replay}) exceeds replay_capacity "
                          f"({cfg.replay_capacity}): updates would never start")
    return cfg


RL_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "cheetah-quick": (
        "CPU-sized continual RL: HalfCheetah runs forward, then backward; 8 envs, 2 × 24k env "
        "steps, one update per transition, replay emptied at task switches (Continual World's "
        "default), SAC 64-64, 2 seeds (about 5 minutes on 2 cores)",
        dict(env="halfcheetah", family="objectives", objective="direction",
             task_values=(1.0, -1.0), num_envs=8, episode_length=200, hidden=(64, 64),
             env_steps_per_task=24_000, log_every=4_000, updates_per_step=8, batch_size=128,
             min_replay=1024, replay_capacity=48_000, reset_replay=True, eval_envs=4,
             probe_examples=128, seeds=2),
    ),
    "halfcheetah-dynamics": (
        "GPU-sized: HalfCheetah through 5 physics settings (base, gravity×0.5, friction×0.25, "
        "mass×2, actuator×0.5), 1M env steps each, 256 envs, SAC 256-256",
        dict(env="halfcheetah", family="dynamics", num_envs=256, episode_length=1000,
             env_steps_per_task=1_024_000, log_every=102_400, updates_per_step=8,
             batch_size=512, replay_capacity=1_000_000, min_replay=8192, eval_envs=16,
             eval_length=1000, seeds=5),
    ),
    "ant-directions": (
        "GPU-sized: Ant runs forward, backward, forward, 1M env steps each, 256 envs, SAC "
        "256-256",
        dict(env="ant", family="objectives", objective="direction", task_values=(1., -1., 1.),
             num_envs=256, episode_length=1000, env_steps_per_task=1_024_000,
             log_every=102_400, updates_per_step=8, batch_size=512, replay_capacity=1_000_000,
             min_replay=8192, eval_envs=16, eval_length=1000, seeds=5),
    ),
}


def rl_from_preset(name: str, **overrides: Any) -> RLConfig:
    """The RL preset's config with ``overrides`` applied and validated."""
    if name not in RL_PRESETS:
        raise ConfigError(f"unknown RL preset {name!r}; valid: {', '.join(RL_PRESETS)}")
    unknown = set(overrides) - set(RL_FIELDS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]!r} is not a setting of RL presets; valid: "
                          f"{', '.join(RL_FIELDS)}")
    return validate_rl(RLConfig(**{**RL_PRESETS[name][1], **overrides}))
