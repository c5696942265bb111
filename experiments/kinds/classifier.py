"""The supervised learner kind: a classifier trained on a stream of image-classification tasks
(permuted, reshuffled, split, random labels) with rehearsal, regularizers and resets."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from continual.classifier import SETTINGS, make_classifier
from continual.interventions import InterventionSpec, make_intervention, with_intervention_state
from continual.latent_replay import (LOWER, METHODS, make_feature_replay, make_generative_replay,
                                     make_progressive_replay, progressive_periods)
from continual.loop import LoopSpec, make_train
from continual.network_cut import CUTTABLE, cut_levels, cut_network, cut_points
from continual.optimizers import HParams
from experiments.config import ConfigBase, ConfigError, option
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from metrics import hooks
from plasticity.networks import (ITERATIVE_NETWORKS, Network, layer_order, make_network,
                                 param_names)
from tasks.datasets import DATASETS, load_dataset
from tasks.supervised import FAMILIES, make_stream


@dataclass(frozen=True)
class ClassifierConfig(ConfigBase):
    kind = "classifier"
    mixes_tasks = True   # drift schedules: batches drawn from two tasks (continual.loop)
    iterative_networks = True   # build passes think_steps / eval_think_steps (think network)

    # What to train on.
    dataset: str = option("digits", "image data set", DATASETS)
    family: str = option("reshuffled", "how tasks differ: pixel permutation, label "
                         "permutation, or disjoint class groups", FAMILIES)
    num_tasks: int = option(10, "number of tasks in the sequence")
    classes_per_task: int = option(2, "classes per task (split family only)")
    random_label_examples: int = option(512, "memorised subset size (random_labels family "
                                        "only)")
    setting: str = option("class", "class: one head over all classes; task: logits masked to "
                          "the current task's classes (task identity known)", SETTINGS)
    data_dir: str = option("", "directory of prepared TFDS data sets (default $PLAX_DATA_DIR "
                           "or ~/tensorflow_datasets)")
    channels: tuple = option((32, 64), "CNN channels per conv layer")
    # Interventions only the classifier has.
    cbp_replacement_rate: float = option(1e-4, "continual backprop replacement rate ρ")
    cbp_maturity: int = option(100, "continual backprop maturity threshold m (steps)")
    replay_capacity: int = option(0, "rehearsal reservoir size in examples (Vitter's "
                                  "Algorithm R); 0 = no rehearsal")
    replay_fraction: float = option(0.5, "fraction of each batch drawn from the reservoir")
    # Replay in latent space (continual.latent_replay).
    latent_layer: int = option(0, "replay level: 0 = rehearse raw examples through the whole "
                               "network; k >= 1 = replay features after k hidden layers through "
                               "the layers above only (Pellegrini et al. 2020; mlp and cnn)")
    latent_replay: str = option("stored", "what latent_layer >= 1 replays: stored (a reservoir "
                                "of replay_capacity features, Pellegrini et al. 2020), "
                                "generative (a class-conditional VAE's features with "
                                "distillation: brain-inspired replay, van de Ven et al. 2020) or "
                                "progressive (generated features at several levels, deeper "
                                "ones more often: Pawlak et al. 2022)", METHODS)
    latent_lower: str = option("freeze", "the layers below latent_layer after the first task: "
                               "freeze, or slow (their updates × latent_slow)", LOWER)
    latent_slow: float = option(0.1, "latent_lower=slow: factor on the lower layers' updates")
    stem_from: str = option("", "latent_layer >= 1: start the layers below latent_layer from "
                            "a pre-training run's network (RUN_DIR of a classifier run saved "
                            "with --snapshots, its first run at its last visit) and hold them "
                            "from the first step: brain-inspired replay's pre-trained conv "
                            "stem (e.g. the cifar10-stem preset for split-cifar100-bir)")
    vae_hidden: int = option(256, "generative latent replay: hidden width of the VAE's encoder "
                             "and decoder")
    vae_latent: int = option(32, "generative latent replay: VAE latent size")
    distill_temperature: float = option(2.0, "generative latent replay: distillation "
                                        "temperature (BI-R: 2)")
    progressive_levels: tuple = option((), "progressive latent replay: the replay levels (cut "
                                       "points), lowest first, the lowest = latent_layer; () = "
                                       "latent_layer and every cut point above it")
    progressive_base: int = option(2, "progressive latent replay: level l replayed every "
                                   "base^(depth of l from the output) steps (the last hidden "
                                   "layer every step)")
    progressive_periods: tuple = option((), "progressive latent replay: explicit replay period "
                                        "per level (overrides progressive_base), non-increasing "
                                        "toward the output")
    # The loop.
    steps_per_task: int = option(400, "gradient steps per task")
    eval_examples: int = option(1000, "test examples per task for evaluation")

    positive = ConfigBase.positive + ("num_tasks", "classes_per_task", "random_label_examples",
                                      "steps_per_task", "eval_examples", "vae_hidden",
                                      "vae_latent", "progressive_base")

    @property
    def intervals_per_task(self) -> int:
        return self.steps_per_task // self.log_every

    def describe(self) -> str:
        return (f"{self.family} {self.dataset}, {self.num_tasks} tasks × {self.steps_per_task} "
                f"steps")

    def check(self) -> None:
        if self.replay_capacity < 0 or self.cbp_maturity < 0:
            raise ConfigError("reset_every, replay_capacity and cbp_maturity must be >= 0")
        if not 0 <= self.replay_fraction < 1:
            raise ConfigError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if self.reset == "last_k" and self.reset_last_k < 1:
            raise ConfigError(f"reset_last_k must be >= 1, got {self.reset_last_k}")
        if self.steps_per_task % self.log_every:
            raise ConfigError(f"steps_per_task ({self.steps_per_task}) must be a multiple of "
                              f"log_every ({self.log_every})")
        if self.network == "cnn" and (not self.channels or any(c < 1 for c in self.channels)):
            raise ConfigError(f"channels must be positive, got {self.channels}")
        self._check_latent()

    @property
    def replay_batch(self) -> int:
        """Replayed rows per batch of latent replay (raw rehearsal: the loop's own split)."""
        return round(self.batch_size * self.replay_fraction)

    @property
    def replay_levels(self) -> tuple[int, ...]:
        """Progressive latent replay's levels, lowest first (validated by ``check``)."""
        if self.progressive_levels:
            return tuple(int(k) for k in self.progressive_levels)
        points = cut_points(self.network, self.hidden, self.channels)
        return tuple(range(self.latent_layer, points.stop))

    @property
    def replay_periods(self) -> tuple[int, ...]:
        """Progressive latent replay's period per level (validated by ``check``)."""
        if self.progressive_periods:
            return tuple(int(p) for p in self.progressive_periods)
        top = cut_points(self.network, self.hidden, self.channels).stop - 1
        return progressive_periods(self.replay_levels, top, self.progressive_base)

    def _check_progressive(self) -> None:
        if self.latent_replay != "progressive":
            if self.progressive_levels or self.progressive_periods:
                raise ConfigError(f"progressive_levels and progressive_periods apply to "
                                  f"latent_replay=progressive only (got latent_replay="
                                  f"{self.latent_replay})")
            return
        points = cut_points(self.network, self.hidden, self.channels)
        for name in ("progressive_levels", "progressive_periods"):
            value = getattr(self, name)
            if any(float(v) != int(v) for v in value):
                raise ConfigError(f"{name} must be integers, got {value}")
        levels = self.replay_levels
        if any(k not in points for k in levels) or any(
                a >= b for a, b in zip(levels[:-1], levels[1:])):
            raise ConfigError(f"progressive_levels must be strictly increasing cut points in "
                              f"{points.start}..{points.stop - 1}, got {levels}")
        if levels[0] != self.latent_layer:
            raise ConfigError(f"the lowest of progressive_levels {levels} must be latent_layer "
                              f"({self.latent_layer}): the layers below it freeze")
        periods = self.replay_periods
        if self.progressive_periods:
            if len(periods) != len(levels):
                raise ConfigError(f"progressive_periods needs one period per level {levels}, "
                                  f"got {periods}")
            if min(periods) < 1 or any(a < b for a, b in zip(periods[:-1], periods[1:])):
                raise ConfigError(f"progressive_periods must be >= 1 and non-increasing "
                                  f"toward the output (deeper levels replay at least as "
                                  f"often), got {periods} for levels {levels}")

    def _check_latent(self) -> None:
        if self.latent_layer < 0:
            raise ConfigError(f"latent_layer must be >= 0, got {self.latent_layer}")
        if self.latent_layer == 0:
            if self.stem_from:
                raise ConfigError("stem_from starts the layers below latent_layer from a "
                                  "pre-trained network: set latent_layer >= 1")
            if self.latent_replay in ("generative", "progressive"):
                raise ConfigError(f"latent_replay={self.latent_replay} needs latent_layer >= 1 "
                                  f"(generated features of a hidden layer; raw generative "
                                  f"replay is not implemented)")
            if self.progressive_levels or self.progressive_periods:
                raise ConfigError("progressive_levels and progressive_periods apply to "
                                  "latent_replay=progressive with latent_layer >= 1 only")
            return
        if self.network not in CUTTABLE:
            raise ConfigError(f"latent_layer={self.latent_layer}: network {self.network!r} "
                              f"cannot run from a hidden layer on; latent replay supports "
                              f"{', '.join(CUTTABLE)}")
        points = cut_points(self.network, self.hidden, self.channels)
        if self.latent_layer not in points:
            raise ConfigError(f"latent_layer must be in {points.start}..{points.stop - 1} for "
                              f"network {self.network} with hidden={self.hidden}"
                              + (f" and channels={self.channels}" if self.network == "cnn"
                                 else "") + f", got {self.latent_layer}")
        if self.reset == "cbp":
            raise ConfigError("latent_layer >= 1 keeps its replay memory where reset=cbp keeps "
                              "its utilities: use another reset, or latent_layer 0")
        if self.boundaries == "hidden":
            raise ConfigError("latent_layer >= 1 acts at announced task boundaries (lower "
                              "layers freeze, the generator's frozen copy): use boundaries "
                              "announced")
        if self.replay_batch < 1:
            raise ConfigError(f"latent_layer >= 1 needs replayed rows: batch_size × "
                              f"replay_fraction = {self.batch_size} × {self.replay_fraction} "
                              f"rounds to 0")
        if self.latent_replay == "stored" and self.replay_capacity < 1:
            raise ConfigError("latent_replay=stored needs replay_capacity >= 1 (stored "
                              "features)")
        if self.latent_replay in ("generative", "progressive") and self.replay_capacity:
            raise ConfigError(f"latent_replay={self.latent_replay} stores nothing: set "
                              f"replay_capacity 0 (got {self.replay_capacity})")
        if not 0 <= self.latent_slow <= 1:
            raise ConfigError(f"latent_slow must be in [0, 1], got {self.latent_slow}")
        if self.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0, got "
                              f"{self.distill_temperature}")
        self._check_progressive()


