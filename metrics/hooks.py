"""Glue between a learner's state and the diagnostics: selection by name and the interval hook.

``make_diagnose`` returns the function the loop calls once per log interval with the learner
state and the network's features on the fixed probe batch. It reads only ``state.params`` and
``state.init_params``, so any learner (classifier, SAC critic or actor) can use it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from metrics.probes import (GROUPS, PROBES, Probe, ProbeInputs, make_probes, optimizer_stats,
                            run_probes)
from plasticity.networks import layer_params

# Per-step optimisation statistics (grad_norm, update_ratio) are not interval probes: they come
# from the learner's update. This name switches them on.
OPTIMIZATION = "optimization"


class Diagnostics(NamedTuple):
    probes: list[Probe]
    optimization: bool


def metric_names() -> list[str]:
    """Every name accepted by ``--metrics``."""
    return [*PROBES, OPTIMIZATION, *GROUPS]


def parse_metrics(names: str | Sequence[str], *, tau: float = 0.025,
                  top_k: int = 0) -> Diagnostics:
    """Splits ``--metrics`` into interval probes and the per-step optimisation switch.
    ``all`` selects every probe and the optimisation statistics."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    optimization = OPTIMIZATION in items or "all" in items
    rest = [n for n in items if n and n != OPTIMIZATION]
    try:
        probes = make_probes(rest, tau=tau, top_k=top_k)
    except ValueError as err:
        raise ValueError(f"{err}; also '{OPTIMIZATION}' (grad_norm, update_ratio)") from None
    return Diagnostics(probes, optimization)


def make_diagnose(probes: list[Probe], activation: str) -> Callable[[Any, dict], dict] | None:
    """``diagnose(state, features) -> {metric: {layer: value}}``, or None without probes."""
    if not probes:
        return None

    def diagnose(state, features):
        inputs = ProbeInputs(layer_params(state.params), layer_params(state.init_params),
                             features, activation)
        return run_probes(probes, inputs)

    return diagnose
