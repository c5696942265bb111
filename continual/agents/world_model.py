"""A DreamerV3-style world model (Hafner et al. 2023, "Mastering diverse domains through world
models"; REFERENCE.md §11) as pure functions over one parameter tree: a recurrent state-space
model (RSSM) with a GRU deterministic state ``h`` and ``S × C`` categorical stochastic latents
``z``, an observation encoder and decoder, and reward and continue heads.

The model state after seeing ``o_t`` is ``s_t = (h_t, z_t)``::

    h_t = GRU(h_{t−1}, [z_{t−1}, a_{t−1}])            (``is_first_t`` zeroes h, z and a first)
    prior     p(z_t | h_t)                              (imagination)
    posterior q(z_t | h_t, embed(o_t))                  (training, acting)

so the step that sees ``o_t`` consumes ``a_{t−1}`` (navix's bug (1)). Latents are categoricals
with 1 % uniform mix (:func:`~continual.agents.dreamer_ops.unimix`), sampled straight-through.
The features the heads read are ``feat(s) = [h, z]``.

Rows of a replayed chunk are transitions ``(o_t, a_t, r_{t+1}, c_{t+1}, o_{t+1})``
(:mod:`continual.agents.sequence`), so the *successor* state ``s'_t`` — one posterior step from
``s_t`` with ``a_t`` on ``o_{t+1}`` — is where reward and continue are predicted: the reward
received and whether the episode goes on *on arriving* at ``s'_t``, which is what imagination
asks of a prior state. It is computed for every row at once (one parallel step, not part of the
scan), so it exists on an episode's final row too, where the next row belongs to a new episode:
the final observation is reconstructed there, and the continue target is 0 only on termination
(a time-limit truncation keeps 1).

Losses per row (means over the batch), DreamerV3's scales: reconstruction (symlog squared error
summed over a vector observation; for a grid, the cross-entropy of each view cell's class),
two-hot reward, Bernoulli continue, and the balanced KL with free nats ``kl_dyn · dyn + kl_rep ·
rep`` (:func:`~continual.agents.dreamer_ops.kl_losses`).

Layers (one tree, so diagnostics and resets address them by name): ``encoder/*``,
``img_in/*`` (``[z, a]`` into the GRU), ``gru`` (its kernel on ``[x, h]`` gives reset, candidate
and update gates; ``gru_norm`` normalises them), ``prior/*``, ``posterior/*``, ``decoder/*``,
``reward/*`` and ``cont/*``; every MLP is a :mod:`plasticity.networks` ``mlp``. Reward and
continue output layers start at zero (navix's bug (5)): an untrained model predicts reward 0 and
continue probability 1/2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual.agents import dreamer_ops as ops
from plasticity.networks import layer_order, layer_params, make_network, replace_layers


@dataclass(frozen=True)
class WorldModelSpec:
    """World-model sizes and loss scales (static; DreamerV3's names)."""

    deter: int = 256          # GRU width
    stoch: int = 16           # S categorical latents
    classes: int = 16         # C classes each
    units: int = 256          # MLP width
    layers: int = 2           # hidden layers of the encoder, decoder and heads
    activation: str = "swish"
    layer_norm: bool = True
    bins: int = ops.TWOHOT_BINS
    unimix: float = ops.UNIMIX
    free_nats: float = ops.FREE_NATS
    kl_dyn: float = 0.5
    kl_rep: float = 0.1

    def __post_init__(self):
        for name in ("deter", "stoch", "classes", "units", "bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 0 or not 0 <= self.unimix < 1:
            raise ValueError("layers must be >= 0 and unimix in [0, 1)")

    @property
    def feat_size(self) -> int:
        return self.deter + self.stoch * self.classes


class Latent(NamedTuple):
    """Model state, leaves with any leading axes: ``h [..., deter]``, ``z [..., S, C]``."""

    h: jax.Array
    z: jax.Array

    def feat(self) -> jax.Array:
        return jnp.concatenate([self.h, self.z.reshape(self.z.shape[:-2] + (-1,))], axis=-1)


class ObsLayout(NamedTuple):
    """How observations are reconstructed: ``cells`` one-hot groups of ``classes`` (a symbolic
    grid view, categorical decoder), or ``cells = 0`` for a vector (symlog regression)."""

    size: int
    cells: int = 0
    classes: int = 0

    @property
    def categorical(self) -> bool:
        return self.cells > 0


class ModelOutputs(NamedTuple):
    """A world-model pass over a batch of chunks, leaves ``[B, T, ...]``."""

    post: Latent        # s_t
    post_probs: jax.Array   # q(z_t | ...) [B, T, S, C]
    prior_probs: jax.Array  # p(z_t | h_t)
    succ: Latent        # s'_t
    losses: dict        # per row [B, T]


class WorldModel(NamedTuple):
    spec: WorldModelSpec
    layout: ObsLayout
    action_size: int
    init: Callable[[jax.Array], Any]
    # (params, latent, action) -> (h', prior probs)
    img_step: Callable
    # (params, latent, action, obs, key) -> (latent', post probs, prior probs)
    obs_step: Callable
    # (params, latent, action, key) -> the next latent, sampled from the prior
    imagine_step: Callable
    reward: Callable         # (params, feat) -> expected reward
    cont: Callable           # (params, feat) -> continue probability
    # (params, chunk, key) -> ModelOutputs
    observe: Callable
    # (params, probe obs [N, obs]) -> {layer: features} of a first step on single observations
    features: Callable
    layer_orders: dict       # sub-network -> its layers in forward order (resets)


def apply_rows(net, params, x: jax.Array):
    """``net.apply`` on inputs with any leading axes ``[..., D]`` (plax's mlp flattens all but
    the first axis): ``(output [..., O], features [..., H])``."""
    lead = x.shape[:-1]
    out, feats = net.apply(params, x.reshape((-1, x.shape[-1])))
    return (out.reshape(lead + out.shape[1:]),
            {k: v.reshape(lead + v.shape[1:]) for k, v in feats.items()})


def zero_output(params, layer: str = "out"):
    """``params`` of an mlp with its output layer's kernel and bias set to zero."""
    out = layer_params(params)[layer]
    return replace_layers(params, {layer: {k: jnp.zeros_like(v) for k, v in out.items()}})


def make_world_model(spec: WorldModelSpec, layout: ObsLayout, action_size: int) -> WorldModel:
    """The world model for observations laid out as ``layout`` and ``action_size`` actions."""
    s, c, d, u = spec.stoch, spec.classes, spec.deter, spec.units
    mlp_kw = dict(activation=spec.activation, layer_norm=spec.layer_norm)
    hidden = (u,) * spec.layers
    dec_out = layout.cells * layout.classes if layout.categorical else layout.size
    nets = {
        "encoder": make_network("mlp", (layout.size,), u, hidden=hidden, **mlp_kw),
        "img_in": make_network("mlp", (s * c + action_size,), u, hidden=(u,), **mlp_kw),
        "prior": make_network("mlp", (d,), s * c, hidden=(u,), **mlp_kw),
        "posterior": make_network("mlp", (d + u,), s * c, hidden=(u,), **mlp_kw),
        "decoder": make_network("mlp", (spec.feat_size,), dec_out, hidden=hidden, **mlp_kw),
        "reward": make_network("mlp", (spec.feat_size,), spec.bins, hidden=hidden, **mlp_kw),
        "cont": make_network("mlp", (spec.feat_size,), 1, hidden=hidden, **mlp_kw),
    }
    bins = ops.symlog_bins(spec.bins)
    sg = jax.lax.stop_gradient

    def init(key):
        keys = jax.random.split(key, len(nets) + 1)
        params = {name: net.init(k) for (name, net), k in zip(nets.items(), keys)}
        for head in ("reward", "cont"):
            params[head] = zero_output(params[head])
        scale = 1.0 / jnp.sqrt(u + d)
        params["gru"] = {"kernel": scale * jax.random.normal(keys[-1], (u + d, 3 * d)),
                         "bias": jnp.zeros(3 * d)}
        params["gru_norm"] = {"scale": jnp.ones(3 * d), "bias": jnp.zeros(3 * d)}
        return params

    def gru(params, h, x):
        """DreamerV3's GRU: one normalised linear map of ``[x, h]`` to the gates; the update
        gate is biased to keep ``h`` (``sigmoid(u − 1)``)."""
        y = jnp.concatenate([x, h], -1) @ params["gru"]["kernel"] + params["gru"]["bias"]
        mean, var = jnp.mean(y, -1, keepdims=True), jnp.var(y, -1, keepdims=True)
        y = (y - mean) * jax.lax.rsqrt(var + 1e-5)
        y = y * params["gru_norm"]["scale"] + params["gru_norm"]["bias"]
        reset, cand, update = jnp.split(y, 3, -1)
        cand = jnp.tanh(jax.nn.sigmoid(reset) * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h

    def probs(logits):
        return ops.unimix(logits.reshape(logits.shape[:-1] + (s, c)), spec.unimix)

    def img_step(params, latent: Latent, action):
        z = latent.z.reshape(latent.z.shape[:-2] + (-1,))
        x = apply_rows(nets["img_in"], params["img_in"], jnp.concatenate([z, action], -1))[0]
        h = gru(params, latent.h, jax.nn.silu(x))
        return h, probs(apply_rows(nets["prior"], params["prior"], h)[0])

    def embed(params, obs):
        x = obs if layout.categorical else ops.symlog(obs)
        return apply_rows(nets["encoder"], params["encoder"], x)[0]

    def posterior_step(params, latent, action, emb, key):
        h, prior = img_step(params, latent, action)
        post = probs(apply_rows(nets["posterior"], params["posterior"],
                                             jnp.concatenate([h, emb], -1))[0])
        return Latent(h, ops.straight_through_sample(key, post)), post, prior

    def obs_step(params, latent, action, obs, key):
        return posterior_step(params, latent, action, embed(params, obs), key)

    def imagine_step(params, latent, action, key):
        h, prior = img_step(params, latent, action)
        return Latent(h, ops.straight_through_sample(key, prior))

    def reward(params, feat):
        return ops.twohot_mean(apply_rows(nets["reward"], params["reward"], feat)[0], bins)

    def cont(params, feat):
        return jax.nn.sigmoid(apply_rows(nets["cont"], params["cont"], feat)[0][..., 0])

    def recon_loss(params, feat, obs):
        out = apply_rows(nets["decoder"], params["decoder"], feat)[0]
        if layout.categorical:
            logits = out.reshape(out.shape[:-1] + (layout.cells, layout.classes))
            target = obs.reshape(logits.shape)
            return -jnp.sum(target * jax.nn.log_softmax(logits, -1), axis=(-2, -1))
        return jnp.sum(jnp.square(out - ops.symlog(obs)), -1)

    def observe(params, chunk, key) -> ModelOutputs:
        """The posterior over every row (a scan over time, batch-parallel), the successor
        states, and every loss per row."""
        b, t = chunk.reward.shape
        emb = embed(params, chunk.obs)                      # [B, T, U]
        k_scan, k_succ = jax.random.split(key)
        zeros = Latent(jnp.zeros((b, d)), jnp.zeros((b, s, c)))

        def step(carry, x):
            latent, prev_action = carry
            e, a, first, k = x
            keep = (1.0 - first.astype(jnp.float32))[:, None]
            # is_first: the episode (or chunk) starts here — no history, no previous action.
            latent = Latent(latent.h * keep, latent.z * keep[..., None])
            new, post, prior = posterior_step(params, latent, prev_action * keep, e, k)
            return (new, a), (new, post, prior)

        xs = (jnp.swapaxes(emb, 0, 1), jnp.swapaxes(chunk.action, 0, 1),
              jnp.swapaxes(chunk.is_first, 0, 1), jax.random.split(k_scan, t))
        _, (post, post_probs, prior_probs) = jax.lax.scan(
            step, (zeros, jnp.zeros((b, action_size))), xs)
        post, post_probs, prior_probs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1),
                                                     (post, post_probs, prior_probs))
        succ = obs_step(params, post, chunk.action, chunk.next_obs, k_succ)[0]
        feat, succ_feat = post.feat(), succ.feat()
        dyn, rep = ops.kl_losses(post_probs, prior_probs, spec.free_nats)
        last = chunk.last.astype(jnp.float32)
        cont_logit = apply_rows(nets["cont"], params["cont"], succ_feat)[0][..., 0]
        losses = {
            # o_t from s_t on every row; the final observation o_{t+1} from s'_t where the
            # episode ends (it is no row's o_t).
            "recon": recon_loss(params, feat, chunk.obs)
            + last * recon_loss(params, succ_feat, chunk.next_obs),
            "reward": ops.twohot_loss(apply_rows(nets["reward"], params["reward"], succ_feat)[0],
                                      chunk.reward, bins),
            # Bernoulli log-likelihood of c_{t+1}: 0 only where the episode terminated.
            "cont": -(chunk.cont * jax.nn.log_sigmoid(cont_logit)
                      + (1.0 - chunk.cont) * jax.nn.log_sigmoid(-cont_logit)),
            "dyn": dyn, "rep": rep,
            "kl": ops.categorical_kl(sg(post_probs), sg(prior_probs)),
        }
        return ModelOutputs(post, post_probs, prior_probs, succ, losses)

    def features(params, obs):
        n = obs.shape[0]
        feats = {}
        x = obs if layout.categorical else ops.symlog(obs)
        emb, f = apply_rows(nets["encoder"], params["encoder"], x)
        feats.update({f"encoder/{k}": v for k, v in f.items()})
        z0 = jnp.zeros((n, s * c + action_size))
        x, f = apply_rows(nets["img_in"], params["img_in"], z0)
        feats.update({f"img_in/{k}": v for k, v in f.items()})
        h = gru(params, jnp.zeros((n, d)), jax.nn.silu(x))
        feats["gru"] = h
        for name, inp in (("prior", h), ("posterior", jnp.concatenate([h, emb], -1))):
            feats.update({f"{name}/{k}": v
                          for k, v in apply_rows(nets[name], params[name], inp)[1].items()})
        post = probs(apply_rows(nets["posterior"], params["posterior"],
                                             jnp.concatenate([h, emb], -1))[0])
        feat = Latent(h, post).feat()
        for name in ("decoder", "reward", "cont"):
            feats.update({f"{name}/{k}": v
                          for k, v in apply_rows(nets[name], params[name], feat)[1].items()})
        return feats

    orders = {}
    for name, net in nets.items():
        in_size = {"encoder": layout.size, "img_in": s * c + action_size, "prior": d,
                   "posterior": d + u}.get(name, spec.feat_size)
        orders[name] = [f"{name}/{layer}" for layer in layer_order(net, (in_size,))]

    return WorldModel(spec, layout, action_size, init, img_step, obs_step, imagine_step,
                      reward, cont, observe, features, orders)


def model_loss(wm: WorldModel, params, chunk, key) -> tuple[jax.Array, tuple[ModelOutputs,
                                                                            dict]]:
    """DreamerV3's world-model loss, mean over the batch's rows, with its terms."""
    out = wm.observe(params, chunk, key)
    terms = {k: jnp.mean(v) for k, v in out.losses.items()}
    spec = wm.spec
    total = (terms["recon"] + terms["reward"] + terms["cont"] + spec.kl_dyn * terms["dyn"]
             + spec.kl_rep * terms["rep"])
    return total, (out, terms)
