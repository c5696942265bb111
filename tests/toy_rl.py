"""A toy RL environment source and agent for tests: fast to compile (no physics engine), and
built only from the public interfaces (:class:`tasks.envs.EnvTaskSequence`,
:class:`continual.agents.Agent`), so they exercise the loop exactly as a real source and agent
do."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from continual.agents import Agent, Memory, memoryless
from tasks.base import task_slice
from tasks.envs import EnvTaskSequence

# ----------------------------------------------------------------------------- environment


class ReachState(NamedTuple):
    obs: jax.Array     # [position, target]
    reward: jax.Array
    done: jax.Array


def reach_sequence(targets) -> EnvTaskSequence:
    """A 1-D point mass moved by its action; reward −|position − target|; the target is the
    task (``params`` ``[T]``)."""
    params = jnp.asarray(targets, jnp.float32)

    def reset(target, key):
        position = jax.random.uniform(key, (), minval=-1.0, maxval=1.0)
        return ReachState(jnp.stack([position, target]), jnp.zeros(()), jnp.zeros(()))

    def step(target, state, action):
        position = jnp.clip(state.obs[0] + 0.1 * action[0], -2.0, 2.0)
        return ReachState(jnp.stack([position, target]), -jnp.abs(position - target),
                          jnp.zeros(()))

    return EnvTaskSequence("reach", None, params, reset, step, int(params.shape[0]), 2, 1)


# ----------------------------------------------------------------------------- agent


class Batch(NamedTuple):
    obs: jax.Array


def random_agent(observation_size: int, action_size: int, batch_size: int) -> Agent:
    """Uniform random actions; its memory keeps the last observation of every env and counts
    the steps stored; its 'update' only counts updates (state: one float, the update count)."""

    def init_memory():
        return {"last_obs": jnp.zeros((batch_size, observation_size)),
                "stored": jnp.zeros((), jnp.int32)}

    def store(memory, step, key, index):
        del key, index
        return {"last_obs": step.next_obs[:batch_size], "stored": memory["stored"] + 1}

    memory = Memory(init_memory, store,
                    sample=lambda m, key: Batch(m["last_obs"]),
                    ready=lambda m: m["stored"] >= 2,
                    clear=lambda m: init_memory(),
                    probe=lambda m, key, n: (jnp.resize(m["last_obs"], (n, observation_size)),
                                             m["stored"] > 0))

    def act(state, obs, key):
        return jax.random.uniform(key, (obs.shape[0], action_size), minval=-1, maxval=1), ()

    def update(state, batch, hparams, key):
        return state + 1.0, {"loss": jnp.mean(jnp.abs(batch.obs))}

    act, act_mode = memoryless(act, lambda state, obs: jnp.zeros((obs.shape[0], action_size)))
    return Agent(init=lambda key, hparams: jnp.zeros(()), act=act, act_mode=act_mode,
                 update=update, memory=memory, evaluate=lambda state, obs, action: {},
                 measure=lambda state, memory, rollout, key: {
                     "updates": state, "rollout_reward": jnp.mean(rollout.reward)},
                 features=lambda state, obs: {}, params=lambda state: state,
                 loss_keys=("loss",))


# ----------------------------------------------------------------------------- baselines


def random_rollout(seq: EnvTaskSequence, episodes: int, length: int, key=None):
    """``episodes`` episodes of ``length`` uniformly random actions on task 0 of ``seq``: the
    env states after each step, leaves ``[length, episodes, ...]`` (the baseline a learning test
    compares a trained agent with)."""
    task = task_slice(seq.params, 0)

    @jax.jit
    def rollout(key):
        k_reset, k_act = jax.random.split(key)
        env = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(k_reset, episodes))

        def body(env, k):
            a = jax.random.uniform(k, (episodes, seq.action_size), minval=-1, maxval=1)
            nxt = jax.vmap(seq.step, (None, 0, 0))(task, env, a)
            return nxt, nxt

        return jax.lax.scan(body, env, jax.random.split(k_act, length))[1]

    return rollout(jax.random.key(123) if key is None else key)
