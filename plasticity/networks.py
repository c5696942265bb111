"""Networks that return ``(output, features)``.

``features`` maps a layer name to its post-activation array, so representation diagnostics read
them without hooks (DESIGN.md, principle 5). Layer names match the parameter tree: the features of
``"hidden/0"`` come from the parameters under ``params["hidden"][0]``; the output layer is ``"out"``
and has no features entry.

Modules are Flax NNX; the hot path is functional: :func:`make_network` splits a module once into a
static graph definition and a pure ``init(key) -> params`` / ``apply(params, x)`` pair.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
from flax import nnx

from plasticity.activations import get_activation

NETWORKS = ("mlp", "cnn")


class _DenseHead(nnx.Module):
    """[Dense → (LayerNorm) → activation] × len(hidden) → Dense ``out``; shared by MLP and CNN."""

    def _build_dense(self, in_features: int, hidden: Sequence[int], out_features: int,
                     act, layer_norm: bool, rngs: nnx.Rngs):
        self.act = act.fn
        widths = [in_features] + [h * act.width_factor for h in hidden]
        self.hidden = nnx.List([nnx.Linear(a, h, rngs=rngs) for a, h in zip(widths, hidden)])
        self.norm = nnx.List([nnx.LayerNorm(h, rngs=rngs) for h in hidden] if layer_norm else [])
        self.out = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def _dense(self, x: jax.Array, features: dict) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.hidden):
            x = layer(x)
            if len(self.norm):
                x = self.norm[i](x)
            x = self.act(x)
            features[f"hidden/{i}"] = x
        return self.out(x)


class MLP(_DenseHead):
    """Flatten → [Dense → (LayerNorm) → activation] × len(hidden) → Dense."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str, layer_norm: bool, rngs: nnx.Rngs):
        self._build_dense(in_features, hidden, out_features, get_activation(activation),
                          layer_norm, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}
        return self._dense(x, features), features


class CNN(_DenseHead):
    """[Conv 3×3 → (LayerNorm) → activation → 2×2 max-pool] per entry of ``channels``, then the
    dense head of :class:`MLP`. A conv feature map's channel is one unit for diagnostics."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int],
                 out_features: int, activation: str, layer_norm: bool, rngs: nnx.Rngs):
        act = get_activation(activation)
        h, w, c = input_shape
        in_ch = [c] + [ch * act.width_factor for ch in channels]
        self.conv = nnx.List([
            nnx.Conv(a, b, kernel_size=(3, 3), padding="SAME", rngs=rngs)
            for a, b in zip(in_ch, channels)
        ])
        self.conv_norm = nnx.List(
            [nnx.LayerNorm(ch, rngs=rngs) for ch in channels] if layer_norm else [])
        for _ in channels:
            h, w = (h // 2, w // 2) if h > 1 and w > 1 else (h, w)
        self._build_dense(h * w * in_ch[-1], hidden, out_features, act, layer_norm, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}
        for i, conv in enumerate(self.conv):
            x = conv(x)
            if len(self.conv_norm):
                x = self.conv_norm[i](x)
            x = self.act(x)
            features[f"conv/{i}"] = x
            if x.shape[1] > 1 and x.shape[2] > 1:
                x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self._dense(x, features), features


class Network(NamedTuple):
    """A network as pure functions over its parameter state."""

    init: Callable[[jax.Array], Any]                    # key -> params
    apply: Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def make_network(kind: str, input_shape: Sequence[int], num_outputs: int, *,
                 hidden: Sequence[int] = (256, 256), channels: Sequence[int] = (32, 64),
                 activation: str = "relu", layer_norm: bool = False) -> Network:
    """Builds a network by name (``mlp`` or ``cnn``) and splits it once into pure functions."""
    get_activation(activation)  # validate early, with the list of valid names

    def build(rngs: nnx.Rngs) -> nnx.Module:
        if kind == "mlp":
            in_features = math.prod(input_shape)
            return MLP(in_features, hidden, num_outputs, activation, layer_norm, rngs)
        if kind == "cnn":
            return CNN(input_shape, channels, hidden, num_outputs, activation, layer_norm, rngs)
        raise ValueError(f"unknown network {kind!r}; valid: {', '.join(NETWORKS)}")

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

    def init(key: jax.Array) -> Any:
        return nnx.state(build(nnx.Rngs(key)))

    def apply(params: Any, x: jax.Array):
        return nnx.merge(graphdef, params)(x)

    return Network(init, apply)


def layer_params(params: Any) -> dict[str, dict[str, jax.Array]]:
    """Groups a parameter tree by layer: ``{"hidden/0": {"kernel": W, "bias": b}, "out": {...}}``.

    The layer name is the path to the parameter without its last entry, joined by ``/``.
    """
    layers: dict[str, dict[str, jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [str(k.key) if hasattr(k, "key") else str(k.idx) for k in path
                 if hasattr(k, "key") or hasattr(k, "idx")]
        layers.setdefault("/".join(names[:-1]), {})[names[-1]] = leaf
    return layers