FIELDS = ClassifierConfig.fields()

# Class-incremental Split digits (5 tasks × 2 classes, one head), the latent-replay presets' base.
SPLIT_DIGITS = dict(dataset="digits", family="split", num_tasks=5, classes_per_task=2,
                    setting="class", hidden=(128, 128), batch_size=64, steps_per_task=300,
                    log_every=100, seeds=5)

# Class-incremental streams of the latent-replay presets (issue 16): van de Ven et al.'s Split
# MNIST sizes, and Split CIFAR-100 10 × 10 with a CNN whose stem the replay sits behind.
SPLIT_MNIST_CLASS = dict(dataset="mnist", family="split", num_tasks=5, classes_per_task=2,
                         setting="class", hidden=(400, 400), batch_size=128,
                         steps_per_task=500, log_every=100, seeds=5)
SPLIT_CIFAR_CLASS = dict(dataset="cifar100", family="split", num_tasks=10, classes_per_task=10,
                         setting="class", network="cnn", channels=(32, 64),
                         hidden=(256, 256), batch_size=64, steps_per_task=1000,
                         log_every=200, seeds=3, eval_examples=500)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "demo": (
        "the default run: loss of plasticity and a fix side by side — digits with fresh random "
        "labels per task, ReLU MLP 64-64 with Adam, plain (L2-init λ = 0) against L2-init "
        "λ = 0.01 (Kumar et al. 2023) in one program, dormant units and effective rank per "
        "layer, 20 tasks × 3 seeds",
        dict(dataset="digits", family="random_labels", random_label_examples=256, num_tasks=20,
             hidden=(64, 64), steps_per_task=200, log_every=100, batch_size=64, seeds=3,
             regularizer="l2_init", reg_strength=(0.0, 1e-2), metrics="dormant,effective_rank"),
    ),
    "quickstart": (
        "reshuffled-label digits (bundled, offline): 10 tasks × 3 seeds; 10 s on a 2-core CPU",
        dict(dataset="digits", family="reshuffled", num_tasks=10, hidden=(128, 128),
             steps_per_task=300, log_every=50, batch_size=64, seeds=3),
    ),
    "plasticity-digits": (
        "loss of plasticity at CPU scale: digits with fresh random labels per task (memorise 256 "
        "images), ReLU MLP 64-64 with Adam, 30 tasks × 3 seeds; 10 s on a 2-core CPU",
        dict(dataset="digits", family="random_labels", random_label_examples=256, num_tasks=30,
             hidden=(64, 64), steps_per_task=200, log_every=100, batch_size=64, seeds=3),
    ),
    "relearn-digits": (
        "loss of plasticity as slower relearning: 10 random-label digit tasks, the sequence "
        "4 times (repeat schedule: each task revisited after the 9 others overwrote it), ReLU "
        "MLP 64-64 with Adam, plain (L2-init λ = 0) against L2-init λ = 0.01 in one program, "
        "relearning speed per revisit, 3 seeds",
        dict(dataset="digits", family="random_labels", random_label_examples=256, num_tasks=10,
             schedule="repeat:4", hidden=(64, 64), steps_per_task=200, log_every=25,
             batch_size=64, seeds=3, regularizer="l2_init", reg_strength=(0.0, 1e-2)),
    ),
    "permuted-mnist": (
        "Permuted MNIST: 10 tasks of about one epoch, MLP 784-256-256-10, batch 128; 40 s on a "
        "2-core CPU",
        dict(dataset="mnist", family="permuted", num_tasks=10, hidden=(256, 256),
             batch_size=128, steps_per_task=500, log_every=100, seeds=3),
    ),
    "reshuffled-mnist": (
        "MNIST with a fresh label permutation per task (plasticity benchmark), 20 tasks; 2.7 min "
        "on a 2-core CPU",
        dict(dataset="mnist", family="reshuffled", num_tasks=20, hidden=(256, 256),
             batch_size=128, steps_per_task=1000, log_every=200, seeds=3),
    ),
    "split-mnist": (
        "Split MNIST: 5 tasks × 2 classes, task-incremental (use --setting class for class-IL); "
        "23 s on a 2-core CPU",
        dict(dataset="mnist", family="split", num_tasks=5, classes_per_task=2, setting="task",
             hidden=(256, 256), batch_size=128, steps_per_task=500, log_every=100, seeds=3),
    ),
    "split-digits-latent": (
        "latent replay (Pellegrini et al. 2020) on class-incremental Split digits: 5 tasks × 2 "
        "classes, MLP 128-128, a reservoir of 200 hidden/0 features replayed through the layers "
        "above, hidden/0 frozen after the first task, 5 seeds; 15 s on a 2-core CPU",
        dict(SPLIT_DIGITS, latent_layer=1, latent_replay="stored", replay_capacity=200),
    ),
    "split-digits-bir": (
        "generative internal replay (brain-inspired replay, van de Ven et al. 2020) on "
        "class-incremental Split digits: a class-conditional VAE over hidden/0 features, its "
        "samples of past classes replayed through the layers above with distillation (T = 2), "
        "no stored examples, 5 seeds; 20 s on a 2-core CPU",
        dict(SPLIT_DIGITS, latent_layer=1, latent_replay="generative"),
    ),
    "split-digits-progressive": (
        "progressive latent replay (Pawlak et al. 2022) on class-incremental Split digits: "
        "generated features replayed at hidden/0 every 2 steps and at hidden/1 every step "
        "(period 2^(depth from the output)), one VAE whose decoder mirrors the classifier, "
        "distillation (T = 2), no stored examples, 5 seeds; 23 s on a 2-core CPU",
        dict(SPLIT_DIGITS, latent_layer=1, latent_replay="progressive", progressive_base=2),
    ),
    "split-mnist-bir": (
        "generative internal replay on class-incremental Split MNIST (van de Ven et al. 2020's "
        "protocol: 5 tasks × 2 classes, MLP 400-400): a class-conditional VAE over hidden/0 "
        "features, distillation (T = 2), no stored examples, 500 steps per task, 5 seeds; "
        "44 s on a 2-core CPU with --dataset fashion_mnist, the same sizes (needs the TFDS "
        "data set: plax data prepare mnist, offline --from the IDX files)",
        dict(SPLIT_MNIST_CLASS, latent_layer=1, latent_replay="generative"),
    ),
    "split-mnist-progressive": (
        "progressive latent replay on class-incremental Split MNIST: split-mnist-bir with "
        "generated features at hidden/0 every 2 steps and at hidden/1 every step; 59 s on a "
        "2-core CPU with --dataset fashion_mnist",
        dict(SPLIT_MNIST_CLASS, latent_layer=1, latent_replay="progressive",
             progressive_base=2),
    ),
    "cifar10-stem": (
        "pre-training for split-cifar100-bir's conv stem, brain-inspired replay's first step: "
        "its network on all of CIFAR-10 (one task, 10 classes), 5,000 steps, 1 seed; run "
        "with --snapshots --out DIR, then split-cifar100-bir --stem-from DIR; for a GPU",
        dict(SPLIT_CIFAR_CLASS, dataset="cifar10", num_tasks=1, steps_per_task=5000,
             log_every=500, seeds=1),
    ),
    "split-cifar100-bir": (
        "generative internal replay on class-incremental Split CIFAR-100, 10 tasks × 10 "
        "classes (--num-tasks 20 --classes-per-task 5 for 20 × 5): CNN 32-64 + dense "
        "256-256, features replayed after the conv stem (it trains on the first task, then "
        "freezes; --stem-from a cifar10-stem run instead starts it pre-trained and frozen, "
        "as brain-inspired replay), for a GPU",
        dict(SPLIT_CIFAR_CLASS, latent_layer=2, latent_replay="generative"),
    ),
    "split-cifar100-progressive": (
        "progressive latent replay on split-cifar100-bir's stream and network: generated "
        "features after the conv stem every 4 steps, at the first dense layer every 2, the "
        "second every step; for a GPU",
        dict(SPLIT_CIFAR_CLASS, latent_layer=2, latent_replay="progressive",
             progressive_base=2),
    ),
    "split-cifar100": (
        "Split CIFAR-100: 20 tasks × 5 classes with a small CNN, task-incremental; for a GPU "
        "(30,000 seed-steps of a 32-64 CNN: about 45 min on a 2-core CPU, estimated)",
        dict(dataset="cifar100", family="split", num_tasks=20, classes_per_task=5,
             setting="task", network="cnn", channels=(32, 64), hidden=(256,), batch_size=64,
             steps_per_task=500, log_every=100, seeds=3, eval_examples=500),
    ),
    "split-cifar100-cpu": (
        "Split CIFAR-100 sized for a 2-core CPU: 20 tasks × 5 classes, CNN 16-32 with a dense "
        "128 head, 100 steps per task, batch 32, 2 seeds, task-incremental; 4.2 min on a 2-core "
        "CPU",
        dict(dataset="cifar100", family="split", num_tasks=20, classes_per_task=5,
             setting="task", network="cnn", channels=(16, 32), hidden=(128,), batch_size=32,
             steps_per_task=100, log_every=50, seeds=2, eval_examples=200),
    ),
}


