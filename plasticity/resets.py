"""Discrete plasticity interventions as pure ``state -> state`` functions (REFERENCE.md §6).

Every function here takes and returns pytrees (flax ``nnx.State`` parameters and optax optimizer
states) and keeps their tree structure, shapes and dtypes: the loop applies them inside the
compiled program, with ``lax.cond`` on a schedule or at task boundaries, vmapped over runs
(DESIGN.md, principles 3–4). Nothing here draws random numbers: the caller passes
``fresh_params``, a fresh sample of the network's own initialiser (``network.init(key)``), so a
re-initialised weight is exactly what a new network of the same architecture would have.

Layers are addressed by the names of :func:`plasticity.networks.layer_params` (``"hidden/0"``,
``"conv/1"``, ``"out"``). Where the order of layers matters (ReDo, continual backprop) it is given
as ``layer_order``, a list of weight-layer names from input to output whose last entry is the
output layer, e.g. ``["hidden/0", "hidden/1", "out"]`` or ``["conv/0", "conv/1", "hidden/0",
"out"]``. Normalisation layers (``"norm/i"``, ``"conv_norm/i"``) and parametric activations
(``"act/i"``) are not in the order and are never touched by ReDo or continual backprop. The order
must be a feed-forward chain — each layer's features feed only the next layer of the order — for
the function-preserving step (zeroing outgoing weights) to be complete; a residual network
(``resmlp``: a block's output also flows through the skip) breaks that assumption.

Optimizer state: any subtree of the optimizer state with the same tree structure and leaf shapes
as the parameters (Adam's ``mu`` and ``nu``, SGD's momentum ``trace``, inside any chain) is
treated as per-parameter moments and zeroed at the touched entries; step counts are never
changed. Caution (REFERENCE §6): with a large global step count, Adam's bias correction no longer
boosts zeroed moments, so the first update of a reset entry is larger than a normal step (≈3× under
a constant gradient). Parameter-shaped *anchors* kept in optimizer state (L2-init's θ₀, EWC's θ*,
fields named ``anchor`` in :mod:`plasticity.regularizers`) look the same as moments: the default
``opt_filter`` (:func:`not_anchor`) leaves them alone, so L2-init keeps pulling a reset unit toward
the old θ₀ (re-anchor at the boundary if that is not wanted); EWC's Fisher is zeroed there, so a
reset unit carries no consolidation penalty.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from plasticity.networks import layer_masks, layer_params, replace_layers

__all__ = [
    "CBPState",
    "cbp_init",
    "cbp_step",
    "full_reset",
    "interpolate_fresh",
    "last_layers",
    "not_anchor",
    "redo",
    "reset_layers",
    "reset_optimizer_entries",
    "shrink_perturb",
]

_REDO_EPS = 1e-9  # dopamine's constant in the ReDo score denominator (as metrics.diagnostics)

# (key path of a params-shaped subtree of the optimizer state) -> whether to zero it
OptFilter = Callable[[tuple], bool]


# ---------------------------------------------------------------------------------------------
# Parameter-tree plumbing
# ---------------------------------------------------------------------------------------------


def _layers(params: Any) -> dict[str, dict[str, jax.Array]]:
    return layer_params(params)


def _replace_leaves(tree: Any, new: dict[str, dict[str, jax.Array]]) -> Any:
    """``tree`` with the leaves named in ``new[layer][leaf]`` replaced (dtype kept)."""
    return replace_layers(tree, new)


def _mask_tree(params: Any, masks: dict[str, dict[str, jax.Array]]) -> Any:
    """A boolean tree shaped like ``params``: ``masks[layer][leaf]`` broadcast to the leaf, else
    all False."""
    return layer_masks(params, masks)


def _check_layers(layers: dict, names: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid layer names: {', '.join(layers)}")


def _check_order(layers: dict, layer_order: Sequence[str]) -> None:
    layer_order = list(layer_order)
    if len(layer_order) < 2:
        raise ValueError(f"layer_order needs at least one hidden layer and the output layer, got "
                         f"{layer_order}")
    _check_layers(layers, layer_order, "layer in layer_order")
    missing = [n for n in layer_order if not {"kernel", "bias"} <= set(layers[n])]
    if missing:
        raise ValueError(f"layers {missing} in layer_order have no kernel and bias; valid: "
                         f"{', '.join(n for n, p in layers.items() if 'kernel' in p)}")


def _check_features(features: dict, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(f"features has no entry for hidden layers {missing}; it has: "
                         f"{', '.join(features)}")


def _row_mask(unit_feature_mask: jax.Array, kernel: jax.Array, layer: str, nxt: str) -> jax.Array:
    """Mask over the input rows (axis -2) of the next layer's kernel, shape [rows, 1].

    Dense→dense and conv→conv: one row per feature. Conv→dense: the dense layer sees the feature
    map flattened as NHWC ``reshape(N, -1)`` (channel fastest), so the channel mask repeats over
    the spatial positions.
    """
    width, rows = unit_feature_mask.shape[-1], kernel.shape[-2]
    if rows % width:
        raise ValueError(f"layer {nxt!r} has {rows} inputs, not a multiple of the {width} "
                         f"features of {layer!r}: is layer_order right?")
    return jnp.tile(unit_feature_mask, rows // width)[:, None]


def _unit_masks(feature_mask: jax.Array, units: int, layer: str) -> tuple[jax.Array, jax.Array]:
    """(per pre-activation unit [H], per feature [k·H]) masks. With a concatenating activation
    (CReLU, Fourier: width factor k, features ``[f(x), g(x)]``) a unit is reset only when all its
    k features are flagged; the feature mask then marks all k features of the reset units."""
    width = feature_mask.shape[-1]
    if width % units:
        raise ValueError(f"layer {layer!r}: {width} features is not a multiple of its {units} "
                         f"units")
    k = width // units
    unit = jnp.all(feature_mask.reshape(k, units), axis=0)
    return unit, jnp.tile(unit, k)


# ---------------------------------------------------------------------------------------------
# Optimizer state
# ---------------------------------------------------------------------------------------------


def not_anchor(path: tuple) -> bool:
    """Default ``opt_filter``: every params-shaped subtree except one held in a field or key named
    ``anchor`` (the θ₀ / θ* of :mod:`plasticity.regularizers`). EWC's Fisher diagonal is zeroed
    where weights are reset, by design: it measured the importance of weights that no longer
    exist, and kept it would pull the fresh weights back to θ*."""
    if not path:
        return True
    last = path[-1]
    return getattr(last, "name", getattr(last, "key", None)) != "anchor"


def _zero_outgoing(new: dict, masks: dict, nxt: str, rows: jax.Array) -> None:
    """Zeroes the rows of layer ``nxt``'s kernel fed by recycled units (in place in ``new``) and
    marks them touched in ``masks`` (so their optimizer moments are reset)."""
    new[nxt]["kernel"] = jnp.where(rows, 0, new[nxt]["kernel"])
    kmask = jnp.broadcast_to(rows, new[nxt]["kernel"].shape)
    masks[nxt]["kernel"] = kmask | masks[nxt].get("kernel", False)


def reset_optimizer_entries(opt_state: Any, params: Any, mask_tree: Any, *,
                            opt_filter: OptFilter | None = not_anchor) -> Any:
    """Zeroes per-parameter optimizer moments where ``mask_tree`` is True.

    Every subtree of ``opt_state`` with the same tree structure and leaf shapes as ``params`` is
    taken for moments (Adam/AdamW ``mu`` and ``nu``, momentum ``trace``, at any depth of an optax
    chain or wrapper); everything else (step counts, schedules, empty states) is returned as is.

    Args:
      opt_state: any optax state.
      params: the parameters (only their structure and shapes are read).
      mask_tree: same structure as ``params``, boolean leaves broadcastable to the leaf shapes.
      opt_filter: ``key_path -> bool`` on each params-shaped subtree; False leaves it untouched.
        Default :func:`not_anchor` (regularizer anchors kept); None zeroes every params-shaped
        subtree.
    """
    treedef = jax.tree_util.tree_structure(params)
    shapes = [jnp.shape(x) for x in jax.tree_util.tree_leaves(params)]

    def is_moments(node) -> bool:
        if jax.tree_util.tree_structure(node) != treedef:
            return False
        return [jnp.shape(x) for x in jax.tree_util.tree_leaves(node)] == shapes

    def zero(path, node):
        if not is_moments(node) or (opt_filter is not None and not opt_filter(path)):
            return node
        return jax.tree_util.tree_map(
            lambda m, k: jnp.where(k, jnp.zeros_like(m), m), node, mask_tree)

    return jax.tree_util.tree_map_with_path(zero, opt_state, is_leaf=is_moments)


# ---------------------------------------------------------------------------------------------
# Resets, shrink & perturb
# ---------------------------------------------------------------------------------------------


def full_reset(params: Any, opt_state: Any, fresh_params: Any, fresh_opt_state: Any
               ) -> tuple[Any, Any]:
    """Full reset: parameters and the whole optimizer state (counts included) start afresh.

    Matching target networks must be reset too (REFERENCE §6); BRO resets at fixed env steps.
    """
    del params, opt_state
    return fresh_params, fresh_opt_state


def last_layers(layer_order: Sequence[str], k: int) -> list[str]:
    """The last ``k`` names of ``layer_order`` (``k = 1``: the head), for :func:`reset_layers`."""
    if not 1 <= k <= len(layer_order):
        raise ValueError(f"k must be in 1..{len(layer_order)}, got {k}")
    return list(layer_order)[-k:]


def reset_layers(params: Any, opt_state: Any, fresh_params: Any, layers: Sequence[str], *,
                 opt_filter: OptFilter | None = not_anchor) -> tuple[Any, Any]:
    """Re-initialises the named layers and zeroes their optimizer moments; all else untouched.

    Head reset: ``layers=["out"]``; last-k reset (primacy bias, Nikishin et al. 2022):
    ``last_layers(layer_order, k)``. Normalisation layers are reset only if named
    (e.g. ``"norm/1"``).
    """
    layers = list(layers)
    current = _layers(params)
    _check_layers(current, layers, "layers to reset")
    fresh = _layers(fresh_params)
    params = _replace_leaves(params, {n: fresh[n] for n in layers})
    masks = {n: {leaf: jnp.ones((), bool) for leaf in current[n]} for n in layers}
    opt_state = reset_optimizer_entries(opt_state, params, _mask_tree(params, masks),
                                        opt_filter=opt_filter)
    return params, opt_state


def _blend(params: Any, fresh_params: Any, a, b, layers: Sequence[str] | None) -> Any:
    """a·θ + b·φ on every leaf, or only on the leaves of ``layers``."""
    blended = jax.tree.map(lambda p, e: (a * p + b * e).astype(p.dtype), params, fresh_params)
    if layers is None:
        return blended
    current = _layers(params)
    _check_layers(current, list(layers), "layers")
    chosen = _layers(blended)
    return _replace_leaves(params, {n: chosen[n] for n in layers})


def shrink_perturb(params: Any, fresh_params: Any, shrink, perturb,
                   layers: Sequence[str] | None = None) -> Any:
    """``sp_ash`` (Ash & Adams 2020, "On warm-starting neural network training"; as described in
    Kumar et al. 2023, App. A.3): θ ← shrink·θ + perturb·ε with ε a fresh sample of the
    initialiser, applied at task/data boundaries. ``shrink`` < 1 and ``perturb`` may be traced
    (vmapped) scalars. By default every parameter is shrunk (normalisation layers and activation
    coefficients included: for those ε is their deterministic initial value); ``layers``
    restricts it to the named layers. The optimizer state is left as it is."""
    return _blend(params, fresh_params, shrink, perturb, layers)


def interpolate_fresh(params: Any, fresh_params: Any, alpha,
                      layers: Sequence[str] | None = None) -> Any:
    """``sp_interp_fresh`` (D'Oro et al. 2023, "Sample-efficient reinforcement learning by
    breaking the replay ratio barrier"): θ ← αθ + (1−α)φ, φ a fresh initialisation, at resets
    (α = 0.8 in REFERENCE §6, unconfirmed). ``layers`` restricts it to the named layers."""
    return _blend(params, fresh_params, alpha, 1 - alpha, layers)


# ---------------------------------------------------------------------------------------------
# ReDo
# ---------------------------------------------------------------------------------------------


def _dormant(h: jax.Array, tau) -> jax.Array:
    """τ-dormant mask per feature (REFERENCE §2): s_i = E|h_i| / (mean_k E|h_k| + 1e-9) ≤ τ, the
    expectation over every axis but the last (batch, and spatial positions of a conv map).
    τ = 0 tests E|h_i| == 0 exactly, as :func:`metrics.diagnostics.dormant_count`."""
    h = h.astype(jnp.promote_types(h.dtype, jnp.float32))
    m = jnp.mean(jnp.abs(h), axis=tuple(range(h.ndim - 1)))
    s = m / (jnp.mean(m) + _REDO_EPS)
    tau = jnp.asarray(tau)
    return jnp.where(tau == 0, m == 0, s <= tau)


def redo(params: Any, opt_state: Any, features: dict[str, jax.Array], fresh_params: Any,
         layer_order: Sequence[str], tau, *, opt_filter: OptFilter | None = not_anchor
         ) -> tuple[Any, Any, dict[str, jax.Array]]:
    """ReDo, recycling dormant units (Sokar et al. 2023, "The dormant neuron phenomenon in deep
    reinforcement learning"; google/dopamine, dopamine/labs/redo/weight_recyclers.py).

    For each hidden layer of ``layer_order`` (the output layer, its last entry, is excluded),
    on the probe-batch ``features``:

    1. mask = ReDo score ≤ τ (conv: a channel is a unit, averaged over batch and positions);
    2. incoming weights of masked units ← ``fresh_params``' sample, their bias ← 0;
    3. outgoing weights (rows of the next layer's kernel) ← 0, so the network function is
       unchanged right after the reset (exactly for dead units; with a layer norm between, the
       re-initialised unit changes the norm's statistics, so only approximately);
    4. optimizer moments of every touched entry ← 0 (counts unchanged);
    5. conv → dense: the channel mask repeats over spatial positions for the outgoing rows
       (NHWC flatten, channel fastest).

    Where an outgoing row of one layer meets an incoming column of the next, zero wins. Layer
    norms (``"norm/i"``) are left as they are. With a concatenating activation (CReLU, Fourier)
    a unit is recycled when all its features are dormant.

    Args:
      features: ``{layer: post-activation [N, ..., H]}`` on a fixed probe batch (as returned by
        the network).
      tau: threshold, may be a traced (vmapped) scalar; 0 means dead (E|h| == 0).

    Returns:
      ``(params, opt_state, {layer: number of units reset (int32)})``.
    """
    layer_order = list(layer_order)
    layers = _layers(params)
    _check_order(layers, layer_order)
    hidden = layer_order[:-1]
    _check_features(features, hidden)
    fresh = _layers(fresh_params)

    units, feats = {}, {}
    for name in hidden:
        units[name], feats[name] = _unit_masks(_dormant(features[name], tau),
                                               layers[name]["kernel"].shape[-1], name)

    new = {n: dict(layers[n]) for n in layer_order}
    masks: dict[str, dict[str, jax.Array]] = {n: {} for n in layer_order}
    for name in hidden:                                   # 2. incoming
        u = units[name]
        new[name]["kernel"] = jnp.where(u, fresh[name]["kernel"], new[name]["kernel"])
        new[name]["bias"] = jnp.where(u, 0, new[name]["bias"])
        masks[name]["kernel"] = jnp.broadcast_to(u, new[name]["kernel"].shape)
        masks[name]["bias"] = u
    for name, nxt in zip(hidden, layer_order[1:]):       # 3. outgoing (after: zero wins)
        _zero_outgoing(new, masks, nxt, _row_mask(feats[name], new[nxt]["kernel"], name, nxt))

    params = _replace_leaves(params, new)
    opt_state = reset_optimizer_entries(opt_state, params, _mask_tree(params, masks),
                                        opt_filter=opt_filter)
    counts = {n: jnp.sum(units[n], dtype=jnp.int32) for n in hidden}
    return params, opt_state, counts


# ---------------------------------------------------------------------------------------------
# Continual backprop
# ---------------------------------------------------------------------------------------------


class CBPState(NamedTuple):
    """Continual-backprop bookkeeping, per hidden layer name.

    ``utility`` u and ``mean_act`` (running mean activation, for the bias correction of
    lop/algos/gnt.py) are float32 [H]; ``age`` is int32 [H]; ``accumulator`` is the float32
    fractional number of pending replacements; ``replaced`` is the int32 number of units replaced
    by the last step (for logging).
    """

    utility: dict[str, jax.Array]
    mean_act: dict[str, jax.Array]
    age: dict[str, jax.Array]
    accumulator: dict[str, jax.Array]
    replaced: dict[str, jax.Array]


def _check_dense(layers: dict, layer_order: Sequence[str]) -> None:
    conv = [n for n in layer_order if layers[n]["kernel"].ndim != 2]
    if conv:
        raise ValueError(f"continual backprop here supports dense layers only; {conv} are not "
                         f"dense (use a layer_order of dense layers, e.g. the MLP head)")


def cbp_init(params: Any, layer_order: Sequence[str]) -> CBPState:
    """Zero utilities, mean activations, ages and accumulators for the hidden layers of
    ``layer_order`` (dense layers only)."""
    layer_order = list(layer_order)
    layers = _layers(params)
    _check_order(layers, layer_order)
    _check_dense(layers, layer_order)
    width = {n: layers[n]["kernel"].shape[-1] for n in layer_order[:-1]}
    zeros = lambda dt: {n: jnp.zeros((h,), dt) for n, h in width.items()}  # noqa: E731
    return CBPState(zeros(jnp.float32), zeros(jnp.float32), zeros(jnp.int32),
                    {n: jnp.zeros((), jnp.float32) for n in width},
                    {n: jnp.zeros((), jnp.int32) for n in width})


def cbp_step(params: Any, opt_state: Any, cbp_state: CBPState, features: dict[str, jax.Array],
             fresh_params: Any, layer_order: Sequence[str], *, decay=0.99, maturity=100,
             replacement_rate=1e-4, max_replacements: int | None = None,
             opt_filter: OptFilter | None = not_anchor) -> tuple[Any, Any, CBPState]:
    """One generate-and-test step of continual backprop (Dohare et al. 2024, "Loss of plasticity
    in deep continual learning", Nature; shibhansh/loss-of-plasticity, lop/algos/gnt.py), for
    MLPs (dense layers only). Call it after every gradient step with that step's features.

    Per hidden layer (output excluded), with h the batch features and W_out the next kernel:

    * age += 1; y_i = mean_batch|h_i| · Σ_k|W_out[i, k]| (gnt.py uses the mean over k: the same
      ranking within a layer); u ← ηu + (1−η)y; h̄ ← ηh̄ + (1−η)·mean_batch h_i;
      bias-corrected û = u/(1−η^age), h̄/(1−η^age);
    * eligible = age > maturity; accumulator += ρ·#eligible; replace n = ⌊accumulator⌋ eligible
      units with the smallest û; accumulator −= n (gnt.py's ``accumulate=True`` rule; its default
      ``accumulate=False`` instead rounds ρ·#eligible stochastically);
    * replacement: incoming weights ← ``fresh_params``' sample, unit bias ← 0, next-layer bias
      += W_out[i, :]·h̄_i (the unit's bias-corrected mean activation, so the function is kept in
      expectation), W_out[i, :] ← 0, u = h̄ = age = 0, optimizer moments of the touched incoming
      columns, bias entries and outgoing rows ← 0 (gnt.py also zeroes AdamGnT's per-entry step;
      optax has one global count, left unchanged).

    Decisions: (1) fresh weights come from the network's own initialiser sample (flax's
    LeCun-normal for ``nnx.Linear``) rather than gnt.py's U(±gain·√(3/fan_in)): a replaced unit is
    then distributed exactly like a unit of a freshly initialised network of this architecture.
    (2) gnt.py zeroes ``mean_feature_act`` *before* using it for the bias correction, which makes
    its correction a no-op; we apply the correction as the paper and REFERENCE §6 describe.
    (3) Shapes are static: at most K units per layer are replaced per step, K =
    ``max_replacements`` or, by default, max(1, ⌈ρ·H⌉) — which never binds, since the accumulator
    is below 1 before each step and grows by at most ρ·H. If K binds, the rest stays in the
    accumulator for later steps. (4) Layer norms between layers are not touched (cbp_linear.py
    resets their per-unit scale and bias).

    Args:
      decay, maturity, replacement_rate: η, m, ρ (may be traced scalars; a traced ρ needs a static
        ``max_replacements``). Paper defaults: η = 0.99, m = 100, ρ = 1e-4 (MNIST).
    """
    layer_order = list(layer_order)
    layers = _layers(params)
    _check_order(layers, layer_order)
    _check_dense(layers, layer_order)
    hidden = layer_order[:-1]
    _check_features(features, hidden)
    missing = [n for n in hidden if n not in cbp_state.age]
    if missing:
        raise ValueError(f"cbp_state has no entry for {missing}; it has {list(cbp_state.age)}: "
                         f"build it with cbp_init(params, layer_order)")
    if max_replacements is None:
        try:
            rate = float(replacement_rate)
        except Exception as e:  # a tracer: ρ is a vmapped hyperparameter
            raise ValueError("replacement_rate is traced; pass a static max_replacements "
                             "(e.g. ceil(max ρ · width))") from e
    elif max_replacements < 1:
        raise ValueError(f"max_replacements must be >= 1, got {max_replacements}")
    fresh = _layers(fresh_params)
    decay = jnp.asarray(decay, jnp.float32)

    util, mean_act, age, acc, replaced, repl = {}, {}, {}, {}, {}, {}
    for name, nxt in zip(hidden, layer_order[1:]):
        h = features[name]
        width = layers[name]["kernel"].shape[-1]
        if h.shape[-1] != width:
            raise ValueError(f"layer {name!r}: {h.shape[-1]} features for {width} units; "
                             f"continual backprop needs an activation of width factor 1")
        h = h.astype(jnp.float32).reshape(-1, width)
        w_out = layers[nxt]["kernel"].astype(jnp.float32)
        a = cbp_state.age[name] + 1
        u = decay * cbp_state.utility[name] + (1 - decay) * (
            jnp.mean(jnp.abs(h), 0) * jnp.sum(jnp.abs(w_out), 1))
        hbar = decay * cbp_state.mean_act[name] + (1 - decay) * jnp.mean(h, 0)
        correction = 1 - decay ** a.astype(jnp.float32)
        u_hat, hbar_hat = u / correction, hbar / correction

        eligible = a > maturity
        n_eligible = jnp.sum(eligible, dtype=jnp.int32)
        k = max_replacements if max_replacements is not None else max(1, math.ceil(rate * width))
        k = min(k, width)
        pending = cbp_state.accumulator[name] + replacement_rate * n_eligible
        n = jnp.minimum(jnp.floor(pending).astype(jnp.int32), jnp.minimum(k, n_eligible))
        _, idx = jax.lax.top_k(-jnp.where(eligible, u_hat, jnp.inf), k)
        r = jnp.zeros((width,), bool).at[idx].set(jnp.arange(k) < n)

        repl[name] = (r, hbar_hat)
        util[name] = jnp.where(r, 0.0, u)
        mean_act[name] = jnp.where(r, 0.0, hbar)
        age[name] = jnp.where(r, 0, a)
        acc[name] = (pending - n).astype(jnp.float32)
        replaced[name] = n

    new = {n_: dict(layers[n_]) for n_ in layer_order}
    masks: dict[str, dict[str, jax.Array]] = {n_: {} for n_ in layer_order}
    for name, nxt in zip(hidden, layer_order[1:]):
        r, hbar_hat = repl[name]
        w_out = layers[nxt]["kernel"]
        shift = jnp.sum(jnp.where(r[:, None], w_out * hbar_hat[:, None], 0.0), axis=0)
        new[nxt]["bias"] = new[nxt]["bias"] + shift.astype(w_out.dtype)
    for name in hidden:                                   # incoming (after the shift: bias 0)
        r = repl[name][0]
        new[name]["kernel"] = jnp.where(r, fresh[name]["kernel"], new[name]["kernel"])
        new[name]["bias"] = jnp.where(r, 0, new[name]["bias"])
        masks[name]["kernel"] = jnp.broadcast_to(r, new[name]["kernel"].shape)
        masks[name]["bias"] = r
    for name, nxt in zip(hidden, layer_order[1:]):       # outgoing (after: zero wins)
        _zero_outgoing(new, masks, nxt, repl[name][0][:, None])

    params = _replace_leaves(params, new)
    opt_state = reset_optimizer_entries(opt_state, params, _mask_tree(params, masks),
                                        opt_filter=opt_filter)
    return params, opt_state, CBPState(util, mean_act, age, acc, replaced)
