"""tasks.envs.playground: DMC task sequences over MuJoCo Playground, one compile per sequence.

One module-scoped fixture builds ONE cross-domain sequence (cartpole and cheetah, ``impl=jax``):
CartpoleBalance, CartpoleSwingupSparse, then CheetahRun at base physics, gravity ×0.5, friction
×0.25, mass ×2, actuator ×0.5, then CheetahRun@3 and CheetahRun@-10, and compiles ONE rollout
(2 envs, 20 steps, fixed random actions given as an argument) over (task params, key, actions).
Every task after the first runs under ``jax.no_tracing(True)``; a second action array whose
padded entries differ runs too. Rewards are checked against Playground's own reward classes
(one small jitted function per class) and, for the cheetah, against the formula computed here.
Walker and hopper objectives and the Warp solver-warning count are ``slow``, and so is every
test of that fixture (it compiles for about a minute); the default run compiles one small
CartpoleBalance dynamics sequence instead: one compile for its tasks, and each physics
parameter it has changes the trajectory.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("mujoco_playground")

from tasks.base import task_slice  # noqa: E402
from tasks.envs import playground as pg  # noqa: E402

N_ENVS, N_STEPS = 2, 20
TASKS = ("CartpoleBalance", "CartpoleSwingupSparse") + ("CheetahRun",) * 5 + (
    "CheetahRun@3", "CheetahRun@-10")
ONES = [1.0] * 9
SCALES = dict(gravity_scales=[1, 1, 1, .5, 1, 1, 1, 1, 1],
              friction_scales=[1, 1, 1, 1, .25, 1, 1, 1, 1],
              mass_scales=[1, 1, 1, 1, 1, 2, 1, 1, 1],
              actuator_scales=[1, 1, 1, 1, 1, 1, .5, 1, 1])
BALANCE, SWINGUP, BASE, GRAVITY, FRICTION, MASS, ACTUATOR, SLOW, BACKWARD = range(9)


@pytest.fixture(scope="module")
def seq():
    return pg.sequence(TASKS, impl="jax", **SCALES)


def _rollout_fn(seq, traces):
    def rollout(task, key, actions):
        traces.append(1)
        states = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(key, N_ENVS))
        first = states.obs

        def body(s, a):
            s = jax.vmap(seq.step, (None, 0, 0))(task, s, a)
            return s, (s.obs, s.reward, s.metrics["speed"], s.sims)

        _, out = jax.lax.scan(body, states, actions)
        return (first,) + out

    return jax.jit(rollout)


@pytest.fixture(scope="module")
def runs(seq):
    traces = []
    f = _rollout_fn(seq, traces)
    actions = jax.random.uniform(jax.random.key(3), (N_STEPS, N_ENVS, seq.action_size),
                                 minval=-1, maxval=1)
    # The same actions on the cartpole's own entry, other values on the padded ones.
    other = actions.at[..., 1:].set(-actions[..., 1:] * 0.5 + 0.3)
    tasks = [task_slice(seq.params, t) for t in range(seq.num_tasks)]  # outside no_tracing
    key = jax.random.key(0)
    out = [jax.block_until_ready(f(tasks[0], key, actions))]
    with jax.no_tracing(True):
        out += [jax.block_until_ready(f(t, key, actions)) for t in tasks[1:]]
        padded = jax.block_until_ready(f(tasks[BALANCE], key, other))
    names = ("first", "obs", "reward", "speed", "sims")
    res = [dict(zip(names, jax.tree.map(np.asarray, o))) for o in out]
    return dict(res=res, padded=dict(zip(names, jax.tree.map(np.asarray, padded))),
                traces=len(traces), cache=f._cache_size(), actions=np.asarray(actions))


def test_sequence_fields(seq):
    suite = seq.env
    assert suite.branches == ("cartpole", "cheetah") and suite.impl == "jax"
    assert (suite.observation_sizes, suite.action_sizes) == ((5, 17), (1, 6))
    assert (seq.observation_size, seq.action_size, seq.num_tasks) == (17, 6, 9)
    np.testing.assert_array_equal(seq.params.branch, [0, 0] + [1] * 7)
    np.testing.assert_allclose(seq.params.move_speed, [0, 0] + [10] * 5 + [3, -10])
    np.testing.assert_allclose(seq.params.swing_up, [0, 1] + [0] * 7)
    np.testing.assert_allclose(seq.params.sparse, [0, 1] + [0] * 7)


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_one_compile_for_the_whole_sequence(runs):
    assert len(runs["res"]) == 9
    assert runs["traces"] == 1 and runs["cache"] == 1


def _qpos(r, branch):
    return r["sims"][branch].data.qpos


@pytest.mark.parametrize("task", [GRAVITY, FRICTION, MASS, ACTUATOR],
                         ids=["gravity", "friction", "mass", "actuator"])
@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_each_physics_parameter_changes_the_trajectory(runs, task):
    res = runs["res"]
    q, base = _qpos(res[task], 1), _qpos(res[BASE], 1)
    assert np.all(np.isfinite(q))
    assert np.abs(q - base).max() > 1e-2


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_objectives_change_reward_not_trajectory(runs):
    res = runs["res"]
    for t in (SLOW, BACKWARD):
        np.testing.assert_array_equal(_qpos(res[t], 1), _qpos(res[BASE], 1))
    v = res[BASE]["speed"]
    assert v.min() < 0 < v.max()  # both signs of the move term are exercised
    # DMC's run reward, computed here: tolerance(v, (s, inf), margin s, linear, 0) = clip(v/s).
    for t, s in ((BASE, 10.0), (SLOW, 3.0), (BACKWARD, -10.0)):
        np.testing.assert_allclose(res[t]["reward"], np.clip(v / s, 0, 1), rtol=1e-5,
                                   atol=1e-6)
    assert not np.allclose(res[SLOW]["reward"], res[BASE]["reward"])


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_speed_is_the_torso_velocity_sensor(runs, seq):
    env = seq.env.envs[1]
    s = env.mj_model.sensor("torso_subtreelinvel")
    data = runs["res"][BASE]["sims"][1].data
    np.testing.assert_allclose(runs["res"][BASE]["speed"],
                               data.sensordata[..., s.adr[0]], rtol=1e-6)


@pytest.fixture(scope="module")
def playground_rewards(runs):
    """Playground's own reward of each named task on the states the sequence produced."""
    from mujoco_playground import registry

    def of(name, branch, r):
        env = registry.load(name, config_overrides={"impl": "jax"})
        fn = jax.jit(jax.vmap(jax.vmap(lambda d, a: env._get_reward(d, a, {}, {}))))
        size = env.action_size
        return np.asarray(fn(r["sims"][branch].data, jnp.asarray(runs["actions"][..., :size])))

    res = runs["res"]
    return {t: of(name, b, res[t]) for t, name, b in (
        (BALANCE, "CartpoleBalance", 0), (SWINGUP, "CartpoleSwingupSparse", 0),
        (BASE, "CheetahRun", 1))}


