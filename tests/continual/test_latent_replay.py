"""Latent replay (continual.network_cut, continual.feature_vae, continual.latent_replay):
network cuts, the VAE's ELBO and samples, the lower-layer policy, and the loop with stored,
generated and progressively generated features (one compilation each, shared by the module)."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from continual.feature_vae import make_feature_vae, make_level_vae
from continual.latent_replay import (GenerativeMemory, distillation, feature_replay_loss,
                                     hold_lower, lower_scale, make_feature_replay,
                                     progressive_periods, replay_fires, replay_distillation,
                                     start_lower)
from continual.optimizers import HParams
from continual.network_cut import cut_levels, cut_network, cut_points
from continual.runner import run_keys
from experiments.config import ConfigError
from experiments.kinds.classifier import PRESETS
from experiments.kinds.classifier import ClassifierConfig as Config
from experiments.registry import build, from_preset
from plasticity.networks import layer_params, make_network, param_names
from tasks.base import Batch
from tasks.schedule import parse

SHAPE = (8, 8, 1)


# --------------------------------------------------------------------------------------------
# cutting a network
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,activation,layer_norm", [
    ("mlp", "relu", False), ("mlp", "rational_shared", True), ("mlp", "crelu", False),
    ("cnn", "rational", True)])
def test_cut_halves_compose_to_the_whole_network_at_every_cut(kind, activation, layer_norm):
    kw = dict(hidden=(16, 12), channels=(4,), activation=activation, layer_norm=layer_norm)
    net = make_network(kind, SHAPE, 10, **kw)
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, *SHAPE))
    out, features = net.apply(params, x)
    stem = 1 if kind == "cnn" else 0
    for k in cut_points(kind, kw["hidden"], kw["channels"]):
        cut = cut_network(kind, SHAPE, 10, k, **kw)
        h = cut.lower(params, x)
        assert h.shape == (5, *cut.feature_shape)
        np.testing.assert_array_equal(cut.upper(params, h), out)
        if k > stem:  # a dense cut stores that layer's features entry
            np.testing.assert_array_equal(h, features[f"hidden/{k - stem - 1}"])


def test_lower_mask_marks_exactly_the_layers_below_the_cut():
    net = make_network("mlp", SHAPE, 10, hidden=(8, 8, 8), layer_norm=True)
    cut = cut_network("mlp", SHAPE, 10, 2, hidden=(8, 8, 8), layer_norm=True)
    params = net.init(jax.random.key(0))
    marked = {layer for layer, leaves in layer_params(cut.lower_mask(params)).items()
              if all(leaves.values())}
    assert marked == {"hidden/0", "hidden/1", "norm/0", "norm/1"}


def test_cut_refuses_networks_and_layers_it_cannot_run_from():
    with pytest.raises(ValueError, match=r"'resmlp' cannot be cut.*mlp, cnn"):
        cut_network("resmlp", SHAPE, 10, 1, hidden=(8,))
    with pytest.raises(ValueError, match=r"cut at layer 1\.\.2, not 3"):
        cut_network("mlp", SHAPE, 10, 3, hidden=(8, 8))
    with pytest.raises(ValueError, match=r"channels=\(4, 4\).*layer 2\.\.3, not 1"):
        cut_network("cnn", SHAPE, 10, 1, hidden=(8,), channels=(4, 4))


# --------------------------------------------------------------------------------------------
# the feature VAE
# --------------------------------------------------------------------------------------------


def test_vae_elbo_matches_a_numpy_computation_on_a_tiny_batch():
    vae = make_feature_vae((3,), num_classes=2, hidden=4, latent=2)
    p = vae.init(jax.random.key(0))
    h = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, 1.0]], np.float32)
    y = np.array([1, 0])
    eps = np.array([[0.1, -0.2], [1.5, 0.4]], np.float32)
    elbo, recon, kl = vae.elbo_terms(p, jnp.asarray(h), jnp.asarray(y), jnp.asarray(eps))

    q = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    enc = relu(h @ q["enc"]["kernel"] + q["enc"]["bias"]) @ q["enc_out"]["kernel"] \
        + q["enc_out"]["bias"]
    m, s = enc[:, :2], enc[:, 2:]
    z = m + np.exp(s / 2) * eps
    dec = relu(z @ q["dec"]["kernel"] + q["dec"]["bias"]) @ q["dec_out"]["kernel"] \
        + q["dec_out"]["bias"]
    want_recon = -0.5 * ((h - dec) ** 2).sum(-1) - 1.5 * math.log(2 * math.pi)
    mu = q["prior_mean"][y]
    want_kl = 0.5 * (np.exp(s) + (m - mu) ** 2 - 1 - s).sum(-1)
    np.testing.assert_allclose(recon, want_recon, rtol=1e-5)
    np.testing.assert_allclose(kl, want_kl, rtol=1e-5)
    np.testing.assert_allclose(elbo, want_recon - want_kl, rtol=1e-5)
    assert (np.asarray(kl) >= 0).all()


def test_generated_features_have_the_layer_shape_and_the_class_asked_for():
    # Four classes of 6-d "features": Gaussian clusters around well-separated centres.
    classes, dim = 4, 6
    centres = 3.0 * jax.random.normal(jax.random.key(0), (classes, dim))
    vae = make_feature_vae((dim,), classes, hidden=32, latent=4)
    tx = optax.adam(3e-3)

    @jax.jit
    def fit(key):
        p = vae.init(key)

        def step(carry, k):
            p, s = carry
            k_y, k_x, k_e = jax.random.split(k, 3)
            y = jax.random.randint(k_y, (64,), 0, classes)
            h = centres[y] + 0.3 * jax.random.normal(k_x, (64, dim))
            g = jax.grad(lambda p: -jnp.mean(vae.elbo(p, h, y, k_e)))(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), jax.random.split(key, 600))
        return p

    params = fit(jax.random.key(1))
    asked = jnp.repeat(jnp.arange(classes), 50)
    gen = vae.generate(params, asked, jax.random.key(2))
    assert gen.shape == (classes * 50, dim)
    # A fixed classifier (nearest true centre) reads the asked class off the samples.
    nearest = jnp.argmin(jnp.sum((gen[:, None] - centres[None]) ** 2, -1), -1)
    # (0.89 measured after 600 steps; chance 0.25)
    assert float(jnp.mean(nearest == asked)) > 0.7


# --------------------------------------------------------------------------------------------
# the lower layers and the distillation loss
# --------------------------------------------------------------------------------------------


def test_lower_layers_learn_in_the_first_task_then_freeze_or_slow_down():
    assert float(lower_scale(jnp.int32(0), "freeze", 0.1)) == 1.0
    assert float(lower_scale(jnp.int32(2), "freeze", 0.1)) == 0.0
    assert float(lower_scale(jnp.int32(1), "slow", 0.25)) == 0.25
    old = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    new = {"a": jnp.array([1.3, 2.7]), "b": jnp.array([4.0])}
    mask = {"a": True, "b": False}
    held = hold_lower(old, new, mask, jnp.float32(0.0))
    np.testing.assert_array_equal(held["a"], old["a"])
    np.testing.assert_array_equal(held["b"], new["b"])
    np.testing.assert_allclose(hold_lower(old, new, mask, jnp.float32(0.5))["a"], [1.15, 2.35])
    np.testing.assert_array_equal(hold_lower(old, new, mask, jnp.float32(1.0))["a"], new["a"])


def test_pretrained_lower_layers_start_from_the_donor_and_stay_put_from_the_first_step():
    assert float(lower_scale(jnp.int32(0), "freeze", 0.1, pretrained=True)) == 0.0
    assert float(lower_scale(jnp.int32(0), "slow", 0.25, pretrained=True)) == 0.25
    hidden = (16, 16)
    net = make_network("mlp", SHAPE, 10, hidden=hidden)
    cut = cut_network("mlp", SHAPE, 10, 1, hidden=hidden)
    # The donor: another network with the same first layer and a 3-class head.
    donor = {k: np.asarray(v) for k, v in param_names(make_network(
        "mlp", SHAPE, 3, hidden=hidden).init(jax.random.key(7))).items()}
    learner = make_feature_replay(net, cut, "adam", num_classes=10, capacity=8, replay_batch=4,
                                  lower_init=donor)
    state = jax.jit(learner.init)(jax.random.key(0), HParams.defaults())
    mine = param_names(state.params)
    for name in ("hidden/0/kernel", "hidden/0/bias"):
        np.testing.assert_array_equal(mine[name], donor[name])
    assert not np.array_equal(mine["hidden/1/kernel"], donor["hidden/1/kernel"])
    assert mine["out/kernel"].shape == (16, 10)
    update = jax.jit(learner.update)
    batch = Batch(jax.random.normal(jax.random.key(1), (8, *SHAPE)), jnp.arange(8) % 2,
                  jnp.ones(10, bool), jnp.ones(8))
    for i in range(3):   # first task (no boundary yet): the pre-trained layer is held anyway
        state, _ = update(state, batch, HParams.defaults(), jax.random.key(10 + i))
    after = param_names(state.params)
    np.testing.assert_array_equal(after["hidden/0/kernel"], donor["hidden/0/kernel"])
    assert not np.array_equal(after["hidden/1/kernel"], mine["hidden/1/kernel"])
    wide = dict(donor, **{"hidden/0/kernel": np.zeros((64, 20), np.float32)})
    with pytest.raises(ValueError, match=r"hidden/0/kernel shape \(64, 20\) there"):
        start_lower(state.params, wide, cut.lower_mask(state.params))


def test_distillation_is_zero_on_matching_logits_and_ignores_masked_classes():
    t = jnp.array([[2.0, -1.0, -1e9]])
    assert abs(float(distillation(t, t, 2.0)[0])) < 1e-6
    s = jnp.array([[0.0, 1.0, -1e9]])
    p, q = jax.nn.softmax(t[0, :2] / 2), jax.nn.softmax(s[0, :2] / 2)
    want = 4.0 * float(jnp.sum(p * (jnp.log(p) - jnp.log(q))))
    np.testing.assert_allclose(float(distillation(s, t, 2.0)[0]), want, rtol=1e-5)
    # A class the targets give 0 (a new class) but the student does not is pushed down.
    student = jnp.array([[2.0, -1.0, 3.0]])
    assert float(distillation(student, t, 2.0)[0]) > 1.0


# --------------------------------------------------------------------------------------------
# in the loop: one compilation per method, driven interval by interval from the host
# --------------------------------------------------------------------------------------------

BASE = Config(dataset="digits", family="split", num_tasks=3, classes_per_task=2,
              setting="class", hidden=(32, 32), steps_per_task=60, log_every=30,
              batch_size=32, seeds=2, eval_examples=64, probe_examples=16,
              learning_rate=(3e-3,), latent_layer=1)
STORED = dataclasses.replace(BASE, replay_capacity=64)
GENERATIVE = dataclasses.replace(BASE, latent_replay="generative", vae_hidden=32,
                                 vae_latent=8)
# Three levels of distinct widths; periods 7, 4, 1 (not divisors of the interval: the counts
# differ from interval to interval).
PROGRESSIVE = dataclasses.replace(GENERATIVE, latent_replay="progressive", hidden=(32, 24, 16),
                                  progressive_periods=(7, 4, 1))
INTERVALS = BASE.num_tasks * BASE.steps_per_task // BASE.log_every


class Driven:
    """A config's loop driven interval by interval (as chunked mode does): the carry and the
    logs after every interval. Inputs are built up front (eager jax.random counts as tracing)."""

    def __init__(self, cfg):
        self.exp = build(cfg)
        self.init = jax.jit(jax.vmap(self.exp.train.init, in_axes=(0, 0, None, None)))
        self.step = jax.jit(jax.vmap(self.exp.train.run_interval,
                                     in_axes=(0, None, 0, None, None)))
        schedule = parse("sequential", cfg.num_tasks, cfg.steps_per_task // cfg.log_every)
        self.entries = [jax.tree.map(lambda a: a[k], schedule) for k in range(INTERVALS)]
        self.keys = run_keys([0, 1])

    def run(self, data=None, params=None):
        data = self.exp.tasks.data if data is None else data
        params = self.exp.tasks.params if params is None else params
        carry, _ = self.init(self.keys, self.exp.hparams, data, params)
        carries, logs = [], []
        for entry in self.entries:
            carry, log = self.step(carry, entry, self.exp.hparams, data, params)
            carries.append(carry)
            logs.append(log)
        return carries, jax.device_get(logs)


@pytest.fixture(scope="module")
def stored():
    d = Driven(STORED)
    return d, *d.run()


@pytest.fixture(scope="module")
def generative():
    d = Driven(GENERATIVE)
    return d, *d.run()


@pytest.fixture(scope="module")
def progressive():
    d = Driven(PROGRESSIVE)
    return d, *d.run()


def _lower_upper(carry):
    layers = layer_params(carry.state.params)
    return layers["hidden/0"], {k: v for k, v in layers.items() if k != "hidden/0"}


@pytest.mark.parametrize("which", ["stored", "generative",
                                   pytest.param("progressive", marks=pytest.mark.slow)])
def test_frozen_layers_below_the_replay_level_stay_untouched_after_the_first_task(
        which, request):
    _, carries, _ = request.getfixturevalue(which)
    per_task = STORED.steps_per_task // STORED.log_every
    end_first = carries[per_task - 1]
    first_lower, first_upper = _lower_upper(end_first)
    for carry in carries[per_task:]:
        lower, _ = _lower_upper(carry)
        for name in lower:
            np.testing.assert_array_equal(lower[name], first_lower[name])
    _, last_upper = _lower_upper(carries[-1])
    assert not np.array_equal(last_upper["out"]["kernel"], first_upper["out"]["kernel"])
    # ... while the first task itself trained them.
    lower0, _ = _lower_upper(carries[0])
    assert not np.array_equal(lower0["kernel"], first_lower["kernel"])


def test_stored_features_fill_the_reservoir_with_the_layer_shape(stored):
    _, carries, _ = stored
    buf = carries[-1].state.extras.buffer
    assert buf.items["h"].shape == (2, STORED.replay_capacity, 32)
    assert (np.asarray(buf.size) == STORED.replay_capacity).all()
    # Every task's classes are in the reservoir at the end (a uniform sample of the stream).
    assert set(np.asarray(buf.items["y"]).ravel()) == set(range(2 * STORED.num_tasks))


def test_latent_replay_keeps_old_classes_that_fine_tuning_forgets(stored, generative):
    # After the last task, accuracy on the first task: without replay it is ~0 in
    # class-incremental learning (the head only predicts the newest classes).
    for _, _, logs in (stored, generative):
        first_task_final = np.asarray(logs[-1]["eval_acc"])[:, 0]
        assert first_task_final.min() > 0.3, first_task_final
        assert all(np.isfinite(np.asarray(lg["train"]["train_loss"])).all() for lg in logs)


def test_generative_replay_snapshots_the_classifier_and_generator_at_each_boundary(generative):
    _, carries, logs = generative
    per_task = GENERATIVE.steps_per_task // GENERATIVE.log_every
    before, after = carries[per_task - 1], carries[per_task]
    mem = after.state.extras
    # The frozen copies are the models at the end of task 0 (the boundary ran before task 1).
    for a, b in zip(jax.tree.leaves(mem.prev_params), jax.tree.leaves(before.state.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(mem.prev_vae), jax.tree.leaves(before.state.extras.vae)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(mem.prev_seen)[0], np.arange(10) < 2)
    assert (np.asarray(mem.tasks_done) == 1).all()
    assert np.isfinite(logs[-1]["train"]["generator_loss"]).all()


@pytest.mark.parametrize("which", ["stored", "generative",
                                   pytest.param("progressive", marks=pytest.mark.slow)])
def test_one_compilation_serves_a_new_stream_of_the_same_shape(which, request):
    driven, _, logs = request.getfixturevalue(which)
    # The same classes in the reverse task order: a new stream of the same shape.
    params = jax.device_put(jax.tree.map(lambda a: a[::-1], driven.exp.tasks.params))
    sizes = driven.init._cache_size(), driven.step._cache_size()
    with jax.no_tracing(True):
        _, other_logs = driven.run(params=params)
    assert (driven.init._cache_size(), driven.step._cache_size()) == sizes == (1, 1)
    assert not np.array_equal(other_logs[-1]["eval_acc"], logs[-1]["eval_acc"])


# --------------------------------------------------------------------------------------------
# task-incremental: every replayed row is scored on its own task's classes
# --------------------------------------------------------------------------------------------

# 5 tasks × 2 classes of 10: task t holds classes 2t, 2t + 1. The current task is task 2.
TASK_OF = np.arange(10) // 2
TASK_MASKS = TASK_OF[None, :] == np.arange(5)[:, None]          # bool [task, class]
# Moves of the output bias (logit j moves by delta_j): of the classes of no row's task (6..9),
# of the current task's (4, 5), of the past tasks' (0..3); never uniform within a task (a
# softmax does not see a shift common to all its classes).
UNSEEN = np.zeros(10, np.float32)
UNSEEN[6:] = [40.0, -30.0, 25.0, 60.0]
CURRENT = np.zeros(10, np.float32)
CURRENT[4:6] = [5.0, -7.0]
PAST = np.zeros(10, np.float32)
PAST[:4] = [3.0, -2.0, -4.0, 1.5]


def _shift_out_bias(params, delta):
    def shift(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        return leaf + delta if names[:2] == ["out", "bias"] else leaf
    return jax.tree_util.tree_map_with_path(shift, params)


def _np_masked_ce(logits, y, masks):
    """Cross-entropy per row over the row's masked classes only (float64)."""
    out = []
    for row, label, m in zip(np.asarray(logits, np.float64), np.asarray(y), np.asarray(masks)):
        z = row[m]
        out.append(np.log(np.exp(z - z.max()).sum()) + z.max() - row[label])
    return np.array(out)


