"""Parameter-only regularizers as optax ``GradientTransformation``s (DESIGN.md, principle 4).

:func:`regularized` chains a regularizer with an optimizer and puts it where it belongs:

- **coupled** penalties (``l2``, ``l2_init``, ``spectral_reg``, ``ewc``, ``parseval``) add the
  gradient of their penalty to the loss gradient *before* the optimizer, so it passes through
  Adam's normalisation exactly as if it had been added to the loss;
- **decoupled** ones (``weight_decay``, ``sp_step``, ``shrink_to_init``) act on the optimizer's
  update *after* it.

Anchors (θ₀, θ*, the Fisher diagonal, power-iteration vectors, a PRNG key) live in the
transformation's state, so they are carried, vmapped and checkpointed with the optimizer state.
Strengths and numeric options may be traced ``jnp`` scalars: the optimizer is rebuilt inside the
traced update from the run's ``HParams`` and a sweep over them is one compiled program. No state
shape depends on their values.

Which leaves a penalty touches is read from the parameter path, with the naming of
:func:`plasticity.networks.layer_params` (dict keys and sequence indices; the ``.value`` of an
``nnx.Param`` is not a name): a leaf whose name is ``kernel`` is a weight matrix (dense
``(in, out)``; conv ``(kh, kw, in, out)`` reshaped to ``(kh·kw·in, out)`` as in REFERENCE.md §3),
a leaf named ``bias`` is a bias, and a layer is the output layer when ``output_name`` (default
``"out"``) is one of its path names.

Task-boundary hooks for EWC are pure: :func:`diagonal_fisher` and :func:`consolidate`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

REGULARIZERS = ("none", "l2", "l2_init", "weight_decay", "spectral_reg", "sp_step",
                "shrink_to_init", "ewc", "parseval")
# Names used in the design brief; they resolve to REFERENCE.md's canonical names above, which are
# what should be logged.
ALIASES = {"spectral": "spectral_reg", "shrink_perturb_step": "sp_step"}

# Options each regularizer accepts (besides ``strength`` and ``learning_rate``).
OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "l2": (),
    "l2_init": (),
    "weight_decay": (),
    "spectral_reg": ("k", "bias_strength"),
    "sp_step": ("sigma", "key"),
    "shrink_to_init": (),
    "ewc": (),
    "parseval": ("s", "output_name"),
}

_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# States


class AnchorState(NamedTuple):
    """θ₀ for ``l2_init`` and ``shrink_to_init`` (the parameters at ``init``)."""

    anchor: Any


class EWCState(NamedTuple):
    """Online EWC: anchor θ* and accumulated Fisher diagonal F (same tree as the parameters)."""

    anchor: Any
    fisher: Any


class SpectralState(NamedTuple):
    """Persistent power-iteration vectors per kernel (u: ``(m,)``, v: ``(n,)`` of the reshaped
    ``(m, n)`` kernel) and the σ_max estimate used by the last update (``()``). Leaves that are
    not kernels hold empty ``(0,)`` arrays so the tree matches the parameters'."""

    u: Any
    v: Any
    sigma: Any


class ShrinkPerturbState(NamedTuple):
    """Raw ``uint32`` key data (checkpoint-friendly) for the perturbation noise."""

    key: jax.Array


# ----------------------------------------------------------------------------------------------
# Path helpers


def _names(path) -> list[str]:
    return [str(k.key) if hasattr(k, "key") else str(k.idx) for k in path
            if hasattr(k, "key") or hasattr(k, "idx")]


def _leaf_name(path) -> str:
    names = _names(path)
    return names[-1] if names else ""


def _map_with_names(fn: Callable, tree: Any, *rest: Any) -> Any:
    """``tree_map`` whose function also gets the leaf's path names."""
    return jax.tree_util.tree_map_with_path(lambda p, x, *r: fn(_names(p), x, *r), tree, *rest)


def _as_matrix(w: jax.Array) -> jax.Array:
    return w.reshape(-1, w.shape[-1])


def _require_params(params, name: str):
    if params is None:
        raise ValueError(f"regularizer {name!r} needs params: call tx.update(grads, state, params)")


# ----------------------------------------------------------------------------------------------
# Coupled penalties: add ∇penalty to the gradient before the optimizer.


