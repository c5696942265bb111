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
from typing import Any, Callable, NamedTuple, Sequence

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


def _recon(h: jax.Array, mean: jax.Array) -> jax.Array:
    """log N(h; mean, I) per row (``h`` and ``mean`` flattened to ``[B, D]``)."""
    return -0.5 * jnp.sum((h - mean) ** 2, -1) - 0.5 * h.shape[-1] * math.log(2 * math.pi)


def _kl(m: jax.Array, s: jax.Array, mu: jax.Array) -> jax.Array:
    """KL(N(m, diag exp s) ‖ N(μ, I)) per row."""
    return 0.5 * jnp.sum(jnp.exp(s) + (m - mu) ** 2 - 1.0 - s, -1)


def _check(hidden: int, latent: int, num_classes: int) -> None:
    if hidden < 1 or latent < 1 or num_classes < 1:
        raise ValueError(f"the feature VAE needs hidden, latent and num_classes >= 1; got "
                         f"hidden={hidden}, latent={latent}, num_classes={num_classes}")


def make_feature_vae(feature_shape: tuple[int, ...], num_classes: int, *, hidden: int = 256,
                     latent: int = 32) -> FeatureVAE:
    """A class-conditional VAE over features of shape ``feature_shape`` (flattened inside)."""
    _check(hidden, latent, num_classes)
    dim = math.prod(feature_shape)

    def init(key: jax.Array) -> dict:
        k = jax.random.split(key, 5)
        return {"enc": _dense(k[0], dim, hidden), "enc_out": _dense(k[1], hidden, 2 * latent),
                "dec": _dense(k[2], latent, hidden), "dec_out": _dense(k[3], hidden, dim),
                # One prior mode per class, spread out at the start (unit-scale random means) so
                # that classes begin separated in z.
                "prior_mean": jax.random.normal(k[4], (num_classes, latent))}

    def decode(params, z):
        return _apply(params["dec_out"], jax.nn.relu(_apply(params["dec"], z)))

    def elbo_terms(params, h, y, eps):
        h = h.reshape(h.shape[0], -1)
        m, s = _encode(params, h, latent)
        z = m + jnp.exp(0.5 * s) * eps
        recon = _recon(h, decode(params, z))
        kl = _kl(m, s, params["prior_mean"][y])
        return recon - kl, recon, kl

    def elbo(params, h, y, key):
        return elbo_terms(params, h, y, jax.random.normal(key, (h.shape[0], latent)))[0]

    def generate(params, y, key):
        z = params["prior_mean"][y] + jax.random.normal(key, (y.shape[0], latent))
        return decode(params, z).reshape(y.shape[0], *feature_shape)

    return FeatureVAE(init, elbo_terms, elbo, generate, latent)


def _encode(params, h, latent: int):
    out = _apply(params["enc_out"], jax.nn.relu(_apply(params["enc"], h)))
    return out[:, :latent], out[:, latent:]   # mean m, log-variance s


class LevelVAE(NamedTuple):
    """A class-conditional VAE over the features of several layers (progressive latent replay).

    Features are tuples, one array per level, lowest level first.

    * ``init(key) -> params``;
    * ``elbo_terms(params, hs, y, eps) -> (elbo [B], recon [B] (summed over levels), kl [B])``;
    * ``elbo(params, hs, y, key) -> elbo [B]``;
    * ``generate(params, y, key, level) -> h [B, *shape of level]``: runs the decoder only from
      the top down to ``level`` (an index into the levels), skipping the stages below it;
    * ``generate_all(params, y, key) -> hs``: every level from the same ``z`` (one full pass).
    """

    init: Callable[[jax.Array], Any]
    elbo_terms: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    elbo: Callable[[Any, tuple, jax.Array, jax.Array], jax.Array]
    generate: Callable[[Any, jax.Array, jax.Array, int], jax.Array]
    generate_all: Callable[[Any, jax.Array, jax.Array], tuple]
    latent: int


def make_level_vae(level_shapes: Sequence[tuple[int, ...]], num_classes: int, *,
                   hidden: int = 256, latent: int = 32) -> LevelVAE:
    """A class-conditional VAE whose decoder mirrors the classifier: from ``z`` to the top level
    (nearest the output), then one layer per level down to the lowest.

    The encoder and the prior are :func:`make_feature_vae`'s, over the *lowest* level's features
    (the higher levels are functions of it through the network). The decoder's top is
    :func:`make_feature_vae`'s decoder, ``ĥ_top = H_top relu(D z)`` (width ``hidden``); each
    level below is one linear layer from the level above, ``ĥ_ℓ = H_ℓ relu(ĥ_{ℓ+1})``, of the
    classifier's own size at that level mirrored (D_{ℓ+1} × D_ℓ). Features of a high level thus
    cost only the layers above it (Pawlak et al. 2022: progressive replay "omits computations for
    the deeper layers of the generator"), and a lower level costs one classifier-sized layer more
    than the level above, not another ``hidden``-wide stage. Its ELBO reconstructs every level (a
    unit-variance Gaussian per level, log-likelihoods summed) under one KL term. With a single
    level it is exactly :func:`make_feature_vae`'s architecture.
    """
    _check(hidden, latent, num_classes)
    shapes = tuple(tuple(s) for s in level_shapes)
    if not shapes:
        raise ValueError("make_level_vae needs at least one level")
    dims = [math.prod(s) for s in shapes]
    n = len(dims)

    def init(key: jax.Array) -> dict:
        k = jax.random.split(key, 4 + n)
        return {"enc": _dense(k[0], dims[0], hidden), "enc_out": _dense(k[1], hidden, 2 * latent),
                "dec": _dense(k[2], latent, hidden),
                # dec_out[i] gives level i: from the hidden stage at the top, from level i + 1
                # below it.
                "dec_out": [_dense(k[3 + i], hidden if i == n - 1 else dims[i + 1], dims[i])
                            for i in range(n)],
                "prior_mean": jax.random.normal(k[3 + n], (num_classes, latent))}

    def decode(params, z, down_to: int) -> dict:
        """Every level's decoded features from the top down to level ``down_to``."""
        h = _apply(params["dec_out"][n - 1], jax.nn.relu(_apply(params["dec"], z)))
        out = {n - 1: h}
        for i in range(n - 2, down_to - 1, -1):
            h = _apply(params["dec_out"][i], jax.nn.relu(h))
            out[i] = h
        return out

    def elbo_terms(params, hs, y, eps):
        hs = [h.reshape(h.shape[0], -1) for h in hs]
        m, s = _encode(params, hs[0], latent)
        z = m + jnp.exp(0.5 * s) * eps
        dec = decode(params, z, 0)
        recon = sum(_recon(h, dec[i]) for i, h in enumerate(hs))
        kl = _kl(m, s, params["prior_mean"][y])
        return recon - kl, recon, kl

    def elbo(params, hs, y, key):
        return elbo_terms(params, hs, y, jax.random.normal(key, (hs[0].shape[0], latent)))[0]

    def sample_z(params, y, key):
        return params["prior_mean"][y] + jax.random.normal(key, (y.shape[0], latent))

    def generate(params, y, key, level: int):
        h = decode(params, sample_z(params, y, key), level)[level]
        return h.reshape(y.shape[0], *shapes[level])

    def generate_all(params, y, key):
        dec = decode(params, sample_z(params, y, key), 0)
        return tuple(dec[i].reshape(y.shape[0], *s) for i, s in enumerate(shapes))

    return LevelVAE(init, elbo_terms, elbo, generate, generate_all, latent)
