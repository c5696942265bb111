"""The experiment configuration: one frozen dataclass, presets, and validation.

Every field is a command-line override (``--num-tasks 5``). Fields marked *vmapped* take a
comma-separated list (``--learning-rate 1e-3,3e-4``): the runs of an experiment are the product
of seeds and those lists, executed as one compiled program. All other fields are static: they
fix shapes or code, and changing them recompiles.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from continual.classifier import SETTINGS
from continual.interventions import RESETS
from continual.optimizers import OPTIMIZERS
from continual.runner import MODES
from metrics.hooks import parse_metrics
from plasticity.activations import ACTIVATIONS
from plasticity.networks import NETWORKS
from plasticity.regularizers import ALIASES, REGULARIZERS
from tasks.datasets import DATASETS
from tasks.supervised import FAMILIES


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is accepted."""


def _f(default, help, choices=None, vmapped=False, **kw):
    meta = {"help": help, "choices": choices, "vmapped": vmapped}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


class ConfigMethods:
    """What supervised and RL configs share: the vmapped grid and a plain dict."""

    def hparam_grid(self) -> dict[str, tuple]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["vmapped"]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Config(ConfigMethods):
    # What to train on.
    dataset: str = _f("digits", "image data set", DATASETS)
    family: str = _f("reshuffled", "how tasks differ: pixel permutation, label permutation, "
                     "or disjoint class groups", FAMILIES)
    num_tasks: int = _f(10, "number of tasks in the sequence")
    classes_per_task: int = _f(2, "classes per task (split family only)")
    random_label_examples: int = _f(512, "memorised subset size (random_labels family only)")
    setting: str = _f("class", "class: one head over all classes; task: logits masked to the "
                      "current task's classes (task identity known)", SETTINGS)
    task_seed: int = _f(0, "seed of the task sequence (shared by all runs)")
    data_dir: str = _f("", "directory of prepared TFDS data sets (default $PLAX_DATA_DIR or "
                       "~/tensorflow_datasets)")
    # The learner.
    network: str = _f("mlp", "network architecture", NETWORKS)
    hidden: tuple = _f((256, 256), "hidden widths of the MLP (or the CNN's dense head)")
    channels: tuple = _f((32, 64), "CNN channels per conv layer")
    blocks: int = _f(2, "residual blocks of the resmlp network (width hidden[0], 4 layers each)")
    activation: str = _f("relu", "hidden activation", tuple(ACTIVATIONS))
    layer_norm: bool = _f(False, "layer norm before every hidden activation")
    optimizer: str = _f("adam", "optimizer", OPTIMIZERS)
    learning_rate: tuple = _f((1e-3,), "learning rate(s)", vmapped=True)
    weight_decay: tuple = _f((0.0,), "decoupled weight decay(s) (adamw only)", vmapped=True)
    # Interventions.
    regularizer: str = _f("none", "parameter regularizer chained with the optimizer: l2, "
                          "l2_init (Kumar et al. 2023), weight_decay, spectral_reg "
                          "(Lewandowski et al. 2025), sp_step, shrink_to_init, ewc "
                          "(Kirkpatrick et al. 2017), parseval (Chung et al. 2024)",
                          REGULARIZERS + tuple(ALIASES))
    reg_strength: tuple = _f((1e-2,), "regularizer strength λ (sp_step, shrink_to_init: 1 − p)",
                             vmapped=True)
    reset: str = _f("none", "reset intervention: full, head, last_k (primacy bias), redo "
                    "(Sokar et al. 2023), shrink_perturb (Ash & Adams 2020), cbp (continual "
                    "backprop, Dohare et al. 2024)", RESETS)
    reset_every: int = _f(0, "apply the reset every N steps; 0 = between tasks (cbp: every step)")
    reset_last_k: int = _f(2, "layers re-initialised by last_k")
    redo_tau: tuple = _f((0.1,), "ReDo dormancy threshold τ", vmapped=True)
    sp_shrink: tuple = _f((0.8,), "shrink & perturb: θ ← shrink·θ + perturb·ε", vmapped=True)
    sp_perturb: tuple = _f((0.01,), "shrink & perturb noise scale (ε a fresh init sample)",
                           vmapped=True)
    cbp_replacement_rate: float = _f(1e-4, "continual backprop replacement rate ρ")
    cbp_maturity: int = _f(100, "continual backprop maturity threshold m (steps)")
    replay_capacity: int = _f(0, "rehearsal reservoir size in examples (Vitter's Algorithm R); "
                              "0 = no rehearsal")
    replay_fraction: float = _f(0.5, "fraction of each batch drawn from the reservoir")
    # The loop.
    batch_size: int = _f(64, "training batch size")
    steps_per_task: int = _f(400, "gradient steps per task")
    log_every: int = _f(50, "steps between log points (evaluation on all tasks, diagnostics)")
    eval_examples: int = _f(1000, "test examples per task for evaluation")
    probe_examples: int = _f(256, "fixed probe batch size for diagnostics")
    seeds: int = _f(3, "number of seeds (runs per hyperparameter setting)")
    seed: int = _f(0, "first seed; runs use seed, seed+1, ...")
    mode: str = _f("chunked", "chunked: one compiled call per task with progress; sweep: the "
                   "whole sequence in one call", MODES)
    metrics: str = _f("", "diagnostics to compute per log interval, comma-separated "
                      "(see `plax list`); empty for none")
    dormant_tau: float = _f(0.025, "τ of the dormant-unit probe (Sokar et al. 2023: 0.025; 0.1 "
                            "at high replay ratios)")

    def describe(self) -> str:
        return (f"{self.family} {self.dataset}, {self.num_tasks} tasks × {self.steps_per_task} "
                f"steps")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

