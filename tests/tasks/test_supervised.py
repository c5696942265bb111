"""tasks.supervised streams (permuted, reshuffled, split) and tasks.datasets loading.

The streams are built on tiny generated data sets so that every test runs in well under a second.
Expected batches are computed independently in NumPy: a sampled image is matched to the
training image it came from (nearest neighbour in the normalised training set), then the task's
transformation is applied by hand.
"""
from __future__ import annotations

import functools
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.classifier import make_classifier
from continual.optimizers import HParams
from plasticity.networks import Network
from tasks import datasets
from tasks.base import Batch, task_slice
from tasks.datasets import DATASETS, digits, load_dataset, synthetic
from tasks.supervised import FAMILIES, make_stream

B = 16


@pytest.fixture(scope="module")
def rgb():
    """Three channels, so that a pixel permutation must move the channels of a pixel together."""
    return synthetic(num_classes=10, shape=(4, 4, 3), n_train=96, n_test=48, seed=1)


@pytest.fixture(scope="module")
def grey():
    return synthetic(num_classes=10, shape=(4, 4, 1), n_train=200, n_test=60, seed=2)


def _normalised(ds, x):
    return (x.astype(np.float64) / ds.scale - ds.mean) / ds.std


def _source_rows(ds, x_batch):
    """Index of the training image each (untransformed) sampled image is, by nearest neighbour."""
    train = _normalised(ds, ds.x_train).reshape(len(ds.x_train), -1)
    flat = np.asarray(x_batch, np.float64).reshape(len(x_batch), -1)
    dist = ((flat[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    rows = dist.argmin(1)
    assert np.all(dist[np.arange(len(rows)), rows] < 1e-8), "sampled image is no training image"
    return rows


# One small compiled program per stream function instead of many eager ops (faster on a busy CPU).
@functools.lru_cache(maxsize=None)
def _jit_sample(sample):
    return jax.jit(lambda data, params, t, key: sample(data, task_slice(params, t), key, B))


@functools.lru_cache(maxsize=None)
def _jit_eval(eval_batch):
    return jax.jit(lambda data, params, t: eval_batch(data, task_slice(params, t)))


def _sample(stream, t, key):
    return jax.device_get(_jit_sample(stream.sample)(stream.data, stream.params, t, key))


def _eval(stream, t):
    return jax.device_get(_jit_eval(stream.eval_batch)(stream.data, stream.params, t))


def _is_permutation(row):
    return np.array_equal(np.sort(np.asarray(row)), np.arange(len(row)))


# --------------------------------------------------------------------------------------------
# permuted
# --------------------------------------------------------------------------------------------


def test_permuted_task0_is_identity_and_other_tasks_are_true_permutations(rgb):
    stream = make_stream(rgb, "permuted", 4, eval_examples=16, probe_examples=8, task_seed=3)
    perm = np.asarray(stream.params.perm)
    pixels = 4 * 4
    assert perm.shape == (4, pixels)
    np.testing.assert_array_equal(perm[0], np.arange(pixels))
    for t in range(1, 4):
        assert _is_permutation(perm[t])
        assert not np.array_equal(perm[t], np.arange(pixels))
    # Distinct tasks get distinct permutations.
    assert len({tuple(p) for p in perm}) == 4
    # Labels are untouched and every class is present.
    np.testing.assert_array_equal(np.asarray(stream.params.label_map),
                                  np.tile(np.arange(10), (4, 1)))
    assert np.asarray(stream.params.class_mask).all()


def test_permuted_sample_equals_manually_permuted_normalised_images(rgb):
    stream = make_stream(rgb, "permuted", 3, eval_examples=16, probe_examples=8, task_seed=5)
    key = jax.random.key(7)
    b0 = _sample(stream, 0, key)
    rows = _source_rows(rgb, b0.x)
    expected0 = _normalised(rgb, rgb.x_train[rows])
    np.testing.assert_allclose(b0.x, expected0, atol=1e-5)
    np.testing.assert_array_equal(b0.y, rgb.y_train[rows])
    assert b0.x.dtype == np.float32 and b0.y.dtype == np.int32
    np.testing.assert_array_equal(b0.weight, np.ones(B, np.float32))
    for t in (1, 2):
        bt = _sample(stream, t, key)  # same key -> same examples, only the pixels move
        perm = np.asarray(stream.params.perm[t])
        expected = expected0.reshape(B, 16, 3)[:, perm, :].reshape(B, 4, 4, 3)
        np.testing.assert_allclose(bt.x, expected, atol=1e-5)
        np.testing.assert_array_equal(bt.y, b0.y)


def test_permuted_eval_batch_is_the_permuted_test_split(rgb):
    stream = make_stream(rgb, "permuted", 2, eval_examples=20, probe_examples=8, task_seed=0)
    ev = _eval(stream, 1)
    perm = np.asarray(stream.params.perm[1])
    expected = _normalised(rgb, rgb.x_test[:20]).reshape(20, 16, 3)[:, perm].reshape(20, 4, 4, 3)
    np.testing.assert_allclose(ev.x, expected, atol=1e-5)
    np.testing.assert_array_equal(ev.y, rgb.y_test[:20])
    np.testing.assert_array_equal(ev.weight, np.ones(20))


def test_task_sequence_depends_only_on_task_seed(rgb):
    a = make_stream(rgb, "permuted", 3, eval_examples=8, probe_examples=8, task_seed=11)
    b = make_stream(rgb, "permuted", 3, eval_examples=8, probe_examples=8, task_seed=11)
    c = make_stream(rgb, "permuted", 3, eval_examples=8, probe_examples=8, task_seed=12)
    np.testing.assert_array_equal(a.params.perm, b.params.perm)
    assert not np.array_equal(a.params.perm, c.params.perm)
    # A new sequence has the same shapes (so it reuses the compiled loop).
    assert jax.tree.map(np.shape, a.params) == jax.tree.map(np.shape, c.params)


# --------------------------------------------------------------------------------------------
# reshuffled
# --------------------------------------------------------------------------------------------


def test_reshuffled_label_maps_are_permutations_with_identity_first(grey):
    stream = make_stream(grey, "reshuffled", 4, eval_examples=16, probe_examples=8, task_seed=1)
    label_map = np.asarray(stream.params.label_map)
    assert label_map.shape == (4, 10)
    np.testing.assert_array_equal(label_map[0], np.arange(10))
    for t in range(1, 4):
        assert _is_permutation(label_map[t])
        assert not np.array_equal(label_map[t], np.arange(10))
    # Pixels stay where they are.
    np.testing.assert_array_equal(np.asarray(stream.params.perm), np.tile(np.arange(16), (4, 1)))


def test_reshuffled_keeps_inputs_and_maps_labels(grey):
    stream = make_stream(grey, "reshuffled", 3, eval_examples=16, probe_examples=8, task_seed=4)
    key = jax.random.key(3)
    b0 = _sample(stream, 0, key)
    rows = _source_rows(grey, b0.x)
    np.testing.assert_array_equal(b0.y, grey.y_train[rows])
    e0 = _eval(stream, 0)
    for t in (1, 2):
        label_map = np.asarray(stream.params.label_map[t])
        bt = _sample(stream, t, key)
        np.testing.assert_array_equal(bt.x, b0.x)
        np.testing.assert_array_equal(bt.y, label_map[grey.y_train[rows]])
        et = _eval(stream, t)
        np.testing.assert_array_equal(et.x, e0.x)
        np.testing.assert_array_equal(et.y, label_map[grey.y_test[:16]])


@pytest.mark.parametrize("family", ["permuted", "reshuffled"])
def test_rehearsal_examples_are_seen_as_in_their_own_task(grey, family):
    """``examples(idx, task_ids)``: row i is training example idx[i] transformed by task
    task_ids[i] (its own pixel permutation and label map), as ``sample`` would show it."""
    stream = make_stream(grey, family, 3, eval_examples=8, probe_examples=8, task_seed=2)
    idx = np.array([0, 5, 7, 5, 11, 3], np.int32)
    task_ids = np.array([0, 1, 2, 2, 1, 0], np.int32)
    weight = np.linspace(0.5, 1.0, 6).astype(np.float32)
    b = jax.device_get(jax.jit(stream.examples)(stream.data, stream.params, idx, task_ids,
                                                weight))
    perm = np.asarray(stream.params.perm)
    label_map = np.asarray(stream.params.label_map)
    x = _normalised(grey, grey.x_train[idx]).reshape(6, 16, 1)
    for i, (j, t) in enumerate(zip(idx, task_ids)):
        np.testing.assert_allclose(b.x[i], x[i][perm[t]].reshape(4, 4, 1), atol=1e-5)
        assert b.y[i] == label_map[t][grey.y_train[j]]
    np.testing.assert_array_equal(b.weight, weight)
    assert b.class_mask.shape == (6, 10)


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_stream(grey):
    # eval_examples larger than the smallest class group forces padding.
    return make_stream(grey, "split", 5, classes_per_task=2, eval_examples=14, probe_examples=8)


def test_split_class_groups_are_disjoint_and_cover_the_classes(split_stream):
    mask = np.asarray(split_stream.params.class_mask)
    assert mask.shape == (5, 10) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), np.full(5, 2))
    np.testing.assert_array_equal(mask.sum(0), np.ones(10))  # disjoint, and every class used
    for t in range(5):
        for s in range(t + 1, 5):
            assert not (mask[t] & mask[s]).any()


def test_split_sampled_and_eval_labels_belong_to_the_task_group(split_stream, grey):
    mask = np.asarray(split_stream.params.class_mask)
    for t in range(5):
        group = np.flatnonzero(mask[t])
        for seed in range(3):
            b = _sample(split_stream, t, jax.random.key(seed))
            assert np.isin(b.y, group).all(), (t, b.y, group)
            np.testing.assert_array_equal(b.class_mask, mask[t])
            _source_rows(grey, b.x)  # real training images, not transformed
        ev = _eval(split_stream, t)
        assert np.isin(ev.y, group).all()  # padding rows too (they repeat real ones)
        np.testing.assert_array_equal(ev.class_mask, mask[t])
        probe = jax.device_get(_jit_eval(split_stream.probe_batch)(split_stream.data,
                                                                   split_stream.params, t))
        assert np.isin(probe.y, group).all()


def test_split_eval_padding_has_weight_zero(split_stream, grey):
    weight = np.asarray(split_stream.params.test_weight)
    index = np.asarray(split_stream.params.test_index)
    width = weight.shape[1]
    assert width == 14
    padded_somewhere = False
    for t in range(5):
        group = np.flatnonzero(np.asarray(split_stream.params.class_mask[t]))
        members = np.flatnonzero(np.isin(grey.y_test, group))
        real = min(len(members), width)
        np.testing.assert_array_equal(weight[t], (np.arange(width) < real).astype(np.float32))
        # The weighted entries are the task's first test examples, each once.
        np.testing.assert_array_equal(index[t, :real], members[:real])
        padded_somewhere |= real < width
        np.testing.assert_array_equal(_eval(split_stream, t).weight, weight[t])
    assert padded_somewhere, "fixture should exercise padding"


def test_split_padding_rows_do_not_count_in_evaluation(grey):
    """With padding weight 0, a classifier's eval accuracy is over the real rows only."""
    stream = make_stream(grey, "split", 5, classes_per_task=2, eval_examples=1000,
                         probe_examples=8)
    t = int(np.argmin(np.asarray(stream.params.test_weight).sum(1)))
    ev = stream.eval_batch(stream.data, task_slice(stream.params, t))
    real = np.asarray(ev.weight) > 0
    assert (~real).any()
    label = int(np.asarray(ev.y)[real][0])
    # A "network" that always predicts `label`.
    net = Network(init=lambda key: {"b": jnp.zeros(10)},
                  apply=lambda p, x: (jnp.zeros((x.shape[0], 10)).at[:, label].set(1.0) + p["b"],
                                      {}))
    learner = make_classifier(net, "sgd")
    state = learner.init(jax.random.key(0), HParams.defaults(learning_rate=0.1))
    acc = float(learner.evaluate(state, ev)["acc"])
    expected = np.mean(np.asarray(ev.y)[real] == label)
    assert acc == pytest.approx(expected)
    # The check is sensitive: counting the padding rows would give a different accuracy.
    assert np.mean(np.asarray(ev.y) == label) != pytest.approx(expected)


def test_class_incremental_and_task_incremental_differ_only_by_class_mask(split_stream, grey):
    """``class``: argmax over all classes; ``task``: logits outside the task's classes are masked
    in evaluation and get no gradient in training."""
    t = 2
    ev = split_stream.eval_batch(split_stream.data, task_slice(split_stream.params, t))
    group = np.flatnonzero(np.asarray(ev.class_mask))
    outside = int(np.setdiff1d(np.arange(10), group)[0])
    # Logits are a learnable bias; the out-of-task class starts far ahead.
    bias0 = jnp.zeros(10).at[outside].set(5.0).at[int(group[0])].set(1.0)
    net = Network(init=lambda key: {"b": bias0},
                  apply=lambda p, x: (jnp.zeros((x.shape[0], 10)) + p["b"], {}))
    hp = HParams.defaults(learning_rate=0.5)
    y = np.asarray(ev.y)
    for setting, predicted in (("class", outside), ("task", int(group[0]))):
        learner = make_classifier(net, "sgd", setting=setting)
        state = learner.init(jax.random.key(0), hp)
        acc = float(learner.evaluate(state, ev)["acc"])
        assert acc == pytest.approx(np.mean(y == predicted)), setting
        new_state, info = learner.update(state, ev, hp, jax.random.key(1))
        changed = np.asarray(new_state.params["b"]) != np.asarray(bias0)
        if setting == "task":
            assert not changed[~np.asarray(ev.class_mask)].any()
            assert changed[group].any()
        else:
            assert changed[outside]
    # Permuted and reshuffled tasks use every class, so the two settings coincide there.
    for family in ("permuted", "reshuffled"):
        s = make_stream(grey, family, 2, eval_examples=8, probe_examples=8)
        assert np.asarray(s.params.class_mask).all()


def test_every_family_has_equal_shapes_across_tasks(grey):
    for family in FAMILIES:
        s = make_stream(grey, family, 3, classes_per_task=3, eval_examples=10, probe_examples=6)
        leaves = jax.tree.leaves(s.params)
        assert all(leaf.shape[0] == 3 for leaf in leaves), family
        assert s.num_tasks == 3 and s.num_classes == 10 and s.input_shape == (4, 4, 1)
        b = s.sample(s.data, task_slice(s.params, 1), jax.random.key(0), B)
        assert isinstance(b, Batch)
        assert b.x.shape == (B, 4, 4, 1) and b.y.shape == (B,) and b.class_mask.shape == (10,)
        assert np.asarray(s.probe_batch(s.data, task_slice(s.params, 0)).x).shape == (6, 4, 4, 1)


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------


def test_zero_tasks_raises_naming_num_tasks(grey):
    with pytest.raises(ValueError, match=r"num_tasks must be >= 1, got 0"):
        make_stream(grey, "permuted", 0)


def test_too_many_classes_for_split_raises_naming_both_fields(grey):
    with pytest.raises(ValueError) as err:
        make_stream(grey, "split", 4, classes_per_task=3)
    msg = str(err.value)
    assert "classes_per_task=3" in msg and "num_tasks=4" in msg
    assert "12" in msg and "10" in msg


def test_zero_classes_per_task_raises_naming_the_field(grey):
    with pytest.raises(ValueError, match=r"classes_per_task must be >= 1, got 0"):
        make_stream(grey, "split", 2, classes_per_task=0)


def test_unknown_family_raises_listing_valid_families(grey):
    with pytest.raises(ValueError) as err:
        make_stream(grey, "rotated", 2)
    msg = str(err.value)
    assert "'rotated'" in msg
    for family in FAMILIES:
        assert family in msg


def test_nonpositive_eval_or_probe_examples_raise_naming_the_fields(grey):
    with pytest.raises(ValueError, match="eval_examples"):
        make_stream(grey, "permuted", 2, eval_examples=0)
    with pytest.raises(ValueError, match="probe_examples"):
        make_stream(grey, "permuted", 2, probe_examples=0)


# --------------------------------------------------------------------------------------------
# tasks.datasets
# --------------------------------------------------------------------------------------------


def test_digits_loads_offline_with_expected_shapes_and_dtypes(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("digits must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.image_shape == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(0.2 * 1797)
    assert len(ds.y_train) == len(ds.x_train) and len(ds.y_test) == len(ds.x_test)
    assert ds.x_train.max() <= 16 and ds.scale == 16.0
    assert set(np.unique(ds.y_train)) == set(range(10))
    # Normalisation statistics are those of the training split.
    z = (ds.x_train / ds.scale - ds.mean) / ds.std
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1.0) < 1e-6
    # The split is fixed: loading twice gives the same arrays.
    np.testing.assert_array_equal(digits().y_test, ds.y_test)


def test_synthetic_dataset_shapes_and_determinism():
    a = synthetic(num_classes=4, shape=(3, 5, 2), n_train=20, n_test=7, seed=9)
    b = synthetic(num_classes=4, shape=(3, 5, 2), n_train=20, n_test=7, seed=9)
    assert a.x_train.shape == (20, 3, 5, 2) and a.x_test.shape == (7, 3, 5, 2)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int32
    assert a.y_train.max() < 4
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    msg = str(err.value)
    assert "'imagenet'" in msg
    for name in DATASETS:
        assert name in msg
    assert datasets.DATASETS == DATASETS
