"""Retention for fine-tuning (continual.agents.retention): each KL and the EWC Fisher against an
independent numpy computation, the tanh invariance of the KL, the kickstarting decay, the
episodic memory's batch share and its protection from every eviction rule, and SAC's start from
pre-trained networks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual import replay
from continual.agents import policy as tanh_gaussian
from continual.agents import retention
from continual.agents.sac import SACSpec, Start, Transition, make_sac
from continual.optimizers import HParams


def np_gaussian_kl(m1, s1, m2, s2):
    """KL(N(m1, s1²) ‖ N(m2, s2²)) per dimension, summed: the textbook formula."""
    return np.sum(np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5, axis=-1)


def np_gaussian_params(raw):
    a = raw.shape[-1] // 2
    log_std = -5.0 + 3.5 * (np.tanh(raw[..., a:]) + 1.0)
    return raw[..., :a], log_std


def test_gaussian_kl_matches_numpy_in_both_directions():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 5, 3))
    l1, l2 = rng.normal(scale=0.5, size=(2, 5, 3))
    got = retention.gaussian_kl(m1, l1, m2, l2)
    np.testing.assert_allclose(got, np_gaussian_kl(m1, np.exp(l1), m2, np.exp(l2)), rtol=1e-5)
    back = retention.gaussian_kl(m2, l2, m1, l1)
    np.testing.assert_allclose(back, np_gaussian_kl(m2, np.exp(l2), m1, np.exp(l1)), rtol=1e-5)
    assert not np.allclose(got, back)  # KL is not symmetric
    np.testing.assert_allclose(retention.gaussian_kl(m1, l1, m1, l1), 0.0, atol=1e-6)


def test_policy_kl_reads_raw_outputs_and_selects_the_direction():
    rng = np.random.default_rng(1)
    star, cur = rng.normal(size=(2, 4, 6))  # |A| = 3
    (ms, ls), (mc, lc) = np_gaussian_params(star), np_gaussian_params(cur)
    forward = np_gaussian_kl(ms, np.exp(ls), mc, np.exp(lc))
    reverse = np_gaussian_kl(mc, np.exp(lc), ms, np.exp(ls))
    np.testing.assert_allclose(retention.policy_kl(star, cur, "forward"), forward, rtol=1e-5)
    np.testing.assert_allclose(retention.policy_kl(star, cur, "reverse"), reverse, rtol=1e-5)


def test_kl_of_tanh_squashed_policies_equals_the_pre_tanh_kl():
    """Per sample, the tanh Jacobian cancels in the density ratio of the squashed policies, so
    the Monte-Carlo KL of the squashed distributions is the closed-form Gaussian KL."""
    m1, l1 = jnp.asarray([0.3, -1.2]), jnp.asarray([-0.5, 0.1])
    m2, l2 = jnp.asarray([-0.4, 0.8]), jnp.asarray([0.2, -0.3])
    u = m1 + jnp.exp(l1) * jax.random.normal(jax.random.key(0), (200_000, 2))
    squashed = (tanh_gaussian.tanh_gaussian_log_prob(u, m1, l1)
                - tanh_gaussian.tanh_gaussian_log_prob(u, m2, l2))
    gauss = lambda m, ls: jnp.sum(-0.5 * ((u - m) / jnp.exp(ls)) ** 2 - ls, -1)  # noqa: E731
    np.testing.assert_allclose(squashed, gauss(m1, l1) - gauss(m2, l2), rtol=1e-4, atol=1e-4)
    closed = float(retention.gaussian_kl(m1, l1, m2, l2))
    assert abs(float(jnp.mean(squashed)) - closed) < 0.02 * closed


def test_gaussian_fisher_of_a_linear_policy_matches_the_hand_computation():
    """raw = W s + b: ∂μ_a/∂W[a, j] = s_j; ∂σ_a/∂W[A+a, j] = σ_a · 3.5 (1 − tanh² r_a) s_j."""
    rng = np.random.default_rng(2)
    obs_size, a = 3, 2
    params = {"w": jnp.asarray(rng.normal(scale=0.5, size=(2 * a, obs_size)), jnp.float32),
              "b": jnp.asarray(rng.normal(scale=0.5, size=(2 * a,)), jnp.float32)}
    obs = rng.normal(size=(7, obs_size)).astype(np.float32)
    got = retention.gaussian_fisher(lambda p, s: p["w"] @ s + p["b"], params, jnp.asarray(obs),
                                    chunk=3)
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    f_w, f_b = np.zeros_like(w), np.zeros_like(b)
    for s in obs.astype(np.float64):
        r = w @ s + b
        std = np.exp(-5.0 + 3.5 * (np.tanh(r[a:]) + 1.0))
        dstd = std * 3.5 * (1 - np.tanh(r[a:]) ** 2)       # ∂σ/∂r_std
        inv = 1.0 / (std ** 2 + 1e-6)
        f_w[:a] += inv[:, None] * s[None] ** 2              # (∂μ)² / σ²
        f_b[:a] += inv
        f_w[a:] += inv[:, None] * 2 * (dstd[:, None] * s[None]) ** 2   # 2 (∂σ)² / σ²
        f_b[a:] += inv * 2 * dstd ** 2
    f_w, f_b = np.maximum(f_w / len(obs), 1e-5), np.maximum(f_b / len(obs), 1e-5)
    np.testing.assert_allclose(got["w"], f_w, rtol=2e-4)
    np.testing.assert_allclose(got["b"], f_b, rtol=2e-4)


def test_ewc_penalty_is_the_fisher_weighted_squared_distance():
    p = {"a": jnp.asarray([1.0, 2.0]), "b": jnp.asarray([[0.5]])}
    star = {"a": jnp.asarray([0.0, 2.5]), "b": jnp.asarray([[1.5]])}
    fisher = {"a": jnp.asarray([2.0, 4.0]), "b": jnp.asarray([[3.0]])}
    # 2·1² + 4·0.5² + 3·1² = 6
    assert float(retention.ewc_penalty(p, star, fisher)) == pytest.approx(6.0)


def test_mix_memory_replaces_the_scheduled_share_of_rows():
    batch = Transition(jnp.zeros((8, 2)), jnp.zeros((8, 1)), jnp.zeros(8), jnp.ones(8),
                       jnp.zeros((8, 2)))
    memory = Transition(jnp.ones((5, 2)), jnp.ones((5, 1)), jnp.ones(5), jnp.ones(5),
                        jnp.ones((5, 2)))
    mixed = retention.mix_memory(batch, memory, jnp.asarray(0.25), jax.random.key(0))
    np.testing.assert_array_equal(mixed.reward, [1, 1, 0, 0, 0, 0, 0, 0])
    none = retention.mix_memory(batch, memory, jnp.asarray(0.0), jax.random.key(0))
    np.testing.assert_array_equal(none.obs, batch.obs)


@pytest.mark.parametrize("eviction", replay.EVICTIONS)
def test_protected_memory_is_never_evicted(eviction):
    """π*'s transitions sit outside the replay: a stream ten times the replay's capacity under
    any eviction rule leaves them bit-identical, and batches keep drawing their share."""
    protected = Transition(*(jnp.full((6,) + s, 7.0) for s in ((2,), (1,), (), (), (2,))))
    buffer = replay.make_buffer(16, eviction, embed_dim=2 if eviction == "coverage_max"
                                else None)
    example = Transition(jnp.zeros(2), jnp.zeros(1), jnp.zeros(()), jnp.zeros(()),
                         jnp.zeros(2))

    @jax.jit
    def stream(key):
        def add(state, k):
            item = jax.tree.map(lambda e: jax.random.normal(k, (4,) + e.shape), example)
            extras = {"embeddings": item.obs} if eviction == "coverage_max" else {}
            return buffer.add(state, item, k, **extras), None
        state, _ = jax.lax.scan(add, buffer.init(example), jax.random.split(key, 40))
        batch = buffer.sample(state, key, 10)
        return retention.mix_memory(batch, protected, jnp.asarray(0.3), key)

    mixed = stream(jax.random.key(1))
    np.testing.assert_array_equal(protected.obs, 7.0)
    assert int(jnp.sum(jnp.all(mixed.obs == 7.0, axis=-1))) == 3  # round(0.3 · 10)


def test_kickstarting_decays_per_update_and_every_term_vanishes_at_the_anchor():
    spec = retention.RetentionSpec(memory_size=4, fisher_samples=4, kickstart_decay=0.99)
    apply = lambda p, s: s @ p  # noqa: E731
    star = jnp.asarray([[0.5, -0.2], [0.1, 0.3]])
    other = star + 0.4
    memory = Transition(jnp.ones((4, 2)), jnp.zeros((4, 1)), jnp.zeros(4), jnp.zeros(4),
                        jnp.ones((4, 2)))
    anchor = retention.Anchor(star, jnp.ones_like(star), memory)
    obs = jnp.asarray([[1.0, 2.0], [0.5, -1.0]])
    hp = HParams.defaults(kickstart_coef=0.5)
    at0, logs = retention.actor_penalty(spec, apply, other, anchor, obs, hp, jnp.asarray(0),
                                        jax.random.key(0))
    at100, _ = retention.actor_penalty(spec, apply, other, anchor, obs, hp, jnp.asarray(100),
                                       jax.random.key(0))
    assert float(at0) == pytest.approx(0.5 * float(logs["kickstart_kl"]), rel=1e-5)
    assert float(at100) == pytest.approx(float(at0) * 0.99 ** 100, rel=1e-4)
    all_on = HParams.defaults(bc_coef=1.0, kickstart_coef=1.0, ewc_coef=1.0)
    zero, logs = retention.actor_penalty(spec, apply, star, anchor, obs, all_on, jnp.asarray(0),
                                         jax.random.key(0))
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in logs.values())


@pytest.fixture(scope="module")
def fine_tuned():
    spec = SACSpec(hidden=(8,), retention=retention.RetentionSpec(memory_size=16,
                                                                  fisher_samples=8))
    sac = make_sac(spec, 3, 2)
    pre = [make_sac(SACSpec(hidden=(8,)), 3, 2).init(jax.random.key(i), HParams.defaults())
           for i in (10, 11)]
    stack = lambda f: jax.tree.map(lambda *xs: jnp.stack(xs), *map(f, pre))  # noqa: E731
    memory = Transition(*(jax.random.normal(jax.random.key(k), (2, 16) + s)
                          for k, s in enumerate(((3,), (2,), (), (), (3,)))))
    start = Start(stack(lambda s: s.actor.params), stack(lambda s: s.critic.params),
                  stack(lambda s: s.target), stack(lambda s: s.log_alpha), memory)
    hp = HParams.defaults(source_run=1.0, bc_coef=1.0)
    state = jax.jit(lambda k: sac.start(sac.init(k, hp), start, hp))(jax.random.key(0))
    return sac, pre, state, memory, hp


def test_start_takes_the_paired_pre_trained_run_and_freezes_it_as_the_anchor(fine_tuned):
    _, pre, state, memory, _ = fine_tuned
    same = lambda a, b: all(np.array_equal(x, y) for x, y in  # noqa: E731
                            zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(state.actor.params, pre[1].actor.params)
    assert same(state.critic.params, pre[1].critic.params)
    assert same(state.anchor.actor, pre[1].actor.params)
    assert same(state.anchor.memory, jax.tree.map(lambda a: a[1], memory))
    assert not same(state.actor.params, pre[0].actor.params)
    assert all(bool(jnp.all(f >= 1e-5)) for f in jax.tree.leaves(state.anchor.fisher))


def test_updates_keep_the_anchor_and_log_the_retention_terms(fine_tuned):
    sac, _, state, memory, hp = fine_tuned
    batch = jax.tree.map(lambda a: a[0, :8], memory)
    new, info = jax.jit(sac.update)(state, batch, hp, jax.random.key(1))
    assert {"bc_kl", "kickstart_kl", "ewc_penalty"} <= set(info)
    assert float(info["bc_kl"]) == pytest.approx(0.0, abs=1e-6)  # θ = θ* at the start
    for a, b in zip(jax.tree.leaves(new.anchor), jax.tree.leaves(state.anchor)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(jax.tree.leaves(new.actor.params)[0],
                              jax.tree.leaves(state.actor.params)[0])


def test_continual_ewc_consolidation_anchors_the_actor_and_sums_the_fishers(fine_tuned):
    from continual.agents.sac import make_ewc_consolidation
    sac, _, state, memory, hp = fine_tuned
    consolidate = jax.jit(make_ewc_consolidation(sac))
    obs = memory.obs[0, :8]
    once = consolidate(state, obs, hp, jax.random.key(0))
    twice = consolidate(once, obs, hp, jax.random.key(0))
    assert _all_equal(once.anchor.actor, state.actor.params)
    fisher = retention.gaussian_fisher(
        lambda p, s: sac.networks["actor"].apply(p, s[None])[0][0], state.actor.params, obs)
    for a, b, f in zip(jax.tree.leaves(once.anchor.fisher), jax.tree.leaves(twice.anchor.fisher),
                       jax.tree.leaves(fisher)):
        np.testing.assert_allclose(b - a, f, rtol=1e-4, atol=1e-6)  # one more task's Fisher


def _all_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_sac_config_routes_ewc_to_the_gaussian_policy_fisher():
    from experiments import registry
    from experiments.config import ConfigError
    cfg = registry.from_preset("maze-sac-her", her="none", ewc_coef=(0.0, 1e4))
    assert cfg.continual_ewc
    with pytest.raises(ConfigError, match="--ewc-coef"):
        registry.from_preset("maze-sac-her", her="none", regularizer="ewc")
    with pytest.raises(ConfigError, match="give --init-from"):
        registry.from_preset("maze-sac-her", her="none", bc_coef=(1.0,))