def _add_gradient(name: str, init_fn: Callable, grad_fn: Callable) -> optax.GradientTransformation:
    """``grad_fn(params, state) -> (penalty_grad, new_state)``; its result is added to ``updates``
    (which are loss gradients at this point of the chain)."""

    def update_fn(updates, state, params=None):
        _require_params(params, name)
        pen, state = grad_fn(params, state)
        updates = jax.tree.map(lambda g, d: (g + d).astype(g.dtype), updates, pen)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def l2(strength) -> optax.GradientTransformation:
    """Coupled L2: loss += λ‖θ‖² over all parameters, gradient 2λθ (REFERENCE.md §6 ``l2``)."""

    def grad_fn(params, state):
        return jax.tree.map(lambda p: 2.0 * strength * p, params), state

    return _add_gradient("l2", lambda params: optax.EmptyState(), grad_fn)


def l2_init(strength) -> optax.GradientTransformation:
    """L2 Init, regenerative regularization (Kumar, Marklund & Van Roy 2023, "Maintaining
    Plasticity in Continual Learning via Regenerative Regularization"): loss += λ‖θ − θ₀‖₂²,
    squared, over all parameters; θ₀ is stored in the state at ``init``. Gradient 2λ(θ − θ₀)."""

    def init_fn(params):
        return AnchorState(jax.tree.map(jnp.asarray, params))

    def grad_fn(params, state):
        return jax.tree.map(lambda p, a: 2.0 * strength * (p - a), params, state.anchor), state

    return _add_gradient("l2_init", init_fn, grad_fn)


def ewc(strength) -> optax.GradientTransformation:
    """Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting
    in neural networks"), online form: loss += (λ/2) Σᵢ Fᵢ(θᵢ − θ*ᵢ)², gradient λF(θ − θ*).

    Before the first :func:`consolidate` the anchor is θ₀ and F = 0, so the penalty is zero. At each
    task boundary :func:`consolidate` sets θ* ← θ and F ← F + F_new (Fisher summed over tasks, as
    in Continual World's EWC)."""

    def init_fn(params):
        return EWCState(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.zeros_like, params))

    def grad_fn(params, state):
        pen = jax.tree.map(lambda p, a, f: strength * f * (p - a), params, state.anchor,
                           state.fisher)
        return pen, state

    return _add_gradient("ewc", init_fn, grad_fn)


def _spectral_init_vectors(params):
    def vec(names, p, axis):
        if names and names[-1] == "kernel":
            size = _as_matrix(p).shape[axis]
            # A fixed pseudo-random start, the same in every run (no key needed) and almost surely
            # not orthogonal to the top singular vector; numpy makes it a constant, not an op.
            x = np.random.default_rng(7919 * size + axis).standard_normal(size)
            return jnp.asarray(x / np.linalg.norm(x), jnp.float32)
        return jnp.zeros((0,), jnp.float32)

    return (_map_with_names(lambda nm, p: vec(nm, p, 0), params),
            _map_with_names(lambda nm, p: vec(nm, p, 1), params))


def spectral_reg(strength, *, k=2.0, bias_strength=None) -> optax.GradientTransformation:
    """Spectral regularization (Lewandowski et al., ICLR 2025, "Learning Continually by Spectral
    Regularization"): keeps each layer's largest singular value near 1 and biases near 0.

    The exact form in the paper is unconfirmed; this is REFERENCE.md §6's principled version:
    penalty = λ Σ_ℓ (σ_max(W_ℓ)^k − 1)² + λ_b Σ_ℓ ‖b_ℓ‖² over every kernel and bias (output
    layer included; other leaves such as LayerNorm scales are untouched), ``k = 2`` and
    ``bias_strength = λ`` by default.

    σ_max comes from ONE power-iteration step per update with persistent, stop-gradient vectors
    (state): v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖, σ = uᵀWv, so ∂σ/∂W = u vᵀ and the added gradient is
    2λ(σ^k − 1)·kσ^{k−1}·u vᵀ. Conv kernels are reshaped to ``(kh·kw·in, out)``.
    """
    bias_strength = strength if bias_strength is None else bias_strength

    def init_fn(params):
        u, v = _spectral_init_vectors(params)
        sigma = _map_with_names(
            lambda nm, p: jnp.zeros((), jnp.float32) if nm and nm[-1] == "kernel"
            else jnp.zeros((0,), jnp.float32), params)
        return SpectralState(u, v, sigma)

    def grad_fn(params, state):
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        us, vs, ss = (treedef.flatten_up_to(t) for t in (state.u, state.v, state.sigma))
        pens = []
        for i, (path, p) in enumerate(flat):
            name = _leaf_name(path)
            if name == "kernel":
                w = jax.lax.stop_gradient(_as_matrix(p)).astype(jnp.float32)
                v = w.T @ us[i]
                v = v / jnp.maximum(jnp.linalg.norm(v), _EPS)
                u = w @ v
                u = u / jnp.maximum(jnp.linalg.norm(u), _EPS)
                sig = u @ w @ v
                coef = 2.0 * strength * (sig ** k - 1.0) * k * sig ** (k - 1.0)
                pens.append((coef * jnp.outer(u, v)).reshape(p.shape))
                us[i], vs[i], ss[i] = u, v, sig
            elif name == "bias":
                pens.append(2.0 * bias_strength * p)
            else:
                pens.append(jnp.zeros_like(p))
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        return unflat(pens), SpectralState(unflat(us), unflat(vs), unflat(ss))

    return _add_gradient("spectral_reg", init_fn, grad_fn)


