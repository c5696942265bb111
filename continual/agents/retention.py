"""Knowledge retention while fine-tuning a pre-trained policy (Wołczyk, Cupiał, Ostaszewski,
Bortkiewicz, Zając, Pascanu, Kuciński, Miłoś, ICML 2024, "Fine-tuning reinforcement learning
models is secretly a forgetting mitigation problem", arXiv 2402.02868; REFERENCE.md §6).

Fine-tuning a pre-trained policy π* forgets what it could do on the states it does not visit
early in fine-tuning. Four retention methods, each with its coefficient a vmapped
hyperparameter (:class:`continual.optimizers.HParams`; 0 = plain fine-tuning, so a sweep over
the methods' strengths is one compiled program). Every term regularises the **actor only**, never
the critic (the paper's App. C.5, Table 3):

* ``bc_coef`` β — behavioural cloning: ``β · E_{s∼B*} KL(π*(s) ‖ π_θ(s))`` on states ``B*`` from
  π*'s own data, stored at pre-training time (:attr:`Anchor.memory`);
* ``kickstart_coef`` β₀ — kickstarting (Schmitt et al. 2018): the same KL on the states of the
  current training batch (those the current policy visits), ``β = β₀ · decay^u`` after ``u``
  fine-tuning updates (the paper: β₀ 0.5, decay 0.99998, no floor);
* ``ewc_coef`` λ — EWC (Kirkpatrick et al. 2017) with Continual World's Gaussian-policy Fisher
  (:func:`gaussian_fisher`): ``λ · Σ_i F_i (θ_i − θ*_i)²`` (the paper's form, without EWC's ½);
* ``memory_share`` — episodic memory: that share of every training batch (critic and actor) is
  replaced by π*'s stored transitions, a protected store that no eviction rule of the replay
  ever touches (the paper keeps 10,000 of them in a 100k buffer, a 10 % share).

KL direction: the paper's §2 writes ``KL(π* ‖ π_θ)`` ("forward", the default) and its App. C.2
``KL(π_θ ‖ π*)`` ("reverse"). For tanh-Gaussian policies the KL between the squashed
distributions equals the closed-form KL of the pre-tanh Gaussians (:func:`gaussian_kl`): KL is
invariant under the bijection tanh, whose Jacobian cancels in the density ratio.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from continual.agents import policy as tanh_gaussian

KL_DIRECTIONS = ("forward", "reverse")
FISHER_EPS = 1e-6       # Continual World: (∂μ² + 2∂σ²) / (σ² + 1e-6)
FISHER_FLOOR = 1e-5     # Continual World clips the Fisher below at 1e-5


@dataclass(frozen=True)
class RetentionSpec:
    """Static retention choices (changing one recompiles; the coefficients are HParams)."""

    memory_size: int = 10_000       # pre-trained transitions kept (BC states, episodic memory)
    fisher_samples: int = 2_560     # states the Fisher averages over (Continual World: 10 × 256)
    kl_direction: str = "forward"   # forward: KL(π* ‖ π_θ); reverse: KL(π_θ ‖ π*)
    kickstart_decay: float = 0.99998  # per fine-tuning update

    def __post_init__(self):
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"unknown kl_direction {self.kl_direction!r}; valid: "
                             f"{', '.join(KL_DIRECTIONS)}")
        if self.memory_size < 1 or self.fisher_samples < 1:
            raise ValueError("memory_size and fisher_samples must be >= 1")
        if not 0 < self.kickstart_decay <= 1:
            raise ValueError(f"kickstart_decay must be in (0, 1], got {self.kickstart_decay}")


class Anchor(NamedTuple):
    """What retention holds on to: the frozen pre-trained actor θ*, its diagonal Fisher, and
    π*'s stored transitions (leaves ``[N, ...]``)."""

    actor: Any
    fisher: Any
    memory: Any


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> jax.Array:
    """``KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²))`` of diagonal Gaussians, summed over the last axis:
    ``Σ log(σ_q/σ_p) + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½``."""
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    return jnp.sum(log_std_q - log_std_p + (var_p + jnp.square(mean_p - mean_q)) / (2 * var_q)
                   - 0.5, axis=-1)


def policy_kl(raw_pretrained: jax.Array, raw_current: jax.Array,
              direction: str = "forward") -> jax.Array:
    """``[..., 2|A|]`` raw actor outputs → ``[...]``: the KL between the tanh-Gaussian policies
    they define (= that of their pre-tanh Gaussians), ``KL(π* ‖ π_θ)`` when ``forward``."""
    star, cur = tanh_gaussian.gaussian_params(raw_pretrained), \
        tanh_gaussian.gaussian_params(raw_current)
    return gaussian_kl(*star, *cur) if direction == "forward" else gaussian_kl(*cur, *star)


