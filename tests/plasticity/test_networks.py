"""plasticity.networks and plasticity.activations: ``(output, features)``, layer names, widths."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity.activations import ACTIVATIONS, get_activation
from plasticity.networks import NETWORKS, layer_params, make_network

SHAPE = (8, 8, 1)
N = 3
KINDS = ("mlp", "cnn")  # the architectures these tests describe (NETWORKS may hold more)


def _x(shape=SHAPE, n=N):
    return jax.random.normal(jax.random.key(0), (n, *shape))


def _apply(kind, shape=SHAPE, **kw):
    """Shapes and dtypes only (``jax.eval_shape``): nothing is compiled or run, so it is fast."""
    net = make_network(kind, shape, 5, **kw)
    params = jax.eval_shape(net.init, jax.random.key(1))
    out, features = jax.eval_shape(net.apply, params, jax.ShapeDtypeStruct((N, *shape),
                                                                           jnp.float32))
    return params, out, features


def _param_count(params):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def test_mlp_returns_logits_and_per_hidden_layer_features():
    params, out, features = _apply("mlp", hidden=(7, 6))
    assert out.shape == (N, 5) and out.dtype == jnp.float32
    assert set(features) == {"hidden/0", "hidden/1"}
    assert features["hidden/0"].shape == (N, 7)
    assert features["hidden/1"].shape == (N, 6)
    layers = layer_params(params)
    assert set(layers) == {"hidden/0", "hidden/1", "out"}
    assert layers["hidden/0"]["kernel"].shape == (64, 7)  # input flattened
    assert layers["out"]["kernel"].shape == (6, 5)


def test_cnn_returns_logits_and_conv_and_dense_features():
    params, out, features = _apply("cnn", channels=(3, 4), hidden=(5,))
    assert out.shape == (N, 5)
    assert set(features) == {"conv/0", "conv/1", "hidden/0"}
    assert features["conv/0"].shape == (N, 8, 8, 3)   # before pooling
    assert features["conv/1"].shape == (N, 4, 4, 4)   # after one 2×2 pool
    assert features["hidden/0"].shape == (N, 5)
    layers = layer_params(params)
    assert layers["conv/0"]["kernel"].shape == (3, 3, 1, 3)
    assert layers["hidden/0"]["kernel"].shape == (2 * 2 * 4, 5)  # two pools: 8 -> 4 -> 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer_norm", [False, True])
def test_feature_keys_are_layer_param_names_and_out_has_no_features(kind, layer_norm):
    params, _, features = _apply(kind, channels=(2, 3), hidden=(4, 5), layer_norm=layer_norm)
    layers = layer_params(params)
    assert set(features) <= set(layers)
    assert "out" in layers and "out" not in features
    # Every weight layer except the output has a features entry, named like its parameters.
    weight_layers = {name for name, p in layers.items() if "kernel" in p} - {"out"}
    assert set(features) == weight_layers
    for name, f in features.items():
        assert f.shape[-1] == layers[name]["kernel"].shape[-1], name


@pytest.mark.parametrize("activation", ["crelu", "fourier"])
@pytest.mark.parametrize("kind", KINDS)
def test_concatenating_activations_double_feature_width(kind, activation):
    params, out, features = _apply(kind, channels=(2, 3), hidden=(4, 5), activation=activation)
    _, _, plain = _apply(kind, channels=(2, 3), hidden=(4, 5), activation="relu")
    layers = layer_params(params)
    assert out.shape == (N, 5)
    for name, f in features.items():
        assert f.shape[-1] == 2 * plain[name].shape[-1], name
        assert f.shape[:-1] == plain[name].shape[:-1], name
    # The next layer reads the doubled width.
    assert layers["hidden/1"]["kernel"].shape == (8, 5)
    assert layers["out"]["kernel"].shape == (10, 5)
    if kind == "cnn":
        assert layers["conv/1"]["kernel"].shape == (3, 3, 4, 3)


def test_crelu_and_fourier_values():
    x = jnp.array([[-2.0, 0.5]])
    np.testing.assert_allclose(ACTIVATIONS["crelu"].fn(x), [[0.0, 0.5, 2.0, 0.0]])
    np.testing.assert_allclose(ACTIVATIONS["fourier"].fn(x),
                               [[np.sin(-2.0), np.sin(0.5), np.cos(-2.0), np.cos(0.5)]],
                               rtol=1e-6)
    assert get_activation("crelu").width_factor == 2
    assert get_activation("relu").width_factor == 1


@pytest.mark.parametrize("kind", KINDS)
def test_layer_norm_adds_scale_and_bias_params(kind):
    plain, _, _ = _apply(kind, channels=(2, 3), hidden=(4, 5))
    normed, _, features = _apply(kind, channels=(2, 3), hidden=(4, 5), layer_norm=True)
    extra = set(layer_params(normed)) - set(layer_params(plain))
    expected = {"norm/0", "norm/1"} | ({"conv_norm/0", "conv_norm/1"} if kind == "cnn" else set())
    assert extra == expected
    added = _param_count(normed) - _param_count(plain)
    widths = [4, 5] + ([2, 3] if kind == "cnn" else [])
    assert added == 2 * sum(widths)
    layers = layer_params(normed)
    assert layers["norm/0"]["scale"].shape == (4,) and layers["norm/1"]["bias"].shape == (5,)
    # Norm layers have no features entry of their own: the features are the same layers'.
    assert set(features) == {k for k in layer_params(plain) if k != "out"}


def test_init_depends_on_key_and_apply_is_pure():
    net = make_network("mlp", SHAPE, 5, hidden=(4,), layer_norm=True)
    init = jax.jit(net.init)  # one compile instead of many eager ops
    p0, p0b, p1 = init(jax.random.key(0)), init(jax.random.key(0)), init(jax.random.key(1))
    k = lambda p: np.asarray(layer_params(p)["hidden/0"]["kernel"])
    np.testing.assert_array_equal(k(p0), k(p0b))
    assert not np.array_equal(k(p0), k(p1))
    x = _x()
    apply = jax.jit(net.apply)
    out, features = apply(p0, x)
    out_again, _ = apply(p0, x)
    np.testing.assert_array_equal(out, out_again)
    assert np.isfinite(np.asarray(out)).all() and features["hidden/0"].shape == (N, 4)
    norm = layer_params(p0)["norm/0"]  # layer norm starts as the identity affine map
    np.testing.assert_array_equal(norm["scale"], np.ones(4))
    np.testing.assert_array_equal(norm["bias"], np.zeros(4))


def test_unknown_network_lists_valid_networks():
    with pytest.raises(ValueError) as err:
        make_network("resnet", SHAPE, 5)
    msg = str(err.value)
    assert "'resnet'" in msg
    for name in NETWORKS:
        assert name in msg


def test_unknown_activation_lists_valid_activations():
    for call in (lambda: get_activation("softplus2"),
                 lambda: make_network("mlp", SHAPE, 5, activation="softplus2")):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "'softplus2'" in msg
        for name in ACTIVATIONS:
            assert name in msg


def test_layer_order_is_the_forward_order_not_the_sorted_one():
    """Twelve hidden layers: ``hidden/10`` follows ``hidden/9`` (a dict returned through jax
    comes back sorted, which would put it after ``hidden/1``)."""
    from plasticity.networks import layer_order
    net = make_network("mlp", (3,), 2, hidden=(4,) * 12)
    assert layer_order(net, (3,)) == [f"hidden/{i}" for i in range(12)] + ["out"]