@pytest.mark.parametrize("task", [BALANCE, SWINGUP, BASE],
                         ids=["CartpoleBalance", "CartpoleSwingupSparse", "CheetahRun"])
@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_default_objective_is_playgrounds_reward(runs, playground_rewards, task):
    ours = runs["res"][task]["reward"]
    np.testing.assert_allclose(ours, playground_rewards[task], rtol=1e-5, atol=1e-6)
    assert np.ptp(ours) > 0 or task == SWINGUP  # sparse: 0 while the pole hangs


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_cartpole_swing_up_starts_hanging(runs):
    cos = lambda t: runs["res"][t]["first"][:, 1]  # obs: cart position, pole cos, sin, ...
    assert np.all(cos(BALANCE) > 0.99) and np.all(cos(SWINGUP) < -0.99)


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_cross_domain_padding(runs):
    res = runs["res"]
    for r in res:
        assert r["obs"].shape == (N_STEPS, N_ENVS, 17) and r["first"].shape == (N_ENVS, 17)
    for t in (BALANCE, SWINGUP):  # cartpole: 5 observations, the rest zeros
        assert np.all(res[t]["obs"][..., 5:] == 0) and np.all(res[t]["first"][..., 5:] == 0)
        assert np.abs(res[t]["obs"][..., :5]).max() > 0
    # The inactive branch is never stepped: the cheetah's state stays zeros on cartpole tasks.
    assert np.all(res[BALANCE]["sims"][1].data.qpos == 0)
    assert np.all(res[BASE]["sims"][0].data.qpos == 0)


