"""A 2-D convolution whose gradients stay on XLA's fast path inside compiled loops.

Why. On the CPU, XLA runs a convolution fast (through its Eigen/oneDNN kernels) only in the
canonical form ``NHWC × HWIO → NHWC``. Differentiating a convolution produces two others: the
input gradient (the kernel flipped and its in/out axes swapped) and the kernel gradient (batch
and feature axes exchanged, ``f01b_i01o->01bf``). Outside a loop XLA rewrites them into canonical
convolutions plus transposes; inside a ``while`` body (every ``lax.scan`` of plax's loop) it does
not, and emits them as naive loops. Measured on this project's 2-core CPU for split-cifar100's
CNN (conv 32, conv 64, dense 256, batch 64; ``bench/loop_step.py``): 1,284 ms per training step
inside the loop with ``lax.conv_general_dilated``, 84 ms for the same step jitted and called from
Python. Unrolling the step scan by 2 did not help (any loop left around the step is enough),
full unrolling did, at the price of compile time growing with the steps per interval.

The fix, at the level of the op (so every network, learner and loop gets it): a custom VJP that
writes both gradients as canonical convolutions itself, with explicit transposes of the small
operands — the same arithmetic, in the layout the fast kernels take: 55.8 ms per step inside the
loop, gradients equal to ``lax.conv_general_dilated``'s to float rounding.

Forward-mode differentiation (``jax.jvp``) is not defined through a custom VJP; plax only uses
reverse mode through networks. Cases other than 2-D, stride 1, no dilation, one feature group,
``NHWC``/``HWIO`` layout go to :func:`jax.lax.conv_general_dilated` unchanged.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_LAYOUT = ("NHWC", "HWIO", "NHWC")


def _canonical(x, w, padding, precision):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_LAYOUT,
                                    precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, padding, precision):
    return _canonical(x, w, padding, precision)


def _conv_fwd(x, w, padding, precision):
    return _canonical(x, w, padding, precision), (x, w)


def _conv_bwd(padding, precision, res, dy):
    x, w = res
    (lo_h, hi_h), (lo_w, hi_w) = padding
    kh, kw = w.shape[:2]
    # dx[n, q] = Σ_p dy[n, p] w[q + lo − p]: dy correlated with the flipped kernel, in/out swapped.
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = _canonical(dy, w_t, ((kh - 1 - lo_h, kh - 1 - hi_h), (kw - 1 - lo_w, kw - 1 - hi_w)),
                    precision)
    # dw[h, i, o] = Σ_{n,p} x_pad[n, p + h, i] dy[n, p, o]: a convolution with the input's
    # channels as its batch and the examples as its features ([i, H, W, n] × [Hy, Wy, n, o]).
    dw = _canonical(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), padding, precision)
    return dx, dw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _is_canonical_layout(dimension_numbers, ndim: int) -> bool:
    if dimension_numbers is None:
        return False
    want = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, _LAYOUT)
    got = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return got == want


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kwargs) -> jax.Array:
    """Drop-in for :func:`jax.lax.conv_general_dilated` (the signature ``nnx.Conv`` calls) that
    takes the canonical-gradient path where it applies (see the module docstring)."""
    ones = (1,) * (lhs.ndim - 2)
    plain = (lhs.ndim != 4 or tuple(window_strides) != ones
             or tuple(lhs_dilation or ones) != ones or tuple(rhs_dilation or ones) != ones
             or feature_group_count != 1 or any(v is not None for v in kwargs.values())
             or not _is_canonical_layout(dimension_numbers, lhs.ndim))
    if plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision, **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, padding, precision)
