"""The CRL learner kind: contrastive goal-conditioned RL (Eysenbach et al. 2022; JaxGCRL,
Bortkiewicz et al. 2024) on goal-conditioned task sequences — maze layouts and goal regions — with
trajectory replay and future-goal relabelling (:mod:`continual.agents.crl`).

On discrete envs (``cfg.discrete_env``: Lights Out, …) CRL is policy-free: no actor, ε-greedy
over the critic ``f(s, a, g)`` of every one-hot action with the DQN kind's ε options and
schedule — the Monte Carlo counterpart of the goal-conditioned DQN (TD) in Bortkiewicz et al.
2025's stitching comparison (``lightsout-crl`` against ``lightsout-dqn``: the same envs)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from continual.agents import make_rl_train
from continual.agents.contrastive import ENERGIES, LOGSUMEXP_PENALTY, LOSSES
from continual.agents.crl import CRLSpec, layer_orders, make_crl, make_crl_agent, make_reset
from continual.agents.trajectory import TrajectorySpec, make_trajectory_memory
from continual.interventions import InterventionSpec
from experiments.config import ConfigError, option, shared
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from experiments.kinds import rl
from experiments.kinds.dqn import BOXES, LIGHTS_OUT, DQNConfig
from metrics import hooks

# ε-greedy exploration of the discrete (policy-free) CRL: the DQN kind's options.
EPSILON_OPTIONS = ("epsilon_start", "epsilon_end", "epsilon_decay_steps")


@dataclass(frozen=True)
class CRLConfig(rl.RLConfigBase):
    kind = "crl"
    iterative_networks = True   # build passes think_steps / eval_think_steps
    discrete_actions = True     # one-hot actions: policy-free and ε-greedy over the critic

    env: str = shared("env", "pointmaze", rl.RLConfigBase)
    activation: str = shared("activation", "swish")
    # The critic.
    energy: str = option("norm", "critic energy between φ(s, a) and ψ(g): norm −‖φ−ψ‖ "
                         "(JaxGCRL's default), l2 −‖φ−ψ‖², dot φᵀψ, cosine (learned scale)",
                         tuple(ENERGIES))
    contrastive_loss: str = option("fwd", "InfoNCE direction: fwd (each state-action picks its "
                                   "goal), bwd, sym (both), or binary_nce (sigmoid)", LOSSES)
    logsumexp_penalty: float = option(LOGSUMEXP_PENALTY, "weight of mean(logsumexp²), which "
                                      "keeps InfoNCE's logits bounded")
    repr_dim: int = option(64, "width of the embeddings φ(s, a) and ψ(g)")
    discount: float = option(0.99, "γ of the future-goal law P(Δ = k) ∝ γ^k")
    # Discrete envs: ε-greedy over the critic (no actor), as the DQN kind's.
    epsilon_start: float = shared("epsilon_start", 1.0, DQNConfig)
    epsilon_end: float = shared("epsilon_end", 0.05, DQNConfig)
    epsilon_decay_steps: int = shared("epsilon_decay_steps", 20_000, DQNConfig)
    # The trajectory memory.
    # The trajectory memory: each env keeps replay_capacity / num_envs steps (JaxGCRL: 10,000).
    replay_capacity: int = shared("replay_capacity", 160_000, rl.RLConfigBase)
    min_replay: int = shared("min_replay", 1600, rl.RLConfigBase)

    positive = rl.RLConfigBase.positive + ("repr_dim",)

    def check(self) -> None:
        super().check()
        if not self.goal_conditioned:
            raise ConfigError(f"env: crl needs a goal-conditioned env: {rl.GOAL_CONDITIONED}")
        if not 0 < self.discount < 1:
            raise ConfigError(f"discount must lie in (0, 1), got {self.discount}")
        if self.logsumexp_penalty < 0:
            raise ConfigError("logsumexp_penalty must be >= 0")
        if self.replay_capacity < 2 * self.num_envs:
            raise ConfigError(f"replay_capacity ({self.replay_capacity}) must hold at least 2 "
                              f"steps per env ({2 * self.num_envs} with {self.num_envs} envs)")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.epsilon_decay_steps < 0:
            raise ConfigError(f"epsilon_decay_steps must be >= 0, got "
                              f"{self.epsilon_decay_steps}")
        if not self.discrete_env:
            fields = type(self).__dataclass_fields__
            changed = [n for n in EPSILON_OPTIONS if getattr(self, n) != fields[n].default]
            if changed:
                raise ConfigError(f"{changed[0]}: ε-greedy exploration is the discrete CRL's; "
                                  f"{self.env} has continuous actions, which CRL samples from "
                                  f"its actor: leave {', '.join(EPSILON_OPTIONS)} at their "
                                  f"defaults")

    @property
    def epsilon_decay_updates(self) -> int:
        """The decay in gradient updates (the agent counts updates), as the DQN kind's."""
        per_step, every = self.update_schedule
        return math.ceil(self.epsilon_decay_steps * per_step / (self.num_envs * every))


