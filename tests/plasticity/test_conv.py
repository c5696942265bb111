"""plasticity.conv: a convolution whose gradients XLA keeps on its fast path inside loops.

The mechanism (module docstring): inside a ``while`` body XLA's CPU backend leaves the gradient
convolutions in non-canonical layouts, which it runs as naive loops. These tests check the
gradients against ``lax.conv_general_dilated``'s own, that every convolution of a step compiled
inside ``lax.scan`` is canonical (and that plain ``lax`` convolutions are not, so the check can
fail), and that a CNN stream's results do not change."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments.kinds.classifier import ClassifierConfig, build
from experiments.experiment import run
from plasticity import conv

LAYOUT = ("NHWC", "HWIO", "NHWC")


def _loss(conv_fn, padding, strides=(1, 1)):
    def loss(x, w):
        y = conv_fn(x, w, strides, padding, dimension_numbers=lax.conv_dimension_numbers(
            x.shape, w.shape, LAYOUT))
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)
    return loss


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((4, 8, 8, 3), (3, 3, 3, 5), "SAME"),
    ((2, 9, 7, 2), (3, 3, 2, 4), "VALID"),
    ((3, 10, 10, 2), (5, 5, 2, 3), "SAME"),
    ((2, 6, 8, 3), (3, 1, 3, 2), ((2, 0), (1, 1))),
])
def test_value_and_gradients_match_lax(x_shape, w_shape, padding):
    kx, kw = jax.random.split(jax.random.key(0))
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    ref_loss, ours_loss = _loss(lax.conv_general_dilated, padding), _loss(
        conv.conv_general_dilated, padding)
    value_and_grad = lambda f: jax.jit(jax.value_and_grad(f, (0, 1)))(x, w)  # noqa: E731
    (ours_value, ours_grads), (ref_value, ref_grads) = (value_and_grad(ours_loss),
                                                        value_and_grad(ref_loss))
    np.testing.assert_allclose(ours_value, ref_value, rtol=1e-6)
    for ours, ref in zip(ours_grads, ref_grads):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_other_strides_fall_back_to_lax_and_stay_correct():
    kx, kw = jax.random.split(jax.random.key(1))
    x, w = jax.random.normal(kx, (2, 8, 8, 3)), jax.random.normal(kw, (3, 3, 3, 4))
    ours, ref = (jax.jit(jax.grad(_loss(f, "SAME", (2, 2)), (0, 1)))(x, w)
                 for f in (conv.conv_general_dilated, lax.conv_general_dilated))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _scanned_step_convolutions(conv_fn) -> list[str]:
    x = jnp.ones((4, 8, 8, 3))

    def step(w, _):
        return w - 0.1 * jax.grad(_loss(conv_fn, "SAME"), 1)(x, w), None

    text = jax.jit(lambda w: lax.scan(step, w, length=3)[0]).lower(
        jnp.ones((3, 3, 3, 5))).compile().as_text()
    return [line for line in text.splitlines() if " convolution(" in line]


def test_every_convolution_of_a_step_inside_scan_is_canonical():
    ours = _scanned_step_convolutions(conv.conv_general_dilated)
    assert len(ours) == 2  # the input gradient is not needed here: forward and kernel gradient
    assert all("dim_labels=b01f_01io->b01f" in line for line in ours), ours
    # The check can fail: plain lax convolutions inside the scan are left non-canonical.
    plain = _scanned_step_convolutions(lax.conv_general_dilated)
    assert any("dim_labels=b01f_01io->b01f" not in line for line in plain), plain


@pytest.mark.slow  # two CNN loop compiles (~35 s on 2 cores)
def test_a_cnn_stream_gives_the_same_table_with_plain_lax_convolutions(monkeypatch):
    cfg = ClassifierConfig(dataset="synthetic", family="split", num_tasks=2, network="cnn",
                           channels=(2, 4), hidden=(8,), steps_per_task=10, log_every=10,
                           batch_size=8, eval_examples=16, probe_examples=8, seeds=2,
                           mode="sweep")
    ours, _, _ = run(build(cfg), progress=False)
    monkeypatch.setattr(conv, "conv_general_dilated", lax.conv_general_dilated)
    plain, _, _ = run(build(cfg), progress=False)
    assert ours[["run", "task", "step", "metric", "layer"]].equals(
        plain[["run", "task", "step", "metric", "layer"]])
    np.testing.assert_allclose(ours["value"], plain["value"], rtol=1e-4, atol=1e-5)