def parseval(strength, *, s=1.0, output_name="out") -> optax.GradientTransformation:
    """Parseval regularization (Chung et al., NeurIPS 2024, "Parseval Regularization for Continual
    Reinforcement Learning"): λ Σ_ℓ ‖W_ℓW_ℓᵀ − sI‖_F² over every kernel except the output
    layer's (a layer whose path contains ``output_name``); biases are not penalised.

    Orientation: the paper (and its code, wechu/parseval_reg, ``agent.py``) uses PyTorch's
    ``(out, in)`` weight, so W Wᵀ is the Gram matrix of the output units' incoming weight vectors
    (rows orthogonal, squared norm s). Our kernels are ``(in, out)`` = Wᵀ, so the penalty is
    ‖KᵀK − sI‖_F² with KᵀK of shape ``(out, out)``; its gradient is 4λK(KᵀK − sI). Conv kernels
    are reshaped to ``(kh·kw·in, out)``: one row per output channel.

    ``s = 1`` follows Plasticine (REFERENCE.md §6); the authors' code uses s = gain² (2 for their
    orthogonal init with gain √2) and scales λ by (64/width)²: pass those explicitly if wanted.
    """

    def grad_fn(params, state):
        def leaf(names, p):
            if names and names[-1] == "kernel" and output_name not in names[:-1]:
                w = _as_matrix(p)
                gram = w.T @ w
                eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
                return (4.0 * strength * w @ (gram - s * eye)).reshape(p.shape).astype(p.dtype)
            return jnp.zeros_like(p)

        return _map_with_names(leaf, params), state

    return _add_gradient("parseval", lambda params: optax.EmptyState(), grad_fn)


# ----------------------------------------------------------------------------------------------
# Decoupled transforms: act on the optimizer's update u (already scaled by the learning rate).