def _as_dqn(env: dict) -> dict:
    """A DQN preset's env, replay, schedule and ε (its HER option aside: CRL relabels with
    future goals always) with its 256-256 ReLU network: TD and MC on identical settings."""
    return dict({k: v for k, v in env.items() if k != "her"}, network="mlp",
                hidden=(256, 256), activation="relu")


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "lightsout-crl": (
        "CPU-sized Monte Carlo counterpart of lightsout-dqn (TD): policy-free CRL with "
        "ε-greedy actions over its critic on the same Lights Out 3×3 envs, goals, episodes, "
        "replay, update ratio, discount (the goal law's γ = 0.9), ε schedule and 256-256 ReLU "
        "networks (Bortkiewicz et al. 2025's stitching comparison)",
        _as_dqn(LIGHTS_OUT),
    ),
    "boxes-crl": (
        "CPU-sized stitching test (Monte Carlo): policy-free CRL with ε-greedy actions over its "
        "critic on boxes-dqn's box moving (4×4, one box, trained on adjacent-quarter trips, "
        "evaluated also on diagonal ones) with its replay, update ratio, γ, ε schedule and "
        "256-256 ReLU networks",
        _as_dqn(BOXES),
    ),
    "maze-quick": (
        "CPU-sized goal-conditioned RL: CRL in the point-mass U-maze, sparse success reward, "
        "16 envs, 48k env steps, 4 updates per step of all envs (1 per 4 transitions), 64-64 "
        "networks, learning rate 1e-3, 2 seeds (measured: seed 0 solves it by 14k steps, "
        "seed 1 not within 48k; 100 s on 2 cores)",
        dict(env="pointmaze", mazes=("u_maze",), num_envs=16, episode_length=100,
             env_steps_per_task=48_000, log_every=4_800, updates_per_step=4, batch_size=256,
             hidden=(64, 64), learning_rate=(1e-3,), replay_capacity=48_000,
             min_replay=3_200, eval_envs=8, probe_examples=128, seeds=2),
    ),
    "maze-rooms": (
        "continual goal regions: CRL in an open room whose goals move corner to corner (NE, "
        "SW, NW, SE), 24k env steps each, replay kept across tasks (the success matrix shows "
        "what is forgotten); otherwise maze-quick",
        dict(env="pointmaze", mazes=("room_ne", "room_sw", "room_nw", "room_se"), num_envs=16,
             episode_length=100, env_steps_per_task=24_000, log_every=4_800,
             updates_per_step=4, batch_size=256, hidden=(64, 64), learning_rate=(1e-3,),
             replay_capacity=48_000, min_replay=3_200, eval_envs=8, probe_examples=128,
             seeds=2),
    ),
    "reacher-quick": (
        "CPU-sized goal-conditioned RL on physics: CRL on Brax's Reacher, targets anywhere in "
        "the arm's reach (0.02-0.2 m), reached within 0.05, sparse reward; otherwise "
        "maze-quick (3 min on 2 cores; read time near the goal: a flailing arm already "
        "sweeps through most targets)",
        dict(env="reacher", family="goals", goal_regions=("circle",), num_envs=16,
             episode_length=100, env_steps_per_task=48_000, log_every=4_800,
             updates_per_step=4, batch_size=256, hidden=(64, 64), learning_rate=(1e-3,),
             replay_capacity=48_000, min_replay=3_200, eval_envs=8, probe_examples=128,
             seeds=2),
    ),
    # GPU-sized, at JaxGCRL's defaults (256 envs, batch 256, episodes of 1,000, about one
    # update per 16 transitions, [256, 256] Swish networks); not yet run (no GPU lent so far).
    "ant-crl": (
        "GPU-sized: CRL on the goal-conditioned Ant, goals on the radius-10 circle (JaxGCRL's "
        "ant), 10M env steps, 256 envs, 16 updates per step of all envs, batch 256",
        dict(env="ant", family="goals", goal_regions=("circle",), num_envs=256,
             episode_length=1000, env_steps_per_task=10_240_000, log_every=512_000,
             updates_per_step=16, batch_size=256, hidden=(256, 256),
             learning_rate=(3e-4,), replay_capacity=2_560_000, min_replay=256_000,
             eval_envs=16, eval_length=1000, seeds=4),
    ),
    "ant-u-maze-crl": (
        "GPU-sized: CRL on the Ant U-maze (walls as data), otherwise ant-crl; add "
        "--network resmlp --hidden 256 --blocks N for Wang et al.'s depth 4N",
        dict(env="ant", family="maze", mazes=("u_maze",), num_envs=256, episode_length=1000,
             env_steps_per_task=10_240_000, log_every=512_000, updates_per_step=16,
             batch_size=256, hidden=(256, 256), learning_rate=(3e-4,),
             replay_capacity=2_560_000, min_replay=256_000, eval_envs=16, eval_length=1000,
             seeds=4),
    ),
    "ant-quadrants-crl": (
        "GPU-sized continual goal regions: the Ant's goals move quadrant to quadrant (NE, NW, "
        "SW, SE), 5M env steps each, replay kept; otherwise ant-crl",
        dict(env="ant", family="goals", goal_regions=("ne", "nw", "sw", "se"), num_envs=256,
             episode_length=1000, env_steps_per_task=5_120_000, log_every=512_000,
             updates_per_step=16, batch_size=256, hidden=(256, 256), learning_rate=(3e-4,),
             replay_capacity=2_560_000, min_replay=256_000, eval_envs=16, eval_length=1000,
             seeds=4),
    ),
}


