"""Future-goal relabelling for goal-conditioned replay (CRL, HER's "future" strategy;
REFERENCE.md §9 "Relabelling").

JaxGCRL draws the goal of step ``i`` of a stored window from ``P(goal = s_j | i) ∝ γ^{j−i}`` over
the later steps ``j`` of the same episode (the window's last state is its own goal), by building a
``T_w × T_w`` matrix per sampled window — about 1 GB at 256 envs and ``T_w = 1001``. The same law
needs one uniform per sample: with ``H`` the steps left in the episode after ``i``,

    Δ = min(H, 1 + ⌊log(1 − U·(1 − γ^H)) / log γ⌋),   U ~ U[0, 1),

gives ``P(Δ = k) = γ^{k−1}(1 − γ) / (1 − γ^H)`` for ``k = 1..H`` — the truncated geometric the
matrix encodes — and ``Δ = 0`` (the state itself) when ``H = 0``. ``H`` comes from the episode ids
of the window, which increase along time (:func:`steps_left`), so a goal never lies past the
window's end nor in another episode.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def steps_left(episode_ids: jax.Array) -> jax.Array:
    """``[T]`` → ``[T]``: how many later steps of the window belong to each step's episode
    (``episode_ids`` non-decreasing along the window, as a trajectory buffer stores them)."""
    last = jnp.searchsorted(episode_ids, episode_ids, side="right") - 1  # episode's last index
    return (last - jnp.arange(episode_ids.shape[0])).astype(jnp.int32)


def future_offsets(key: jax.Array, left: jax.Array, gamma: float) -> jax.Array:
    """Offsets ``Δ`` (int32, the shape of ``left``) to the relabelled goal: ``P(Δ = k) ∝ γ^k``
    for ``k = 1..left``, and 0 where ``left`` is 0."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
    u = jax.random.uniform(key, left.shape)
    horizon = left.astype(jnp.float32)
    draw = 1.0 + jnp.floor(jnp.log1p(-u * (1.0 - gamma ** horizon)) / jnp.log(gamma))
    return jnp.where(left > 0, jnp.clip(draw, 1.0, horizon), 0.0).astype(jnp.int32)


def future_goal_indices(key: jax.Array, episode_ids: jax.Array, gamma: float) -> jax.Array:
    """For every step ``i`` of a ``[T]`` window, the index of its relabelled goal state."""
    return jnp.arange(episode_ids.shape[0]) + future_offsets(key, steps_left(episode_ids), gamma)