_POSITIVE = ("blocks", "num_tasks", "classes_per_task", "random_label_examples", "batch_size", "steps_per_task", "log_every",
             "eval_examples", "probe_examples", "seeds")


def validate(cfg: Config) -> Config:
    """Checks choices and ranges; raises :class:`ConfigError` naming the field."""
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        if choices and getattr(cfg, name) not in choices:
            raise ConfigError(f"{name}: unknown value {getattr(cfg, name)!r}; valid: "
                              f"{', '.join(map(str, choices))}")
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{name} must be finite, got {value}")
    try:
        parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    except ValueError as err:
        raise ConfigError(f"metrics: {err}") from None
    for name in _POSITIVE:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.reset_every < 0 or cfg.replay_capacity < 0 or cfg.cbp_maturity < 0:
        raise ConfigError("reset_every, replay_capacity and cbp_maturity must be >= 0")
    if not 0 <= cfg.replay_fraction < 1:
        raise ConfigError(f"replay_fraction must be in [0, 1), got {cfg.replay_fraction}")
    if cfg.reset == "last_k" and cfg.reset_last_k < 1:
        raise ConfigError(f"reset_last_k must be >= 1, got {cfg.reset_last_k}")
    if any(v < 0 for v in cfg.reg_strength + cfg.redo_tau + cfg.sp_perturb):
        raise ConfigError("reg_strength, redo_tau and sp_perturb must be >= 0")
    if cfg.dormant_tau < 0:
        raise ConfigError(f"dormant_tau must be >= 0, got {cfg.dormant_tau}")
    if cfg.seed < 0 or cfg.task_seed < 0:
        raise ConfigError("seed and task_seed must be >= 0")
    if cfg.steps_per_task % cfg.log_every:
        raise ConfigError(f"steps_per_task ({cfg.steps_per_task}) must be a multiple of "
                          f"log_every ({cfg.log_every})")
    if not cfg.hidden or any(h < 1 for h in cfg.hidden):
        raise ConfigError(f"hidden must be positive widths, got {cfg.hidden}")
    if cfg.network == "cnn" and (not cfg.channels or any(c < 1 for c in cfg.channels)):
        raise ConfigError(f"channels must be positive, got {cfg.channels}")
    for name, values in cfg.hparam_grid().items():
        if not values:
            raise ConfigError(f"{name} needs at least one value")
    if any(lr <= 0 for lr in cfg.learning_rate):
        raise ConfigError(f"learning_rate must be > 0, got {cfg.learning_rate}")
    if any(wd < 0 for wd in cfg.weight_decay):
        raise ConfigError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    return cfg