def _np_kd(student, targets, masks, t=2.0):
    """T² · KL(softmax(targets / T) ‖ softmax(student / T)) per row over the row's classes."""
    out = []
    for s, q, m in zip(np.asarray(student, np.float64), np.asarray(targets, np.float64),
                       np.asarray(masks)):
        lp = q[m] / t - np.log(np.exp(q[m] / t).sum())
        lq = s[m] / t - np.log(np.exp(s[m] / t).sum())
        out.append(t * t * np.sum(np.exp(lp) * (lp - lq)))
    return np.array(out)


def test_task_il_stored_features_are_scored_on_their_own_tasks_classes():
    hidden = (16, 16)
    net = make_network("mlp", SHAPE, 10, hidden=hidden)
    cut = cut_network("mlp", SHAPE, 10, 1, hidden=hidden)
    params = jax.jit(net.init)(jax.random.key(0))
    # 4 current rows of task 2 (one mask for the batch, as the loop's sampler gives it) and 6
    # replayed features of tasks 0 and 1, each with the mask it was stored with.
    x = jax.random.normal(jax.random.key(1), (4, *SHAPE))
    y_old = np.array([0, 1, 2, 3, 0, 2])
    old = {"h": jax.random.normal(jax.random.key(2), (6, *cut.feature_shape)),
           "y": jnp.asarray(y_old), "mask": jnp.asarray(TASK_MASKS[TASK_OF[y_old]])}

    def batch(weight):
        return Batch(x, jnp.array([4, 5, 5, 4]), jnp.asarray(TASK_MASKS[2]), jnp.full((4,), weight))

    def make_loss(setting):
        return jax.jit(lambda p, b: feature_replay_loss(cut, p, b, old, jnp.float32(1), setting)[0])

    loss = make_loss("task")
    whole, upper = jax.jit(lambda p: net.apply(p, x)[0]), jax.jit(cut.upper)

    def want(p):
        cur = _np_masked_ce(whole(p), [4, 5, 5, 4], [TASK_MASKS[2]] * 4)
        rep = _np_masked_ce(upper(p, old["h"]), y_old, TASK_MASKS[TASK_OF[y_old]])
        return np.concatenate([cur, rep]).mean()

    for delta in (0 * PAST, PAST, CURRENT):
        p = _shift_out_bias(params, delta)
        np.testing.assert_allclose(float(loss(p, batch(1.0))), want(p), rtol=1e-5)
    # The replayed rows alone (current rows weighted 0): the current task's and the unseen
    # classes' logits do not move their loss, their own tasks' do.
    base = float(loss(params, batch(0.0)))
    for delta in (UNSEEN, CURRENT, UNSEEN + CURRENT):
        assert float(loss(_shift_out_bias(params, delta), batch(0.0))) == pytest.approx(base,
                                                                                     rel=1e-6)
    assert abs(float(loss(_shift_out_bias(params, PAST), batch(0.0))) - base) > 0.1
    # Class-IL, for contrast: one head, every logit counts.
    class_il = make_loss("class")
    assert abs(float(class_il(_shift_out_bias(params, CURRENT), batch(0.0)))
               - float(class_il(params, batch(0.0)))) > 0.1


