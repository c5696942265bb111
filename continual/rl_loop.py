"""The continual RL loop: an agent acting in vectorised Brax envs whose task changes, one
compiled program per run shape — the RL counterpart of :mod:`continual.loop`.

Nesting, as on the supervised side (DESIGN.md, principle 2)::

    vmap(runs) → scan(tasks) → scan(log intervals) → scan(env steps) → scan(updates)

One *env step* steps all ``num_envs`` environments once (``num_envs`` transitions) and is
followed by ``updates_per_step`` gradient updates on replay batches (Brax's convention; the
replay ratio in updates per transition is ``updates_per_step / num_envs``). Updates start once the
buffer holds ``min_replay`` transitions.

It returns a :class:`continual.loop.Train`, so :func:`continual.runner.execute` runs it in
sweep or chunked mode, sharded over devices, with checkpoints — unchanged. The task index is a
traced argument and the env's physics and objective are built from the task's slice of
``task_params`` inside the program (:mod:`tasks.brax_envs`): every task shares one compilation.

Episodes. Each env runs until it terminates or reaches ``episode_length`` steps; then it restarts
from its reset state of the current task (Brax's ``AutoResetWrapper`` convention: one reset state
per env, drawn afresh at every task boundary). A time-limit truncation keeps ``discount = 1`` (the
critic bootstraps); a termination sets it to 0.

After every log interval (all on device):

* ``eval_return[T]``: the deterministic policy (``tanh(mean)``) on *every* task, ``eval_envs``
  fresh episodes of ``eval_length`` steps each, undiscounted return of each env's first episode;
  the last interval of each task is row k of the return matrix (:mod:`metrics.continual`);
* ``q_bias``, ``q_bias_abs``, ``q_bias_sq``, ``q_bias_norm``, ``mc_return``, ``q_estimate``
  (:func:`metrics.rl.overestimation`) on fresh stochastic-policy rollouts of the current task;
* ``td_error_val``, ``td_error_train``, ``td_error_gap``: the critic's TD loss on a held-out
  batch and on a training batch. Every ``val_every``-th env step's transitions go to a small FIFO
  validation buffer, never trained on (REFERENCE §4; the held-out fraction is 1/``val_every``);
* ``train``: interval means of the update's losses, α, policy entropy (−mean log π on the
  replay batch, tanh Jacobian included), mean Q, and the mean return of the training episodes
  that ended in the interval (``episode_return``, NaN if none) with their count, and the count
  of simulator blow-ups (``env_nonfinite``: a non-finite observation or reward ends the episode
  as a termination with reward 0 and never enters the buffer);
* ``diagnostics`` on the actor and critic member 0, on a probe batch of ``probe_examples``
  replay observations (the critic sees the actor's mode actions), layers named ``actor/...``,
  ``critic/...``.

Divergence is handled as on the supervised side: a run whose losses or parameters become
non-finite in an interval rolls back to the interval's start and stays frozen, flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual import replay
from continual.loop import Train
from continual.optimizers import HParams
from continual.sac import Agent, SACState, Transition
from metrics import rl as rl_metrics
from tasks.base import task_slice
from tasks.brax_envs import EnvTaskSequence


@dataclass(frozen=True)
class RLSpec:
    """Static loop sizes (counts of env steps are *vector* steps of all ``num_envs`` envs)."""

    num_envs: int
    steps_per_task: int
    log_every: int
    episode_length: int = 1000
    updates_per_step: int = 1
    batch_size: int = 256
    replay_capacity: int = 100_000
    eviction: str = "fifo"
    sampling: str = "uniform"
    min_replay: int = 1000
    val_every: int = 10
    val_capacity: int = 10_000
    eval_envs: int = 4
    eval_length: int = 1000
    q_bias_keep: int = 350
    probe_examples: int = 256
    intervention_every: int = 0   # gradient updates between resets; 0 = between tasks
    reset_replay: bool = False     # empty the replay buffer at task boundaries

    def __post_init__(self):
        for name in ("num_envs", "steps_per_task", "log_every", "episode_length",
                     "batch_size", "replay_capacity", "eval_envs", "eval_length",
                     "probe_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.updates_per_step < 0 or self.val_every < 0 or self.min_replay < 0:
            raise ValueError("updates_per_step, val_every and min_replay must be >= 0")
        if self.steps_per_task % self.log_every:
            raise ValueError(f"steps_per_task={self.steps_per_task} must be a multiple of "
                             f"log_every={self.log_every}")
        if self.val_every and self.val_capacity < 1:
            raise ValueError("val_capacity must be >= 1 when val_every > 0")

    @property
    def intervals_per_task(self) -> int:
        return self.steps_per_task // self.log_every


class RLCarry(NamedTuple):
    agent: SACState
    env: Any            # brax State, leaves [E, ...]
    first: Any          # the envs' reset states for the current task (auto-reset target)
    ep_step: jax.Array  # [E] steps into the current episode
    ep_return: jax.Array  # [E] return so far of the current episode
    buffer: Any
    val_buffer: Any
    key: jax.Array
    diverged: jax.Array = False


# (state-like with .params/.init_params, features) -> {metric: {layer: value}}
Diagnose = Callable[[Any, dict], dict]


def _where(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per-env select between two pytrees with leading env axis."""
    def sel(x, y):
        m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        return jnp.where(m, x, y)
    return jax.tree.map(sel, a, b)


