"""DreamerV3's building blocks (continual.agents.dreamer_ops) against hand computations and
numpy: symlog∘symexp = id, the two-hot round trip, unimix's floor, straight-through gradients,
free nats, the λ-return on a hand-computed case, the return scale (REFERENCE.md §11)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.agents import dreamer_ops as ops


def test_symexp_inverts_symlog_over_many_scales():
    x = jnp.array([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 7.0, 1e4])
    np.testing.assert_allclose(ops.symexp(ops.symlog(x)), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.symlog(jnp.array([np.e - 1, -(np.e - 1)])), [1.0, -1.0],
                               rtol=1e-6)


def test_twohot_puts_linear_weights_on_the_two_neighbours_and_round_trips():
    bins = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = ops.symexp(jnp.array(0.25))  # symlog(x) = 0.25: between bins 0 and 1
    np.testing.assert_allclose(ops.twohot(x, bins), [0, 0, 0.75, 0.25, 0], atol=1e-6)
    on_bin = ops.twohot(ops.symexp(jnp.array(-1.0)), bins)
    np.testing.assert_allclose(on_bin, [0, 1, 0, 0, 0], atol=1e-6)
    beyond = ops.twohot(jnp.array([1e9, -1e9]), bins)
    np.testing.assert_allclose(beyond, [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]], atol=1e-6)
    # Round trip with the default 255 bins: logits = log(two-hot) decode to x.
    bins = ops.symlog_bins()
    assert bins.shape == (255,) and abs(float(bins[127])) < 1e-5
    values = jnp.array([-300.0, -2.5, 0.0, 0.3, 1.0, 42.0, 1e5])
    weights = ops.twohot(values, bins)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    decoded = ops.twohot_mean(jnp.log(weights + 1e-30), bins)
    np.testing.assert_allclose(decoded, values, rtol=1e-4, atol=1e-5)


def test_twohot_loss_is_the_cross_entropy_against_the_target():
    bins = ops.symlog_bins(11, 5.0)
    logits = jax.random.normal(jax.random.key(0), (3, 11))
    x = jnp.array([0.0, 2.0, -7.0])
    target = np.asarray(ops.twohot(x, bins))
    logp = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
    np.testing.assert_allclose(ops.twohot_loss(logits, x, bins), -(target * logp).sum(-1),
                               rtol=1e-5)


def test_unimix_floors_every_class_at_mix_over_classes():
    logits = jnp.array([[50.0, -50.0, -50.0, -50.0]])
    probs = ops.unimix(logits)
    assert float(probs.min()) >= 0.01 / 4 - 1e-9
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 0], 0.99 + 0.0025, rtol=1e-6)


def test_straight_through_sample_is_one_hot_with_the_probabilities_gradient():
    probs = jnp.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    sample = ops.straight_through_sample(jax.random.key(1), probs)
    np.testing.assert_allclose(sample.sum(-1), 1.0)
    assert set(np.unique(np.asarray(sample)).round(6)) <= {0.0, 1.0}
    w = jnp.array([1.0, 2.0, 3.0])
    grad = jax.grad(lambda p: jnp.sum(ops.straight_through_sample(jax.random.key(1), p) * w))(
        probs)
    np.testing.assert_allclose(grad, np.broadcast_to(w, probs.shape))


def test_kl_is_summed_over_latents_and_clipped_at_free_nats_without_gradient():
    post = jnp.array([[[0.5, 0.5], [0.9, 0.1]]])   # [batch 1, S 2, C 2]
    prior = jnp.array([[[0.25, 0.75], [0.5, 0.5]]])
    p, q = np.asarray(post), np.asarray(prior)
    kl = (p * (np.log(p) - np.log(q))).sum()
    np.testing.assert_allclose(ops.categorical_kl(post, prior), [kl], rtol=1e-6)
    dyn, rep = ops.kl_losses(post, prior, free=0.0)
    np.testing.assert_allclose(dyn, [kl], rtol=1e-6)
    np.testing.assert_allclose(rep, [kl], rtol=1e-6)
    dyn, rep = ops.kl_losses(post, prior)  # kl ≈ 0.50 < 1 free nat
    assert kl < 1.0 and float(dyn[0]) == float(rep[0]) == 1.0
    g = jax.grad(lambda q_: ops.kl_losses(post, q_)[0].sum())(prior)
    np.testing.assert_array_equal(g, 0.0)
    # Above the free nats, dyn trains only the prior and rep only the posterior.
    far = jnp.array([[[0.99, 0.01], [0.99, 0.01]]])
    g_post = jax.grad(lambda p_: ops.kl_losses(p_, 1 - far, free=0.0)[0].sum())(far)
    np.testing.assert_array_equal(g_post, 0.0)
    g_prior = jax.grad(lambda q_: ops.kl_losses(far, q_, free=0.0)[1].sum())(1 - far)
    np.testing.assert_array_equal(g_prior, 0.0)
    assert np.abs(jax.grad(lambda q_: ops.kl_losses(far, q_, free=0.0)[0].sum())(1 - far)).max() > 0
    assert np.abs(jax.grad(lambda p_: ops.kl_losses(p_, 1 - far, free=0.0)[1].sum())(far)).max() > 0


def test_lambda_return_matches_a_hand_computed_case():
    # H = 2: s0 → s1 → s2. r1 = 1, r2 = 2; c1 = 1, c2 = 0.5; v = (10, 20, 30); γ 0.9, λ 0.5.
    reward = jnp.array([1.0, 2.0])
    cont = jnp.array([1.0, 0.5])
    value = jnp.array([10.0, 20.0, 30.0])
    r1 = 2.0 + 0.9 * 0.5 * 30.0                         # R_1 = r2 + γ c2 v2 = 15.5
    r0 = 1.0 + 0.9 * 1.0 * (0.5 * 20.0 + 0.5 * r1)      # R_0 = 1 + 0.9 (10 + 7.75) = 16.975
    np.testing.assert_allclose(ops.lambda_return(reward, cont, value, 0.9, 0.5), [r0, r1],
                               rtol=1e-6)
    # λ = 0 is the one-step TD target; λ = 1 the discounted Monte-Carlo return + bootstrap.
    np.testing.assert_allclose(ops.lambda_return(reward, cont, value, 0.9, 0.0),
                               [1 + 0.9 * 20, 2 + 0.9 * 0.5 * 30], rtol=1e-6)
    np.testing.assert_allclose(ops.lambda_return(reward, cont, value, 0.9, 1.0)[0],
                               1 + 0.9 * (2 + 0.9 * 0.5 * 30), rtol=1e-6)


@pytest.mark.parametrize("spread, expected", [(0.5, 1.0), (40.0, None)])
def test_return_scale_is_max_one_and_the_percentile_range(spread, expected):
    returns = jnp.linspace(0.0, spread, 101)
    scale = ops.ReturnScale.init()
    for _ in range(2000):  # the EMA converges to the batch's percentiles
        scale = scale.update(returns)
    p5, p95 = np.percentile(np.asarray(returns), [5, 95])
    np.testing.assert_allclose([scale.low, scale.high], [p5, p95], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scale.scale(), expected or p95 - p5, rtol=1e-4)
