"""A network cut in two at a hidden layer, for replay in latent space.

Latent replay (Pellegrini et al. 2020, "Latent replay for real-time continual learning",
IROS; arXiv 1912.01100) and internal replay (van de Ven, Siegelmann & Tolias 2020,
"Brain-inspired replay for continual learning with artificial neural networks", Nat. Commun.
11:4069) feed replayed *activations* of a hidden layer to the layers above it only, so the
network has to be callable from that layer on. :func:`cut_network` gives the two halves of a
:mod:`plasticity.networks` network as pure functions over the *same* parameter tree the whole
network uses (``upper(params, lower(params, x))`` is ``network.apply(params, x)[0]``), without
changing the network: it rebuilds the module's graph and runs its layers one by one.

Cut points (``layer`` = the number of hidden layers below the cut, counted in the network's
layer order, :func:`plasticity.networks.layer_order`):

* ``mlp`` — ``1 .. len(hidden)``: the stored features at ``layer = k`` are ``features["hidden/{k-1}"]``;
* ``cnn`` — ``len(channels) .. len(channels) + len(hidden)``: at ``len(channels)`` the cut is
  after the whole convolutional stem (pooled and flattened: "replay after the conv layers", the
  brain-inspired-replay protocol), above it at the dense layers as for the MLP. Cuts inside the
  stem are refused (a feature map between convolutions is not a replay level this supports);
* ``resmlp`` — refused: its blocks are one ``lax.scan`` over stacked parameters with residual
  skips, so there is no per-layer entry point.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from plasticity.networks import CNN, MLP, _at, _path_names

CUTTABLE = ("mlp", "cnn")
_STEM = ("conv", "conv_norm", "conv_act")   # CNN parameter groups: all below any allowed cut
_DENSE = ("hidden", "norm", "act")          # indexed by dense layer (``act`` unindexed if shared)


class Cut(NamedTuple):
    """A network split at a layer. ``lower(params, x) -> h``, ``upper(params, h) -> logits``;
    ``lower_mask(params)`` is a boolean tree, True on the parameters ``lower`` reads (the
    layers below the cut: the ones latent replay freezes or slows)."""

    lower: Callable[[Any, jax.Array], jax.Array]
    upper: Callable[[Any, jax.Array], jax.Array]
    lower_mask: Callable[[Any], Any]
    layer: int
    feature_shape: tuple[int, ...]   # of one example, e.g. (128,)
    # ``between(params, h, start, stop)``: the dense layers from cut point ``start`` to cut
    # point ``stop`` (both at or above the stem), e.g. level-to-level for progressive replay.
    between: Callable[[Any, jax.Array, int, int], jax.Array] | None = None


def cut_points(kind: str, hidden: Sequence[int], channels: Sequence[int] = ()) -> range:
    """The allowed ``layer`` values of a network (empty for networks that cannot be cut)."""
    if kind == "mlp":
        return range(1, len(hidden) + 1)
    if kind == "cnn":
        return range(len(channels), len(channels) + len(hidden) + 1)
    return range(0)


def cut_network(kind: str, input_shape: Sequence[int], num_outputs: int, layer: int, *,
                hidden: Sequence[int] = (256, 256), channels: Sequence[int] = (32, 64),
                activation: str = "relu", layer_norm: bool = False) -> Cut:
    """The network :func:`plasticity.networks.make_network` builds from the same arguments, cut
    after ``layer`` hidden layers (see the module docstring for the cut points)."""
    points = cut_points(kind, hidden, channels)
    if kind not in CUTTABLE:
        raise ValueError(f"latent replay needs a network that can run from a hidden layer on: "
                         f"{kind!r} cannot be cut (valid: {', '.join(CUTTABLE)})")
    if layer not in points:
        raise ValueError(f"a {kind} with hidden={tuple(hidden)}"
                         + (f", channels={tuple(channels)}" if kind == "cnn" else "")
                         + f" can be cut at layer {points.start}..{points.stop - 1}, not "
                         f"{layer!r}")

    def build(rngs: nnx.Rngs) -> nnx.Module:
        if kind == "mlp":
            return MLP(math.prod(input_shape), hidden, num_outputs, activation, layer_norm, rngs)
        return CNN(input_shape, channels, hidden, num_outputs, activation, layer_norm, rngs)

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    stem = len(channels) if kind == "cnn" else 0
    below = layer - stem   # dense layers below the cut

    def dense(m, i: int, x: jax.Array) -> jax.Array:
        # The body of plasticity.networks._DenseHead._dense, one layer.
        x = m.hidden[i](x)
        if len(m.norm):
            x = m.norm[i](x)
        return m._activate(x, None if m.act_shared else _at(m.act, i))

    def lower(params, x: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, params)
        if kind == "cnn":  # the body of plasticity.networks.CNN.__call__
            for i, conv in enumerate(m.conv):
                x = conv(x)
                if len(m.conv_norm):
                    x = m.conv_norm[i](x)
                x = m._activate(x, _at(m.conv_act, i))
                if x.shape[1] > 1 and x.shape[2] > 1:
                    x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        for i in range(below):
            x = dense(m, i, x)
        return x

    def upper(params, h: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, params)
        for i in range(below, len(hidden)):
            h = dense(m, i, h)
        return m.out(h)

    def between(params, h: jax.Array, start: int, stop: int) -> jax.Array:
        if not (stem <= start <= stop and stop in points):
            raise ValueError(f"between runs dense layers from a cut point to a higher one "
                             f"({points.start}..{points.stop - 1}), not {start} -> {stop}")
        m = nnx.merge(graphdef, params)
        for i in range(start - stem, stop - stem):
            h = dense(m, i, h)
        return h

    def lower_mask(params) -> Any:
        def is_lower(path, _):
            names = _path_names(path)
            if names[0] in _STEM:
                return True
            if names[0] in _DENSE:
                # A shared parametric activation (``act/numerator``) is used below the cut too:
                # it counts as lower, or the stored features would go stale.
                return not names[1].isdigit() or int(names[1]) < below
            return False
        return jax.tree_util.tree_map_with_path(is_lower, params)

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    params = jax.eval_shape(lambda: nnx.state(build(nnx.Rngs(0))))
    shape = jax.eval_shape(lower, params, x).shape[1:]
    return Cut(lower, upper, lower_mask, layer, tuple(shape), between)


def cut_levels(kind: str, input_shape: Sequence[int], num_outputs: int,
               layers: Sequence[int], **kwargs) -> tuple[Cut, ...]:
    """One :class:`Cut` per replay level of progressive latent replay, lowest first: ``layers``
    strictly increasing cut points of the same network (``kwargs`` as :func:`cut_network`)."""
    layers = tuple(layers)
    if not layers or any(a >= b for a, b in zip(layers[:-1], layers[1:])):
        raise ValueError(f"replay levels must be a non-empty, strictly increasing tuple of cut "
                         f"points, got {layers}")
    return tuple(cut_network(kind, input_shape, num_outputs, k, **kwargs) for k in layers)
