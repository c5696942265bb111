"""The SAC learner kind: Soft Actor-Critic on Brax task sequences (continual RL), with the knobs
of the regularized-SAC study (Nauman et al. 2024) and every replay rule of
:mod:`continual.replay`; on goal-conditioned envs also with hindsight relabelling (``--her``:
goal-conditioned SAC + HER, the TD baseline of contrastive RL)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from continual.agents import make_rl_train
from continual.agents import retention
from continual.agents.sac import (TARGET_AGGS, ReplaySpec, SACSpec, Start, Transition,
                                  layer_orders, make_ewc_consolidation, make_reset, make_sac,
                                  make_sac_agent)
from continual.agents.trajectory import HER_STRATEGIES, TrajectorySpec, make_her_memory
from continual.interventions import InterventionSpec
from continual.replay import EVICTIONS, SAMPLINGS
from experiments.config import ConfigError, option
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from experiments.kinds import rl
from metrics import hooks

RETENTION = ("bc_coef", "kickstart_coef", "ewc_coef", "memory_share")


@dataclass(frozen=True)
class SACConfig(rl.RLConfigBase):
    kind = "sac"
    iterative_networks = True   # build passes think_steps / eval_think_steps

    # The agent.
    num_critics: int = option(2, "critic ensemble size")
    target_agg: str = option("min", "aggregate of the critic ensemble in targets and the "
                             "actor loss", TARGET_AGGS)
    discount: float = option(0.99, "discount γ")
    tau: float = option(0.005, "Polyak rate of the target critic")
    reward_scale: float = option(1.0, "reward multiplier in the TD target")
    # Its replay.
    replay_eviction: str = option("fifo", "which stored transition a new one replaces: fifo, "
                                  "reservoir (Vitter's Algorithm R), random_replacement, "
                                  "coverage_max (Isele & Cosgun 2018, over observations)",
                                  EVICTIONS)
    replay_sampling: str = option("uniform", "how batches are drawn: uniform, recent_mix "
                                  "(50:50 recent/uniform), reward (softmax of the reward)",
                                  SAMPLINGS)
    val_every: int = option(10, "every N-th env step goes to the held-out buffer for "
                            "td_error_val (0 = off)")
    q_bias_keep: int = option(0, "first steps of each evaluation episode in q_bias (0 = 35% "
                              "of eval_length, as REDQ's 350 of 1,000)")
    # Goal-conditioned SAC.
    her: str = option("none", "goal-conditioned envs: hindsight relabelling (Andrychowicz et "
                      "al. 2017) from a trajectory replay: future (a goal achieved later in "
                      "the episode) or final (its last state: JaxGCRL's --use_her)",
                      ("none",) + HER_STRATEGIES)
    her_relabel: float = option(0.8, "share of a HER batch whose goal is relabelled (HER's "
                                "k = 4)")
    # Fine-tuning a pre-trained policy, with retention (Wołczyk et al. 2024).
    init_from: str = option("", "fine-tune: start from the actor, critic and temperature a "
                            "run saved with --snapshots (its RUN_DIR; fresh optimizer states); "
                            "runs pair with the pre-trained run of the same seed")
    init_visit: int = option(-1, "which task visit of --init-from to start from (0-based; -1: "
                             "its last)")
    bc_coef: tuple = option((0.0,), "retention: behavioural cloning β, KL(π* ‖ π) on π*'s "
                            "stored states (the paper's SAC: 1)", vmapped=True)
    kickstart_coef: tuple = option((0.0,), "retention: kickstarting β₀, the KL on the "
                                   "current batch's states, ×kickstart_decay per update",
                                   vmapped=True)
    ewc_coef: tuple = option((0.0,), "EWC λ with Continual World's Gaussian-policy Fisher: "
                             "at π* when fine-tuning (the paper's SAC: 100), else summed over "
                             "the tasks so far, at each task's end (Continual World: 1e4)",
                             vmapped=True)
    memory_share: tuple = option((0.0,), "retention: share of every batch drawn from π*'s "
                                 "protected transitions (episodic memory; the paper: 0.1)",
                                 vmapped=True)
    kickstart_decay: float = option(0.99998, "kickstarting's decay of β per update")
    kl_direction: str = option("forward", "retention KL: forward KL(π* ‖ π) (the paper's "
                               "§2) or reverse KL(π ‖ π*) (its App. C.2)",
                               retention.KL_DIRECTIONS)
    retention_memory: int = option(10_000, "π*'s transitions kept from its replay (BC states, "
                                   "episodic memory, the Fisher's states)")

    positive = rl.RLConfigBase.positive + ("num_critics",)

    @property
    def continual_ewc(self) -> bool:
        """EWC over a task sequence (no pre-trained policy): consolidation at boundaries."""
        return not self.init_from and any(self.ewc_coef)

    def check(self) -> None:
        super().check()
        for name in ("val_every", "q_bias_keep"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.discount <= 1 or not 0 < self.tau <= 1:
            raise ConfigError("discount must be in [0, 1] and tau in (0, 1]")
        coefs = {n: getattr(self, n) for n in RETENTION}
        if any(v < 0 for vs in coefs.values() for v in vs) or max(self.memory_share) > 1:
            raise ConfigError("bc_coef, kickstart_coef, ewc_coef must be >= 0 and memory_share "
                              "in [0, 1]")
        if any(v for n in ("bc_coef", "kickstart_coef", "memory_share") for v in coefs[n]) \
                and not self.init_from:
            raise ConfigError("bc_coef, kickstart_coef and memory_share keep a pre-trained "
                              "policy: give --init-from RUN_DIR")
        if self.continual_ewc and self.reset_every:
            raise ConfigError("ewc_coef consolidates at task boundaries, reset_every resets "
                              "on a schedule instead: use one of them")
        if self.init_from and self.her != "none":
            raise ConfigError("init_from: fine-tuning goal-conditioned SAC with her is not "
                              "supported yet")
        if self.retention_memory < 1 or not 0 < self.kickstart_decay <= 1:
            raise ConfigError("retention_memory must be >= 1 and kickstart_decay in (0, 1]")
        if self.her != "none":
            rl.check_her(self, f"her: needs a goal-conditioned env: {rl.GOAL_CONDITIONED}")


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
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
    "cheetah-relearn": (
        "relearning in continual RL: HalfCheetah forward, backward, forward, backward (repeat "
        "schedule), 4 × 12k env steps, replay emptied at every switch, otherwise "
        "cheetah-quick; relearning speed per revisit (18 min measured on 2 busy cores)",
        dict(env="halfcheetah", family="objectives", objective="direction",
             task_values=(1.0, -1.0), schedule="repeat:2", num_envs=8, episode_length=200,
             hidden=(64, 64), env_steps_per_task=12_000, log_every=2_000, updates_per_step=8,
             batch_size=128, min_replay=1024, replay_capacity=48_000, reset_replay=True,
             eval_envs=4, probe_examples=128, seeds=2),
    ),
    "halfcheetah-dynamics": (
        "GPU-sized: HalfCheetah through 5 physics settings (base, gravity×0.5, friction×0.25, "
        "mass×2, actuator×0.5), 1M env steps each, 256 envs, SAC 256-256",
        dict(env="halfcheetah", family="dynamics", num_envs=256, episode_length=1000,
             env_steps_per_task=1_024_000, log_every=102_400, updates_per_step=8,
             batch_size=512, replay_capacity=1_000_000, min_replay=8192, eval_envs=16,
             eval_length=1000, seeds=5),
    ),
    "maze-sac-her": (
        "the TD baseline of maze-quick: goal-conditioned SAC with hindsight relabelling "
        "(future strategy) in the point-mass U-maze, the same envs, steps, updates, networks "
        "and learning rate as maze-quick's CRL, 2 seeds",
        dict(env="pointmaze", mazes=("u_maze",), her="future", num_envs=16,
             episode_length=100, env_steps_per_task=48_000, log_every=4_800,
             updates_per_step=4, batch_size=256, hidden=(64, 64), learning_rate=(1e-3,),
             replay_capacity=48_000, min_replay=3_200, eval_envs=8, probe_examples=128,
             seeds=2),
    ),
    "ant-directions": (
        "GPU-sized: Ant runs forward, backward, forward, 1M env steps each, 256 envs, SAC "
        "256-256",
        dict(env="ant", family="objectives", objective="direction", task_values=(1., -1., 1.),
             num_envs=256, episode_length=1000, env_steps_per_task=1_024_000,
             log_every=102_400, updates_per_step=8, batch_size=512, replay_capacity=1_000_000,
             min_replay=8192, eval_envs=16, eval_length=1000, seeds=5),
    ),
    "reacher-stages-quick": (
        "CPU-sized fine-tuning with retention (bench/finetune_retention.py): the multi-stage "
        "Reacher, 4 targets in turn per episode (RoboticSequence-shaped, 40 steps per stage); "
        "task 0 starts in stage 0, task 1 in stage 2 (its last two stages: the pre-training "
        "task); 16 envs, 2 × 64k env steps, SAC 64-64, 2 seeds (about 3 minutes on 2 cores)",
        dict(env="reacher", family="stages", stages=4, stage_starts=(0, 2), stage_steps=40,
             num_envs=16, episode_length=160, env_steps_per_task=64_000, log_every=6_400,
             updates_per_step=4, batch_size=256, hidden=(64, 64), learning_rate=(1e-3,),
             replay_capacity=64_000, min_replay=3_200, eval_envs=8, probe_examples=128,
             seeds=2),
    ),
    "dmc-quick": (
        "CPU-sized continual RL on the DM Control Suite (MuJoCo Playground, impl jax): "
        "CartpoleSwingup, then CartpoleBalance (one env, the initial state as data); 8 envs, "
        "2 × 40k env steps, 1000-step episodes, one update per transition, replay emptied at "
        "the switch, SAC 64-64, 2 seeds (about 1.5 minutes on 2 cores; balancing wipes out "
        "the swing-up)",
        dict(env="dmc", dmc_tasks=("CartpoleSwingup", "CartpoleBalance"), num_envs=8,
             episode_length=1000, hidden=(64, 64), env_steps_per_task=40_000,
             log_every=4_000, updates_per_step=8, batch_size=128, min_replay=1024,
             replay_capacity=80_000, reset_replay=True, eval_envs=8, probe_examples=128,
             seeds=2),
    ),
    "dmc-continual": (
        "GPU-sized: DM Control Suite across domains, one network (observations padded, "
        "actions masked): CartpoleSwingup, WalkerWalk, CheetahRun, WalkerRun, 1M env steps "
        "each, 256 envs, SAC 256-256",
        dict(env="dmc", dmc_tasks=("CartpoleSwingup", "WalkerWalk", "CheetahRun", "WalkerRun"),
             num_envs=256, episode_length=1000, env_steps_per_task=1_024_000,
             log_every=102_400, updates_per_step=8, batch_size=512, replay_capacity=1_000_000,
             min_replay=8192, eval_envs=16, eval_length=1000, seeds=5),
    ),
}


def build(cfg: SACConfig) -> Experiment:
    """The env sequence, the SAC agent with its replay and resets, and the RL loop."""
    cfg.validate()
    seq = rl.env_sequence(cfg)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    sac = make_sac(
        SACSpec(network=cfg.network, hidden=cfg.hidden, blocks=cfg.blocks,
                activation=cfg.activation, layer_norm=cfg.layer_norm, optimizer=cfg.optimizer,
                regularizer=cfg.regularizer, num_critics=cfg.num_critics,
                target_agg=cfg.target_agg, discount=cfg.discount, tau=cfg.tau,
                reward_scale=cfg.reward_scale, think_steps=cfg.think_steps,
                eval_think_steps=cfg.eval_think_steps,
                retention=retention.RetentionSpec(
                    memory_size=cfg.retention_memory,
                    fisher_samples=min(2_560, cfg.retention_memory),
                    kl_direction=cfg.kl_direction, kickstart_decay=cfg.kickstart_decay)
                if cfg.init_from or cfg.continual_ewc else None),
        seq.observation_size, seq.action_size,
        optimizer_stats=hooks.optimizer_stats if diagnostics.optimization else None)
    spec = rl.loop_spec(cfg)
    replay = ReplaySpec(batch_size=cfg.batch_size, capacity=cfg.replay_capacity,
                        eviction=cfg.replay_eviction, sampling=cfg.replay_sampling,
                        min_replay=cfg.min_replay, val_every=cfg.val_every,
                        val_capacity=max(cfg.replay_capacity // max(cfg.val_every, 1), 1),
                        q_bias_keep=cfg.q_bias_keep or max(1, round(0.35 * spec.eval_length)))
    her = None
    if cfg.her != "none":  # goal-conditioned SAC: a trajectory ring with hindsight goals
        her = make_her_memory(
            TrajectorySpec(capacity=cfg.replay_capacity // cfg.num_envs,
                           batch_size=cfg.batch_size,
                           min_steps=math.ceil(cfg.min_replay / cfg.num_envs)),
            seq.goals, cfg.num_envs, seq.action_size, cfg.her, cfg.her_relabel)
    agent = make_sac_agent(sac, replay, seq.observation_size, seq.action_size, memory=her)
    reset = make_reset(InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k), sac,
                       layer_orders(sac, seq.observation_size, seq.action_size))
    if cfg.continual_ewc:  # consolidate after any boundary reset
        consolidate = make_ewc_consolidation(sac)
        reset = consolidate if reset is None else (
            lambda state, obs, hp, key: consolidate(reset(state, obs, hp, key), obs, hp, key))
    train = make_rl_train(spec, agent, seq,
                          hooks.make_diagnose(diagnostics.probes, cfg.activation), reset)
    runs = run_table(cfg)
    start = None
    if cfg.init_from:
        start, runs["source_run"] = pretrained_start(cfg, sac, seq, runs)
    return Experiment(cfg, seq, train, runs, hparams_of(runs), spec, rl.progress, start)


def pretrained_start(cfg: SACConfig, sac, seq, runs) -> tuple[Start, Any]:
    """The fine-tuning runs' starting points from ``cfg.init_from`` (one row per pre-trained
    run) and, per run, the row it starts from. The networks must match exactly; π*'s
    transitions are ``retention_memory`` distinct draws from the pre-trained replay's stored
    ones (with repeats only when it holds fewer)."""
    import jax
    import numpy as np

    from continual.optimizers import HParams
    from experiments import pretrained

    pre = pretrained.load(cfg.init_from, KIND, cfg.init_visit)
    agent, buffer = jax.device_get((pre.state.agent, pre.state.memory.buffer))
    if pre.config.her != "none":
        raise ConfigError(f"init_from: {cfg.init_from} is a SAC run with her; SAC fine-tunes "
                          "from a SAC run without her")
    mine = jax.eval_shape(sac.init, jax.random.key(0), HParams.defaults())
    for name, theirs, ours in (("actor", agent.actor.params, mine.actor.params),
                               ("critic", agent.critic.params, mine.critic.params)):
        shapes = lambda t: [a.shape for a in jax.tree.leaves(t)]  # noqa: E731
        if (jax.tree.structure(theirs) != jax.tree.structure(ours)
                or [s[1:] for s in shapes(theirs)] != shapes(ours)):
            fields = ("network", "hidden", "blocks", "activation", "layer_norm", "num_critics")
            differ = {f: (getattr(pre.config, f), getattr(cfg, f)) for f in fields
                      if getattr(pre.config, f) != getattr(cfg, f)}
            raise ConfigError(
                f"init_from: the pre-trained {name} differs from this run's ("
                + (", ".join(f"{f}: {a} there, {b} here" for f, a, b in
                             ((f, *v) for f, v in differ.items()))
                   or f"observation/action sizes: {seq.observation_size}/{seq.action_size} "
                      "here") + ")")
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for r, size in enumerate(np.asarray(buffer.size)):
        if size == 0:
            raise ConfigError(f"init_from: pre-trained run {r} stored no transitions")
        rows.append(rng.choice(size, cfg.retention_memory, replace=size < cfg.retention_memory))
    memory = jax.tree.map(lambda a: np.stack([a[r][i] for r, i in enumerate(rows)]),
                          Transition(*buffer.items))
    start = Start(agent.actor.params, agent.critic.params, agent.target, agent.log_alpha,
                  memory)
    return start, pretrained.source_runs(pre.runs["seed"].to_numpy(), runs["seed"].to_numpy())


KIND = Kind("sac", "RL", "continual RL presets (SAC on Brax/MJX; goal-conditioned with HER)",
            SACConfig, PRESETS, build,
            rank_by=("return_avg", "plasticity_slope", "forgetting_last"))