def build(cfg: CRLConfig) -> Experiment:
    """The goal-conditioned env sequence, the CRL agent (discrete envs: policy-free, ε-greedy)
    with its trajectory memory and resets, and the RL loop."""
    cfg.validate()
    seq = rl.env_sequence(cfg)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    crl = make_crl(
        CRLSpec(network=cfg.network, hidden=cfg.hidden, blocks=cfg.blocks,
                activation=cfg.activation, layer_norm=cfg.layer_norm, optimizer=cfg.optimizer,
                regularizer=cfg.regularizer, energy=cfg.energy, loss=cfg.contrastive_loss,
                repr_dim=cfg.repr_dim, logsumexp_penalty=cfg.logsumexp_penalty,
                think_steps=cfg.think_steps, eval_think_steps=cfg.eval_think_steps,
                discrete=cfg.discrete_env, epsilon_start=cfg.epsilon_start,
                epsilon_end=cfg.epsilon_end, epsilon_decay=cfg.epsilon_decay_updates),
        seq.goals, seq.action_size,
        optimizer_stats=hooks.optimizer_stats if diagnostics.optimization else None)
    memory = make_trajectory_memory(
        TrajectorySpec(capacity=cfg.replay_capacity // cfg.num_envs, batch_size=cfg.batch_size,
                       min_steps=math.ceil(cfg.min_replay / cfg.num_envs),
                       discount=cfg.discount),
        seq.goals, cfg.num_envs, seq.action_size)
    reset = make_reset(InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k), crl,
                       layer_orders(crl))
    train = make_rl_train(rl.loop_spec(cfg), make_crl_agent(crl, memory), seq,
                          hooks.make_diagnose(diagnostics.probes, cfg.activation), reset)
    runs = run_table(cfg)
    return Experiment(cfg, seq, train, runs, hparams_of(runs), rl.loop_spec(cfg), rl.progress)


KIND = Kind("crl", "goal-conditioned RL", "goal-conditioned RL presets (CRL)", CRLConfig,
            PRESETS, build,
            rank_by=("success_avg", "plasticity_slope", "forgetting_last"))