def gaussian_fisher(apply_raw: Callable[[Any, jax.Array], jax.Array], params: Any,
                    obs: jax.Array, chunk: int = 64) -> Any:
    """The diagonal Fisher of a Gaussian policy at ``params`` (Continual World,
    continualworld/methods/ewc.py), averaged over the states ``obs [N, obs]``::

        F_i = E_s Σ_a [(∂μ_a/∂θ_i)² + 2 (∂σ_a/∂θ_i)²] / (σ_a² + 1e-6),   clipped ≥ 1e-5

    (the Fisher information of N(μ, σ²) is 1/σ² for μ and 2/σ² for σ). ``apply_raw(params, s)``
    maps one state ``[obs]`` to the raw output ``[2|A|]``; per-state Jacobians are computed
    ``chunk`` states at a time (a Jacobian is ``2|A| × |θ|``)."""
    def one(s):
        def mu_std(p):
            mean, log_std = tanh_gaussian.gaussian_params(apply_raw(p, s))
            return mean, jnp.exp(log_std)

        (d_mu, d_std), (_, std) = jax.jacrev(mu_std)(params), mu_std(params)
        w = 1.0 / (jnp.square(std) + FISHER_EPS)  # [A]

        def per_leaf(jm, js):  # [A, *leaf]
            w_ = w.reshape((-1,) + (1,) * (jm.ndim - 1))
            return jnp.sum(w_ * (jnp.square(jm) + 2 * jnp.square(js)), axis=0)
        return jax.tree.map(per_leaf, d_mu, d_std)

    total = jax.lax.map(one, obs, batch_size=chunk)
    return jax.tree.map(lambda f: jnp.maximum(jnp.mean(f, axis=0), FISHER_FLOOR), total)


def ewc_penalty(params: Any, anchor_params: Any, fisher: Any) -> jax.Array:
    """``Σ_i F_i (θ_i − θ*_i)²`` over every parameter."""
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)), params, anchor_params,
                         fisher)
    return sum(jax.tree.leaves(terms))


def mix_memory(batch: Any, memory: Any, share: jax.Array, key: jax.Array) -> Any:
    """The first ``round(share · B)`` rows of ``batch`` replaced by uniform draws from the
    protected ``memory`` (leaves ``[N, ...]``); ``share`` may be traced."""
    b = jax.tree.leaves(batch)[0].shape[0]
    n = jax.tree.leaves(memory)[0].shape[0]
    rows = jax.random.randint(key, (b,), 0, n)
    take = jnp.arange(b) < jnp.round(share * b)

    def mix(x, m):
        picked = m[rows]
        return jnp.where(take.reshape((-1,) + (1,) * (x.ndim - 1)), picked, x)
    return jax.tree.map(mix, batch, memory)


def actor_penalty(spec: RetentionSpec, apply_raw: Callable, actor_params: Any,
                  anchor: Anchor, batch_obs: jax.Array, hparams, updates: jax.Array,
                  key: jax.Array) -> tuple[jax.Array, dict]:
    """The retention terms added to the actor loss and their values for the logs.

    ``apply_raw(params, obs [B, obs]) -> raw [B, 2|A|]``; ``batch_obs`` the training batch's
    states (kickstarting's); ``updates`` the fine-tuning updates so far (its decay)."""
    b = batch_obs.shape[0]
    bc_obs = anchor.memory.obs[jax.random.randint(key, (b,), 0, anchor.memory.obs.shape[0])]
    both = jnp.concatenate([bc_obs, batch_obs])
    star = jax.lax.stop_gradient(apply_raw(anchor.actor, both))
    kl = policy_kl(star, apply_raw(actor_params, both), spec.kl_direction)
    bc, kick = jnp.mean(kl[:b]), jnp.mean(kl[b:])
    ewc = ewc_penalty(actor_params, anchor.actor, anchor.fisher)
    kick_coef = hparams.kickstart_coef * spec.kickstart_decay ** updates.astype(jnp.float32)
    loss = hparams.bc_coef * bc + kick_coef * kick + hparams.ewc_coef * ewc
    return loss, {"bc_kl": bc, "kickstart_kl": kick, "ewc_penalty": ewc}
