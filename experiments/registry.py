"""The registry of learner kinds: the one dispatch step from a preset or a config to the kind
that builds it (DESIGN.md, principle 11).

``plax run PRESET`` → :func:`from_preset` finds the preset's kind and validates its config →
:func:`build` calls that kind's ``build`` → :func:`experiments.experiment.run` → the results
table. The CLI, compare and report reach kinds only through the functions here.

A new kind is one module in ``experiments/kinds/`` and one :func:`register` line at the bottom
of this file (or a call from your own code: a kind registered at run time is as good).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from experiments.config import ConfigBase, ConfigError, parse_value
from experiments.experiment import Experiment, Kind

KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Adds a learner kind; its name and preset names must be new."""
    if not (isinstance(kind.config, type) and issubclass(kind.config, ConfigBase)):
        raise TypeError(f"kind {kind.name!r}: config must be a ConfigBase dataclass")
    if kind.config.kind != kind.name:
        raise ValueError(f"kind {kind.name!r}: its config says kind {kind.config.kind!r}")
    if kind.name in KINDS and KINDS[kind.name] is not kind:
        raise ValueError(f"a kind named {kind.name!r} is already registered")
    taken = {p for other in KINDS.values() if other.name != kind.name for p in other.presets}
    if taken & set(kind.presets):
        raise ValueError(f"kind {kind.name!r}: presets {sorted(taken & set(kind.presets))} "
                         "already belong to another kind")
    KINDS[kind.name] = kind
    build.cache_clear()
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)
    build.cache_clear()


def get(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown learner kind {name!r}; valid: {', '.join(KINDS)}")
    return KINDS[name]


def preset_names() -> list[str]:
    return [p for kind in KINDS.values() for p in kind.presets]


def kind_of_preset(preset: str) -> Kind:
    for kind in KINDS.values():
        if preset in kind.presets:
            return kind
    raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(preset_names())}")


def from_preset(name: str, **overrides: Any):
    """The preset's config (of its kind's class) with ``overrides`` applied and validated."""
    kind = kind_of_preset(name)
    fields = kind.config.fields()
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]!r} is not a setting of {kind.label} presets; "
                          f"valid: {', '.join(fields)}")
    return kind.config(**{**kind.presets[name][1], **overrides}).validate()


@functools.lru_cache(maxsize=4)
def build(cfg) -> Experiment:
    """Everything of one experiment, built once by the config's kind.

    Memoised per (frozen, hashable) config: running the same config again in one process (a
    notebook, a test session) reuses the built loop and with it the compiled program
    (:func:`continual.runner.compiled`), instead of tracing and compiling anew."""
    return get(cfg.kind).build(cfg)


def all_fields() -> dict[str, dataclasses.Field]:
    """Every config field of every kind, by name (the first kind's declaration of a name)."""
    out: dict[str, dataclasses.Field] = {}
    for kind in KINDS.values():
        for name, f in kind.config.fields().items():
            out.setdefault(name, f)
    return out


def kinds_with(name: str) -> list[Kind]:
    return [kind for kind in KINDS.values() if name in kind.config.fields()]


def parse_override(name: str, text: str, preset: str | None = None) -> Any:
    """A command-line value read as the field's type (the preset's kind's field if given)."""
    kind = None
    if preset is not None:
        try:
            kind = kind_of_preset(preset)
        except ConfigError:
            pass  # the unknown preset is reported where it is resolved
    fields = kind.config.fields() if kind is not None and name in kind.config.fields() \
        else all_fields()
    return parse_value(fields, name, text)


def config_from_saved(saved: dict) -> tuple[Any, str]:
    """The config and preset of a saved ``config.json`` (for ``--resume``)."""
    preset = saved.get("preset", "quickstart")
    kind = get(saved["kind"]) if "kind" in saved else kind_of_preset(preset)
    fields = {f: saved[f] for f in kind.config.fields() if f in saved}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return kind.config(**fields).validate(), preset


# The built-in kinds: one line each.
from experiments.kinds import classifier, crl, dqn, dreamer, sac  # noqa: E402

register(classifier.KIND)
register(sac.KIND)
register(crl.KIND)
register(dreamer.KIND)
register(dqn.KIND)
