"""The continual RL loop every agent runs: vectorised envs whose task changes, one compiled
program per run shape — the RL counterpart of :mod:`continual.loop`.

Nesting, as on the supervised side (DESIGN.md, principle 2)::

    vmap(runs) → scan(schedule: log intervals) → scan(env steps) → scan(updates)

One *env step* steps all ``num_envs`` environments once (``num_envs`` transitions, handed to the
agent's memory as one :class:`continual.agents.EnvStep`) and, every ``update_every``-th of them,
is followed by ``updates_per_step`` gradient updates on batches the agent samples from its own
memory (Brax's convention; the replay ratio in updates per transition is ``updates_per_step /
(update_every · num_envs)``). Updates start once the memory is ``ready``.

What the loop owns, for every agent (:class:`continual.agents.Agent` holds what differs):

* Tasks. Each log interval reads its entry of the task schedule (:mod:`tasks.schedule`) as
  traced data, and the env's physics and objective are built from the task's slice of
  ``task_params`` inside the program (any source of :class:`tasks.envs.EnvTaskSequence`): every
  task and every schedule of the same length share one compilation. It returns a
  :class:`continual.loop.Train`, so :func:`continual.runner.execute` runs it in sweep or
  chunked mode, sharded over devices, with checkpoints — unchanged.
* Episodes. Each env runs until it terminates or reaches ``episode_length`` steps; then it
  restarts from its reset state of the current task (Brax's ``AutoResetWrapper`` convention: one
  reset state per env, drawn afresh at every switch of the schedule, announced or hidden), or,
  for a source with ``fresh_resets`` (procedurally generated tasks: Lights Out), from a fresh
  reset of the current task drawn at every step (selected where the episode ended). A
  time-limit truncation keeps ``discount = 1`` (the critic bootstraps); a termination sets it
  to 0.
  The agent's policy carry (:attr:`continual.agents.Agent.carry_init`: a recurrent agent's
  latent state and previous action) restarts with the episode, so the step that sees a first
  observation never reads the previous episode's state.
* Simulator blow-ups: a non-finite observation or reward ends the episode as a termination with
  reward 0, is counted (``env_nonfinite``) and reaches memory with ``next_obs = obs``.
* Interventions (``intervention(state, obs, hparams, key) -> state``, e.g. a reset): between
  tasks on a probe batch of stored observations (``intervention_every = 0``), or after every
  that many gradient updates on the update's batch. ``reset_replay`` clears the memory at task
  switches. Both run only at switches the schedule announces (none with hidden boundaries).
* Divergence: a run whose losses (the agent's ``loss_keys``) or parameters become non-finite in
  an interval rolls back to the interval's start and stays frozen, flagged (as in
  :mod:`continual.loop`).

After every log interval (all on device):

* ``eval_return[T]``: the agent's ``act_mode`` on *every* task, ``eval_envs`` fresh episodes of
  ``eval_length`` steps each, undiscounted return of each env's first episode; the last interval
  of each visit is a row of the return matrix (:mod:`metrics.continual`);
* for goal-conditioned sources (those with a :class:`tasks.envs.GoalSpace`), per task too:
  ``eval_success`` (the fraction of episodes within the goal threshold at any step: JaxGCRL's
  ``episode_success_any``), ``eval_time_near_goal`` (steps within it: its ``episode_success``)
  and ``eval_final_distance`` (:func:`metrics.rl.goal_reaching`);
* the same per-task metrics of each of the agent's ``mode_variants`` (other evaluation
  policies, e.g. a think network at more test-time steps), suffixed with its name
  (``eval_success_think8``);
* the agent's ``measure`` on fresh rollouts of its training policy on the current task (SAC:
  ``q_bias`` and TD errors);
* ``train``: interval means of the update's infos, the mean return of the training episodes that
  ended in the interval (``episode_return``, NaN if none; with goals also the fraction of them
  that reached their goal, ``episode_success``) with their count, and
  ``env_nonfinite``;
* ``diagnostics`` on every network the agent's ``features`` names, on a probe batch of
  ``probe_examples`` stored observations (the envs' current ones while memory is empty), layers
  named ``<network>/<layer>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual.agents.base import Agent, EnvStep, Rollout
from continual.loop import Train, scan_schedule
from continual.optimizers import HParams
from metrics import rl as rl_metrics
from tasks.base import task_slice
from tasks.envs.base import EnvTaskSequence
from tasks.schedule import Schedule


@dataclass(frozen=True)
class RLSpec:
    """Static loop sizes (counts of env steps are *vector* steps of all ``num_envs`` envs)."""

    num_envs: int
    steps_per_task: int
    log_every: int
    episode_length: int = 1000
    updates_per_step: int = 1
    update_every: int = 1         # vector steps between update rounds (fractional replay ratios)
    eval_envs: int = 4
    eval_length: int = 1000
    probe_examples: int = 256
    intervention_every: int = 0   # gradient updates between interventions; 0 = between tasks
    reset_replay: bool = False     # clear the agent's memory at task boundaries

    def __post_init__(self):
        for name in ("num_envs", "steps_per_task", "log_every", "episode_length", "eval_envs",
                     "eval_length", "probe_examples", "update_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.updates_per_step < 0 or self.intervention_every < 0:
            raise ValueError("updates_per_step and intervention_every must be >= 0")
        if self.steps_per_task % self.log_every:
            raise ValueError(f"steps_per_task={self.steps_per_task} must be a multiple of "
                             f"log_every={self.log_every}")

    @property
    def intervals_per_task(self) -> int:
        return self.steps_per_task // self.log_every


class RLCarry(NamedTuple):
    agent: Any          # the agent's state
    memory: Any         # the agent's memory
    updates: jax.Array  # gradient updates so far (the intervention schedule)
    env: Any            # env state, leaves [E, ...]
    first: Any          # the envs' reset states for the current task (auto-reset target)
    policy: Any         # the agent's per-env policy carry (restarted where an episode ends)
    ep_step: jax.Array  # [E] steps into the current episode
    ep_return: jax.Array  # [E] return so far of the current episode
    ep_success: jax.Array  # [E] the current episode reached its goal (goal-conditioned sources)
    key: jax.Array
    steps: jax.Array    # vector env steps so far (the memory's step index)
    env_task: jax.Array  # the task the envs run (their reset states are that task's)
    diverged: jax.Array = False


# (state-like with .params/.init_params, features) -> {metric: {layer: value}}
Diagnose = Callable[[Any, dict], dict]
# (agent state, obs, hparams, key) -> agent state
Intervention = Callable[[Any, jax.Array, HParams, jax.Array], Any]


def _where(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per-env select between two pytrees with leading env axis."""
    def sel(x, y):
        m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        return jnp.where(m, x, y)
    return jax.tree.map(sel, a, b)