def test_task_il_generated_features_distil_over_their_classs_task_only():
    # Generative replay's loss, and progressive replay's at each level (the same function):
    # features of past classes 0..3 generated after two tasks, the current task's 4, 5 seen too.
    hidden = (16, 12)
    net = make_network("mlp", SHAPE, 10, hidden=hidden)
    init = jax.jit(net.init)
    params, prev = init(jax.random.key(0)), init(jax.random.key(1))
    seen = jnp.arange(10) < 6
    mem = GenerativeMemory(vae=(), vae_opt=(), prev_params=prev, prev_vae=(), seen=seen,
                           prev_seen=jnp.arange(10) < 4,
                           class_masks=jnp.asarray(TASK_MASKS[TASK_OF]) & seen[:, None],
                           tasks_done=jnp.int32(2))
    c = np.array([0, 1, 2, 3, 1, 2])
    own = TASK_MASKS[TASK_OF[c]]
    for i, cut in enumerate(cut_levels("mlp", SHAPE, 10, (1, 2), hidden=hidden)):
        h = jax.random.normal(jax.random.key(2 + i), (6, *cut.feature_shape))

        def make_loss(setting, cut=cut, h=h):
            return jax.jit(lambda p, m: replay_distillation(cut, p, m, jnp.asarray(c), h, seen,
                                                            setting, 2.0))

        loss, upper = make_loss("task"), jax.jit(cut.upper)

        def shifted(delta_student, delta_targets):
            return (_shift_out_bias(params, delta_student),
                    mem._replace(prev_params=_shift_out_bias(prev, delta_targets)))

        for ds, dt in ((0 * PAST, 0 * PAST), (PAST, 0 * PAST), (0 * PAST, PAST)):
            p, m = shifted(ds, dt)
            want = _np_kd(upper(p, h), upper(m.prev_params, h), own).mean()
            np.testing.assert_allclose(float(loss(p, m)), want, rtol=1e-5)
        base = float(loss(params, mem))
        assert base > 0
        # Neither the student's nor the targets' logits outside the row's own task count.
        for ds, dt in ((UNSEEN + CURRENT, 0 * PAST), (CURRENT, -UNSEEN), (0 * PAST, CURRENT)):
            assert float(loss(*shifted(ds, dt))) == pytest.approx(base, rel=1e-6)
        # Class-IL, for contrast: the student's seen classes (4, 5 included) all count.
        class_il = make_loss("class")
        moved = float(class_il(*shifted(CURRENT, 0 * PAST)))
        assert abs(moved - float(class_il(params, mem))) > 0.1


