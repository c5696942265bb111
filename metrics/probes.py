"""Interval probes: named diagnostics over a network's layers, features and parameters.

A probe maps a ``ProbeInputs`` record to ``{metric_key: {layer: scalar}}``. Metric keys are the
canonical names of REFERENCE.md §1 with their parameter (``dormant_frac@0.025``, ``srank@0.01``);
layers are the dict keys of ``ProbeInputs.layers``/``features`` plus the aggregates ``total``
(unit-weighted over hidden layers, output excluded, as in dopamine) and ``global`` (all parameters).

Probes are pure and run on device, inside the compiled program, once per log interval on a fixed
probe batch (DESIGN.md principle 6): ``jax.jit(jax.vmap(lambda x: run_probes(probes, x)))``.

    probes = make_probes("dormant,srank,weights", tau=0.1)
    logs = run_probes(probes, ProbeInputs(layers, init_layers, features, "relu"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metrics import diagnostics as D

OUTPUT_LAYER = "out"

Metrics = dict[str, dict[str, jax.Array]]


class ProbeInputs(NamedTuple):
    """What every probe reads.

    layers: per-layer params, ``{"hidden/0": {"kernel": W, "bias": b}, ..., "out": {...}}``.
    init_layers: the same structure at initialisation (for ``param_dist_init``).
    features: hidden-layer post-activations on the fixed probe batch, output layer excluded;
        keys ⊂ ``layers``' keys. Dense ``[N, H]`` or conv ``[N, height, width, C]``.
    activation: static activation name (for ``active_entry_frac``).

    ``activation`` is pytree *metadata*, not a leaf, so a ``ProbeInputs`` can be passed straight
    through ``jit``/``vmap``; changing it retraces, as any static choice does.
    """

    layers: dict[str, dict[str, jax.Array]]
    init_layers: dict[str, dict[str, jax.Array]]
    features: dict[str, jax.Array]
    activation: str


jax.tree_util.register_pytree_node(
    ProbeInputs,
    lambda p: ((p.layers, p.init_layers, p.features), p.activation),
    lambda activation, children: ProbeInputs(*children, activation),
)


class Probe(NamedTuple):
    name: str
    compute: Callable[[ProbeInputs], Metrics]


def _fmt(x: float) -> str:
    return f"{x:g}"  # 0.025 -> "0.025", 0.0 -> "0"


def _hidden(inputs: ProbeInputs) -> dict[str, jax.Array]:
    return {k: h for k, h in inputs.features.items() if k != OUTPUT_LAYER}


# ---------------------------------------------------------------------------------------------
# Representation probes (hidden layers only)
# ---------------------------------------------------------------------------------------------


def _dormant(*, tau: float, **_) -> Probe:
    key = f"dormant_frac@{_fmt(tau)}"

    def compute(inputs: ProbeInputs) -> Metrics:
        per, count, width = {}, 0.0, 0
        for layer, h in _hidden(inputs).items():
            c, n_units = D.dormant_count(h, tau)
            per[layer] = c / n_units
            count, width = count + c, width + n_units
        if width:  # Σ dormant / Σ H (dopamine), not Plasticine's mean of layer fractions
            per["total"] = count / width
        return {key: per}

    return Probe("dormant", compute)


def _dead(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        frac, exact, count, width = {}, {}, 0.0, 0
        for layer, h in _hidden(inputs).items():
            c, n_units = D.dormant_count(h, 0.0)
            frac[layer], exact[layer] = c / n_units, D.dead_count_exact(h)
            count, width = count + c, width + n_units
        if width:
            frac["total"] = count / width
            exact["total"] = sum(exact.values())
        return {"dead_frac": frac, "dead_count_exact": exact}

    return Probe("dead", compute)


def _active_units(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        per, active, entries = {}, 0.0, 0
        for layer, h in _hidden(inputs).items():
            per[layer] = D.active_entry_frac(h, inputs.activation)
            active, entries = active + per[layer] * h.size, entries + h.size
        if entries:  # entry-weighted over all hidden layers; NaN stays NaN for N/A activations
            per["total"] = active / entries
        return {"active_entry_frac": per}

    return Probe("active_units", compute)


def _feature_norm(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        return {"feature_norm": {k: D.feature_norm(h) for k, h in _hidden(inputs).items()}}

    return Probe("feature_norm", compute)


# Rank probes are functions of (σ, N). They are built as one Probe that computes the spectrum
# (D.singular_values: exact, no squared condition number, so a collapsed layer's zero σ are not
# inflated to ~3.5e-4·σ_1 as the Gram route did; an eigenvalues-only SVD on CPU, QR + the
# eigenvalues of the Jordan-Wielandt matrix elsewhere) once per layer and applies every selected
# rank; make_probes fuses the rank names a user selects into a single such Probe, so the spectrum
# is computed once per layer even outside jit (inside one jit XLA's CSE would also dedupe, but
# this does not rely on it).
RankFn = Callable[[jax.Array, int], dict[str, jax.Array]]


def _rank_probe(name: str, fns: Sequence[RankFn]) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        out: Metrics = {}
        for layer, h in _hidden(inputs).items():
            sv, n = D.singular_values(h), h.shape[0]
            for fn in fns:
                for key, value in fn(sv, n).items():
                    out.setdefault(key, {})[layer] = value
        return out

    return Probe(name, compute)


def _effective_rank_fn(**_) -> RankFn:
    return lambda sv, n: {"effective_rank": D.effective_rank(sv)}


def _srank_fn(*, delta: float, **_) -> RankFn:
    return lambda sv, n: {f"srank@{_fmt(delta)}": D.srank(sv, delta)}


def _approx_rank_fn(*, delta: float, **_) -> RankFn:
    return lambda sv, n: {f"approx_rank@{_fmt(delta)}": D.approx_rank(sv, delta)}


def _stable_rank_fn(**_) -> RankFn:
    return lambda sv, n: {"stable_rank": D.stable_rank(sv)}


def _feature_rank_fn(*, eps: float, scale_by_sqrt_n: bool, **_) -> RankFn:
    # The unscaled count (timoklein/infer) is a different number, so it gets a different key.
    key = f"feature_rank@{_fmt(eps)}" if scale_by_sqrt_n else f"feature_rank_unscaled@{_fmt(eps)}"
    return lambda sv, n: {key: D.feature_rank(sv, n, eps, scale_by_sqrt_n)}


_RANK_FNS: dict[str, Callable[..., RankFn]] = {
    "effective_rank": _effective_rank_fn,
    "srank": _srank_fn,
    "approx_rank": _approx_rank_fn,
    "stable_rank": _stable_rank_fn,
    "feature_rank": _feature_rank_fn,
}


def _rank_factory(name: str) -> Callable[..., Probe]:
    return lambda **params: _rank_probe(name, [_RANK_FNS[name](**params)])


# ---------------------------------------------------------------------------------------------
# Weight probes (every layer, output included)
# ---------------------------------------------------------------------------------------------


def _weight_sv(*, top_k: int, **_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        out: Metrics = {}
        for layer, params in inputs.layers.items():
            kernel = params.get("kernel") if isinstance(params, dict) else None
            if kernel is None or kernel.ndim < 2:  # e.g. a layer of activation coefficients
                continue
            spec = D.weight_spectrum(kernel, top_k)
            for key in ("sv_max", "sv_min", "log10_cond"):
                out.setdefault(key, {})[layer] = spec[key]
            for i in range(top_k):  # σ_1 … σ_k, 1-based like the notation
                out.setdefault(f"sv_{i + 1}", {})[layer] = spec["sv_top"][i]
        return out

    return Probe("weight_sv", compute)


def _param_norm(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        per = {k: D.param_norm(p) for k, p in inputs.layers.items()}
        per["global"] = D.param_norm(inputs.layers)
        return {"param_norm": per}

    return Probe("param_norm", compute)


def _param_dist_init(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        dist, rel = {}, {}
        for k, p in inputs.layers.items():
            dist[k], rel[k] = D.param_dist_init(p, inputs.init_layers[k])
        dist["global"], rel["global"] = D.param_dist_init(inputs.layers, inputs.init_layers)
        return {"param_dist_init": dist, "param_dist_init_rel": rel}

    return Probe("param_dist_init", compute)


def _weight_abs_mean(**_) -> Probe:
    def compute(inputs: ProbeInputs) -> Metrics:
        per = {k: D.weight_abs_mean(p) for k, p in inputs.layers.items()}
        per["global"] = D.weight_abs_mean(inputs.layers)
        return {"weight_abs_mean": per}

    return Probe("weight_abs_mean", compute)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

#: name -> factory(tau=, delta=, eps=, scale_by_sqrt_n=, top_k=) -> Probe
PROBES: dict[str, Callable[..., Probe]] = {
    "dormant": _dormant,
    "dead": _dead,
    "active_units": _active_units,
    **{name: _rank_factory(name) for name in _RANK_FNS},
    "feature_norm": _feature_norm,
    "weight_sv": _weight_sv,
    "param_norm": _param_norm,
    "param_dist_init": _param_dist_init,
    "weight_abs_mean": _weight_abs_mean,
}

GROUPS: dict[str, list[str]] = {
    "all": list(PROBES),
    "representation": [
        "dormant", "dead", "active_units", *_RANK_FNS, "feature_norm",
    ],
    "weights": ["weight_sv", "param_norm", "param_dist_init", "weight_abs_mean"],
}


def _valid_names_message() -> str:
    return (
        f"valid probes: {', '.join(PROBES)}; groups: {', '.join(GROUPS)}; "
        "or 'none' for no probes"
    )


def _parse_names(names: str | Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = names.split(",")
    selected: list[str] = []
    for raw in names:
        name = raw.strip()
        if name in ("", "none"):
            continue
        if name in GROUPS:
            expanded = GROUPS[name]
        elif name in PROBES:
            expanded = [name]
        else:
            raise ValueError(f"unknown probe {name!r}; {_valid_names_message()}")
        selected += [n for n in expanded if n not in selected]
    return selected


def make_probes(
    names: str | Sequence[str],
    *,
    tau: float = 0.025,
    delta: float = 0.01,
    eps: float = 0.01,
    top_k: int = 0,
    scale_by_sqrt_n: bool = True,
) -> list[Probe]:
    """Probes for ``names``: a comma-separated string or a list of probe and group names.

    Groups (``all``, ``representation``, ``weights``) expand in place; duplicates are dropped
    keeping the first occurrence; ``"none"`` or ``""`` gives ``[]``. Parameters are static
    Python numbers because they are part of the metric keys (``dormant_frac@0.025``).
    The selected rank probes come back fused into one Probe named e.g. ``"srank+stable_rank"``
    (at the position of the first), so the spectrum is computed once per layer.
    """
    selected = _parse_names(names)
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0 (0 means dead units), got {tau!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
    params = dict(
        tau=float(tau), delta=float(delta), eps=float(eps), top_k=top_k,
        scale_by_sqrt_n=bool(scale_by_sqrt_n),
    )

    ranks = [n for n in selected if n in _RANK_FNS]
    probes: list[Probe] = []
    for name in selected:
        if name not in _RANK_FNS:
            probes.append(PROBES[name](**params))
        elif name == ranks[0]:
            probes.append(_rank_probe("+".join(ranks), [_RANK_FNS[r](**params) for r in ranks]))
    return probes


def run_probes(probes: Sequence[Probe], inputs: ProbeInputs) -> Metrics:
    """Run ``probes`` on ``inputs`` and merge their ``{metric_key: {layer: scalar}}`` outputs."""
    out: Metrics = {}
    for probe in probes:
        for key, per_layer in probe.compute(inputs).items():
            out.setdefault(key, {}).update(per_layer)
    return out


# ---------------------------------------------------------------------------------------------
# Per-step optimisation statistics
# ---------------------------------------------------------------------------------------------


def optimizer_stats(grads_layers, updates_layers, params_layers) -> Metrics:
    """Per-step optimisation statistics, per layer and ``global`` (REFERENCE.md §3):
    ``grad_norm`` = ‖g‖₂ of the raw gradient (before clipping) and ``update_ratio`` =
    ‖Δθ‖/‖θ‖, Δθ the applied update and θ the parameters before it.

    Each argument is ``{layer: {param_name: array}}`` with the same layers. The loop averages the
    per-step values over each log interval (Plasticine averages the gradient norm over
    minibatches likewise); they are not the norms of the interval's summed gradient.

    Cost: one sum of squares per layer and tree (three reads of a parameter-sized tree per
    step); the ``global`` values are combined from the per-layer sums, not a second pass. The
    classifier passes Δθ as θ_new − θ (exactly the change applied, rounding included), so XLA
    does not write optax's update tree out on its own. The per-step cost stays memory-bound: on
    the permuted-mnist MLP with Adam on a 2-core CPU the statistics add about a fifth to a step
    (``bench/diagnostics_overhead.py``). Computing them only on the last step of each log interval
    would make them nearly free, but that needs the loop (the update cannot see its position in
    the interval), and it would log that step's value rather than the interval mean.
    """
    g2 = {k: D.tree_sum_sq(g) for k, g in grads_layers.items()}
    u2 = {k: D.tree_sum_sq(u) for k, u in updates_layers.items()}
    p2 = {k: D.tree_sum_sq(params_layers[k]) for k in updates_layers}
    gn = {k: jnp.sqrt(v) for k, v in g2.items()}
    gn["global"] = jnp.sqrt(sum(g2.values(), jnp.zeros((), jnp.float32)))
    ur = {k: D.norm_ratio_from_sq(u2[k], p2[k]) for k in u2}
    ur["global"] = D.norm_ratio_from_sq(sum(u2.values(), jnp.zeros((), jnp.float32)),
                                        sum(p2.values(), jnp.zeros((), jnp.float32)))
    return {"grad_norm": gn, "update_ratio": ur}
