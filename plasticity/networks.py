"""Networks that return ``(output, features)``.

``features`` maps a layer name to its post-activation array, so representation diagnostics read
them without hooks (DESIGN.md, principle 5). Layer names match the parameter tree: the features of
``"hidden/0"`` come from the parameters under ``params["hidden"][0]``; the output layer is ``"out"``
and has no features entry. Every weight layer (one with a ``kernel``) except ``"out"`` has exactly
one features entry.

Networks (:data:`ALL_NETWORKS`: the feed-forward :data:`NETWORKS` and the iterative ``think``):

* ``mlp`` — flatten → [Dense ``hidden/i`` → (LayerNorm ``norm/i``) → act] per ``hidden`` → Dense
  ``out``.
* ``cnn`` — [Conv 3×3 ``conv/i`` → (LayerNorm ``conv_norm/i``) → act → 2×2 max-pool] per
  ``channels``, then the dense head of ``mlp``.
* ``resmlp`` — the residual MLP of Wang et al. 2025 ("1000 Layer Networks for Self-Supervised RL",
  REFERENCE.md §9 "Deep network"): flatten → stem Dense ``stem`` → LN ``stem_norm`` → act; then
  ``blocks`` residual blocks, block b = ``layers_per_block`` × (Dense ``blocks/b/l`` → LN
  ``block_norm/b/l`` → act) plus an identity skip from the block's input to its output; head
  Dense ``out``. The width is ``hidden[0]`` (other entries are ignored). Layer norm is part of the
  architecture (Wang et al.: residual, LN and Swish are all required), so ``layer_norm`` is
  ignored; pick ``activation="swish"`` for their setting. Features: ``stem`` and every
  ``blocks/b/l`` (post-activation; for a block's last layer that is *before* the skip is added —
  the residual stream itself is not a separate entry). The blocks are one ``lax.scan`` over
  stacked parameters (below), so compile time stays flat in depth (depth 1,024 builds), with
  optional rematerialisation (``remat``).
* ``think`` — iterative computation (Ghugare et al. 2026, "On the role of iterative computation
  in RL", REFERENCE.md §13: their ``InterpolationThinkingCell``): flatten → x = LN
  ``embed_norm`` (Dense ``embed`` (input)), width d = ``hidden[0]``; c = h = 0; then
  ``think_steps`` times the *same* cell: z = LN ``cell_norm`` ([x, h]), f = σ(Dense ``forget``
  (z)) (bias initialised to 1), i = tanh(Dense ``input`` (z)), c ← f⊙c + (1 − f)⊙i,
  h ← h + tanh(c) (a residual across steps); head Dense ``out`` (h), zero bias. The steps are a
  ``lax.scan``, so the parameters do not depend on the step count and the same parameters run
  any number of steps: ``apply(params, x, steps=M)`` (a static Python int; ``None``: the
  ``think_steps`` the network was built with) compiles once per step count. Features: ``embed``
  (x) and the gates ``forget`` (f) and ``input`` (i) of the *last* step, so every weight layer
  has its entry as in the other networks, and ``step/<s>`` the residual stream h after step s
  (s = 1 … steps: dormancy and feature rank per think step; no weights, so no reset layer);
  the cell is causal, so step s's values are the features of ``apply(params, x, steps=s)``. ``activation`` (a stateless one), ``layer_norm``
  and ``blocks`` are ignored: the gates are σ and tanh and the layer norms are part of the cell.
  Like ``resmlp`` it is no feed-forward chain: ReDo's and continual backprop's outgoing-weight
  step does not apply (``forget`` and ``input`` both read [x, h]); full, head, last-k and
  shrink-and-perturb resets do.

Stacked layers. Repeated layers may keep their parameters stacked along a leading axis under a
path key :data:`STACK` (``"stack"``; :class:`Stacked`): the parameter ``blocks/stack/2/kernel``
of shape ``[B, in, out]`` holds the kernels of the layers ``blocks/0/2`` … ``blocks/{B−1}/2``.
:func:`layer_params` reads such a tree layer by layer under those names, and
:func:`replace_layers` and :func:`layer_masks` write it the same way, so diagnostics, resets and
ReDo address a stacked layer exactly as an unrolled one.

Activations (:mod:`plasticity.activations`): a stateless one is a function; an activation with
parameters (``rational``, ``rational_shared``, ``rational_constrained``) is an NNX module inside
the network. Per-layer ones live beside the layer they follow — ``act/i`` (dense), ``conv_act/i``
(conv), ``stem_act`` and ``block_act/b/l`` (resmlp) — and a shared one is a single module ``act``
called by every layer, so its coefficients appear once in the parameter tree. These layers hold
``numerator``/``denominator`` (and ``slope``) leaves, never a ``kernel``, and have no features
entry. CReLU and Fourier features double the activation's width and the next layer reads the
doubled width (keep-width choice, ≈2× parameters, as in Plasticine; Kumar et al. 2023 halve
``hidden`` instead); in ``resmlp`` the residual stream then has width 2·``hidden[0]``.

Modules are Flax NNX; the hot path is functional: :func:`make_network` splits a module once into a
static graph definition and a pure ``init(key) -> params`` / ``apply(params, x)`` pair.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from plasticity import conv
from plasticity.activations import Activation, get_activation

NETWORKS = ("mlp", "cnn", "resmlp")          # feed-forward: the output is one pass
ITERATIVE_NETWORKS = ("think",)             # a weight-tied cell run a number of steps
ALL_NETWORKS = NETWORKS + ITERATIVE_NETWORKS  # every kind make_network builds
STACK = "stack"  # the path key of stacked repeated layers (see the module docstring)


class _Net(nnx.Module):
    """Activation plumbing shared by the networks: a function, per-layer modules or one module."""

    def _init_act(self, act: Activation) -> None:
        self.act_fn = None if act.parametric else act.fn
        self.act_shared = act.parametric and act.shared
        if self.act_shared:
            self.act = act.make()

    @staticmethod
    def _act_list(act: Activation, n: int) -> nnx.List | None:
        """One activation module per layer, or None when stateless or shared."""
        if not act.parametric or act.shared:
            return None
        return nnx.List([act.make() for _ in range(n)])

    def _activate(self, x: jax.Array, own: nnx.Module | None) -> jax.Array:
        """``own`` is this layer's activation module (None unless per-layer parametric)."""
        if self.act_fn is not None:
            return self.act_fn(x)
        return (self.act if self.act_shared else own)(x)