def _assert_rows_keep_their_own_tasks_classes(driven, carry):
    """The masks replay will use (see the two tests above), as the loop recorded them: each
    stored feature's, and each seen class's for its generated features — the classes of the
    task the row or class came from (the stream's class_mask), whatever the current task."""
    task_masks = np.asarray(driven.exp.tasks.params.class_mask)       # [task, class]
    own = task_masks[np.argmax(task_masks, 0)]                         # [class, class]
    classes = np.arange(task_masks.shape[0] * 2)                       # 2 classes per task
    mem = carry.state.extras
    if driven.exp.config.latent_replay == "stored":
        y = np.asarray(mem.buffer.items["y"])
        np.testing.assert_array_equal(np.asarray(mem.buffer.items["mask"]), own[y])
        assert set(y.ravel()) == set(classes)
    else:
        recorded = np.asarray(mem.class_masks)[:, classes]           # [run, class, class]
        np.testing.assert_array_equal(recorded, np.broadcast_to(own[classes], recorded.shape))


@pytest.mark.parametrize("which", ["stored", "generative", "progressive"])
def test_replay_memory_records_each_rows_own_tasks_classes(which, request):
    # The class-IL runs (the module's fixtures) record the same masks as task-IL ones would.
    driven, carries, _ = request.getfixturevalue(which)
    _assert_rows_keep_their_own_tasks_classes(driven, carries[-1])