def weight_decay(strength, learning_rate) -> optax.GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter 2019): θ ← θ − η(u + λθ). Placed after the
    optimizer, whose update is −ηu, it adds −ηλθ; like ``optax.adamw`` the decay is scaled by the
    learning rate η (a scalar, possibly traced; not a schedule)."""

    def update_fn(updates, state, params=None):
        _require_params(params, "weight_decay")
        updates = jax.tree.map(lambda u, p: (u - learning_rate * strength * p).astype(u.dtype),
                               updates, params)
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _key_data(key) -> jax.Array:
    key = jax.random.key(0) if key is None else key
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)  # a legacy ``PRNGKey`` is already raw key data


def sp_step(strength, *, sigma=1e-4, key=None) -> optax.GradientTransformation:
    """Shrink & perturb every step (``sp_step``; Ash & Adams 2020, per-step form of Kumar et al.
    2023 App. A.3 and Dohare et al. 2024): θ ← p(θ + u) + σε with p = 1 − ``strength``, u the
    optimizer's update (−α∇L for SGD) and ε ~ N(0, I) drawn fresh every step, i.e. N(0, σ²)
    per entry over all parameters.

    Noise choice: an isotropic Gaussian of fixed scale σ (Dohare et al.'s N(0, σ²), σ ∈
    {1e-4, 1e-5, 1e-6}; default 1e-4), not a fresh sample of the initialisation distribution
    (that is ``sp_ash`` at boundaries, a reset). ``strength`` is the shrink rate 1 − p so that 0 is
    "off" like every other regularizer (Kumar et al. tuned p = 1 − 1e-4 … 1 − 1e-3).

    ``key`` seeds the noise at ``init`` and is stored (as raw key data) in the state; pass the
    run's key, or all runs share the default ``key(0)`` noise stream. Typed keys of the default
    (threefry) implementation and legacy ``PRNGKey`` arrays are accepted.
    """

    def init_fn(params):
        return ShrinkPerturbState(_key_data(key))

    def update_fn(updates, state, params=None):
        _require_params(params, "sp_step")
        leaves, treedef = jax.tree.flatten(params)
        next_key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
        # one draw for all leaves, cut into pieces: one random op however many leaves
        flat = jax.random.normal(sub, (sum(p.size for p in leaves),), jnp.float32)
        cuts = np.cumsum([p.size for p in leaves])[:-1]
        noise = jax.tree.unflatten(
            treedef, [e.reshape(p.shape) for e, p in zip(jnp.split(flat, cuts), leaves)])
        updates = jax.tree.map(
            lambda u, p, e: (u - strength * (p + u) + sigma * e).astype(u.dtype),
            updates, params, noise)
        return updates, ShrinkPerturbState(jax.random.key_data(next_key))

    return optax.GradientTransformation(init_fn, update_fn)


def shrink_to_init(strength) -> optax.GradientTransformation:
    """Shrink towards the initial parameters every step (Plasticine's shrink & perturb variant;
    behaves like ``l2_init``): after the optimizer step, θ ← pθ + (1 − p)θ₀ with p = 1 −
    ``strength``, i.e. θ_new = p(θ + u) + (1 − p)θ₀, no noise. θ₀ is stored at ``init``.
    Plasticine's p = 1 − 1e-6 is ``strength = 1e-6``."""

    def init_fn(params):
        return AnchorState(jax.tree.map(jnp.asarray, params))

    def update_fn(updates, state, params=None):
        _require_params(params, "shrink_to_init")
        updates = jax.tree.map(lambda u, p, a: (u - strength * (p + u - a)).astype(u.dtype),
                               updates, params, state.anchor)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Entry point


def canonical_name(name: str) -> str:
    """REFERENCE.md's canonical name for ``name`` (resolving :data:`ALIASES`)."""
    name = ALIASES.get(name, name)
    if name not in REGULARIZERS:
        valid = ", ".join(REGULARIZERS)
        aliases = ", ".join(f"{a} (= {c})" for a, c in ALIASES.items())
        raise ValueError(f"unknown regularizer {name!r}; valid: {valid}; aliases: {aliases}")
    return name


def regularized(optimizer: optax.GradientTransformation, name: str, strength=0.0, *,
                learning_rate=None, **options) -> optax.GradientTransformation:
    """``optimizer`` chained with regularizer ``name`` of strength ``strength``.

    Coupled penalties come before the optimizer (``chain(penalty, optimizer)``), decoupled
    transforms after it (``chain(optimizer, transform)``); ``"none"`` returns ``optimizer``
    itself. ``strength``, ``learning_rate`` and numeric options may be traced scalars.

    Args:
      optimizer: the base optimizer (its update already includes the learning rate).
      name: one of :data:`REGULARIZERS` (or an alias in :data:`ALIASES`).
      strength: λ for penalties and weight decay; the shrink rate 1 − p for ``sp_step`` and
        ``shrink_to_init``.
      learning_rate: η, needed only by ``weight_decay`` (decay is scaled by it, as in AdamW).
      **options: ``spectral_reg``: ``k`` (2), ``bias_strength`` (= strength);
        ``sp_step``: ``sigma`` (1e-4), ``key`` (noise seed); ``parseval``: ``s`` (1),
        ``output_name`` ("out"). Others take none.
    """
    name = canonical_name(name)
    bad = sorted(set(options) - set(OPTIONS[name]))
    if bad:
        valid = ", ".join(OPTIONS[name]) or "none"
        raise ValueError(f"unknown option(s) {', '.join(bad)} for regularizer {name!r}; "
                         f"valid: {valid}")
    if name == "none":
        return optimizer
    strength = jnp.asarray(strength, jnp.float32)
    if name == "weight_decay":
        if learning_rate is None:
            raise ValueError("regularizer 'weight_decay' needs learning_rate= (decay is scaled "
                             "by it, as in AdamW)")
        return optax.chain(optimizer, weight_decay(strength, learning_rate))
    if name == "sp_step":
        return optax.chain(optimizer, sp_step(strength, **options))
    if name == "shrink_to_init":
        return optax.chain(optimizer, shrink_to_init(strength))
    coupled = {"l2": l2, "l2_init": l2_init, "ewc": ewc, "spectral_reg": spectral_reg,
               "parseval": parseval}[name]
    return optax.chain(coupled(strength, **options), optimizer)