def make_rl_train(spec: RLSpec, agent: Agent, seq: EnvTaskSequence,
                  diagnose: Diagnose | None = None,
                  intervention: Callable | None = None) -> Train:
    """Builds the loop of one run (vmap it over runs with :func:`continual.runner.execute`;
    ``data`` is unused and may be ``()``). ``intervention(state, obs, hparams, key) -> state``
    is a reset from :func:`continual.sac.make_reset`, applied between tasks
    (``spec.intervention_every = 0``) or every that many gradient updates."""
    obs_size, act_size = seq.observation_size, seq.action_size
    buffer = replay.make_buffer(spec.replay_capacity, spec.eviction, spec.sampling,
                                embed_dim=obs_size if spec.eviction == "coverage_max" else None)
    val_buffer = replay.make_buffer(spec.val_capacity, "fifo") if spec.val_every else None
    example = Transition(jnp.zeros(obs_size), jnp.zeros(act_size), jnp.zeros(()),
                         jnp.zeros(()), jnp.zeros(obs_size))
    ready_at = max(spec.min_replay, spec.batch_size)
    reset_many = jax.vmap(seq.reset, in_axes=(None, 0))
    step_many = jax.vmap(seq.step, in_axes=(None, 0, 0))

    def reset_envs(task, key, n):
        return reset_many(task, jax.random.split(key, n))

    # --------------------------------------------------------------------------- measurement
    def rollouts(state: SACState, task_params, t, key):
        """T + 1 batches of ``eval_envs`` fresh episodes, one after another through one rollout
        function: the mode policy on every task (returns) and the stochastic policy on task t
        (``q_bias``). One rollout function keeps one copy of the physics in the compiled program
        (compile time dominates short runs)."""
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        tasks = jax.tree.map(lambda a: jnp.concatenate([a, a[t][None]]), task_params)
        stochastic = jnp.arange(num_tasks + 1) == num_tasks

        def one(task, is_stochastic, k):
            k_reset, k_roll = jax.random.split(k)

            def body(carry, _):
                env, kk = carry
                kk, k_act = jax.random.split(kk)
                sampled, logp = agent.act(state, env.obs, k_act)
                action = jnp.where(is_stochastic, sampled, agent.act_mode(state, env.obs))
                q = agent.q_value(state, env.obs, action)
                nxt = step_many(task, env, action)
                blown = ~(jnp.all(jnp.isfinite(nxt.obs), axis=-1) & jnp.isfinite(nxt.reward))
                return (nxt, kk), (q, jnp.where(blown, 0.0, nxt.reward),
                                   jnp.where(blown, 1.0, nxt.done), logp)

            _, out = jax.lax.scan(body, (reset_envs(task, k_reset, spec.eval_envs), k_roll),
                                  length=spec.eval_length)
            return out

        # lax.map, not vmap: a task-batched System would compile a second variant of the
        # physics; sequential rollouts reuse the training step's.
        q, reward, done, logp = jax.lax.map(lambda x: one(*x),
                                            (tasks, stochastic,
                                             jax.random.split(key, num_tasks + 1)))
        returns = jax.vmap(rl_metrics.episode_return)(reward[:-1], done[:-1])
        logs = {"eval_return": jnp.mean(returns, axis=-1)}
        logs.update(rl_metrics.overestimation(
            q[-1], reward[-1], done[-1], logp[-1], gamma=agent.discount,
            alpha=jnp.exp(state.log_alpha), keep=min(spec.q_bias_keep, spec.eval_length)))
        return logs

    def probe_obs(carry: RLCarry, key):
        """Diagnostics probe batch: replay observations (the envs' current ones while empty)."""
        sampled = buffer.sample(carry.buffer, key, spec.probe_examples).obs
        fallback = jnp.take(carry.env.obs, jnp.arange(spec.probe_examples) % spec.num_envs,
                            axis=0)
        return jnp.where(carry.buffer.size > 0, sampled, fallback)

    def td_errors(carry: RLCarry, key):
        k_val, k_train, k_loss = jax.random.split(key, 3)
        train_batch = buffer.sample(carry.buffer, k_train, spec.batch_size)
        train = jnp.where(carry.buffer.size > 0,
                          agent.critic_loss(carry.agent, train_batch, k_loss), jnp.nan)
        if val_buffer is None:
            return {"td_error_train": train}
        val_batch = val_buffer.sample(carry.val_buffer, k_val, spec.batch_size)
        val = jnp.where(carry.val_buffer.size > 0,
                        agent.critic_loss(carry.agent, val_batch, k_loss), jnp.nan)
        return {"td_error_val": val, "td_error_train": train, "td_error_gap": val - train}

    def measure(carry: RLCarry, t, task_params, key) -> dict:
        k_eval, k_td, k_probe = jax.random.split(key, 3)
        state = carry.agent
        logs = rollouts(state, task_params, t, k_eval)
        logs.update(td_errors(carry, k_td))
        if diagnose is not None:
            obs = probe_obs(carry, k_probe)
            features = agent.features(state, obs)
            member0 = jax.tree.map(lambda a: a[0], state.critic)
            out: dict = {}
            for name, net_state in (("actor", state.actor), ("critic", member0)):
                for metric, per_layer in diagnose(net_state, features[name]).items():
                    out.setdefault(metric, {}).update(
                        {f"{name}/{layer}": v for layer, v in per_layer.items()})
            logs["diagnostics"] = out
        return logs

    # The update's info for the skipped-update branch (before min_replay): zeros of its shape.
    abstract_state = jax.eval_shape(agent.init, jax.random.key(0), HParams.defaults())
    batch_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct((spec.batch_size, *x.shape),
                                                              x.dtype), example)
    info_shape = jax.eval_shape(agent.update, abstract_state, batch_shape, HParams.defaults(),
                                jax.random.key(0))[1]
    zero_info = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), info_shape)

    # --------------------------------------------------------------------------- the loop
    def init(key, hparams: HParams, data, task_params):
        del data
        k_agent, k_env, k_measure, key = jax.random.split(key, 4)
        state = agent.init(k_agent, hparams)
        env = reset_envs(task_slice(task_params, 0), k_env, spec.num_envs)
        zeros = jnp.zeros(spec.num_envs)
        carry = RLCarry(state, env, env, zeros.astype(jnp.int32), zeros, buffer.init(example),
                        () if val_buffer is None else val_buffer.init(example), key,
                        jnp.zeros((), bool))
        return carry, measure(carry, 0, task_params, k_measure)

    def between_tasks(carry: RLCarry, t, hparams, data, task_params) -> RLCarry:
        """Before task t > 0: fresh reset states under task t, boundary resets, and (with
        ``reset_replay``) empty replay and held-out buffers."""
        del data
        key, k_env, k_probe, k_int = jax.random.split(carry.key, 4)

        def apply(c: RLCarry) -> RLCarry:
            env = reset_envs(task_slice(task_params, t), k_env, spec.num_envs)
            zeros = jnp.zeros(spec.num_envs)
            state = c.agent
            if intervention is not None and spec.intervention_every == 0:
                state = intervention(state, probe_obs(c, k_probe), hparams, k_int)
            buf, val = c.buffer, c.val_buffer
            if spec.reset_replay:  # the held-out buffer too: it must hold the current task
                buf = buffer.init(example)
                val = val if val_buffer is None else val_buffer.init(example)
            return c._replace(agent=state, env=env, first=env, ep_step=zeros.astype(jnp.int32),
                              ep_return=zeros, buffer=buf, val_buffer=val)

        carry = jax.lax.cond(t > 0, apply, lambda c: c, carry)
        return carry._replace(key=key)

    def env_step(carry: RLCarry, task, hparams: HParams, step_index):
        key, k_act, k_add, k_upd = jax.random.split(carry.key, 4)
        action, _ = agent.act(carry.agent, carry.env.obs, k_act)
        nxt = step_many(task, carry.env, action)
        # A simulator blow-up (non-finite observation or reward, possible with MJX's fast
        # solver settings) ends the episode as a termination with reward 0 and is counted;
        # it never enters the replay buffer as NaN.
        blown = ~(jnp.all(jnp.isfinite(nxt.obs), axis=-1) & jnp.isfinite(nxt.reward))
        reward = jnp.where(blown, 0.0, nxt.reward)
        done = (nxt.done > 0) | blown
        transition = Transition(carry.env.obs, action, reward, 1.0 - done.astype(jnp.float32),
                                jnp.where(blown[:, None], carry.env.obs, nxt.obs))
        extras = {"scores": nxt.reward}
        if spec.eviction == "coverage_max":  # coverage over normalised observations
            obs = carry.env.obs
            extras["embeddings"] = obs / jnp.maximum(
                jnp.linalg.norm(obs, axis=-1, keepdims=True), 1e-6)
        buf, val = carry.buffer, carry.val_buffer
        if val_buffer is None:
            buf = buffer.add(buf, transition, k_add, **extras)
        else:
            held_out = step_index % spec.val_every == 0
            buf = jax.lax.cond(held_out, lambda b: b,
                               lambda b: buffer.add(b, transition, k_add, **extras), buf)
            val = jax.lax.cond(held_out, lambda v: val_buffer.add(v, transition, k_add),
                               lambda v: v, val)
        ep_return = carry.ep_return + reward
        ep_step = carry.ep_step + 1
        finished = done | (ep_step >= spec.episode_length)
        episodes = jnp.sum(finished)
        returns = jnp.sum(jnp.where(finished, ep_return, 0.0))
        carry = carry._replace(
            env=_where(finished, carry.first, nxt), ep_step=jnp.where(finished, 0, ep_step),
            ep_return=jnp.where(finished, 0.0, ep_return), buffer=buf, val_buffer=val, key=key)

        def one_update(state, k):
            k_batch, k_update, k_int = jax.random.split(k, 3)
            batch = buffer.sample(carry.buffer, k_batch, spec.batch_size)
            new, info = agent.update(state, batch, hparams, k_update)
            if intervention is not None and spec.intervention_every > 0:
                new = jax.lax.cond(new.step % spec.intervention_every == 0,
                                   lambda s: intervention(s, batch.obs, hparams, k_int),
                                   lambda s: s, new)
            return new, info

        ready = carry.buffer.size >= ready_at
        state, infos = jax.lax.scan(
            lambda s, k: jax.lax.cond(ready, one_update, lambda s_, k_: (s_, zero_info), s, k),
            carry.agent, jax.random.split(k_upd, spec.updates_per_step))
        n_updates = ready.astype(jnp.float32) * spec.updates_per_step
        sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), infos)
        return carry._replace(agent=state), (sums, n_updates, returns, episodes,
                                             jnp.sum(blown))

    def run_interval(carry: RLCarry, t, hparams: HParams, data, task_params):
        del data
        task = task_slice(task_params, t)
        start = carry

        def body(c, i):
            return env_step(c, task, hparams, i)

        steps = jnp.arange(spec.log_every) + t * spec.steps_per_task
        carry, (sums, n_updates, returns, episodes, blown) = jax.lax.scan(body, carry, steps)
        total = jnp.sum(n_updates)
        train = jax.tree.map(lambda x: jnp.sum(x, axis=0) / jnp.maximum(total, 1.0), sums)
        train = jax.tree.map(lambda x: jnp.where(total > 0, x, jnp.nan), train)
        n_episodes = jnp.sum(episodes)
        train["episode_return"] = jnp.where(n_episodes > 0,
                                            jnp.sum(returns) / jnp.maximum(n_episodes, 1),
                                            jnp.nan)
        train["episodes"] = n_episodes.astype(jnp.float32)
        train["env_nonfinite"] = jnp.sum(blown).astype(jnp.float32)
        # Divergence: checked once per interval, as in continual.loop.
        losses = jnp.stack([sums["critic_loss"].sum(), sums["actor_loss"].sum()])
        loss_bad = ~jnp.all(jnp.isfinite(losses))
        params_ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(p))
                                       for p in jax.tree.leaves((carry.agent.actor.params,
                                                                 carry.agent.critic.params))]))
        ok = ~loss_bad & params_ok & ~start.diverged
        k_measure, key = jax.random.split(carry.key)
        carry = jax.lax.cond(ok, lambda: carry, lambda: start._replace(key=carry.key))
        carry = carry._replace(diverged=start.diverged | ~ok, key=key)
        logs = {"train": train,
                "nonfinite_steps": jnp.maximum(loss_bad.astype(jnp.int32),
                                               (~params_ok).astype(jnp.int32)),
                "nonfinite_loss": loss_bad.astype(jnp.int32),
                "nonfinite_params": (~params_ok).astype(jnp.int32)}
        logs.update(measure(carry, t, task_params, k_measure))
        return carry, logs

    def run_task(carry, t, hparams, data, task_params):
        carry = between_tasks(carry, t, hparams, data, task_params)
        return jax.lax.scan(lambda c, _: run_interval(c, t, hparams, data, task_params), carry,
                            length=spec.intervals_per_task)

    def run(key, hparams, data, task_params):
        carry, logs0 = init(key, hparams, data, task_params)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        _, logs = jax.lax.scan(lambda c, t: run_task(c, t, hparams, data, task_params), carry,
                               jnp.arange(num_tasks))
        return logs0, logs

    return Train(init, run_task, run, between_tasks, run_interval)