TASK_IL = dict(setting="task", steps_per_task=8, log_every=4)   # 3 tasks × 2 intervals


# A fresh compilation each (the setting is static): 5-8 s apiece on 2 cores, so generative
# and progressive replay's task-IL runs are slow tests; their task-IL losses are checked above.
@pytest.mark.parametrize("cfg", [
    dataclasses.replace(STORED, **TASK_IL),
    pytest.param(dataclasses.replace(GENERATIVE, **TASK_IL), marks=pytest.mark.slow),
    pytest.param(dataclasses.replace(PROGRESSIVE, **TASK_IL, hidden=(32, 16),
                                     progressive_periods=(2, 1)), marks=pytest.mark.slow)],
    ids=["stored", "generative", "progressive"])
def test_task_il_latent_replay_compiles_once_and_gives_finite_accuracies(cfg):
    driven = Driven(cfg)
    carries, logs = driven.run()
    # A second stream of the same shape (the task order reversed) runs without retracing.
    params = jax.device_put(jax.tree.map(lambda a: a[::-1], driven.exp.tasks.params))
    with jax.no_tracing(True):
        driven.run(params=params)
    assert (driven.init._cache_size(), driven.step._cache_size()) == (1, 1)
    acc = np.array([lg["eval_acc"] for lg in logs])     # [interval, run, task]
    assert acc.shape == (INTERVALS, 2, cfg.num_tasks)
    assert np.isfinite(acc).all() and ((acc >= 0) & (acc <= 1)).all()
    assert all(np.isfinite(np.asarray(lg["train"]["train_loss"])).all() for lg in logs)
    assert acc[-1, :, 0].min() > 0.5, acc[-1]     # 2 classes with task identity: above chance
    _assert_rows_keep_their_own_tasks_classes(driven, carries[-1])


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,words", [
    (dict(network="resmlp"), "network 'resmlp' cannot run from a hidden layer"),
    (dict(latent_layer=3), "latent_layer must be in 1..2"),
    (dict(network="cnn", channels=(4, 4), latent_layer=1), "latent_layer must be in 2..4"),
    (dict(reset="cbp"), "reset=cbp"),
    (dict(boundaries="hidden"), "boundaries announced"),
    (dict(replay_capacity=0), "latent_replay=stored needs replay_capacity"),
    (dict(latent_replay="generative"), "generative stores nothing"),
    (dict(latent_layer=0, latent_replay="generative"), "needs latent_layer >= 1"),
    (dict(replay_fraction=0.0), "rounds to 0"),
    (dict(latent_lower="melt"), "latent_lower: unknown value 'melt'; valid: freeze, slow"),
    (dict(latent_slow=2.0), "latent_slow must be in [0, 1]"),
])
def test_bad_latent_replay_configs_name_the_field(overrides, words):
    cfg = dataclasses.replace(STORED, **overrides)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert words in str(err.value)


