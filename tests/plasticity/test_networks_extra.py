"""plasticity.networks: rational activations inside networks (per layer / shared), resmlp."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import rational as R
from plasticity.activations import PARAMETRIC
from plasticity.networks import NETWORKS, layer_params, make_network, replace_layers

SHAPE = (8, 8, 1)
N = 3
SMALL = dict(channels=(2, 3), hidden=(4, 5), blocks=2, layers_per_block=2)


def _shapes(kind, **kw):
    """Parameter and output shapes via ``jax.eval_shape``: nothing compiles."""
    net = make_network(kind, SHAPE, 5, **{**SMALL, **kw})
    params = jax.eval_shape(net.init, jax.random.key(0))
    out, features = jax.eval_shape(net.apply, params,
                                   jax.ShapeDtypeStruct((N, *SHAPE), jnp.float32))
    return params, out, features


def _names(path):
    """Path entries as in :func:`layer_params` (dict keys and list indices)."""
    return [str(k.key) if hasattr(k, "key") else str(k.idx) for k in path
            if hasattr(k, "key") or hasattr(k, "idx")]


def _concrete(net, seed=0):
    """Parameters of ``net`` without compiling its initializer (XLA's CPU compile of the random
    initializers takes seconds): normal weights and biases from numpy, layer norms and rationals
    at their initial values."""
    rng = np.random.default_rng(seed)
    init = dict(zip(("numerator", "denominator"), map(np.asarray, R.init_coefficients("A"))))

    def fill(path, leaf):
        names = _names(path)
        name = names[-1]
        if name in init:
            return jnp.asarray(init[name])
        if any("norm" in n for n in names[:-1]):
            return jnp.full(leaf.shape, 1.0 if name == "scale" else 0.0, leaf.dtype)
        scale = 1.0 / np.sqrt(leaf.shape[0]) if name == "kernel" else 0.1
        return jnp.asarray(scale * rng.normal(size=leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(net.init, jax.random.key(0)))


def _coefficient_layers(params):
    return {name for name, p in layer_params(params).items() if "numerator" in p}


def _expected_act_layers(kind):
    if kind == "mlp":
        return {"act/0", "act/1"}
    if kind == "cnn":
        return {"act/0", "act/1", "conv_act/0", "conv_act/1"}
    return {"stem_act"} | {f"block_act/{b}/{l}" for b in range(2) for l in range(2)}


def _replace(params, updates):
    """``params`` with the leaves named ``"layer/leaf"`` in ``updates`` replaced (stacked
    layers too: :func:`plasticity.networks.replace_layers`)."""
    new: dict = {}
    for key, value in updates.items():
        layer, _, leaf = key.rpartition("/")
        new.setdefault(layer, {})[leaf] = value
    return replace_layers(params, new)


@pytest.mark.parametrize("activation", ["rational", "rational_constrained"])
@pytest.mark.parametrize("kind", NETWORKS)
def test_per_layer_rational_has_one_coefficient_set_per_hidden_layer(kind, activation):
    params, out, features = _shapes(kind, activation=activation)
    layers = layer_params(params)
    acts = _coefficient_layers(params)
    assert acts == _expected_act_layers(kind)
    assert len(acts) == len(features)
    for name in acts:  # coefficient layers are not weight layers and have no features
        assert "kernel" not in layers[name] and name not in features
    weight_layers = {name for name, p in layers.items() if "kernel" in p} - {"out"}
    assert set(features) == weight_layers and out.shape == (N, 5)


@pytest.mark.parametrize("kind", NETWORKS)
def test_shared_rational_is_one_coefficient_set(kind):
    params, _, features = _shapes(kind, activation="rational_shared")
    layers = layer_params(params)
    assert _coefficient_layers(params) == {"act"}
    assert set(layers["act"]) == {"numerator", "denominator"}
    assert layers["act"]["numerator"].shape == (6,)
    plain, _, _ = _shapes(kind, activation="relu")
    extra = sum(np.prod(l.shape) for l in jax.tree.leaves(params)) - sum(
        np.prod(l.shape) for l in jax.tree.leaves(plain))
    assert extra == 6 + 4 and len(features) > 1


IDENTITY = {"numerator": jnp.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]), "denominator": jnp.zeros(4)}


def _linear(x, layer):
    return x.reshape(x.shape[0], -1) @ layer["kernel"] + layer["bias"]


def test_shared_coefficients_drive_every_layer_and_per_layer_ones_only_their_own():
    x = jax.random.normal(jax.random.key(1), (N, *SHAPE))
    for activation, target, linear_layers in [("rational_shared", "act", {"hidden/0", "hidden/1"}),
                                              ("rational", "act/1", {"hidden/1"})]:
        net = make_network("mlp", SHAPE, 5, hidden=(4, 5), activation=activation)
        params = _replace(_concrete(net), {f"{target}/{k}": v for k, v in IDENTITY.items()})
        _, features = jax.jit(net.apply)(params, x)
        layers = layer_params(params)
        inputs = {"hidden/0": x, "hidden/1": features["hidden/0"]}
        for name in ("hidden/0", "hidden/1"):
            linear = _linear(inputs[name], layers[name])
            same = np.allclose(features[name], linear, atol=1e-5)
            assert same == (name in linear_layers), (activation, name)


def test_resmlp_shapes_and_names():
    params, out, features = _shapes("resmlp", hidden=(6,), blocks=2, layers_per_block=3)
    layers = layer_params(params)
    blocks = {f"blocks/{b}/{l}" for b in range(2) for l in range(3)}
    assert set(features) == {"stem"} | blocks
    assert set(layers) == ({"stem", "stem_norm", "out"} | blocks
                           | {n.replace("blocks/", "block_norm/") for n in blocks})
    assert out.shape == (N, 5)
    assert layers["stem"]["kernel"].shape == (64, 6)
    assert layers["blocks/1/2"]["kernel"].shape == (6, 6)
    assert layers["block_norm/0/1"]["scale"].shape == (6,)
    assert layers["out"]["kernel"].shape == (6, 5)
    assert all(f.shape == (N, 6) for f in features.values())
    # The residual stream of a concatenating activation is twice as wide.
    params, _, features = _shapes("resmlp", hidden=(6,), blocks=1, layers_per_block=1,
                                  activation="crelu")
    layers = layer_params(params)
    assert layers["blocks/0/0"]["kernel"].shape == (12, 6)
    assert layers["out"]["kernel"].shape == (12, 5)
    assert features["blocks/0/0"].shape == (N, 12)


def test_resmlp_defaults_and_layer_norm_always_on():
    net = make_network("resmlp", SHAPE, 5, hidden=(4,))
    params = jax.eval_shape(net.init, jax.random.key(0))
    names = set(layer_params(params))
    assert {f"blocks/{b}/{l}" for b in range(2) for l in range(4)} < names   # 2 blocks × 4
    assert "block_norm/1/3" in names and "stem_norm" in names


def test_zeroed_block_is_the_identity():
    x = jax.random.normal(jax.random.key(1), (N, *SHAPE))
    net = make_network("resmlp", SHAPE, 5, hidden=(6,), blocks=2, layers_per_block=2)
    params = _concrete(net)
    apply = jax.jit(net.apply)
    out, features = apply(params, x)
    layers = layer_params(params)
    head = lambda h: h @ layers["out"]["kernel"] + layers["out"]["bias"]
    assert not np.allclose(out, head(features["stem"]), atol=1e-3)  # the blocks do something
    # Zeroing the last Dense of every block: relu(LN(0)) = 0, so each block passes its input on.
    zero = {f"blocks/{b}/1/{leaf}": jnp.zeros_like(layers[f"blocks/{b}/1"][leaf])
            for b in range(2) for leaf in ("kernel", "bias")}
    out, features = apply(_replace(params, zero), x)
    for b in range(2):
        np.testing.assert_array_equal(features[f"blocks/{b}/1"], 0.0)
    np.testing.assert_allclose(out, head(features["stem"]), rtol=1e-5, atol=1e-5)


# Stateless elementwise activations (tanh, gelu, ...) take the same path through the networks as
# relu; test_activations.py covers each of them on its own.
@pytest.mark.parametrize("activation", ["relu", "crelu", "fourier", *PARAMETRIC])
@pytest.mark.parametrize("kind", NETWORKS)
def test_networks_trace_under_jit_vmap_with_every_kind_of_activation(kind, activation):
    """Tracing only (``eval_shape``): init, apply and gradient over 3 keys under jit(vmap)."""
    net = make_network(kind, SHAPE, 5, **{**SMALL, "activation": activation})
    x = jax.ShapeDtypeStruct((N, *SHAPE), jnp.float32)

    def run(key, x):
        params = net.init(key)
        loss = lambda p: jnp.sum(net.apply(p, x)[0] ** 2)
        return params, net.apply(params, x)[0], jax.grad(loss)(params)

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 3))
    params, out, grads = jax.eval_shape(jax.jit(jax.vmap(run, (0, None))), keys, x)
    assert out.shape == (3, N, 5)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(l.shape[0] == 3 for l in jax.tree.leaves(params))


@pytest.mark.parametrize("kind, activation", [("mlp", "rational_constrained"),
                                              ("cnn", "rational"),
                                              ("resmlp", "swish")])
def test_networks_run_under_jit_vmap_over_keys(kind, activation):
    """Compiled and run, one network per kind (XLA's CPU compile of initializers is slow); the
    mlp also differentiates through its rationals."""
    net = make_network(kind, SHAPE, 5, channels=(2,), hidden=(4,), blocks=1, layers_per_block=2,
                       activation=activation)
    x = jax.random.normal(jax.random.key(1), (N, *SHAPE))
    with_grad = kind == "mlp"

    def run(key):
        params = net.init(key)
        loss = lambda p: jnp.sum(net.apply(p, x)[0] ** 2)
        return params, net.apply(params, x)[0], jax.grad(loss)(params) if with_grad else None

    params, out, grads = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 3))
    assert out.shape == (3, N, 5) and np.isfinite(np.asarray(out)).all()
    layers = layer_params(params)
    out_kernel = np.asarray(layers["out"]["kernel"])
    assert not np.allclose(out_kernel[0], out_kernel[1])    # keys give different weights
    coefficient_layers = _coefficient_layers(params)
    assert bool(coefficient_layers) == activation.startswith("rational")
    for name in coefficient_layers:                         # ... and the same coefficients
        for leaf in layers[name].values():
            np.testing.assert_array_equal(leaf[0], leaf[1])
    if with_grad:
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
        for name in coefficient_layers:
            assert all(np.abs(np.asarray(g)).sum() > 0
                       for g in layer_params(grads)[name].values())


def test_bad_resmlp_arguments_name_the_value():
    with pytest.raises(ValueError, match="blocks=-1"):
        make_network("resmlp", SHAPE, 5, blocks=-1)
    with pytest.raises(ValueError, match="layers_per_block=0"):
        make_network("resmlp", SHAPE, 5, layers_per_block=0)
    with pytest.raises(ValueError, match=r"hidden=\(\)"):
        make_network("resmlp", SHAPE, 5, hidden=())
