"""The contrastive critic's energies and losses against numpy on a tiny batch, and the
future-goal relabelling law (REFERENCE.md §9): the offset distribution against the truncated
geometric law of JaxGCRL's window matrix, never past the window's end, never across episodes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from continual.agents import contrastive, relabel

RNG = np.random.default_rng(0)
PHI = RNG.normal(size=(4, 3)).astype(np.float32)
PSI = RNG.normal(size=(4, 3)).astype(np.float32)


def _np_energy(name, phi, psi, scale=1 / 0.07):
    phi, psi = phi.astype(np.float64), psi.astype(np.float64)
    out = np.zeros((len(phi), len(psi)))
    for i in range(len(phi)):
        for j in range(len(psi)):
            d = phi[i] - psi[j]
            out[i, j] = {"norm": -np.sqrt(d @ d + 1e-6), "l2": -(d @ d),
                         "dot": phi[i] @ psi[j],
                         "cosine": scale * (phi[i] @ psi[j])
                         / (np.linalg.norm(phi[i]) * np.linalg.norm(psi[j]) + 1e-6)}[name]
    return out


def _np_lse(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _np_loss(name, L, penalty=0.1):
    n = len(L)
    fwd = -np.mean([L[i, i] - _np_lse(L, 1)[i] for i in range(n)])
    bwd = -np.mean([L[j, j] - _np_lse(L, 0)[j] for j in range(n)])
    sig = 1 / (1 + np.exp(-L))
    bce = -(np.eye(n) * np.log(sig) + (1 - np.eye(n)) * np.log(1 - sig)).mean()
    value = {"fwd": fwd, "bwd": bwd, "sym": fwd + bwd, "binary_nce": bce}[name]
    return value + penalty * np.mean(_np_lse(L, 1) ** 2)


@pytest.mark.parametrize("energy", list(contrastive.ENERGIES))
def test_energies_match_numpy(energy):
    np.testing.assert_allclose(contrastive.logits(energy, PHI, PSI), _np_energy(energy, PHI, PSI),
                               rtol=1e-5, atol=1e-6)


def test_cosine_uses_per_sample_norms_and_its_scale():
    # Scaling one sample's embedding changes nothing (per-sample norms, not one over the batch).
    scaled = PHI.copy()
    scaled[0] *= 10.0
    np.testing.assert_allclose(contrastive.logits("cosine", scaled, PSI, 2.0),
                               contrastive.logits("cosine", PHI, PSI, 2.0), rtol=1e-5)
    np.testing.assert_allclose(contrastive.logits("cosine", PHI, PSI, 2.0),
                               _np_energy("cosine", PHI, PSI, 2.0), rtol=1e-5)


@pytest.mark.parametrize("loss", contrastive.LOSSES)
def test_losses_match_numpy_including_the_logsumexp_penalty(loss):
    L = _np_energy("norm", PHI, PSI)
    value, _ = contrastive.contrastive_loss(jnp.asarray(L, jnp.float32), loss)
    np.testing.assert_allclose(float(value), _np_loss(loss, L), rtol=1e-5)
    no_penalty, _ = contrastive.contrastive_loss(jnp.asarray(L, jnp.float32), loss, penalty=0.0)
    np.testing.assert_allclose(float(value - no_penalty), 0.1 * np.mean(_np_lse(L, 1) ** 2),
                               rtol=1e-4)


def test_binary_nce_contrasts_positives_against_negatives():
    """The correct binary NCE falls when positives rise *and* when negatives fall (JaxGCRL's
    −mean σ(L) would reward raising every logit)."""
    L = jnp.asarray(_np_energy("dot", PHI, PSI), jnp.float32)
    grad = jax.grad(lambda x: contrastive.contrastive_loss(x, "binary_nce", penalty=0.0)[0])(L)
    eye = np.eye(4, dtype=bool)
    assert np.all(np.asarray(grad)[eye] < 0) and np.all(np.asarray(grad)[~eye] > 0)


def test_critic_diagnostics():
    L = jnp.asarray([[3.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    _, s = contrastive.contrastive_loss(L, "fwd")
    assert float(s["categorical_accuracy"]) == pytest.approx(2 / 3)  # row 1 picks column 0
    assert float(s["logits_pos"]) == pytest.approx(3.0)
    assert float(s["logits_neg"]) == pytest.approx(3.0 / 6)
    assert float(s["logsumexp"]) == pytest.approx(np.mean(_np_lse(np.asarray(L), 1)), rel=1e-6)


def test_unknown_energy_and_loss_list_the_valid_ones():
    with pytest.raises(ValueError, match="norm, l2, dot, cosine"):
        contrastive.logits("euclid", PHI, PSI)
    with pytest.raises(ValueError, match="fwd, bwd, sym, binary_nce"):
        contrastive.contrastive_loss(jnp.zeros((2, 2)), "infonce")


# --------------------------------------------------------------------------------------------
# relabelling
# --------------------------------------------------------------------------------------------


def test_steps_left_stop_at_the_episode_end_and_the_window_end():
    ids = jnp.asarray([0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(relabel.steps_left(ids), [2, 1, 0, 1, 0, 3, 2, 1, 0])


def test_goals_never_cross_episodes_nor_pass_the_window():
    ids = jnp.repeat(jnp.arange(20), jax.random.randint(jax.random.key(1), (20,), 1, 12))
    goals = jax.vmap(lambda k: relabel.future_goal_indices(k, ids, 0.9))(
        jax.random.split(jax.random.key(2), 200))
    goals = np.asarray(goals)
    assert goals.max() < len(ids) and (goals >= np.arange(len(ids))).all()
    np.testing.assert_array_equal(np.asarray(ids)[goals], np.broadcast_to(ids, goals.shape))
    last = np.asarray(relabel.steps_left(ids)) == 0
    np.testing.assert_array_equal(goals[:, last], np.broadcast_to(np.arange(len(ids))[last],
                                                                  goals[:, last].shape))


@pytest.mark.parametrize("horizon, gamma", [(6, 0.9), (40, 0.99), (3, 0.5)])
def test_offsets_follow_the_window_matrix_law(horizon, gamma):
    """χ² against P(Δ = k) ∝ γ^{k−i}, k = 1..H: JaxGCRL's T_w×T_w categorical for one step."""
    draws = np.asarray(relabel.future_offsets(jax.random.key(3), jnp.full((40000,), horizon),
                                              gamma))
    assert draws.min() >= 1 and draws.max() <= horizon
    law = gamma ** np.arange(1, horizon + 1)
    law /= law.sum()
    counts = np.bincount(draws, minlength=horizon + 1)[1:]
    expected = law * len(draws)
    keep = expected >= 5  # pool the sparse tail into one cell
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    observed, expected = observed[expected > 0], expected[expected > 0]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_gamma_outside_the_unit_interval_is_an_error():
    with pytest.raises(ValueError, match="gamma"):
        relabel.future_offsets(jax.random.key(0), jnp.ones(3, jnp.int32), 1.0)