@pytest.mark.parametrize("preset", ["split-digits-latent", "split-digits-bir",
                                    "split-digits-progressive", "split-mnist-bir",
                                    "split-mnist-progressive"])
def test_latent_replay_presets_validate(preset):
    assert preset in PRESETS
    cfg = from_preset(preset)
    assert cfg.latent_layer == 1 and cfg.setting == "class" and cfg.family == "split"


@pytest.mark.slow
def test_stem_from_a_pretraining_run_starts_the_conv_stem_there(tmp_path):
    from experiments import cli, pretrained
    from experiments.kinds.classifier import KIND

    pre = tmp_path / "stem"
    common = ["--network", "cnn", "--channels", "4", "--hidden", "16", "--seeds", "1",
              "--batch-size", "16", "--eval-examples", "32", "--probe-examples", "8"]
    assert cli.main(["run", "--dataset", "synthetic", "--family", "split", "--num-tasks", "1",
                     "--classes-per-task", "10", "--steps-per-task", "20", "--log-every", "10",
                     "--snapshots", "--out", str(pre), *common]) == 0
    snapshot = param_names(jax.device_get(pretrained.load(pre, KIND).state.state.params))
    cfg = Config(dataset="digits", family="split", num_tasks=2, classes_per_task=2,
                 network="cnn", channels=(4,), hidden=(16,), latent_layer=1,
                 replay_capacity=32, steps_per_task=10, log_every=10, batch_size=16,
                 eval_examples=32, probe_examples=8, seeds=1, stem_from=str(pre))
    exp = build(cfg)
    carry, _ = jax.jit(exp.train.init)(run_keys([0])[0], jax.tree.map(lambda a: a[0],
                                       exp.hparams), exp.tasks.data, exp.tasks.params)
    mine = param_names(carry.state.params)
    for name in ("conv/0/kernel", "conv/0/bias"):
        np.testing.assert_array_equal(mine[name], np.asarray(snapshot[name])[0])
    with pytest.raises(ConfigError, match=r"conv/0/(kernel|bias) shape"):
        build(dataclasses.replace(cfg, channels=(8,)))
    plain = tmp_path / "plain"
    assert cli.main(["run", "--dataset", "synthetic", "--steps-per-task", "10", "--log-every",
                     "10", "--num-tasks", "1", "--out", str(plain), *common]) == 0
    with pytest.raises(ConfigError, match="--snapshots"):
        build(dataclasses.replace(cfg, stem_from=str(plain)))
    with pytest.raises(ConfigError, match="latent_layer >= 1"):
        dataclasses.replace(cfg, latent_layer=0, replay_capacity=0).validate()


