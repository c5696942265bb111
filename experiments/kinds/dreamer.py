"""The Dreamer learner kind: a DreamerV3-style world-model agent with Continual-Dreamer's options
(Kessler et al. 2023: selective sequence replay, Plan2Explore; :mod:`continual.agents.dreamer`)
on gridworld sequences (discrete actions) and vector-observation sequences (continuous).

Sizes: ``hidden`` gives the width (``hidden[0]``) and depth (its length) of every MLP; the
GRU width is ``deter``, the latents ``stoch`` × ``classes``. The replay holds chunks of
``sequence_length`` transitions under every replay rule; ``train_ratio`` (DreamerV3's name) is
replayed transitions per env transition: each update replays ``batch_size × sequence_length``,
so updates happen ``train_ratio · num_envs / (batch_size · sequence_length)`` times per step of
all envs (a fraction is exact: one round every few steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from continual.agents import make_rl_train
from continual.agents.dreamer import (DreamerSpec, layer_orders, make_dreamer,
                                      make_dreamer_agent, make_reset)
from continual.agents.sequence import SequenceSpec, make_sequence_memory
from continual.agents.world_model import ObsLayout, WorldModelSpec
from continual.interventions import InterventionSpec
from continual.replay import EVICTIONS, SAMPLINGS
from experiments.config import ConfigError, option, shared
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from experiments.kinds import rl
from metrics import hooks


@dataclass(frozen=True)
class DreamerConfig(rl.RLConfigBase):
    kind = "dreamer"
    discrete_actions = True

    env: str = shared("env", "grid", rl.RLConfigBase)
    episode_length: int = shared("episode_length", 100, rl.RLConfigBase)
    hidden: tuple = shared("hidden", (256, 256))
    activation: str = shared("activation", "swish")
    layer_norm: bool = shared("layer_norm", True)
    batch_size: int = shared("batch_size", 16)
    # The world model.
    deter: int = option(256, "GRU (deterministic state) width")
    stoch: int = option(16, "categorical latents S")
    classes: int = option(16, "classes per latent C")
    kl_dyn: float = option(0.5, "scale of the dynamics KL (prior toward posterior)")
    kl_rep: float = option(0.1, "scale of the representation KL (posterior toward prior)")
    free_nats: float = option(1.0, "KL free nats (no gradient below)")
    # Imagination.
    horizon: int = option(15, "imagination horizon H")
    discount: float = option(1.0 - 1.0 / 333, "discount γ (DreamerV3: 1 − 1/333)")
    lam: float = option(0.95, "λ of the λ-returns")
    entropy: float = option(3e-4, "actor entropy bonus η")
    slow_rate: float = option(0.02, "slow critic EMA rate per gradient step")
    # Plan2Explore.
    plan2explore: bool = option(False, "Plan2Explore: an ensemble's disagreement on the next "
                                "latent is an intrinsic reward; an exploration policy collects "
                                "and the task policy is evaluated (Continual-Dreamer)")
    ensemble: int = option(5, "Plan2Explore ensemble size")
    intrinsic_weight: float = option(0.9, "Plan2Explore weight of the intrinsic reward")
    extrinsic_weight: float = option(0.9, "Plan2Explore weight of the task reward")
    # The sequence replay.
    sequence_length: int = option(64, "transitions per replayed chunk")
    train_ratio: float = option(32.0, "replayed transitions per env transition")
    replay_eviction: str = option("fifo", "which stored chunk a new one replaces: fifo, "
                                  "reservoir (Algorithm R), random_replacement "
                                  "(Continual-Dreamer's code), coverage_max (on a chunk's mean "
                                  "observation)", EVICTIONS)
    replay_sampling: str = option("uniform", "how chunks are drawn: uniform, recent_mix "
                                  "(Continual-Dreamer's 50:50 recent/uniform), reward",
                                  SAMPLINGS)
    replay_capacity: int = shared("replay_capacity", 1_000_000, rl.RLConfigBase)
    min_replay: int = shared("min_replay", 1024, rl.RLConfigBase)
    probe_chunks: int = option(4, "chunks of each task kept as its fixed probe set (world-model "
                               "forgetting)")

    positive = rl.RLConfigBase.positive + ("deter", "stoch", "classes", "horizon", "ensemble",
                                           "sequence_length", "probe_chunks")

    @property
    def updates(self) -> Fraction:
        """Updates per step of all envs, exactly."""
        return Fraction(self.train_ratio).limit_denominator(1000) * self.num_envs / (
            self.batch_size * self.sequence_length)

    @property
    def update_schedule(self) -> tuple[int, int]:
        return self.updates.numerator, self.updates.denominator

    def check(self) -> None:
        super().check()
        if self.network != "mlp":
            raise ConfigError("network: dreamer builds its own MLPs (width hidden[0], depth "
                              "len(hidden)); leave network at mlp")
        if self.updates_per_step != 1:
            raise ConfigError("updates_per_step: dreamer sets its updates by --train_ratio "
                              "(replayed transitions per env transition)")
        if self.train_ratio <= 0:
            raise ConfigError("train_ratio must be > 0")
        if self.updates.denominator > self.vector_steps[1]:
            raise ConfigError(f"train_ratio {self.train_ratio} gives one update every "
                              f"{self.updates.denominator} steps of all envs, more than a log "
                              "interval: raise it or log less often")
        if self.sequence_length < 2 or self.vector_steps[1] < self.sequence_length:
            raise ConfigError("sequence_length must be >= 2 and fit in a log interval "
                              f"({self.vector_steps[1]} steps of all envs)")
        if self.replay_capacity < self.sequence_length:
            raise ConfigError("replay_capacity must hold one chunk (sequence_length)")
        if not 0 < self.discount <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError("discount must be in (0, 1] and lam in [0, 1]")
        if self.regularizer == "ewc":
            raise ConfigError("regularizer: 'ewc' is supervised-only for now")


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "grid-quick": (
        "CPU-sized world-model continual RL, Continual-Dreamer's task order at 5×5: "
        "DoorKey → LavaCrossingS5N1 → SimpleCrossingS5N1 (7×7 symbolic views, time limit "
        "100), 8 envs, 24k env steps each, a small model (GRU 128, 8×8 latents, 128-wide "
        "MLPs), chunks of 32, batch 8, train ratio 16, learning rate 1e-3, a replay of 12k "
        "transitions (a sixth of the stream: what it keeps matters) under reservoir eviction "
        "with 50:50 recent sampling, 2 seeds (8 min on 2 cores; from scratch each task is "
        "learned within its 24k steps: DoorKey and SimpleCrossing fully, LavaCrossing in part)",
        dict(env="grid", grids=("doorkey-5x5", "lavacrossing-s5n1", "simplecrossing-s5n1"),
             num_envs=8, episode_length=100, env_steps_per_task=24_000, log_every=4_000,
             hidden=(128,), deter=128, stoch=8, classes=8, sequence_length=32, batch_size=8,
             train_ratio=16.0, replay_capacity=12_000, min_replay=512,
             replay_eviction="reservoir", replay_sampling="recent_mix", learning_rate=(1e-3,),
             eval_envs=8, probe_examples=64, seeds=2),
    ),
    # GPU-sized, Continual-Dreamer's Minigrid sequence at its step counts and replay size, with
    # DreamerV3-small sizes (not yet run: no GPU lent so far).
    "dreamer-minigrid": (
        "GPU-sized: Continual-Dreamer's Minigrid sequence DoorKey-9x9 → LavaCrossingS9N1 → "
        "SimpleCrossingS9N1, 750k env steps each, time limit 100, replay 2M transitions, "
        "reservoir + 50:50 sampling, Plan2Explore, 16 envs, batch 16 × 64, train ratio 32, "
        "GRU 512, 32×16 latents, 512-wide MLPs",
        dict(env="grid", grids=("doorkey-9x9", "lavacrossing-s9n1", "simplecrossing-s9n1"),
             num_envs=16, episode_length=100, env_steps_per_task=752_000, log_every=16_000,
             hidden=(512, 512), deter=512, stoch=32, classes=16, sequence_length=64,
             batch_size=16, train_ratio=32.0, replay_capacity=2_000_000, min_replay=16_384,
             replay_eviction="reservoir", replay_sampling="recent_mix", plan2explore=True,
             learning_rate=(3e-4,), eval_envs=16, seeds=4),
    ),
}


def dreamer_spec(cfg: DreamerConfig, discrete: bool) -> DreamerSpec:
    model = WorldModelSpec(deter=cfg.deter, stoch=cfg.stoch, classes=cfg.classes,
                           units=cfg.hidden[0], layers=len(cfg.hidden),
                           activation=cfg.activation, layer_norm=cfg.layer_norm,
                           free_nats=cfg.free_nats, kl_dyn=cfg.kl_dyn, kl_rep=cfg.kl_rep)
    return DreamerSpec(model=model, discrete=discrete, horizon=cfg.horizon,
                       discount=cfg.discount, lam=cfg.lam, entropy=cfg.entropy,
                       slow_rate=cfg.slow_rate, optimizer=cfg.optimizer,
                       regularizer=cfg.regularizer, plan2explore=cfg.plan2explore,
                       ensemble=cfg.ensemble, intrinsic_weight=cfg.intrinsic_weight,
                       extrinsic_weight=cfg.extrinsic_weight)


def build(cfg: DreamerConfig) -> Experiment:
    """The env sequence, the Dreamer agent with its sequence replay and resets, the RL loop."""
    cfg.validate()
    seq = rl.env_sequence(cfg)
    discrete = cfg.discrete_env   # grid and lightsout: a categorical policy
    grid_view = cfg.env == "grid"  # one-hot cells: a categorical decoder, stored as uint8
    layout = (ObsLayout(seq.observation_size, seq.env.view ** 2, seq.env.classes) if grid_view
              else ObsLayout(seq.observation_size))
    dreamer = make_dreamer(dreamer_spec(cfg, discrete), layout, seq.action_size)
    chunks = cfg.replay_capacity // cfg.sequence_length
    memory = make_sequence_memory(
        SequenceSpec(cfg.sequence_length, chunks, cfg.batch_size, cfg.replay_eviction,
                     cfg.replay_sampling, min_chunks=max(1, math.ceil(
                         cfg.min_replay / cfg.sequence_length)),
                     num_tasks=seq.num_tasks, probe_chunks=cfg.probe_chunks,
                     # A grid view is one-hot: exact in uint8, a quarter of float32's memory.
                     obs_dtype="uint8" if grid_view else "float32"),
        cfg.num_envs, seq.observation_size, seq.action_size)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    reset = make_reset(InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k), dreamer,
                       layer_orders(dreamer))
    spec = rl.loop_spec(cfg)
    train = make_rl_train(spec, make_dreamer_agent(dreamer, memory, seq.num_tasks), seq,
                          hooks.make_diagnose(diagnostics.probes, cfg.activation), reset)
    runs = run_table(cfg)
    return Experiment(cfg, seq, train, runs, hparams_of(runs), spec, rl.progress)


KIND = Kind("dreamer", "world-model RL", "world-model RL presets (Dreamer, Continual-Dreamer)",
            DreamerConfig, PRESETS, build,
            rank_by=("return_avg", "forgetting_last", "plasticity_slope"))
