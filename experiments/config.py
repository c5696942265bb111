"""What every experiment configuration shares: the field helper, the base dataclass with the
fields every learner kind has, validation, and reading values from the command line.

A learner kind's config (``experiments/kinds/<kind>.py``) is a frozen dataclass deriving from
:class:`ConfigBase`. Every field is a command-line override (``--num-tasks 5``). Fields marked
*vmapped* take a comma-separated list (``--learning-rate 1e-3,3e-4``): the runs of an experiment
are the product of seeds and those lists, executed as one compiled program. All other fields are
static: they fix shapes or code, and changing them recompiles.

A field declared here is declared once for every kind (its help, choices and vmapped marker); a
kind whose default differs redeclares it with :func:`shared` (same declaration, its own default).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from continual.interventions import RESETS
from continual.optimizers import OPTIMIZERS
from continual.runner import MODES
from metrics.hooks import parse_metrics
from plasticity.activations import ACTIVATIONS
from plasticity.networks import ALL_NETWORKS, ITERATIVE_NETWORKS, NETWORKS
from plasticity.regularizers import ALIASES, REGULARIZERS
from tasks import schedule as schedules


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is accepted."""


def option(default, help, choices=None, vmapped=False, **kw):
    """A config field: its default, help text, accepted values and whether it is vmapped."""
    meta = {"help": help, "choices": choices, "vmapped": vmapped}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class ConfigBase:
    """The fields every learner kind has. Subclasses set ``kind`` (their registry name) and
    implement ``num_tasks``, ``describe`` and, for their own checks, ``check``."""

    kind: ClassVar[str] = ""
    # Whether the kind's loop trains mixtures of two tasks in one interval (drift schedules;
    # continual.loop does, the RL loop does not yet): other kinds refuse drift.
    mixes_tasks: ClassVar[bool] = False
    # Whether the kind's build passes think_steps / eval_think_steps to its networks (the
    # iterative ``think`` network): other kinds refuse it rather than ignore the step counts.
    iterative_networks: ClassVar[bool] = False

    # The network(s) being trained.
    network: str = option("mlp", "network architecture (RL: actor and critic); think: one "
                          "weight-tied gated cell iterated --think-steps times (Ghugare et al. "
                          "2026), width hidden[0]", ALL_NETWORKS)
    hidden: tuple = option((256, 256), "hidden widths of the MLP (the CNN's dense head; RL: "
                           "actor and critic)")
    blocks: int = option(2, "residual blocks of the resmlp network (width hidden[0], 4 layers "
                         "each)")
    think_steps: int = option(5, "think network: cell applications per forward pass in "
                              "training (Ghugare et al.: 5 on Lights Out, 3 on box moving)")
    eval_think_steps: int = option(0, "think network: cell applications at evaluation (the "
                                   "same parameters; more than think_steps = more test-time "
                                   "compute); 0 = think_steps")
    activation: str = option("relu", "hidden activation", tuple(ACTIVATIONS))
    layer_norm: bool = option(False, "layer norm before every hidden activation")
    optimizer: str = option("adam", "optimizer", OPTIMIZERS)
    learning_rate: tuple = option((1e-3,), "learning rate(s) (RL: of every network and α)",
                                  vmapped=True)
    weight_decay: tuple = option((0.0,), "decoupled weight decay(s) (adamw only)", vmapped=True)
    # Interventions.
    regularizer: str = option("none", "parameter regularizer chained with the optimizer: l2, "
                              "l2_init (Kumar et al. 2023), weight_decay, spectral_reg "
                              "(Lewandowski et al. 2025), sp_step, shrink_to_init, ewc "
                              "(Kirkpatrick et al. 2017; supervised only), parseval (Chung et "
                              "al. 2024)", REGULARIZERS + tuple(ALIASES))
    reg_strength: tuple = option((1e-2,), "regularizer strength λ (sp_step, shrink_to_init: "
                                 "1 − p)", vmapped=True)
    reset: str = option("none", "reset intervention (RL: of every network, targets follow): "
                        "full, head, last_k (primacy bias), redo (Sokar et al. 2023), "
                        "shrink_perturb (Ash & Adams 2020), cbp (continual backprop, Dohare et "
                        "al. 2024; supervised only)", RESETS)
    reset_every: int = option(0, "apply the reset every N gradient steps; 0 = between tasks "
                              "(cbp: every step)")
    reset_last_k: int = option(2, "layers re-initialised by last_k")
    redo_tau: tuple = option((0.1,), "ReDo dormancy threshold τ", vmapped=True)
    sp_shrink: tuple = option((0.8,), "shrink & perturb: θ ← shrink·θ + perturb·ε",
                              vmapped=True)
    sp_perturb: tuple = option((0.01,), "shrink & perturb noise scale (ε a fresh init sample)",
                               vmapped=True)
    # The task schedule (tasks.schedule).
    schedule: str = option("sequential", "which task each log interval trains: sequential, "
                           "repeat:K, order:0,1,0[x2], durations:1,4,1, random:dwell=D, "
                           "drift:window=W[,shape=sigmoid], curriculum:D0,D1,... (durations "
                           "count log intervals)")
    boundaries: str = option("announced", "announced: boundary hooks (EWC, resets between "
                             "tasks, replay emptying) run at every switch; hidden: never "
                             "(task-free)", schedules.BOUNDARIES)
    task_seed: int = option(0, "seed of the task sequence and of a random schedule (shared by "
                            "all runs)")
    # The loop and its measurements.
    batch_size: int = option(64, "training batch size (RL: replay batch)")
    log_every: int = option(50, "steps between log points (evaluation on all tasks, "
                            "diagnostics; RL: environment steps)")
    probe_examples: int = option(256, "fixed probe batch size for diagnostics (RL: replay "
                                 "observations)")
    seeds: int = option(3, "number of seeds (runs per hyperparameter setting)")
    seed: int = option(0, "first seed; runs use seed, seed+1, ...")
    mode: str = option("chunked", "chunked: one compiled call per task (RL: per log interval) "
                       "with progress; sweep: the whole sequence in one call", MODES)
    run_batch: int = option(0, "runs per device executed at once, batch after batch through "
                            "one compiled program; 0 = all that fit the device's memory "
                            "(estimated from the compiled program before running)")
    metrics: str = option("", "diagnostics to compute per log interval, comma-separated (see "
                          "`plax list`); empty for none")
    dormant_tau: float = option(0.025, "τ of the dormant-unit probe (Sokar et al. 2023: 0.025; "
                                "0.1 at high replay ratios)")

    # Fields that must be >= 1; kinds extend the tuple.
    positive: ClassVar[tuple[str, ...]] = ("blocks", "batch_size", "log_every",
                                           "probe_examples", "seeds", "think_steps")

    @property
    def num_tasks(self) -> int:
        raise NotImplementedError

    @property
    def intervals_per_task(self) -> int:
        """Log intervals of one task in the sequential schedule (the unit of ``repeat`` and
        ``order``)."""
        raise NotImplementedError

    def task_schedule(self) -> schedules.Schedule:
        return schedules.parse(self.schedule, self.num_tasks, self.intervals_per_task,
                               seed=self.task_seed, boundaries=self.boundaries)

    def describe(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """The kind's own checks (after the shared ones); raise :class:`ConfigError`."""

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def hparam_grid(self) -> dict[str, tuple]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["vmapped"]}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def validate(self):
        """Checks choices and ranges; raises :class:`ConfigError` naming the field."""
        for name, f in self.fields().items():
            value = getattr(self, name)
            choices = f.metadata["choices"]
            if choices and value not in choices:
                raise ConfigError(f"{name}: unknown value {value!r}; valid: "
                                  f"{', '.join(repr(c) if c == '' else str(c) for c in choices)}")
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{name} must be finite, got {value}")
        try:
            parse_metrics(self.metrics, tau=self.dormant_tau)
        except ValueError as err:
            raise ConfigError(f"metrics: {err}") from None
        for name in self.positive:
            value = getattr(self, name)
            if (min(value) if isinstance(value, tuple) and value else value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name in ("reset_every", "seed", "task_seed", "run_batch", "eval_think_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dormant_tau < 0:
            raise ConfigError(f"dormant_tau must be >= 0, got {self.dormant_tau}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be positive widths, got {self.hidden}")
        if self.network in ITERATIVE_NETWORKS and not self.iterative_networks:
            raise ConfigError(f"network: {self.network!r} is not wired into {self.kind or 'this'} "
                              f"runs yet (they would ignore --think-steps); valid here: "
                              f"{', '.join(NETWORKS)}")
        if self.eval_think_steps and self.network not in ITERATIVE_NETWORKS:
            raise ConfigError(f"eval_think_steps applies to iterative networks "
                              f"({', '.join(ITERATIVE_NETWORKS)}), not {self.network!r}")
        if self.network in ITERATIVE_NETWORKS and ACTIVATIONS[self.activation].parametric:
            raise ConfigError(f"activation: {self.activation!r} has parameters; the think "
                              f"network's gates are σ and tanh (leave activation stateless)")
        for name, values in self.hparam_grid().items():
            if not values:
                raise ConfigError(f"{name} needs at least one value")
        if any(lr <= 0 for lr in self.learning_rate):
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if any(v < 0 for v in self.weight_decay + self.reg_strength + self.redo_tau
               + self.sp_perturb):
            raise ConfigError("weight_decay, reg_strength, redo_tau and sp_perturb must be >= 0")
        self.check()
        try:
            schedule = self.task_schedule()
        except schedules.ScheduleError as err:
            raise ConfigError(f"schedule: {err}") from None
        if schedule.mixed and not self.mixes_tasks:
            raise ConfigError(f"schedule: {self.schedule!r} mixes two tasks within a log "
                              f"interval, which {self.kind} runs do not support yet; use a "
                              f"pure schedule (sequential, repeat, order, durations, random, "
                              f"curriculum)")
        return self


def shared(name: str, default: Any, base: type | None = None):
    """The shared field ``name`` (declared in :class:`ConfigBase`, or in the config class
    ``base`` a kind derives from) with a kind's own default."""
    meta = (base or ConfigBase).__dataclass_fields__[name].metadata
    return option(default, meta["help"], meta["choices"], meta["vmapped"])


def parse_value(fields: dict[str, dataclasses.Field], name: str, text: str) -> Any:
    """Converts a command-line string to the type of ``fields[name]``; errors name the field."""
    if name not in fields:
        raise ConfigError(f"unknown config key {name!r}; valid: {', '.join(fields)}")
    default = fields[name].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "yes", "on")
        if isinstance(default, tuple):
            # The element type is the default's (numbers: int for widths, else float).
            kind = (str if default and isinstance(default[0], str)
                    else int if name in ("hidden", "channels", "think_sweep") else float)
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        return type(default)(text)
    except ValueError:
        raise ConfigError(f"{name}: cannot read {text!r} as "
                          f"{'a list of numbers' if isinstance(default, tuple) else type(default).__name__}"
                          ) from None
