"""Stacked layers (plasticity.networks.Stacked, the resmlp's scanned blocks): read, written and
reset layer by layer under the names of unrolled layers; the scanned network equals the same
blocks applied one after another in numpy; depth 1,024 builds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity import resets
from plasticity.networks import (layer_masks, layer_order, layer_params, make_network,
                                 replace_layers)

IN, WIDTH, OUT, N = 5, 6, 3, 4


def _net(blocks=3, layers_per_block=2, **kw):
    return make_network("resmlp", (IN,), OUT, hidden=(WIDTH,), blocks=blocks,
                        layers_per_block=layers_per_block, activation="relu", **kw)


@pytest.fixture(scope="module")
def net_params():
    net = _net()
    return net, jax.jit(net.init)(jax.random.key(0))


def test_stacked_leaves_read_as_one_layer_per_block(net_params):
    _, params = net_params
    stacked = params["blocks"]["stack"][1]["kernel"].value            # [blocks, in, out]
    layers = layer_params(params)
    assert stacked.shape == (3, WIDTH, WIDTH)
    for b in range(3):
        np.testing.assert_array_equal(layers[f"blocks/{b}/1"]["kernel"], stacked[b])
        assert f"block_norm/{b}/0" in layers
    assert not any("stack" in name for name in layers)
    # Copies are initialised from their own keys.
    assert not np.allclose(stacked[0], stacked[1])


def test_replace_and_masks_write_only_the_named_copy(net_params):
    _, params = net_params
    new = replace_layers(params, {"blocks/2/0": {"bias": jnp.full(WIDTH, 7.0)}})
    bias = np.asarray(new["blocks"]["stack"][0]["bias"].value)
    old = np.asarray(params["blocks"]["stack"][0]["bias"].value)
    np.testing.assert_array_equal(bias[2], 7.0)
    np.testing.assert_array_equal(bias[:2], old[:2])
    masks = layer_masks(params, {"blocks/1/1": {"kernel": True}, "out": {"bias": True}})
    kernel_mask = np.asarray(masks["blocks"]["stack"][1]["kernel"].value)
    assert kernel_mask[1].all() and not kernel_mask[[0, 2]].any()
    assert np.asarray(masks["out"]["bias"].value).all()
    assert not np.asarray(masks["stem"]["kernel"].value).any()


def test_the_scan_applies_the_blocks_in_order_with_their_skips(net_params):
    net, params = net_params
    x = jax.random.normal(jax.random.key(1), (N, IN))
    out, features = jax.jit(net.apply)(params, x)
    layers = {k: {n: np.asarray(v, np.float64) for n, v in p.items()}
              for k, p in layer_params(params).items()}

    def dense_ln_relu(h, dense, norm):
        z = h @ layers[dense]["kernel"] + layers[dense]["bias"]
        z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-6)
        return np.maximum(z * layers[norm]["scale"] + layers[norm]["bias"], 0.0)

    stream = dense_ln_relu(np.asarray(x, np.float64), "stem", "stem_norm")
    for b in range(3):
        h = stream
        for l in range(2):
            h = dense_ln_relu(h, f"blocks/{b}/{l}", f"block_norm/{b}/{l}")
            np.testing.assert_allclose(features[f"blocks/{b}/{l}"], h, rtol=1e-4, atol=1e-5)
        stream = stream + h
    want = stream @ layers["out"]["kernel"] + layers["out"]["bias"]
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_a_head_or_last_k_reset_of_a_stacked_layer_touches_that_copy_only(net_params):
    net, params = net_params
    fresh = jax.jit(net.init)(jax.random.key(9))
    order = layer_order(net, (IN,))
    assert order == ["stem", *(f"blocks/{b}/{l}" for b in range(3) for l in range(2)), "out"]
    touched = resets.last_layers(order, 2)
    new, _ = resets.reset_layers(params, (), fresh, touched)
    now, before, init = layer_params(new), layer_params(params), layer_params(fresh)
    np.testing.assert_array_equal(now["blocks/2/1"]["kernel"], init["blocks/2/1"]["kernel"])
    np.testing.assert_array_equal(now["blocks/1/1"]["kernel"], before["blocks/1/1"]["kernel"])
    np.testing.assert_array_equal(now["blocks/2/0"]["kernel"], before["blocks/2/0"]["kernel"])


def test_remat_computes_the_same_values_and_gradients(net_params):
    net, params = net_params
    remat = _net(remat=True)
    x = jax.random.normal(jax.random.key(2), (N, IN))
    loss = lambda apply: lambda p: jnp.sum(apply(p, x)[0] ** 2)  # noqa: E731
    g1 = jax.jit(jax.grad(loss(net.apply)))(params)
    g2 = jax.jit(jax.grad(loss(remat.apply)))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_depth_1024_builds():
    """256 blocks × 4 Dense layers at width 256: traced (init, forward and gradient) without
    compiling; the program holds one block, so tracing is as quick as at depth 4."""
    net = make_network("resmlp", (IN,), OUT, hidden=(256,), blocks=256, layers_per_block=4,
                       activation="swish")
    params = jax.eval_shape(net.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((N, IN), jnp.float32)
    grads = jax.eval_shape(jax.grad(lambda p, x: jnp.sum(net.apply(p, x)[0])), params, x)
    layers = layer_params(grads)
    assert layers["blocks/255/3"]["kernel"].shape == (256, 256)
    assert sum(name.startswith("blocks/") for name in layers) == 1024