@pytest.mark.slow  # the cross-domain fixture compiles for about a minute
def test_padded_action_entries_have_no_effect(runs):
    a, b = runs["res"][BALANCE], runs["padded"]
    assert not np.array_equal(runs["actions"][..., 1:], 0)
    np.testing.assert_array_equal(b["obs"], a["obs"])
    np.testing.assert_array_equal(b["reward"], a["reward"])


@pytest.mark.parametrize("call, valid", [
    (lambda: pg.sequence(["CheetahRunn"]), "AcrobotSwingup, AcrobotSwingupSparse, BallInCup"),
    (lambda: pg.sequence(["CartpoleBalance@2"]), "walker, hopper, cheetah"),
    (lambda: pg.sequence(["CheetahRun"], impl="mjx"), "jax, warp"),
    (lambda: pg.params(2, gravityy=1.0), "gravity, friction, mass"),
    (lambda: pg.sequence([]), "CheetahRun"),
], ids=["task", "speed", "impl", "param", "empty"])
def test_bad_names_list_valid_values(call, valid):
    with pytest.raises(ValueError, match=valid):
        call()


def test_bad_speed():
    with pytest.raises(ValueError, match="must be a number"):
        pg.parse_task("WalkerWalk@fast")
    with pytest.raises(ValueError, match="nonzero"):
        pg.parse_task("CheetahRun@0")
    assert pg.parse_task("WalkerWalk@-1") == ("WalkerWalk", "walker", {"move_speed": -1.0})


def test_default_speeds_are_playgrounds():
    from mujoco_playground._src.dm_control_suite import cheetah, hopper, walker
    speeds = {n: v["move_speed"] for n, (_, v) in pg.FAMILY_TASKS.items() if "move_speed" in v}
    assert speeds == {"WalkerStand": 0.0, "WalkerWalk": walker.WALK_SPEED,
                      "WalkerRun": walker.RUN_SPEED, "HopperStand": 0.0,
                      "HopperHop": hopper._HOP_SPEED, "CheetahRun": cheetah._RUN_SPEED}
    assert set(pg.FAMILY_TASKS) <= set(pg.task_names())


def test_default_impl_per_platform():
    assert pg.DEFAULT_IMPL["cpu"] == "jax" and pg.DEFAULT_IMPL["gpu"] == "warp"
    assert pg.default_impl() == pg.DEFAULT_IMPL.get(jax.default_backend(), "jax")


def test_dynamics_family_params():
    p = pg.dynamics("CartpoleBalance").params
    np.testing.assert_allclose(p.gravity, [1, .5, 1, 1, 1])
    np.testing.assert_allclose(p.actuator, [1, 1, 1, 1, .5])
    with pytest.raises(ValueError, match="differ in length"):
        pg.dynamics("CartpoleBalance", gravity_scales=[1, 2], mass_scales=[1, 2, 3])


