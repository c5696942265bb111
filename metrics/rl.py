"""RL diagnostics from evaluation rollouts, as pure ``jnp`` functions (REFERENCE.md §4).

Rollouts are time-major arrays ``[L, E]`` (L steps of E environments, no auto-reset): the
reward of step t, whether the env *terminated* at step t, and per-step policy and critic values.
A step counts while no earlier step of its env terminated (``alive``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def alive_mask(done: jax.Array) -> jax.Array:
    """``[L, E]`` 1.0 for the steps taken before (and including) each env's first termination."""
    done = jnp.asarray(done, jnp.float32)
    before = jnp.cumprod(1.0 - done, axis=0)
    return jnp.concatenate([jnp.ones_like(done[:1]), before[:-1]], axis=0)


def episode_return(reward: jax.Array, done: jax.Array) -> jax.Array:
    """Undiscounted return of each env's first episode within the rollout, ``[E]``. Rewards
    after a termination are ignored (``where``, so a non-finite value there is too)."""
    return jnp.sum(jnp.where(alive_mask(done) > 0, reward, 0.0), axis=0)


def goal_reaching(distance: jax.Array, done: jax.Array,
                  threshold: float) -> dict[str, jax.Array]:
    """Goal-reaching measures of each env's first episode, ``[E]`` each (REFERENCE §9
    "Metrics"), from ``distance [L, E]`` (to the goal after step t) and ``done [L, E]``:

    * ``success``: 1 if any step of the episode ends within ``threshold`` of the goal
      (JaxGCRL's ``episode_success_any``);
    * ``time_near_goal``: how many steps end within it (JaxGCRL's ``episode_success``; stops at
      termination);
    * ``final_distance``: the distance after the episode's last step (its termination, or the
      rollout's end).
    """
    alive = alive_mask(done) > 0
    near = alive & (distance < threshold)
    last = jnp.sum(alive, axis=0) - 1
    return {"success": jnp.any(near, axis=0).astype(jnp.float32),
            "time_near_goal": jnp.sum(near, axis=0).astype(jnp.float32),
            "final_distance": jnp.take_along_axis(distance, last[None], axis=0)[0]}


def soft_returns(reward: jax.Array, done: jax.Array, log_prob: jax.Array, gamma: float,
                 alpha: jax.Array | float) -> jax.Array:
    """Discounted soft Monte-Carlo returns ``G_t``, ``[L, E]`` (REDQ's bias protocol):

        G_t = r_t + γ (1 − d_t) (G_{t+1} − α log π(a_{t+1}|s_{t+1})),   G_L = 0,

    ``d_t`` the termination flag of step t. With ``alpha = 0`` it is the plain discounted return.
    Beyond the rollout the return is cut (G_L = 0), so keep only early steps (see
    :func:`overestimation`).
    """
    done = jnp.asarray(done, jnp.float32)
    next_logp = jnp.concatenate([log_prob[1:], jnp.zeros_like(log_prob[:1])], axis=0)

    def back(g_next, x):
        r, d, lp_next = x
        g = r + gamma * (1.0 - d) * (g_next - alpha * lp_next)
        return g, g

    # G_{t+1} at t = L-1 is 0, and so is the entropy bonus of the (absent) next action.
    _, g = jax.lax.scan(back, jnp.zeros_like(reward[0]), (reward, done, next_logp),
                        reverse=True)
    return g


def overestimation(q: jax.Array, reward: jax.Array, done: jax.Array, log_prob: jax.Array, *,
                   gamma: float, alpha: jax.Array | float, keep: int) -> dict[str, jax.Array]:
    """Critic bias against the observed soft return on fresh rollouts of the current stochastic
    policy (REFERENCE §4 ``q_bias``, after REDQ's ``bias_utils.py``; Chen et al. 2021).

    Args:
      q: ``[L, E]`` the critic-ensemble mean Q̄(s_t, a_t) at the visited state-actions.
      reward, done, log_prob: ``[L, E]`` reward, termination flag and log π(a_t|s_t) of step t.
      gamma, alpha: the agent's discount and temperature (soft return, as the critic learns).
      keep: only the first ``keep`` steps of each episode enter (REDQ: 350 of 1,000), so the cut
        at the rollout's end barely biases G_t (γ^keep·tail).

    Returns the means over kept, alive steps of ``q_bias`` = Q̄ − G, ``q_bias_abs`` = |Q̄ − G|,
    ``q_bias_sq`` = (Q̄ − G)², ``q_bias_norm`` = (Q̄ − G)/max(|G|, 10) (REDQ's code normalises per
    state; its paper by the average return's magnitude, unconfirmed), plus ``mc_return`` (mean
    G) and ``q_estimate`` (mean Q̄) — NaN when no step qualifies.
    """
    g = soft_returns(reward, done, log_prob, gamma, alpha)
    steps = jnp.arange(q.shape[0])[:, None]
    w = alive_mask(done) * (steps < keep)
    n = jnp.sum(w)
    bias = q - g

    def mean(x):
        return jnp.where(n > 0, jnp.sum(jnp.where(w > 0, x, 0.0)) / jnp.maximum(n, 1.0), jnp.nan)

    return {"q_bias": mean(bias), "q_bias_abs": mean(jnp.abs(bias)),
            "q_bias_sq": mean(jnp.square(bias)),
            "q_bias_norm": mean(bias / jnp.maximum(jnp.abs(g), 10.0)),
            "mc_return": mean(g), "q_estimate": mean(q)}