@pytest.mark.parametrize("preset", ["split-cifar100-bir", "split-cifar100-progressive"])
def test_cifar_latent_presets_replay_after_the_conv_stem(preset):
    cfg = from_preset(preset)
    assert cfg.network == "cnn" and cfg.latent_layer == len(cfg.channels) == 2
    assert (cfg.num_tasks, cfg.classes_per_task, cfg.setting) == (10, 10, "class")
    assert from_preset(preset, num_tasks=20, classes_per_task=5).num_tasks == 20
    stem = from_preset("cifar10-stem")   # pre-trains exactly the stem this preset cuts behind
    assert (stem.dataset, stem.num_tasks, stem.classes_per_task) == ("cifar10", 1, 10)
    assert (stem.network, stem.channels, stem.latent_layer) == (cfg.network, cfg.channels, 0)


# --------------------------------------------------------------------------------------------
# progressive latent replay: the schedule and the per-level generator
# --------------------------------------------------------------------------------------------


def test_default_periods_are_base_to_the_depth_from_the_output():
    # MLP with 3 hidden layers: cut points 1..3, the top one (3) just below the output.
    assert progressive_periods((1, 2, 3), 3, 2) == (4, 2, 1)
    assert progressive_periods((2, 3), 3, 3) == (3, 1)
    assert progressive_periods((1, 3), 3, 2) == (4, 1)   # depth counts layers, not levels
    cfg = from_preset("split-digits-progressive")
    assert (cfg.replay_levels, cfg.replay_periods) == ((1, 2), (2, 1))
    big = dataclasses.replace(PROGRESSIVE, progressive_periods=(), progressive_base=3)
    assert (big.replay_levels, big.replay_periods) == ((1, 2, 3), (9, 3, 1))


def test_schedule_fires_each_level_at_exactly_its_period():
    fires = np.array([np.asarray(replay_fires(jnp.int32(t), (7, 4, 1))) for t in range(30)])
    # Hand count over steps 0..29: multiples of 7 (0, 7, 14, 21, 28), of 4 (0, 4, ..., 28).
    assert fires.sum(0).tolist() == [5, 8, 30]
    assert np.flatnonzero(fires[:, 0]).tolist() == [0, 7, 14, 21, 28]


def test_progressive_replay_keeps_some_of_the_old_tasks(progressive):
    # This tiny config (3 levels of width 32-24-16, a 32-wide VAE, 60 steps per task, the
    # lowest level every 7 steps) is a hard case: the middle layers drift between the lowest
    # level's replays. Measured final accuracy on tasks 0 and 1, per run: [0.00, 0.53] and
    # [0.16, 0.34] (fine-tuning: 0, 0). Split digits with the preset's MLP 128-128:
    # bench/latent_replay.py.
    _, _, logs = progressive
    final = np.asarray(logs[-1]["eval_acc"])          # [run, task]
    assert final[:, :2].mean(1).min() > 0.1, final
    assert all(np.isfinite(np.asarray(lg["train"]["train_loss"])).all() for lg in logs)