def _blown(env) -> jax.Array:
    """[E] a simulator blow-up: a non-finite observation or reward."""
    return ~(jnp.all(jnp.isfinite(env.obs), axis=-1) & jnp.isfinite(env.reward))


def make_rl_train(spec: RLSpec, agent: Agent, seq: EnvTaskSequence,
                  diagnose: Diagnose | None = None,
                  intervention: Intervention | None = None) -> Train:
    """Builds the loop of one run (vmap it over runs with :func:`continual.runner.execute`;
    ``data`` is ``()`` for a fresh start, or pre-trained starting points the agent's
    :attr:`~continual.agents.Agent.start` reads: fine-tuning). ``intervention`` (e.g.
    :func:`continual.agents.sac.make_reset`) is applied between tasks
    (``spec.intervention_every = 0``) or every that many gradient updates."""
    memory = agent.memory
    goals = seq.goals

    def goal_distance(obs):
        """[E] distance to the goal after a step (zeros for sources without goals)."""
        return jnp.zeros(obs.shape[:-1]) if goals is None else goals.distance(obs)

    reset_many = jax.vmap(seq.reset, in_axes=(None, 0))
    step_many = jax.vmap(seq.step, in_axes=(None, 0, 0))

    def reset_envs(task, key, n):
        return reset_many(task, jax.random.split(key, n))

    # --------------------------------------------------------------------------- measurement
    def rollouts(state, task_params, t, key):
        """T + 1 batches of ``eval_envs`` fresh episodes, one after another through one rollout
        function: the mode policy on every task (returns) and the training policy on task t
        (the agent's ``measure``). One rollout function keeps one copy of the physics in the
        compiled program (compile time dominates short runs)."""
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        variants = len(agent.mode_variants)
        # Rollout r: mode policy on task r (r < T), training policy on task t (r = T), then
        # each mode variant on every task.
        tasks = jax.tree.map(lambda a: jnp.concatenate([a, a[t][None]] + [a] * variants),
                             task_params)
        count = (variants + 1) * num_tasks + 1
        stochastic = jnp.arange(count) == num_tasks
        which = jnp.concatenate([jnp.zeros(num_tasks + 1, jnp.int32)]
                                + [jnp.full(num_tasks, v + 1, jnp.int32)
                                   for v in range(variants)])
        modes = [agent.act_mode] + [fn for _, fn in agent.mode_variants]

        def one(task, is_stochastic, variant, k):
            k_reset, k_roll = jax.random.split(k)

            def body(carry, _):
                env, policy, kk = carry
                kk, k_act = jax.random.split(kk)
                sampled, act_info, p_sampled = agent.act(state, policy, env.obs, k_act)
                mode, p_mode = (jax.lax.switch(variant, modes, state, policy, env.obs)
                                if variants else agent.act_mode(state, policy, env.obs))
                action, policy = jax.tree.map(lambda a, b: jnp.where(is_stochastic, a, b),
                                              (sampled, p_sampled), (mode, p_mode))
                record = agent.evaluate(state, env.obs, action)
                nxt = step_many(task, env, action)
                blown = _blown(nxt)
                return (nxt, policy, kk), (Rollout(record, jnp.where(blown, 0.0, nxt.reward),
                                                   jnp.where(blown, 1.0, nxt.done), act_info),
                                           goal_distance(nxt.obs))

            # Only each env's first episode is measured: no restart (of env or carry) needed.
            _, out = jax.lax.scan(body, (reset_envs(task, k_reset, spec.eval_envs),
                                         agent.carry_init(spec.eval_envs), k_roll),
                                  length=spec.eval_length)
            return out

        # lax.map, not vmap: a task-batched System would compile a second variant of the
        # physics; sequential rollouts reuse the training step's.
        out, distance = jax.lax.map(lambda x: one(*x),
                                    (tasks, stochastic, which, jax.random.split(key, count)))

        def per_task(rows, suffix=""):
            returns = jax.vmap(rl_metrics.episode_return)(out.reward[rows], out.done[rows])
            logs = {f"eval_return{suffix}": jnp.mean(returns, axis=-1)}
            if goals is not None:
                reached = jax.vmap(lambda d, done: rl_metrics.goal_reaching(
                    d, done, goals.threshold))(distance[rows], out.done[rows])
                logs.update({f"eval_{name}{suffix}": jnp.mean(v, axis=-1)
                             for name, v in reached.items()})
            return logs

        logs = per_task(slice(0, num_tasks))
        for v, (suffix, _) in enumerate(agent.mode_variants):
            start = (v + 1) * num_tasks + 1
            logs.update(per_task(slice(start, start + num_tasks), f"_{suffix}"))
        return logs, jax.tree.map(lambda a: a[num_tasks], out)

    def probe_obs(carry: RLCarry, key):
        """Diagnostics probe batch: stored observations (the envs' current ones while empty)."""
        stored, valid = memory.probe(carry.memory, key, spec.probe_examples)
        fallback = jnp.take(carry.env.obs, jnp.arange(spec.probe_examples) % spec.num_envs,
                            axis=0)
        return jnp.where(valid, stored, fallback)

    def measure(carry: RLCarry, t, task_params, key) -> dict:
        k_eval, k_agent, k_probe = jax.random.split(key, 3)
        state = carry.agent
        logs, rollout = rollouts(state, task_params, t, k_eval)
        logs.update(agent.measure(state, carry.memory, rollout, k_agent))
        if diagnose is not None:
            out: dict = {}
            for name, (net_state, feats) in agent.features(state,
                                                           probe_obs(carry, k_probe)).items():
                for metric, per_layer in diagnose(net_state, feats).items():
                    out.setdefault(metric, {}).update(
                        {f"{name}/{layer}": v for layer, v in per_layer.items()})
            logs["diagnostics"] = out
        return logs

    # The update's info for the skipped-update branch (before memory is ready): zeros of its
    # shape.
    abstract_state = jax.eval_shape(agent.init, jax.random.key(0), HParams.defaults())
    batch_shape = jax.eval_shape(lambda k: memory.sample(memory.init(), k), jax.random.key(0))
    info_shape = jax.eval_shape(agent.update, abstract_state, batch_shape, HParams.defaults(),
                                jax.random.key(0))[1]
    zero_info = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), info_shape)

    # --------------------------------------------------------------------------- the loop
    def init(key, hparams: HParams, data, task_params):
        k_agent, k_env, k_measure, key = jax.random.split(key, 4)
        state = agent.init(k_agent, hparams)
        if not (isinstance(data, tuple) and data == ()):  # fine-tuning: pre-trained networks
            if agent.start is None:
                raise ValueError("this agent cannot start from pre-trained networks")
            state = agent.start(state, data, hparams)
        env = reset_envs(task_slice(task_params, 0), k_env, spec.num_envs)
        zeros = jnp.zeros(spec.num_envs)
        carry = RLCarry(state, memory.init(), jnp.zeros((), jnp.int32), env, env,
                        agent.carry_init(spec.num_envs), zeros.astype(jnp.int32), zeros,
                        zeros.astype(bool), key, jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.int32), jnp.zeros((), bool))
        return carry, measure(carry, 0, task_params, k_measure)

    def at_switch(carry: RLCarry, entry: Schedule, hparams, task_params) -> RLCarry:
        """At the first interval of a visit: a fresh key split; after the first visit, fresh
        reset states under the new task; where the schedule announces the boundary, boundary
        interventions and (with ``reset_replay``) an empty memory."""
        def switch(c: RLCarry) -> RLCarry:
            key, k_env, k_probe, k_int = jax.random.split(c.key, 4)

            def new_task(c: RLCarry) -> RLCarry:
                env = reset_envs(task_slice(task_params, entry.task), k_env, spec.num_envs)
                zeros = jnp.zeros(spec.num_envs)
                return c._replace(env=env, first=env, policy=agent.carry_init(spec.num_envs),
                                  ep_step=zeros.astype(jnp.int32),
                                  ep_return=zeros, ep_success=zeros.astype(bool),
                                  env_task=entry.task)

            def hooks(c: RLCarry) -> RLCarry:
                state = c.agent
                if intervention is not None and spec.intervention_every == 0:
                    state = intervention(state, probe_obs(c, k_probe), hparams, k_int)
                mem = memory.clear(c.memory) if spec.reset_replay else c.memory
                return c._replace(agent=state, memory=mem)

            # Init resets the envs under task 0: a schedule that starts there keeps them.
            c = jax.lax.cond(entry.task != c.env_task, new_task, lambda c: c, c)
            c = jax.lax.cond(entry.announce, hooks, lambda c: c, c)
            return c._replace(key=key)

        return jax.lax.cond(entry.switch, switch, lambda c: c, carry)

    def env_step(carry: RLCarry, task, hparams: HParams, step_index):
        key, k_act, k_add, k_upd = jax.random.split(carry.key, 4)
        action, act_info, policy = agent.act(carry.agent, carry.policy, carry.env.obs, k_act)
        nxt = step_many(task, carry.env, action)
        # A simulator blow-up (possible with MJX's fast solver settings) ends the episode as a
        # termination with reward 0 and is counted; it never reaches memory as NaN.
        blown = _blown(nxt)
        reward = jnp.where(blown, 0.0, nxt.reward)
        done = (nxt.done > 0) | blown
        ep_return = carry.ep_return + reward
        ep_step = carry.ep_step + 1
        threshold = 0.0 if goals is None else goals.threshold
        ep_success = carry.ep_success | (goal_distance(nxt.obs) < threshold)
        finished = done | (ep_step >= spec.episode_length)
        step = EnvStep(carry.env.obs, action, reward, 1.0 - done.astype(jnp.float32),
                       jnp.where(blown[:, None], carry.env.obs, nxt.obs), finished, act_info,
                       carry.env_task)
        mem = memory.store(carry.memory, step, k_add, step_index)
        episodes = jnp.sum(finished)
        returns = jnp.sum(jnp.where(finished, ep_return, 0.0))
        successes = jnp.sum(finished & ep_success)
        if seq.fresh_resets:  # static: other sources keep their random stream
            key, k_reset = jax.random.split(key)
            restart = reset_envs(task, k_reset, spec.num_envs)
        else:
            restart = carry.first
        carry = carry._replace(
            env=_where(finished, restart, nxt),
            # The next step sees a first observation: it starts from the initial carry.
            policy=_where(finished, agent.carry_init(spec.num_envs), policy),
            ep_step=jnp.where(finished, 0, ep_step),
            ep_return=jnp.where(finished, 0.0, ep_return),
            ep_success=ep_success & ~finished, memory=mem, key=key)

        def one_update(x, k):
            state, updates = x
            k_batch, k_update, k_int = jax.random.split(k, 3)
            batch = memory.sample(carry.memory, k_batch)
            new, info = agent.update(state, batch, hparams, k_update)
            updates = updates + 1
            if intervention is not None and spec.intervention_every > 0:
                new = jax.lax.cond(updates % spec.intervention_every == 0,
                                   lambda s: intervention(s, batch.obs, hparams, k_int),
                                   lambda s: s, new)
            return (new, updates), info

        def update_round(x):
            # ``ready`` is per run (batched under vmap: both branches run, the skip is a
            # select), so it sits inside the round.
            ready = memory.ready(carry.memory)
            out = jax.lax.scan(
                lambda x, k: jax.lax.cond(ready, one_update, lambda x_, k_: (x_, zero_info),
                                          x, k),
                x, jax.random.split(k_upd, spec.updates_per_step))
            return out, ready.astype(jnp.float32) * spec.updates_per_step

        def no_round(x):
            infos = jax.tree.map(lambda z: jnp.zeros((spec.updates_per_step,) + z.shape,
                                                     z.dtype), zero_info)
            return (x, infos), jnp.zeros(())

        # The step index is shared by all runs (from the schedule): a real branch, so the steps
        # between update rounds cost no update.
        ((state, updates), infos), n_updates = jax.lax.cond(
            step_index % spec.update_every == 0, update_round, no_round,
            (carry.agent, carry.updates))
        sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), infos)
        return carry._replace(agent=state, updates=updates), (sums, n_updates, returns,
                                                              successes, episodes,
                                                              jnp.sum(blown))

    def run_interval(carry: RLCarry, entry: Schedule, hparams: HParams, data, task_params):
        del data
        carry = at_switch(carry, entry, hparams, task_params)
        task = task_slice(task_params, entry.task)
        start = carry

        def body(c, i):
            return env_step(c, task, hparams, i)

        # The env-step index of each step, from the schedule's interval index: the same for
        # every run, unbatched under vmap (``carry.steps`` holds the same count per run).
        steps = jnp.arange(spec.log_every) + entry.interval * spec.log_every
        carry, (sums, n_updates, returns, successes, episodes, blown) = jax.lax.scan(
            body, carry, steps)
        carry = carry._replace(steps=start.steps + spec.log_every)
        total = jnp.sum(n_updates)
        train = jax.tree.map(lambda x: jnp.sum(x, axis=0) / jnp.maximum(total, 1.0), sums)
        train = jax.tree.map(lambda x: jnp.where(total > 0, x, jnp.nan), train)
        n_episodes = jnp.sum(episodes)
        train["episode_return"] = jnp.where(n_episodes > 0,
                                            jnp.sum(returns) / jnp.maximum(n_episodes, 1),
                                            jnp.nan)
        if goals is not None:
            train["episode_success"] = jnp.where(
                n_episodes > 0, jnp.sum(successes) / jnp.maximum(n_episodes, 1), jnp.nan)
        train["episodes"] = n_episodes.astype(jnp.float32)
        train["env_nonfinite"] = jnp.sum(blown).astype(jnp.float32)
        # Divergence: checked once per interval, as in continual.loop.
        losses = jnp.stack([sums[name].sum() for name in agent.loss_keys])
        loss_bad = ~jnp.all(jnp.isfinite(losses))
        params_ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(p))
                                       for p in jax.tree.leaves(agent.params(carry.agent))]))
        ok = ~loss_bad & params_ok & ~start.diverged
        k_measure, key = jax.random.split(carry.key)
        carry = jax.lax.cond(ok, lambda: carry, lambda: start._replace(key=carry.key))
        carry = carry._replace(diverged=start.diverged | ~ok, key=key)
        logs = {"train": train,
                "nonfinite_steps": jnp.maximum(loss_bad.astype(jnp.int32),
                                               (~params_ok).astype(jnp.int32)),
                "nonfinite_loss": loss_bad.astype(jnp.int32),
                "nonfinite_params": (~params_ok).astype(jnp.int32)}
        logs.update(measure(carry, entry.task, task_params, k_measure))
        return carry, logs

    return Train(init, run_interval, scan_schedule(init, run_interval))
