"""Builds a continual-RL experiment from an :class:`experiments.rl_config.RLConfig`: the
environment task sequence, the SAC agent, resets, diagnostics and the loop, vmapped over runs
(executed by :func:`experiments.experiment.run`, exactly like a supervised one)."""
from __future__ import annotations

import jax.numpy as jnp

from continual.interventions import InterventionSpec
from continual.optimizers import HParams
from continual.rl_loop import RLSpec, make_rl_train
from continual.sac import SACSpec, layer_orders, make_reset, make_sac
from experiments.rl_config import RLConfig, validate_rl
from metrics import hooks
from tasks import brax_envs


def env_sequence(cfg: RLConfig) -> brax_envs.EnvTaskSequence:
    backend = cfg.backend or None
    if cfg.family == "objectives":
        return brax_envs.objectives(cfg.env, cfg.objective, cfg.task_values, backend=backend)
    scales = {n: (getattr(cfg, n) or None) for n in ("gravity", "friction", "mass", "actuator")}
    return brax_envs.dynamics(cfg.env, **{f"{n}_scales": v for n, v in scales.items()},
                              backend=backend)


def build_rl(cfg: RLConfig):
    from experiments.experiment import Experiment, run_table

    validate_rl(cfg)
    seq = env_sequence(cfg)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    agent = make_sac(
        SACSpec(network=cfg.network, hidden=cfg.hidden, blocks=cfg.blocks,
                activation=cfg.activation, layer_norm=cfg.layer_norm, optimizer=cfg.optimizer,
                regularizer=cfg.regularizer, num_critics=cfg.num_critics,
                target_agg=cfg.target_agg, discount=cfg.discount, tau=cfg.tau,
                reward_scale=cfg.reward_scale),
        seq.observation_size, seq.action_size,
        optimizer_stats=hooks.optimizer_stats if diagnostics.optimization else None)
    ispec = InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k)
    reset = make_reset(ispec, agent, layer_orders(agent, seq.observation_size,
                                                  seq.action_size))
    steps_per_task, log_every = cfg.vector_steps
    eval_length = cfg.eval_length or cfg.episode_length
    spec = RLSpec(num_envs=cfg.num_envs, steps_per_task=steps_per_task, log_every=log_every,
                  episode_length=cfg.episode_length, updates_per_step=cfg.updates_per_step,
                  batch_size=cfg.batch_size, replay_capacity=cfg.replay_capacity,
                  eviction=cfg.replay_eviction, sampling=cfg.replay_sampling,
                  min_replay=cfg.min_replay, val_every=cfg.val_every,
                  val_capacity=max(cfg.replay_capacity // max(cfg.val_every, 1), 1),
                  eval_envs=cfg.eval_envs, eval_length=eval_length,
                  q_bias_keep=cfg.q_bias_keep or max(1, round(0.35 * eval_length)),
                  probe_examples=cfg.probe_examples, intervention_every=cfg.reset_every,
                  reset_replay=cfg.reset_replay)
    train = make_rl_train(spec, agent, seq, hooks.make_diagnose(diagnostics.probes,
                                                                cfg.activation), reset)
    runs = run_table(cfg)
    hparams = HParams(**{name: jnp.asarray(runs[name].to_numpy(), jnp.float32)
                         if name in runs else jnp.full((len(runs),), value, jnp.float32)
                         for name, value in HParams.defaults()._asdict().items()})
    return Experiment(cfg, seq, train, runs, hparams, spec)