# ----------------------------------------------------------------------------- slow checks
def _objective_rollout(names, speeds_expected):
    """A one-domain sequence, one rollout per task; our rewards and Playground's own."""
    from mujoco_playground import registry
    seq = pg.objectives(names, impl="jax")
    traces = []
    f = _rollout_fn(seq, traces)
    actions = jax.random.uniform(jax.random.key(1), (N_STEPS, N_ENVS, seq.action_size),
                                 minval=-1, maxval=1)
    out = [f(task_slice(seq.params, t), jax.random.key(0), actions)
           for t in range(seq.num_tasks)]
    assert len(traces) == 1
    np.testing.assert_allclose(seq.params.move_speed, speeds_expected)
    rewards = [np.asarray(o[2]) for o in out]
    own = {}
    for t, name in enumerate(names):
        if "@" in name:
            continue
        env = registry.load(name, config_overrides={"impl": "jax"})
        fn = jax.jit(jax.vmap(jax.vmap(lambda d, a: env._get_reward(d, a, {}, {}))))
        own[t] = np.asarray(fn(out[t][4][0].data, actions))
    return rewards, own, np.asarray(out[0][3])


@pytest.mark.slow
def test_walker_objectives_are_playgrounds_rewards():
    names = ("WalkerStand", "WalkerWalk", "WalkerRun", "WalkerWalk@-1")
    rewards, own, v = _objective_rollout(names, [0, 1, 8, -1])
    for t, r in own.items():
        np.testing.assert_allclose(rewards[t], r, rtol=1e-5, atol=1e-6)
    stand = rewards[0]  # WalkerWalk@-1: the move term on -v (tolerance linear, margin 1/2)
    move = np.where(-v >= 1, 1, np.clip(1 - (1 - -v) / 0.5 * 0.5, 0, None))
    np.testing.assert_allclose(rewards[3], stand * (5 * move + 1) / 6, rtol=1e-5, atol=1e-6)
    assert not np.allclose(rewards[0], rewards[1])


@pytest.mark.slow
def test_hopper_objectives_are_playgrounds_rewards():
    rewards, own, _ = _objective_rollout(("HopperStand", "HopperHop"), [0, 2])
    for t, r in own.items():
        np.testing.assert_allclose(rewards[t], r, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_warp_solver_warnings_are_counted_not_printed(capfd):
    seq = pg.dynamics("WalkerWalk", gravity_scales=[1.0, 0.5], impl="warp")
    f = _rollout_fn(seq, [])
    actions = jax.random.uniform(jax.random.key(1), (N_STEPS, N_ENVS, seq.action_size),
                                 minval=-1, maxval=1)

    @jax.jit
    def limits(task):
        states = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(jax.random.key(0), N_ENVS))
        return jax.lax.scan(lambda s, a: (lambda n: (n, n.metrics["solver_limit"]))(
            jax.vmap(seq.step, (None, 0, 0))(task, s, a)), states, actions)[1]

    hits = [np.asarray(limits(task_slice(seq.params, t))) for t in range(2)]
    q = [np.asarray(f(task_slice(seq.params, t), jax.random.key(0), actions)[4][0].data.qpos)
         for t in range(2)]
    assert "solver iterations limit" not in capfd.readouterr().out
    assert sum(h.sum() for h in hits) > 0  # the walker's 2 iterations are often not enough
    assert np.abs(q[1] - q[0]).max() > 1e-2  # traced physics reaches Warp's kernels too


# ----------------------------------------------------------------------------- config wiring
def test_config_builds_the_dmc_sequence():
    from experiments.kinds import rl
    from experiments.kinds.sac import SACConfig
    cfg = SACConfig(env="dmc", dmc_tasks=("CartpoleBalance", "CartpoleSwingup"),
                    dmc_impl="jax")
    cfg.validate()
    s = rl.env_sequence(cfg)
    assert (s.num_tasks, cfg.num_tasks) == (2, 2) and s.env.branches == ("cartpole",)
    np.testing.assert_allclose(s.params.swing_up, [0, 1])
    cfg = SACConfig(env="dmc", family="dynamics", dmc_tasks=("CartpoleBalance",),
                    mass=(1.0, 2.0), dmc_impl="jax")
    cfg.validate()
    s = rl.env_sequence(cfg)
    assert cfg.num_tasks == 2 and "dynamics" in cfg.describe()
    np.testing.assert_allclose(s.params.mass, [1, 2])