def progress(logs, t) -> dict[str, str]:
    """Progress-bar fields: training loss and accuracy on the current task, mean over runs."""
    return {"loss": f"{np.nanmean(np.asarray(logs['train']['train_loss'])):.3f}",
            "acc_current": f"{np.nanmean(np.asarray(logs['eval_acc'])[:, t]):.3f}"}


def build(cfg: ClassifierConfig) -> Experiment:
    """The stream, the network, the classifier with its interventions, and the loop."""
    cfg.validate()
    dataset = load_dataset(cfg.dataset, cfg.data_dir or None)
    tasks = make_stream(dataset, cfg.family, cfg.num_tasks, classes_per_task=cfg.classes_per_task,
                        eval_examples=cfg.eval_examples, probe_examples=cfg.probe_examples,
                        task_seed=cfg.task_seed,
                        random_label_examples=cfg.random_label_examples)
    network = make_network(cfg.network, tasks.input_shape, tasks.num_classes, hidden=cfg.hidden,
                           channels=cfg.channels, blocks=cfg.blocks, activation=cfg.activation,
                           layer_norm=cfg.layer_norm, think_steps=cfg.think_steps)
    # An iterative network is evaluated at --eval-think-steps (the same parameters, more or
    # fewer steps of its cell: test-time compute); every other network as it trains.
    eval_network = (Network(network.init, functools.partial(network.apply,
                                                            steps=cfg.eval_think_steps))
                    if cfg.network in ITERATIVE_NETWORKS and cfg.eval_think_steps else None)
    diagnostics = hooks.parse_metrics(cfg.metrics, tau=cfg.dormant_tau)
    stem = pretrained_stem(cfg.stem_from) if cfg.stem_from else None

    def make_learner(optimizer_stats=None):
        if not cfg.latent_layer:
            return make_classifier(network, cfg.optimizer, setting=cfg.setting,
                                   regularizer=cfg.regularizer, optimizer_stats=optimizer_stats,
                                   eval_network=eval_network)
        cut = cut_network(cfg.network, tasks.input_shape, tasks.num_classes, cfg.latent_layer,
                          hidden=cfg.hidden, channels=cfg.channels, activation=cfg.activation,
                          layer_norm=cfg.layer_norm)
        common = dict(num_classes=tasks.num_classes, replay_batch=cfg.replay_batch,
                      setting=cfg.setting, regularizer=cfg.regularizer, lower=cfg.latent_lower,
                      slow=cfg.latent_slow, optimizer_stats=optimizer_stats, lower_init=stem)
        if cfg.latent_replay == "stored":
            return make_feature_replay(network, cut, cfg.optimizer,
                                       capacity=cfg.replay_capacity, **common)
        generative = dict(vae_hidden=cfg.vae_hidden, vae_latent=cfg.vae_latent,
                          temperature=cfg.distill_temperature)
        if cfg.latent_replay == "progressive":
            cuts = cut_levels(cfg.network, tasks.input_shape, tasks.num_classes,
                              cfg.replay_levels, hidden=cfg.hidden, channels=cfg.channels,
                              activation=cfg.activation, layer_norm=cfg.layer_norm)
            return make_progressive_replay(network, cuts, cfg.optimizer,
                                           periods=cfg.replay_periods, **generative, **common)
        return make_generative_replay(network, cut, cfg.optimizer, vae_hidden=cfg.vae_hidden,
                                      vae_latent=cfg.vae_latent,
                                      temperature=cfg.distill_temperature, **common)

    learner = make_learner()
    if stem is not None:   # a stem that does not fit fails here, before anything compiles
        try:
            jax.eval_shape(learner.init, jax.random.key(0), HParams.defaults())
        except ValueError as err:
            raise ConfigError(f"stem_from {cfg.stem_from}: {err}") from None
    stats_update = (make_learner(hooks.optimizer_stats).update if diagnostics.optimization
                    else None)
    diagnose = hooks.make_diagnose(diagnostics.probes, cfg.activation)
    order = layer_order(network, tasks.input_shape)
    ispec = InterventionSpec(cfg.reset, cfg.reset_every, cfg.reset_last_k, cfg.cbp_maturity,
                             cfg.cbp_replacement_rate)
    intervention = make_intervention(ispec, learner, order)
    learner = with_intervention_state(learner, ispec, order)
    # Latent replay draws its replayed rows itself: the loop draws only the current ones.
    latent = cfg.latent_layer > 0
    spec = LoopSpec(cfg.steps_per_task, cfg.log_every,
                    cfg.batch_size - cfg.replay_batch if latent else cfg.batch_size,
                    replay_capacity=0 if latent else cfg.replay_capacity,
                    replay_fraction=cfg.replay_fraction,
                    intervention_every=1 if cfg.reset == "cbp" else cfg.reset_every)
    train = make_train(spec, learner, tasks, diagnose, intervention, stats_update)
    runs = run_table(cfg)
    return Experiment(cfg, tasks, train, runs, hparams_of(runs), spec, progress)


def pretrained_stem(run_dir: str) -> dict[str, Any]:
    """The network parameters of ``run_dir``'s first run at the end of its last task visit, by
    name (``"conv/0/kernel"``), for :func:`continual.latent_replay.start_lower`: the layers
    below the cut are taken from them (the rest of that network, e.g. a 10-class head, is not
    used). One pre-trained stem for every run, as brain-inspired replay pre-trains one."""
    from experiments import pretrained

    pre = pretrained.load(run_dir, KIND)
    params = jax.device_get(pre.state.state.params)
    return {name: np.asarray(leaf)[0] for name, leaf in param_names(params).items()}


KIND = Kind("classifier", "supervised", "supervised presets", ClassifierConfig, PRESETS, build,
            rank_by=("acc_avg", "plasticity_slope", "forgetting_max"))