def _at(modules: nnx.List | None, i: int):
    return None if modules is None else modules[i]


class _DenseHead(_Net):
    """[Dense → (LayerNorm) → activation] × len(hidden) → Dense ``out``; shared by MLP and CNN."""

    def _build_dense(self, in_features: int, hidden: Sequence[int], out_features: int,
                     act: Activation, layer_norm: bool, rngs: nnx.Rngs):
        widths = [in_features] + [h * act.width_factor for h in hidden]
        self.hidden = nnx.List([nnx.Linear(a, h, rngs=rngs) for a, h in zip(widths, hidden)])
        self.norm = nnx.List([nnx.LayerNorm(h, rngs=rngs) for h in hidden] if layer_norm else [])
        if not act.shared:
            self.act = self._act_list(act, len(hidden))
        self.out = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def _dense(self, x: jax.Array, features: dict) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.hidden):
            x = layer(x)
            if len(self.norm):
                x = self.norm[i](x)
            x = self._activate(x, None if self.act_shared else _at(self.act, i))
            features[f"hidden/{i}"] = x
        return self.out(x)


class MLP(_DenseHead):
    """Flatten → [Dense → (LayerNorm) → activation] × len(hidden) → Dense."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str, layer_norm: bool, rngs: nnx.Rngs):
        act = get_activation(activation)
        self._init_act(act)
        self._build_dense(in_features, hidden, out_features, act, layer_norm, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}
        return self._dense(x, features), features


class CNN(_DenseHead):
    """[Conv 3×3 → (LayerNorm) → activation → 2×2 max-pool] per entry of ``channels``, then the
    dense head of :class:`MLP`. A conv feature map's channel is one unit for diagnostics."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int],
                 out_features: int, activation: str, layer_norm: bool, rngs: nnx.Rngs):
        act = get_activation(activation)
        self._init_act(act)
        h, w, c = input_shape
        in_ch = [c] + [ch * act.width_factor for ch in channels]
        self.conv = nnx.List([
            # conv.conv_general_dilated: gradients in the layout XLA's fast CPU kernels take
            # inside loops (15× faster per step in plax's scans; see plasticity.conv).
            nnx.Conv(a, b, kernel_size=(3, 3), padding="SAME",
                     conv_general_dilated=conv.conv_general_dilated, rngs=rngs)
            for a, b in zip(in_ch, channels)
        ])
        self.conv_norm = nnx.List(
            [nnx.LayerNorm(ch, rngs=rngs) for ch in channels] if layer_norm else [])
        self.conv_act = self._act_list(act, len(channels))
        for _ in channels:
            h, w = (h // 2, w // 2) if h > 1 and w > 1 else (h, w)
        self._build_dense(h * w * in_ch[-1], hidden, out_features, act, layer_norm, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}
        for i, conv_layer in enumerate(self.conv):
            x = conv_layer(x)
            if len(self.conv_norm):
                x = self.conv_norm[i](x)
            x = self._activate(x, _at(self.conv_act, i))
            features[f"conv/{i}"] = x
            if x.shape[1] > 1 and x.shape[2] > 1:
                x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self._dense(x, features), features


class Stacked(nnx.Module):
    """``n`` copies of the module ``make(rngs)`` as one module whose every parameter has a
    leading ``[n]`` axis, under the attribute :data:`STACK` (so :func:`layer_params` names copy
    ``i``'s layers with ``i`` in that place). Each copy is initialised from its own key."""

    def __init__(self, make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs):
        keys = jax.random.split(rngs.params(), n)
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
        setattr(self, STACK, nnx.merge(
            graphdef, jax.vmap(lambda k: nnx.state(make(nnx.Rngs(k))))(keys)))

    def split(self):
        """(graph definition of one copy, the stacked state): a ``lax.scan`` over the state's
        leading axis runs one copy per iteration (``nnx.merge`` inside the body)."""
        return nnx.split(getattr(self, STACK))


class ResMLP(_Net):
    """Residual MLP (Wang et al. 2025): stem Dense→LN→act, ``blocks`` × [``layers_per_block`` ×
    (Dense→LN→act) + identity skip], head Dense ``out``. The blocks' parameters are stacked
    (:class:`Stacked`) and run as one ``lax.scan``, so the compiled program does not grow with
    depth; ``remat`` recomputes each block's activations in the backward pass instead of
    storing them (memory ∝ blocks × width instead of × layers). See the module docstring for
    names."""

    def __init__(self, in_features: int, width: int, blocks: int, layers_per_block: int,
                 out_features: int, activation: str, rngs: nnx.Rngs, remat: bool = False):
        act = get_activation(activation)
        self._init_act(act)
        self.remat = remat
        self.layers_per_block = layers_per_block
        stream = width * act.width_factor  # the residual stream's width
        self.stem = nnx.Linear(in_features, width, rngs=rngs)
        self.stem_norm = nnx.LayerNorm(width, rngs=rngs)
        self.stem_act = None if act.shared else _at(self._act_list(act, 1), 0)
        self.num_blocks = blocks
        per_layer = act.parametric and not act.shared
        self.blocks = Stacked(lambda r: nnx.List(
            [nnx.Linear(stream, width, rngs=r) for _ in range(layers_per_block)]), blocks,
            rngs) if blocks else None
        self.block_norm = Stacked(lambda r: nnx.List(
            [nnx.LayerNorm(width, rngs=r) for _ in range(layers_per_block)]), blocks,
            rngs) if blocks else None
        self.block_act = Stacked(lambda r: self._act_list(act, layers_per_block), blocks,
                                 rngs) if blocks and per_layer else None
        self.out = nnx.Linear(stream, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}
        x = x.reshape(x.shape[0], -1)
        x = self._activate(self.stem_norm(self.stem(x)), self.stem_act)
        features["stem"] = x
        if self.blocks is None:
            return self.out(x), features
        dense_def, dense = self.blocks.split()
        norm_def, norm = self.block_norm.split()
        act_def, acts = self.block_act.split() if self.block_act is not None else (None, None)

        def block(stream, stacked):
            dense_s, norm_s, act_s = stacked
            dense_l, norm_l = nnx.merge(dense_def, dense_s), nnx.merge(norm_def, norm_s)
            act_l = None if act_def is None else nnx.merge(act_def, act_s)
            h, per_layer = stream, []
            for l in range(self.layers_per_block):
                h = self._activate(norm_l[l](dense_l[l](h)), None if act_l is None else act_l[l])
                per_layer.append(h)
            return stream + h, jnp.stack(per_layer)

        body = jax.checkpoint(block) if self.remat else block
        x, stacked = jax.lax.scan(body, x, (dense, norm, acts))  # stacked: [blocks, layers, ...]
        for b in range(self.num_blocks):
            for l in range(self.layers_per_block):
                features[f"blocks/{b}/{l}"] = stacked[b, l]
        return self.out(x), features


class Think(nnx.Module):
    """Iterative computation with one weight-tied gated cell (Ghugare et al. 2026; see the
    module docstring for the equations and names). ``steps`` (a static int) is the number of
    cell applications; the parameters do not depend on it."""

    def __init__(self, in_features: int, width: int, out_features: int, steps: int,
                 rngs: nnx.Rngs):
        self.steps = steps
        self.width = width
        self.embed = nnx.Linear(in_features, width, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(width, rngs=rngs)
        self.cell_norm = nnx.LayerNorm(2 * width, rngs=rngs)
        # A forget bias of 1 (σ(1) ≈ 0.73) keeps most of c at first, as in LSTMs.
        self.forget = nnx.Linear(2 * width, width, bias_init=nnx.initializers.constant(1.0),
                                 rngs=rngs)
        self.input = nnx.Linear(2 * width, width, rngs=rngs)
        self.out = nnx.Linear(width, out_features, rngs=rngs)

    def __call__(self, x: jax.Array, steps: int | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        steps = self.steps if steps is None else steps
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"think steps must be a Python int >= 1 (static: one compile per "
                             f"step count), got {steps!r}")
        x = self.embed_norm(self.embed(x.reshape(x.shape[0], -1)))
        zeros = jnp.zeros(x.shape[:-1] + (self.width,), x.dtype)

        def cell(carry, _):
            c, h, _, _ = carry
            z = self.cell_norm(jnp.concatenate([x, h], axis=-1))
            f = jax.nn.sigmoid(self.forget(z))
            i = jnp.tanh(self.input(z))
            c = f * c + (1.0 - f) * i
            h = h + jnp.tanh(c)
            return (c, h, f, i), h

        carry = (zeros, zeros, zeros, zeros)
        if steps == 1:
            # One step is applied directly: a length-1 scan inside the compiled loop crashed
            # XLA's CPU backend here (jax 0.10.2, segmentation fault at run time).
            (_, h, f, i), _ = cell(carry, None)
            states = h[None]
        else:
            (_, h, f, i), states = jax.lax.scan(cell, carry, length=steps)
        # The residual stream after each step too (dormancy and rank per think step); these
        # have no weights of their own, so resets and weight metrics skip them.
        per_step = {f"step/{s + 1}": states[s] for s in range(steps)}
        return self.out(h), {"embed": x, "forget": f, "input": i, **per_step}


class Network(NamedTuple):
    """A network as pure functions over its parameter state. An iterative network's ``apply``
    also takes ``steps=`` (:data:`ITERATIVE_NETWORKS`)."""

    init: Callable[[jax.Array], Any]                    # key -> params
    apply: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]  # (params, x) -> (out, feats)


def make_network(kind: str, input_shape: Sequence[int], num_outputs: int, *,
                 hidden: Sequence[int] = (256, 256), channels: Sequence[int] = (32, 64),
                 activation: str = "relu", layer_norm: bool = False, blocks: int = 2,
                 layers_per_block: int = 4, remat: bool = False,
                 think_steps: int = 5) -> Network:
    """Builds a network by name (``mlp``, ``cnn``, ``resmlp`` or ``think``) and splits it once
    into pure functions.

    ``hidden``: dense widths (``resmlp``: ``hidden[0]`` is the residual width); ``channels``: CNN
    conv channels; ``blocks``/``layers_per_block``: ``resmlp`` depth (Wang et al. use 4 layers per
    block; depth = blocks × layers_per_block Dense layers in the blocks). ``layer_norm`` is ignored
    by ``resmlp``, which always uses layer norm. ``think_steps``: the cell applications of
    ``think`` (width ``hidden[0]``), its ``apply(params, x, steps=None)`` default; Ghugare et
    al. use 5 (Lights Out, PPO) or 3 (box moving, DQN).
    """
    if kind not in ALL_NETWORKS:
        raise ValueError(f"unknown network {kind!r}; valid: {', '.join(ALL_NETWORKS)}")
    act = get_activation(activation)  # validate early, with the list of valid names
    if kind == "think":
        if not len(hidden):
            raise ValueError(f"think needs a width hidden[0]; got hidden={tuple(hidden)!r}")
        if not isinstance(think_steps, int) or think_steps < 1:
            raise ValueError(f"think needs think_steps >= 1; got think_steps={think_steps!r}")
        if act.parametric:
            raise ValueError(f"think's cell has fixed σ and tanh gates; activation "
                             f"{activation!r} has parameters that it would never use")
    if kind == "resmlp":
        if not len(hidden):
            raise ValueError(f"resmlp needs a width hidden[0]; got hidden={tuple(hidden)!r}")
        if blocks < 0 or layers_per_block < 1:
            raise ValueError(f"resmlp needs blocks >= 0 and layers_per_block >= 1; got "
                             f"blocks={blocks!r}, layers_per_block={layers_per_block!r}")

    def build(rngs: nnx.Rngs) -> nnx.Module:
        if kind == "mlp":
            in_features = math.prod(input_shape)
            return MLP(in_features, hidden, num_outputs, activation, layer_norm, rngs)
        if kind == "cnn":
            return CNN(input_shape, channels, hidden, num_outputs, activation, layer_norm, rngs)
        if kind == "think":
            return Think(math.prod(input_shape), hidden[0], num_outputs, think_steps, rngs)
        return ResMLP(math.prod(input_shape), hidden[0], blocks, layers_per_block, num_outputs,
                      activation, rngs, remat=remat)

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

    def init(key: jax.Array) -> Any:
        return nnx.state(build(nnx.Rngs(key)))

    if kind in ITERATIVE_NETWORKS:
        def apply(params: Any, x: jax.Array, steps: int | None = None):
            return nnx.merge(graphdef, params)(x, steps)
    else:
        def apply(params: Any, x: jax.Array):
            return nnx.merge(graphdef, params)(x)

    return Network(init, apply)


def layer_order(net: Network, input_shape: Sequence[int]) -> list[str]:
    """The network's hidden layers in forward order, then ``out``, read from the features it
    returns (shape-only evaluation, nothing computed): the ``layer_order`` of resets."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    params = jax.eval_shape(net.init, jax.random.key(0))
    order: list[str] = []

    def forward(p, x):
        out, features = net.apply(p, x)
        order.extend(features)  # the network's own order (a returned dict comes back sorted)
        return out

    jax.eval_shape(forward, params, x)
    weighted = layer_params(params)   # features without weights (think's step/<s>) are no layer
    return [*(name for name in order if name in weighted), "out"]


def _path_names(path) -> list[str]:
    return [str(k.key) if hasattr(k, "key") else str(k.idx) for k in path
            if hasattr(k, "key") or hasattr(k, "idx")]


def param_names(params: Any) -> dict[str, Any]:
    """Every parameter leaf by its path joined with ``/`` (``"conv/0/kernel"``,
    ``"hidden/1/bias"``): names that match across networks whose layers match."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(_path_names(path)): leaf for path, leaf in flat}


def _layer_names(path, leaf) -> list[tuple[str, str, int | None]]:
    """``(layer, leaf name, index into the stack axis or None)`` of every layer a parameter
    leaf holds: one for a plain leaf, one per copy for a stacked one."""
    names = _path_names(path)
    layer, leaf_name = names[:-1], names[-1]
    if STACK not in layer:
        return [("/".join(layer), leaf_name, None)]
    i = layer.index(STACK)
    return [("/".join(layer[:i] + [str(b)] + layer[i + 1:]), leaf_name, b)
            for b in range(jnp.shape(leaf)[0])]


def layer_params(params: Any) -> dict[str, dict[str, jax.Array]]:
    """Groups a parameter tree by layer: ``{"hidden/0": {"kernel": W, "bias": b}, "out": {...}}``.

    The layer name is the path to the parameter without its last entry, joined by ``/``
    (``"act/0"`` or ``"act"`` for rational coefficients); a stacked leaf (path key
    :data:`STACK`) gives one layer per copy, its index in the key's place (``"blocks/0/1"`` for
    a resmlp block layer).
    """
    def copy(leaf, index):
        if index is None:
            return leaf
        if isinstance(leaf, jax.ShapeDtypeStruct):  # abstract parameters (eval_shape)
            return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
        return leaf[index]

    layers: dict[str, dict[str, jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        for layer, name, index in _layer_names(path, leaf):
            layers.setdefault(layer, {})[name] = copy(leaf, index)
    return layers


def replace_layers(tree: Any, new: dict[str, dict[str, Any]]) -> Any:
    """``tree`` (parameters, or anything shaped like them) with the leaves named in
    ``new[layer][leaf]`` (:func:`layer_params` names) replaced, dtypes kept; a stacked leaf is
    updated at the copies named."""
    def f(path, leaf):
        for layer, name, index in _layer_names(path, leaf):
            value = new.get(layer, {}).get(name)
            if value is None:
                continue
            value = jnp.asarray(value, leaf.dtype)
            leaf = value if index is None else leaf.at[index].set(value)
        return leaf
    return jax.tree_util.tree_map_with_path(f, tree)


def layer_masks(params: Any, masks: dict[str, dict[str, Any]]) -> Any:
    """A boolean tree shaped like ``params``: ``masks[layer][leaf]`` broadcast to the (copy of
    the) leaf it names, False elsewhere."""
    def f(path, leaf):
        out = jnp.zeros(jnp.shape(leaf), bool)
        for layer, name, index in _layer_names(path, leaf):
            m = masks.get(layer, {}).get(name)
            if m is None:
                continue
            if index is None:
                out = jnp.broadcast_to(jnp.asarray(m, bool), out.shape)
            else:
                out = out.at[index].set(jnp.broadcast_to(jnp.asarray(m, bool), out.shape[1:]))
        return out
    return jax.tree_util.tree_map_with_path(f, params)