@pytest.mark.parametrize("kw, message", [
    (dict(dmc_tasks=("Walker",)), "valid: AcrobotSwingup"),
    (dict(family="goals"), "valid: objectives"),
    (dict(family="dynamics"), "one DMC task"),
    (dict(gravity=(1.0,)), "one value per DMC task"),
    (dict(backend="mjx"), "dmc-impl"),
], ids=["task", "family", "dynamics", "scales", "backend"])
def test_config_errors_name_the_valid_values(kw, message):
    from experiments.config import ConfigError
    from experiments.kinds.sac import SACConfig
    with pytest.raises(ConfigError, match=message):
        SACConfig(env="dmc", **kw).validate()


def test_missing_playground_says_how_to_install(monkeypatch):
    from experiments.config import ConfigError
    from experiments.kinds.sac import SACConfig

    def missing():
        raise ImportError(f"the dmc env needs MuJoCo Playground: {pg.INSTALL}")

    monkeypatch.setattr(pg, "_playground", missing)
    with pytest.raises(ConfigError, match="pip install playground==0.2.0"):
        SACConfig(env="dmc").validate()


@pytest.mark.slow
def test_warp_state_has_an_env_axis_and_playgrounds_trajectory():
    """The loop selects per env at auto-reset: Warp's shared contact buffers are kept out of
    the state, and the zeroed buffers ``step`` hands Warp change nothing."""
    seq = pg.sequence(["CheetahRun"], impl="warp")
    task, env = task_slice(seq.params, 0), seq.env.envs[0]
    keys = jax.random.split(jax.random.key(0), N_ENVS)
    actions = jax.random.uniform(jax.random.key(1), (N_STEPS, N_ENVS, seq.action_size),
                                 minval=-1, maxval=1)

    @jax.jit
    def ours(task):
        s = jax.vmap(seq.reset, (None, 0))(task, keys)
        s, q = jax.lax.scan(lambda s, a: (lambda n: (n, n.sims[0].data.qpos))(
            jax.vmap(seq.step, (None, 0, 0))(task, s, a)), s, actions)
        return s, q

    @jax.jit
    def own():
        s = jax.vmap(env.reset)(jax.vmap(jax.random.key_data)(keys))
        return jax.lax.scan(lambda s, a: (lambda n: (n, n.data.qpos))(jax.vmap(env.step)(s, a)),
                            s, actions)[1]

    state, q = ours(task)
    assert all(leaf.shape[:1] == (N_ENVS,) for leaf in jax.tree.leaves(state))
    np.testing.assert_array_equal(np.asarray(q), np.asarray(own()))
    assert np.abs(np.asarray(q)[-1] - np.asarray(q)[0]).max() > 1e-2


def test_a_cartpole_dynamics_sequence_compiles_once_and_each_scale_changes_the_trajectory():
    """CartpoleBalance under base, gravity ×0.5, mass ×2 and actuator ×0.5 (the cartpole has
    no contacts, so friction is the cross-domain fixture's cheetah's): one compiled rollout
    serves every task, and each scale moves the cart-pole's joints away from the base run."""
    seq = pg.dynamics("CartpoleBalance", gravity_scales=[1, .5, 1, 1],
                      mass_scales=[1, 1, 2, 1], actuator_scales=[1, 1, 1, .5], impl="jax")
    traces = []
    f = _rollout_fn(seq, traces)
    actions = jax.random.uniform(jax.random.key(3), (N_STEPS, N_ENVS, seq.action_size),
                                 minval=-1, maxval=1)
    tasks = [task_slice(seq.params, t) for t in range(seq.num_tasks)]
    out = [jax.block_until_ready(f(tasks[0], jax.random.key(0), actions))]
    with jax.no_tracing(True):
        out += [jax.block_until_ready(f(t, jax.random.key(0), actions)) for t in tasks[1:]]
    assert len(traces) == 1 and f._cache_size() == 1
    qpos = [np.asarray(o[4][0].data.qpos) for o in out]   # sims of the one (cartpole) branch
    for t in (1, 2, 3):
        assert np.all(np.isfinite(qpos[t])) and np.abs(qpos[t] - qpos[0]).max() > 1e-3, t
