"""ε-greedy exploration over discrete action values (Mnih et al. 2015, "Human-level control
through deep reinforcement learning"), shared by the TD agent (:mod:`continual.agents.dqn`) and
the policy-free contrastive one (:mod:`continual.agents.crl` on discrete envs), so that a
TD-vs-Monte-Carlo comparison differs only in the critic."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def epsilon_schedule(updates: jax.Array, start: float, end: float, decay: int) -> jax.Array:
    """ε after ``updates`` gradient updates: linear from ``start`` to ``end`` over ``decay``
    updates, then ``end`` (``decay`` 0: ``end`` throughout). It stays at ``start`` until
    updates begin, so a warm-up is uniform exploration at ε = 1 (Mnih et al.'s schedule)."""
    if decay == 0:
        return jnp.asarray(end, jnp.float32)
    frac = jnp.clip(jnp.asarray(updates).astype(jnp.float32) / decay, 0.0, 1.0)
    return start + frac * (end - start)


def epsilon_greedy(values: jax.Array, eps: jax.Array, key: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """One-hot ε-greedy actions ``[B, A]`` on action values ``[B, A]`` and their
    log-probabilities ``[B]``: with probability ε uniform over all ``A`` actions (the greedy one
    included), so the greedy action has probability ``1 − ε + ε/A``."""
    k_explore, k_action = jax.random.split(key)
    n = values.shape[-1]
    best = jnp.argmax(values, axis=-1)
    explore = jax.random.uniform(k_explore, best.shape) < eps
    uniform = jax.random.randint(k_action, best.shape, 0, n)
    index = jnp.where(explore, uniform, best)
    p = jnp.where(index == best, 1.0 - eps + eps / n, eps / n)
    return jax.nn.one_hot(index, n), jnp.log(p)