def test_progressive_replay_events_per_level_match_a_hand_count(progressive):
    _, _, logs = progressive
    counts = np.array([[np.asarray(lg["train"][f"replay_events_level{k}"]) * PROGRESSIVE.log_every
                        for k in (1, 2, 3)] for lg in logs])        # [interval, level, run]
    counts = np.rint(counts).astype(int)
    assert (counts == counts[..., :1]).all()                      # the same in every run
    # Task 0 (steps 0..59) has nothing to replay; then intervals of 30 steps from step 60:
    # period 7: 63 70 77 84 | 91 98 105 112 119 | 126 133 140 147 | 154 161 168 175
    # period 4: 60..88 (8) | 92..116 (7) | 120..148 (8) | 152..176 (7); period 1: 30 each.
    want = [[0, 0, 0], [0, 0, 0], [4, 8, 30], [5, 7, 30], [4, 8, 30], [4, 7, 30]]
    assert counts[..., 0].tolist() == want


def test_each_level_generates_features_of_its_own_shape(progressive):
    driven, carries, _ = progressive
    cuts = cut_levels("mlp", SHAPE, 10, (1, 2, 3), hidden=PROGRESSIVE.hidden)
    assert [c.feature_shape for c in cuts] == [(32,), (24,), (16,)]
    vae = make_level_vae([c.feature_shape for c in cuts], 10, hidden=PROGRESSIVE.vae_hidden,
                         latent=PROGRESSIVE.vae_latent)
    vp = jax.tree.map(lambda a: a[0], carries[-1].state.extras.vae)   # the trained one, run 0
    y = jnp.arange(5)
    for i, c in enumerate(cuts):
        assert vae.generate(vp, y, jax.random.key(0), i).shape == (5, *c.feature_shape)
    # One full pass gives every level from the same z: its top level is the top-level sample.
    hs = vae.generate_all(vp, y, jax.random.key(0))
    assert [h.shape for h in hs] == [(5, 32), (5, 24), (5, 16)]
    np.testing.assert_allclose(hs[2], vae.generate(vp, y, jax.random.key(0), 2), rtol=1e-6)
    # Level features chain: between() from the lowest level is the network's own forward pass.
    params = jax.tree.map(lambda a: a[0], carries[-1].state.params)
    x = jnp.ones((3, *SHAPE))
    h1 = cuts[0].lower(params, x)
    np.testing.assert_allclose(cuts[0].between(params, h1, 1, 3), cuts[2].lower(params, x),
                               rtol=1e-6)


def test_level_vae_elbo_sums_the_levels_reconstructions():
    vae = make_level_vae([(3,), (2,)], num_classes=2, hidden=4, latent=2)
    p = vae.init(jax.random.key(0))
    hs = (jnp.array([[0.5, -1.0, 2.0]]), jnp.array([[0.3, 0.1]]))
    eps = jnp.array([[0.1, -0.2]])
    elbo, recon, kl = jax.jit(vae.elbo_terms)(p, hs, jnp.array([1]), eps)
    q = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    lin = lambda layer, v: v @ layer["kernel"] + layer["bias"]  # noqa: E731
    h0 = np.asarray(hs[0], np.float64)
    enc = lin(q["enc_out"], relu(lin(q["enc"], h0)))
    z = enc[:, :2] + np.exp(enc[:, 2:] / 2) * np.asarray(eps)
    top = lin(q["dec_out"][1], relu(lin(q["dec"], z)))   # level 1 (top) from z
    low = lin(q["dec_out"][0], relu(top))                # level 0 from level 1 (2 -> 3)
    want = (-0.5 * ((np.asarray(hs[1]) - top) ** 2).sum() - math.log(2 * math.pi)
            - 0.5 * ((h0 - low) ** 2).sum() - 1.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(recon, [want], rtol=1e-5)
    np.testing.assert_allclose(elbo, recon - kl, rtol=1e-6)


@pytest.mark.parametrize("overrides,words", [
    (dict(progressive_levels=(2, 3)), "lowest of progressive_levels (2, 3) must be latent_layer"),
    (dict(progressive_levels=(1, 3, 2)), "strictly increasing cut points in 1..3"),
    (dict(progressive_levels=(1, 4)), "strictly increasing cut points in 1..3"),
    (dict(progressive_levels=(1.5, 2)), "progressive_levels must be integers"),
    (dict(progressive_periods=(4, 2)), "one period per level (1, 2, 3)"),
    (dict(progressive_periods=(1, 2, 4)), "non-increasing toward the output"),
    (dict(progressive_periods=(4, 0, 0)), "must be >= 1"),
    (dict(progressive_base=0), "progressive_base"),
    (dict(replay_capacity=16), "latent_replay=progressive stores nothing"),
    (dict(latent_layer=0), "latent_replay=progressive needs latent_layer >= 1"),
    (dict(latent_replay="generative"), "apply to latent_replay=progressive only"),
])
def test_bad_progressive_configs_name_the_field(overrides, words):
    cfg = dataclasses.replace(PROGRESSIVE, **overrides)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert words in str(err.value)
