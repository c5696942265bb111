"""The DQN learner kind: deep Q-networks with double-DQN targets (Mnih et al. 2015; van Hasselt
et al. 2016) on discrete-action task sequences (Lights Out, the Minigrid family), goal-conditioned
with hindsight relabelling (:mod:`continual.agents.dqn`), with every network of
:mod:`plasticity.networks` — the iterative ``think`` network included (Ghugare et al. 2026:
trained at ``--think-steps``, evaluated at ``--eval-think-steps``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from continual.agents import make_rl_train
from continual.agents.dqn import (TARGET_UPDATES, TD_LOSSES, DQNSpec, goal_rewards,
                                  layer_orders, make_dqn, make_dqn_agent, make_reset,
                                  transition_memory)
from continual.agents.sac import ReplaySpec
from continual.agents.trajectory import HER_STRATEGIES, TrajectorySpec, make_her_memory
from continual.interventions import InterventionSpec
from continual.replay import EVICTIONS, SAMPLINGS
from experiments.config import ConfigError, option, shared
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from experiments.kinds import rl
from metrics import hooks
from plasticity.networks import ITERATIVE_NETWORKS


@dataclass(frozen=True)
class DQNConfig(rl.RLConfigBase):
    kind = "dqn"
    discrete_actions = True     # one-hot actions: grid, lightsout
    iterative_networks = True   # build passes think_steps / eval_think_steps

    env: str = shared("env", "lightsout", rl.RLConfigBase)
    # The agent.
    discount: float = option(0.99, "discount γ")
    double: bool = option(True, "double-DQN target Q⁻(s', argmax Q(s', ·)) (van Hasselt et "
                          "al. 2016); false: max Q⁻(s', ·) (Mnih et al. 2015)")
    td_loss: str = option("huber", "TD loss: huber (δ = 1, Mnih et al.'s error clipping) or "
                          "mse (½ error²)", TD_LOSSES)
    target_update: str = option("polyak", "target network: polyak (θ⁻ ← (1−τ)θ⁻ + τθ every "
                                "update) or periodic (a copy every --target-period updates)",
                                TARGET_UPDATES)
    tau: float = option(0.005, "Polyak rate of the target network")
    target_period: int = option(1000, "periodic target: gradient updates between copies")
    epsilon_start: float = option(1.0, "ε-greedy exploration: ε when updates start")
    epsilon_end: float = option(0.05, "ε after the decay")
    epsilon_decay_steps: int = option(20_000, "env steps (all envs) over which ε decays "
                                      "linearly once updates have started (0: epsilon_end "
                                      "from the start)")
    # Its replay.
    replay_eviction: str = option("fifo", "without her: which stored transition a new one "
                                  "replaces (as SAC's)", EVICTIONS)
    replay_sampling: str = option("uniform", "without her: how batches are drawn (as SAC's)",
                                  SAMPLINGS)
    val_every: int = option(10, "without her: every N-th env step goes to the held-out "
                            "buffer for td_error_val (0 = off)")
    q_bias_keep: int = option(0, "first steps of each evaluation episode in q_bias (0 = 35% "
                              "of eval_length)")
    her: str = option("none", "goal-conditioned envs: hindsight relabelling (Andrychowicz et "
                      "al. 2017) from a trajectory replay, as SAC's: future or final; the "
                      "relabelled reward is the env's (lightsout: success − lights_penalty, "
                      "the episode ending on success)", ("none",) + HER_STRATEGIES)
    think_sweep: tuple = option((), "think network: more test-time step counts evaluated at "
                                "every log point beside --eval-think-steps, logged per task as "
                                "eval_success_think<M> (e.g. 1,5,10,20)")
    her_relabel: float = option(0.8, "share of a HER batch whose goal is relabelled (HER's "
                                "k = 4)")

    positive = rl.RLConfigBase.positive + ("target_period",)

    def check(self) -> None:
        if not self.discrete_env:
            raise ConfigError(f"env: dqn takes discrete actions; {self.env} has continuous "
                              f"ones; valid: {', '.join(rl.DISCRETE_ENVS)}")
        super().check()
        if not 0 <= self.discount <= 1 or not 0 < self.tau <= 1:
            raise ConfigError(f"discount must be in [0, 1] and tau in (0, 1], got "
                              f"{self.discount}, {self.tau}")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("epsilon_decay_steps", "val_every", "q_bias_keep"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.regularizer == "ewc":
            raise ConfigError("regularizer: 'ewc' is the supervised EWC; DQN has no Fisher "
                              "consolidation, choose another regularizer")
        if self.think_sweep and self.network not in ITERATIVE_NETWORKS:
            raise ConfigError(f"think_sweep applies to iterative networks "
                              f"({', '.join(ITERATIVE_NETWORKS)}), not {self.network!r}")
        if any(m < 1 for m in self.think_sweep):
            raise ConfigError(f"think_sweep: step counts must be >= 1, got {self.think_sweep}")
        if self.her != "none":
            rl.check_her(self, f"her: {self.env} is not goal-conditioned; use --her none "
                               f"(goal-conditioned discrete envs: lightsout, boxes)")

    @property
    def epsilon_decay_updates(self) -> int:
        """The decay in gradient updates (the agent counts updates)."""
        per_step, every = self.update_schedule
        return math.ceil(self.epsilon_decay_steps * per_step / (self.num_envs * every))


# Lights Out 3×3 (Ghugare et al. 2026): train on goals of 1–3 presses (task 0), evaluate on
# the held-out 4–8 (task 1, never trained: --schedule order:0 → untrained_* summaries), 6-step
# episodes, reward success − 0.1.
LIGHTS_OUT = dict(env="lightsout", lights_tasks=("3x3:train", "3x3:eval"), schedule="order:0",
               episode_length=6, eval_length=6, num_envs=32, env_steps_per_task=96_000,
               log_every=9_600, updates_per_step=2, batch_size=256, learning_rate=(1e-3,),
               replay_capacity=96_000, min_replay=2_048, her="future", discount=0.9,
               epsilon_decay_steps=32_000, eval_envs=128, probe_examples=128, seeds=3)

# Box moving 4×4, one box (Bortkiewicz et al. 2025's exact stitching regime): train on trips
# between adjacent quarters (task 0, the agent confined to them), evaluate on diagonal ones
# (task 1, never trained: two trained legs chained).
BOXES = dict(env="boxes", box_tasks=("exact:train", "exact:test"), box_size=4, boxes=1,
              schedule="order:0", episode_length=32, eval_length=32, num_envs=32,
              env_steps_per_task=128_000, log_every=12_800, updates_per_step=2, batch_size=256,
              learning_rate=(1e-3,), replay_capacity=128_000, min_replay=2_048, her="future",
              discount=0.95, epsilon_decay_steps=48_000, eval_envs=128, probe_examples=128,
              seeds=3)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "lightsout-dqn": (
        "CPU-sized test-time-compute baseline: goal-conditioned double DQN + HER (future) on "
        "Lights Out 3×3, trained on goals of 1–3 presses (task 0), evaluated also on the "
        "held-out 4–8 presses (task 1, never trained: untrained_* in the summary), 6-step "
        "episodes, 32 envs, 96k env steps, MLP 256-256, 3 seeds",
        dict(LIGHTS_OUT, network="mlp", hidden=(256, 256)),
    ),
    "lightsout-think": (
        "lightsout-dqn with Ghugare et al.'s iterative network: one weight-tied gated cell of "
        "width 64 applied 5 times (--eval-think-steps N evaluates the same parameters at N)",
        dict(LIGHTS_OUT, network="think", hidden=(64,), think_steps=5),
    ),
    "boxes-dqn": (
        "CPU-sized stitching test (TD): goal-conditioned double DQN + HER (future) on box "
        "moving 4×4 with one box, trained on trips between adjacent quarters (task 0, the "
        "agent confined to them), evaluated also on diagonal trips (task 1, never trained: "
        "two trained legs chained); 32-step episodes, 32 envs, 128k env steps, MLP 256-256, "
        "3 seeds",
        dict(BOXES, network="mlp", hidden=(256, 256)),
    ),
}


def build(cfg: DQNConfig) -> Experiment:
    """The env sequence, the DQN agent with its replay (or HER trajectory memory) and resets,
    and the RL loop."""
    cfg.validate()
    seq = rl.env_sequence(cfg)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    dqn = make_dqn(
        DQNSpec(network=cfg.network, hidden=cfg.hidden, blocks=cfg.blocks,
                activation=cfg.activation, layer_norm=cfg.layer_norm, optimizer=cfg.optimizer,
                regularizer=cfg.regularizer, think_steps=cfg.think_steps,
                eval_think_steps=cfg.eval_think_steps, discount=cfg.discount,
                double=cfg.double, td_loss=cfg.td_loss, target_update=cfg.target_update,
                tau=cfg.tau, target_period=cfg.target_period,
                epsilon_start=cfg.epsilon_start, epsilon_end=cfg.epsilon_end,
                epsilon_decay=cfg.epsilon_decay_updates),
        seq.observation_size, seq.action_size,
        optimizer_stats=hooks.optimizer_stats if diagnostics.optimization else None)
    spec = rl.loop_spec(cfg)
    val_batch = None
    if cfg.her != "none":
        lights = cfg.env == "lightsout"
        # Lights Out and box moving end an episode on success: a relabelled goal's too.
        memory = goal_rewards(
            make_her_memory(TrajectorySpec(capacity=cfg.replay_capacity // cfg.num_envs,
                                           batch_size=cfg.batch_size,
                                           min_steps=math.ceil(cfg.min_replay / cfg.num_envs)),
                            seq.goals, cfg.num_envs, seq.action_size, cfg.her, cfg.her_relabel),
            step_penalty=seq.env.step_penalty if lights else 0.0,
            terminal_on_success=cfg.env in ("lightsout", "boxes"))
    else:
        memory, val_batch = transition_memory(
            ReplaySpec(batch_size=cfg.batch_size, capacity=cfg.replay_capacity,
                       eviction=cfg.replay_eviction, sampling=cfg.replay_sampling,
                       min_replay=cfg.min_replay, val_every=cfg.val_every,
                       val_capacity=max(cfg.replay_capacity // max(cfg.val_every, 1), 1)),
            seq.observation_size, seq.action_size)
    agent = make_dqn_agent(dqn, memory,
                           cfg.q_bias_keep or max(1, round(0.35 * spec.eval_length)), val_batch,
                           think_sweep=tuple(int(m) for m in cfg.think_sweep))
    reset = make_reset(InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k), dqn,
                       layer_orders(dqn, seq.observation_size))
    train = make_rl_train(spec, agent, seq,
                          hooks.make_diagnose(diagnostics.probes, cfg.activation), reset)
    runs = run_table(cfg)
    return Experiment(cfg, seq, train, runs, hparams_of(runs), spec, rl.progress)


KIND = Kind("dqn", "discrete-action RL", "discrete-action RL presets (DQN; goal-conditioned "
            "with HER)", DQNConfig, PRESETS, build,
            rank_by=("success_avg", "plasticity_slope", "forgetting_last"))
