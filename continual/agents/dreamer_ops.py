"""The numerical building blocks of a DreamerV3-style world-model agent (Hafner et al. 2023,
"Mastering diverse domains through world models"; REFERENCE.md §11 gives the forms and defaults
used here), as pure functions of arrays, independent of any network:

* :func:`symlog` / :func:`symexp` — ``sign(x)·ln(1 + |x|)`` and its inverse, for vector inputs
  and regression targets of any scale;
* :func:`twohot` / :func:`twohot_mean` / :func:`twohot_loss` — a scalar as weights on its two
  neighbouring bins (uniform in symlog space, :func:`symlog_bins`: 255 on [−20, 20]), the
  expected value of a categorical over the bins read back through symexp, and the
  cross-entropy of logits against a two-hot target (reward and value heads);
* :func:`unimix` — a categorical's probabilities mixed with 1 % uniform, so that no class has
  probability below ``mix / classes`` (stochastic latents, the discrete actor);
* :func:`straight_through_sample` — a one-hot sample whose gradient is the probabilities';
* :func:`categorical_kl` and :func:`kl_losses` — the KL between the posterior and the prior of
  the stochastic latents, summed over latents, and DreamerV3's balanced dynamics /
  representation losses with free nats: ``dyn = max(free, KL(sg(post) ‖ prior))``, ``rep =
  max(free, KL(post ‖ sg(prior)))``;
* :func:`lambda_return` — ``R_t = r_{t+1} + γ c_{t+1} [(1 − λ) v_{t+1} + λ R_{t+1}]``, ``R_H =
  v_H`` over an imagined trajectory;
* :class:`ReturnScale` — the actor's return normaliser ``S = max(1, P95 − P5)`` of λ-returns,
  the percentiles tracked by an EMA (rate 0.01).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

TWOHOT_BINS = 255
TWOHOT_LIMIT = 20.0
UNIMIX = 0.01
FREE_NATS = 1.0


def symlog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symlog_bins(num: int = TWOHOT_BINS, limit: float = TWOHOT_LIMIT) -> jax.Array:
    """``num`` bin centres uniform on ``[−limit, limit]`` in symlog space (odd ``num`` puts a
    bin at 0, up to rounding: where the rewards of sparse tasks mostly are)."""
    return jnp.linspace(-limit, limit, num)


def twohot(x: jax.Array, bins: jax.Array) -> jax.Array:
    """``symlog(x)`` as weights on its two neighbouring bins, linear in the distance to each
    (``[..., K]``, summing to 1; values beyond the ends put all weight on the end bin).

    The weighted mean of the bins is exactly ``symlog(x)`` inside the range, so
    :func:`twohot_mean` of a two-hot target gives ``x`` back."""
    y = jnp.clip(symlog(x), bins[0], bins[-1])
    upper = jnp.clip(jnp.searchsorted(bins, y, side="right"), 1, bins.shape[0] - 1)
    lower = upper - 1
    w_upper = (y - bins[lower]) / (bins[upper] - bins[lower])
    k = bins.shape[0]
    return (jax.nn.one_hot(lower, k) * (1.0 - w_upper)[..., None]
            + jax.nn.one_hot(upper, k) * w_upper[..., None])


def twohot_mean(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """The value a categorical head over ``bins`` predicts: symexp of its expected bin."""
    return symexp(jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1))


def twohot_loss(logits: jax.Array, x: jax.Array, bins: jax.Array) -> jax.Array:
    """Cross-entropy of ``logits [..., K]`` against the two-hot target of ``x [...]``."""
    target = jax.lax.stop_gradient(twohot(x, bins))
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def unimix(logits: jax.Array, mix: float = UNIMIX) -> jax.Array:
    """Probabilities ``(1 − mix)·softmax(logits) + mix / C`` over the last axis."""
    classes = logits.shape[-1]
    return (1.0 - mix) * jax.nn.softmax(logits, axis=-1) + mix / classes


def straight_through_sample(key: jax.Array, probs: jax.Array) -> jax.Array:
    """A one-hot sample from ``probs [..., C]`` whose gradient is that of ``probs``: the
    forward value is the sample, the backward pass sees the identity on the probabilities."""
    index = jax.random.categorical(key, jnp.log(probs), axis=-1)
    sample = jax.nn.one_hot(index, probs.shape[-1], dtype=probs.dtype)
    return sample + probs - jax.lax.stop_gradient(probs)


def categorical_kl(p: jax.Array, q: jax.Array) -> jax.Array:
    """``KL(p ‖ q)`` of categoricals ``[..., S, C]`` (probabilities), summed over the ``S``
    latents and their classes: ``[...]``."""
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(-2, -1))


def kl_losses(post: jax.Array, prior: jax.Array, free: float = FREE_NATS
              ) -> tuple[jax.Array, jax.Array]:
    """DreamerV3's balanced KL terms with free nats, per sample ``[...]``: the dynamics loss
    trains the prior toward the (fixed) posterior, the representation loss the posterior toward
    the (fixed) prior; below ``free`` nats neither has a gradient."""
    sg = jax.lax.stop_gradient
    dyn = jnp.maximum(free, categorical_kl(sg(post), prior))
    rep = jnp.maximum(free, categorical_kl(post, sg(prior)))
    return dyn, rep


def lambda_return(reward: jax.Array, cont: jax.Array, value: jax.Array, discount: float,
                  lam: float) -> jax.Array:
    """λ-returns ``R_0 … R_{H−1}`` of an imagined trajectory ``s_0 … s_H``.

    ``reward[t]`` and ``cont[t]`` (``[H, ...]``) are ``r_{t+1}`` and ``c_{t+1}``, received on
    reaching ``s_{t+1}``; ``value`` (``[H + 1, ...]``) is ``v(s_0) … v(s_H)``. ``R_t = r_{t+1} +
    γ c_{t+1} [(1 − λ) v(s_{t+1}) + λ R_{t+1}]`` with ``R_H = v(s_H)``."""
    def step(next_return, x):
        r, c, v_next = x
        ret = r + discount * c * ((1.0 - lam) * v_next + lam * next_return)
        return ret, ret

    _, returns = jax.lax.scan(step, value[-1], (reward, cont, value[1:]), reverse=True)
    return returns


class ReturnScale(NamedTuple):
    """EMAs of the 5th and 95th percentiles of λ-returns (start at 0)."""

    low: jax.Array
    high: jax.Array

    @classmethod
    def init(cls) -> "ReturnScale":
        return cls(jnp.zeros(()), jnp.zeros(()))

    def update(self, returns: jax.Array, rate: float = 0.01) -> "ReturnScale":
        low, high = jnp.percentile(jax.lax.stop_gradient(returns), jnp.array([5.0, 95.0]))
        return ReturnScale((1 - rate) * self.low + rate * low,
                           (1 - rate) * self.high + rate * high)

    def scale(self) -> jax.Array:
        """``S = max(1, P95 − P5)``: advantages are divided by it, so small returns (sparse
        rewards) are not amplified."""
        return jnp.maximum(1.0, self.high - self.low)