def all_fields() -> dict:
    """Every config field of supervised and RL presets, by name (shared names have one type)."""
    from experiments.rl_config import RL_FIELDS
    return {**RL_FIELDS, **FIELDS}


def parse_value(name: str, text: str) -> Any:
    """Converts a command-line string to the field's type; errors name the field."""
    fields = all_fields()
    if name not in fields:
        raise ConfigError(f"unknown config key {name!r}; valid: {', '.join(fields)}")
    default = fields[name].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "yes", "on")
        if isinstance(default, tuple):
            kind = int if name in ("hidden", "channels") else float
            return tuple(kind(v) for v in text.split(",") if v.strip())
        return type(default)(text)
    except ValueError:
        raise ConfigError(f"{name}: cannot read {text!r} as "
                          f"{'a list of numbers' if isinstance(default, tuple) else type(default).__name__}"
                          ) from None


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "quickstart": (
        "reshuffled-label digits (bundled, offline): 10 tasks × 3 seeds, about a minute on a CPU",
        dict(dataset="digits", family="reshuffled", num_tasks=10, hidden=(128, 128),
             steps_per_task=300, log_every=50, batch_size=64, seeds=3),
    ),
    "plasticity-digits": (
        "loss of plasticity at CPU scale: digits with fresh random labels per task (memorise 256 "
        "images), ReLU MLP 64-64 with Adam, 30 tasks × 3 seeds",
        dict(dataset="digits", family="random_labels", random_label_examples=256, num_tasks=30,
             hidden=(64, 64), steps_per_task=200, log_every=100, batch_size=64, seeds=3),
    ),
    "permuted-mnist": (
        "Permuted MNIST: 10 tasks of about one epoch, MLP 784-256-256-10, batch 128",
        dict(dataset="mnist", family="permuted", num_tasks=10, hidden=(256, 256),
             batch_size=128, steps_per_task=500, log_every=100, seeds=3),
    ),
    "reshuffled-mnist": (
        "MNIST with a fresh label permutation per task (plasticity benchmark), 20 tasks",
        dict(dataset="mnist", family="reshuffled", num_tasks=20, hidden=(256, 256),
             batch_size=128, steps_per_task=1000, log_every=200, seeds=3),
    ),
    "split-mnist": (
        "Split MNIST: 5 tasks × 2 classes, task-incremental (use --setting class for class-IL)",
        dict(dataset="mnist", family="split", num_tasks=5, classes_per_task=2, setting="task",
             hidden=(256, 256), batch_size=128, steps_per_task=500, log_every=100, seeds=3),
    ),
    "split-cifar100": (
        "Split CIFAR-100: 20 tasks × 5 classes with a small CNN, task-incremental",
        dict(dataset="cifar100", family="split", num_tasks=20, classes_per_task=5,
             setting="task", network="cnn", channels=(32, 64), hidden=(256,), batch_size=64,
             steps_per_task=500, log_every=100, seeds=3, eval_examples=500),
    ),
}


def preset_names() -> list[str]:
    """Supervised presets, then RL presets."""
    from experiments.rl_config import RL_PRESETS
    return [*PRESETS, *RL_PRESETS]


def from_preset(name: str, **overrides: Any):
    """The preset's config (a :class:`Config`, or an RL preset's
    :class:`experiments.rl_config.RLConfig`) with ``overrides`` applied and validated."""
    from experiments.rl_config import RL_PRESETS, rl_from_preset
    if name in RL_PRESETS:
        return rl_from_preset(name, **overrides)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(preset_names())}")
    values = dict(PRESETS[name][1])
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]!r} is not a setting of supervised presets; "
                          f"valid: {', '.join(FIELDS)}")
    values.update(overrides)
    return validate(Config(**values))
