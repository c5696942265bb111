"""A class-conditional VAE over a hidden layer's features: the generator of internal replay.

After brain-inspired replay (van de Ven, Siegelmann & Tolias 2020, Nat. Commun. 11:4069;
GMvandeVen/brain-inspired-replay): the class condition lives in the prior, a Gaussian mixture
with one mode per class. Here each mode is ``N(μ_c, I)`` with a learnable mean ``μ_c`` (BI-R
also learns the modes' variances; fixing them at 1 keeps the KL term in closed form and the
generator small, and the means alone already separate the classes). Training on a labelled
feature ``h`` of class ``y`` uses the mode of ``y``; generating "class c" samples ``z ~ N(μ_c,
I)`` and decodes it. Encoder and decoder are one-hidden-layer ReLU MLPs; BI-R's context gates
and replay-through-feedback (encoder = the classifier's top layers) are left out.

ELBO of one example, with ``q(z | h) = N(m, diag exp(s))`` (encoder), reparameterised
``z = m + exp(s / 2) ⊙ ε``, and a unit-variance Gaussian decoder ``p(h | z) = N(dec(z), I)``
(the features are real-valued activations, not pixels)::

    log p(h | z) = −½ Σ_d (h_d − dec(z)_d)² − (D / 2) log 2π
    KL(q ‖ N(μ_y, I)) = ½ Σ_j (exp(s_j) + (m_j − μ_{y,j})² − 1 − s_j)
    ELBO = log p(h | z) − KL

The decoder's output is linear (not passed through the network's activation), so generated
ReLU features may dip slightly below 0; the upper layers see them as they are.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class FeatureVAE(NamedTuple):
    """Pure functions; ``params`` is a dict of arrays.

    * ``init(key) -> params``
    * ``elbo_terms(params, h, y, eps) -> (elbo [B], recon [B], kl [B])`` for given noise
      ``eps [B, Z]`` (deterministic: what the numpy test checks);
    * ``elbo(params, h, y, key) -> elbo [B]`` with fresh noise;
    * ``generate(params, y, key) -> h [B, *feature_shape]``: features of the classes ``y``.
    """

    init: Callable[[jax.Array], Any]
    elbo_terms: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    elbo: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    generate: Callable[[Any, jax.Array, jax.Array], jax.Array]
    latent: int


def _dense(key, n_in: int, n_out: int) -> dict:
    # LeCun-normal kernel (as flax's Linear), zero bias.
    return {"kernel": jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in),
            "bias": jnp.zeros((n_out,))}


def _apply(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["kernel"] + layer["bias"]


def make_feature_vae(feature_shape: tuple[int, ...], num_classes: int, *, hidden: int = 256,
                     latent: int = 32) -> FeatureVAE:
    """A class-conditional VAE over features of shape ``feature_shape`` (flattened inside)."""
    if hidden < 1 or latent < 1 or num_classes < 1:
        raise ValueError(f"the feature VAE needs hidden, latent and num_classes >= 1; got "
                         f"hidden={hidden}, latent={latent}, num_classes={num_classes}")
    dim = math.prod(feature_shape)

    def init(key: jax.Array) -> dict:
        k = jax.random.split(key, 5)
        return {"enc": _dense(k[0], dim, hidden), "enc_out": _dense(k[1], hidden, 2 * latent),
                "dec": _dense(k[2], latent, hidden), "dec_out": _dense(k[3], hidden, dim),
                # One prior mode per class, spread out at the start (unit-scale random means) so
                # that classes begin separated in z.
                "prior_mean": jax.random.normal(k[4], (num_classes, latent))}

    def encode(params, h):
        out = _apply(params["enc_out"], jax.nn.relu(_apply(params["enc"], h)))
        return out[:, :latent], out[:, latent:]   # mean m, log-variance s

    def decode(params, z):
        return _apply(params["dec_out"], jax.nn.relu(_apply(params["dec"], z)))

    def elbo_terms(params, h, y, eps):
        h = h.reshape(h.shape[0], -1)
        m, s = encode(params, h)
        z = m + jnp.exp(0.5 * s) * eps
        recon = (-0.5 * jnp.sum((h - decode(params, z)) ** 2, -1)
                 - 0.5 * dim * math.log(2 * math.pi))
        mu = params["prior_mean"][y]
        kl = 0.5 * jnp.sum(jnp.exp(s) + (m - mu) ** 2 - 1.0 - s, -1)
        return recon - kl, recon, kl

    def elbo(params, h, y, key):
        return elbo_terms(params, h, y, jax.random.normal(key, (h.shape[0], latent)))[0]

    def generate(params, y, key):
        z = params["prior_mean"][y] + jax.random.normal(key, (y.shape[0], latent))
        return decode(params, z).reshape(y.shape[0], *feature_shape)

    return FeatureVAE(init, elbo_terms, elbo, generate, latent)