# ----------------------------------------------------------------------------------------------
# EWC task-boundary hooks


def diagonal_fisher(log_prob_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                    x: jax.Array, key: jax.Array | None = None,
                    num_samples: int | None = 1, chunk_size: int | None = None) -> Any:
    """Diagonal of the Fisher information (Kirkpatrick et al. 2017):
    Fᵢ = E_x E_{y∼p_θ(·|x)} [(∂ log p_θ(y|x)/∂θᵢ)²], the mean over the rows of ``x``.

    Per-example gradients come from ``vmap`` over the rows (the square of a batch-mean gradient
    would be a different, biased quantity). ``log_prob_fn(params, x) -> log-probs [N, C]`` is
    called on one example at a time (``x[n:n+1]``).

    Args:
      num_samples: labels sampled from the model's own categorical per example (the "true"
        Fisher, not the empirical one with dataset labels); ``None`` takes the exact expectation
        over all C classes (C backward passes per example; cheap for few classes), ``key`` unused.
      chunk_size: examples per vmapped chunk, accumulated with ``lax.scan`` to bound memory
        (must divide N); ``None`` does all at once.
    Returns:
      a tree like ``params``: the per-parameter Fisher averaged over the examples, to pass to
      :func:`consolidate` (EWC's λ then sets the overall scale).
    """
    n = x.shape[0]
    if num_samples is not None and key is None:
        raise ValueError("diagonal_fisher needs a key when num_samples is not None")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    keys = jax.random.split(key if key is not None else jax.random.key(0), n)

    def log_probs(p, xi):
        return log_prob_fn(p, xi[None])[0]

    def per_example(xi, ki):
        logp = jax.lax.stop_gradient(log_probs(params, xi))
        if num_samples is None:
            jac = jax.jacrev(log_probs)(params, xi)                    # leaves [C, ...]
            probs = jnp.exp(logp)
            return jax.tree.map(
                lambda j: jnp.tensordot(probs, jnp.square(j), axes=(0, 0)), jac)
        ys = jax.random.categorical(ki, logp, shape=(num_samples,))
        grads = jax.vmap(lambda y: jax.grad(lambda p: log_probs(p, xi)[y])(params))(ys)
        return jax.tree.map(lambda g: jnp.mean(jnp.square(g), axis=0), grads)

    def chunk_sum(xs, ks):
        return jax.tree.map(lambda f: jnp.sum(f, axis=0), jax.vmap(per_example)(xs, ks))

    if chunk_size is None:
        total = chunk_sum(x, keys)
    else:
        if n % chunk_size:
            raise ValueError(f"chunk_size {chunk_size} must divide the number of examples {n}")
        xs = x.reshape((n // chunk_size, chunk_size) + x.shape[1:])
        ks = keys.reshape((n // chunk_size, chunk_size) + keys.shape[1:])
        zero = jax.tree.map(jnp.zeros_like, params)

        def body(acc, inputs):
            return jax.tree.map(jnp.add, acc, chunk_sum(*inputs)), None

        total, _ = jax.lax.scan(body, zero, (xs, ks))
    return jax.tree.map(lambda f: f / n, total)


def consolidate(opt_state: Any, params: Any, fisher: Any) -> Any:
    """EWC task-boundary hook (pure): in every :class:`EWCState` inside ``opt_state`` (found at
    any depth of chained or nested states) set θ* ← ``params`` and F ← F + ``fisher`` (online
    EWC). Raises ``ValueError`` if there is none."""
    found = []

    def visit(node):
        if isinstance(node, EWCState):
            found.append(True)
            return EWCState(jax.tree.map(jnp.asarray, params),
                            jax.tree.map(lambda f, g: f + g.astype(f.dtype), node.fisher, fisher))
        return node

    new = jax.tree.map(visit, opt_state, is_leaf=lambda x: isinstance(x, EWCState))
    if not found:
        raise ValueError("consolidate: no EWC state in opt_state; build the optimizer with "
                         "regularized(..., 'ewc', ...)")
    return new
