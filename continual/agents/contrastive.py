"""The contrastive critic of goal-conditioned RL (CRL; Eysenbach et al. 2022, JaxGCRL:
Bortkiewicz et al. 2024; REFERENCE.md §9): energies between state-action and goal embeddings,
and the contrastive losses over a batch whose positives lie on the diagonal.

The critic is ``f(s, a, g) = energy(φ(s, a), ψ(g))``. For a batch of ``B`` pairs ``(s_i, a_i)``
with relabelled goals ``g_i`` the logits are ``L_ij = f(s_i, a_i, g_j)``: ``g_i`` is the positive
of row ``i`` and the other goals of the batch its negatives.

Energies (:data:`ENERGIES`), on ``φ`` ``[B, d]`` and ``ψ`` ``[B, d]``:

* ``norm`` (JaxGCRL's default; the paper's "L2"): ``−√(‖φ_i − ψ_j‖² + 1e-6)``;
* ``l2``: ``−‖φ_i − ψ_j‖²``;
* ``dot``: ``φ_iᵀψ_j``;
* ``cosine``: ``scale · φ_iᵀψ_j / (‖φ_i‖‖ψ_j‖ + 1e-6)`` with *per-sample* norms and a learned
  logit scale (initialised to 1/0.07: :data:`COSINE_SCALE_INIT`). JaxGCRL at 6dccab2 took one
  norm over the whole ``B×B×d`` tensor; fixed in its PR #64, and here.

Losses (:data:`LOSSES`):

* ``fwd``: ``−mean_i[L_ii − logsumexp_j L_ij]`` (each state-action picks its goal);
* ``bwd``: ``−mean_j[L_jj − logsumexp_i L_ij]`` (each goal picks its state-action);
* ``sym``: ``fwd + bwd``;
* ``binary_nce``: sigmoid binary cross-entropy of every ``L_ij`` against the identity labels,
  averaged over the ``B²`` entries. (JaxGCRL's ``binary_nce`` at 6dccab2 is ``−mean σ(L)``,
  which contrasts nothing.)

Every loss adds ``penalty · mean_i(logsumexp_j L_ij)²`` (0.1 in JaxGCRL, where it is always on:
InfoNCE fixes the logits only up to a per-row constant, and ``fwd`` needs the penalty to keep
them bounded).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

COSINE_SCALE_INIT = 1.0 / 0.07
LOGSUMEXP_PENALTY = 0.1


def _sq_distances(phi: jax.Array, psi: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(phi[:, None, :] - psi[None, :, :]), axis=-1)


def _norm(phi, psi, scale):
    return -jnp.sqrt(_sq_distances(phi, psi) + 1e-6)


def _l2(phi, psi, scale):
    return -_sq_distances(phi, psi)


def _dot(phi, psi, scale):
    return phi @ psi.T


def _cosine(phi, psi, scale):
    norms = jnp.linalg.norm(phi, axis=-1)[:, None] * jnp.linalg.norm(psi, axis=-1)[None, :]
    return scale * (phi @ psi.T) / (norms + 1e-6)


ENERGIES: dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "norm": _norm, "l2": _l2, "dot": _dot, "cosine": _cosine}
LOSSES = ("fwd", "bwd", "sym", "binary_nce")


def logits(energy: str, phi: jax.Array, psi: jax.Array,
           scale: jax.Array | float = COSINE_SCALE_INIT) -> jax.Array:
    """``L_ij = energy(φ_i, ψ_j)`` ``[B, B]``; ``scale`` is the cosine energy's logit scale
    (the others ignore it)."""
    if energy not in ENERGIES:
        raise ValueError(f"unknown energy {energy!r}; valid: {', '.join(ENERGIES)}")
    return ENERGIES[energy](phi, psi, scale)


def pair_energy(energy: str, phi: jax.Array, psi: jax.Array,
                scale: jax.Array | float = COSINE_SCALE_INIT) -> jax.Array:
    """``f_i = energy(φ_i, ψ_i)`` ``[B]``: the diagonal of :func:`logits` without the ``B × B``
    matrix (the critic's value of each state-action for its own goal, as the actor needs)."""
    if energy not in ENERGIES:
        raise ValueError(f"unknown energy {energy!r}; valid: {', '.join(ENERGIES)}")
    if energy == "norm":
        return -jnp.sqrt(jnp.sum(jnp.square(phi - psi), axis=-1) + 1e-6)
    if energy == "l2":
        return -jnp.sum(jnp.square(phi - psi), axis=-1)
    dot = jnp.sum(phi * psi, axis=-1)
    if energy == "dot":
        return dot
    norms = jnp.linalg.norm(phi, axis=-1) * jnp.linalg.norm(psi, axis=-1)
    return scale * dot / (norms + 1e-6)


def contrastive_loss(logits_: jax.Array, loss: str = "fwd",
                     penalty: float = LOGSUMEXP_PENALTY) -> tuple[jax.Array, dict]:
    """The critic's loss on ``[B, B]`` logits with positives on the diagonal, and its own
    diagnostics: ``categorical_accuracy`` (rows whose largest logit is the positive),
    ``logits_pos`` / ``logits_neg`` (means of the diagonal and of the rest) and ``logsumexp``
    (mean over rows)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown contrastive loss {loss!r}; valid: {', '.join(LOSSES)}")
    batch = logits_.shape[0]
    eye = jnp.eye(batch)
    diagonal = jnp.diagonal(logits_)
    row_lse = jax.nn.logsumexp(logits_, axis=1)
    col_lse = jax.nn.logsumexp(logits_, axis=0)
    forward = -jnp.mean(diagonal - row_lse)
    backward = -jnp.mean(diagonal - col_lse)
    if loss == "fwd":
        value = forward
    elif loss == "bwd":
        value = backward
    elif loss == "sym":
        value = forward + backward
    else:
        value = jnp.mean(optax.sigmoid_binary_cross_entropy(logits_, eye))
    value = value + penalty * jnp.mean(jnp.square(row_lse))
    off = batch * (batch - 1)
    stats = {"categorical_accuracy": jnp.mean(jnp.argmax(logits_, axis=1) == jnp.arange(batch)),
             "logits_pos": jnp.mean(diagonal),
             "logits_neg": (jnp.sum(logits_) - jnp.sum(diagonal)) / max(off, 1),
             "logsumexp": jnp.mean(row_lse)}
    return value, stats
