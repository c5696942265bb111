"""tasks.envs.brax: physics and objective task sequences over Brax envs, one compile for all tasks.

One module-scoped fixture builds the halfcheetah sequence on mjx (fast solver, default tasks) and
compiles ONE rollout (2 envs, 20 steps, a fixed action) over (task params, key). It runs the five
dynamics tasks and four objective tasks (families share one params structure, so they run through
the same compiled step); every task after the first runs under ``jax.no_tracing(True)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.envs import brax as be
from tasks.base import task_slice

N_ENVS, N_STEPS = 2, 20
DIRECTIONS = (1.0, -1.0)
TARGETS = (0.5, 2.0)
# Task indices in the concatenated params: dynamics (base, gravity, friction, mass, actuator),
# then direction +1, -1, then the two targets.
BASE, GRAVITY, FRICTION, MASS, ACTUATOR, FWD, BWD, TGT0, TGT1 = range(9)


@pytest.fixture(scope="module")
def seq():
    return be.dynamics("halfcheetah", backend="mjx")  # fast solver, default 5 tasks


@pytest.fixture(scope="module")
def runs(seq):
    traces = []

    def rollout(task, key):
        traces.append(1)
        states = jax.vmap(seq.reset, (None, 0))(task, jax.random.split(key, N_ENVS))
        action = jnp.full((N_ENVS, seq.action_size), 0.5)

        def body(s, _):
            s = jax.vmap(seq.step, (None, 0, 0))(task, s, action)
            m = s.metrics
            return s, (s.reward, m["reward_task"], m["x_velocity"], m["reward_run"] + m["reward_ctrl"])

        s, out = jax.lax.scan(body, states, None, N_STEPS)
        return (s.pipeline_state.q,) + out

    f = jax.jit(rollout)
    all_params = be.concat(seq.params, be.objective_params("direction", DIRECTIONS),
                           be.objective_params("target_velocity", TARGETS))
    n = int(all_params.gravity.shape[0])
    tasks = [task_slice(all_params, t) for t in range(n)]  # built outside no_tracing
    key = jax.random.PRNGKey(0)
    out = [jax.block_until_ready(f(tasks[0], key))]
    with jax.no_tracing(True):
        out += [jax.block_until_ready(f(t, key)) for t in tasks[1:]]
    names = ("q", "reward", "reward_task", "v", "env_reward")
    res = [dict(zip(names, map(np.asarray, o))) for o in out]
    return res, len(traces), f._cache_size()


def test_sequence_fields(seq):
    assert seq.env.backend == "mjx"
    assert seq.env.sys.opt.iterations == 1 and seq.env.sys.opt.ls_iterations == 4
    assert seq.num_tasks == 5 and seq.params.gravity.shape == (5,)
    assert (seq.observation_size, seq.action_size) == (17, 6)


def test_build_sys_sets_both_copies_and_keeps_shapes(seq):
    base = seq.env.sys
    task = be.EnvParams(gravity=0.5, friction=0.25, mass=2.0, actuator=3.0,
                        forward_weight=1.0, target_velocity=0.0, use_target=0.0)
    sys = be.build_sys(base, task)
    a, b = jax.tree.structure(base), jax.tree.structure(sys)
    assert a == b  # same static fields (solver iterations etc.)
    assert [np.shape(x) for x in jax.tree.leaves(base)] == [np.shape(x) for x in jax.tree.leaves(sys)]
    close = lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    close(sys.opt.gravity, 0.5 * np.asarray(base.opt.gravity))
    close(sys.gravity, 0.5 * np.asarray(base.gravity))
    close(sys.body_mass, 2 * np.asarray(base.body_mass))
    close(sys.body_inertia, 2 * np.asarray(base.body_inertia))
    close(sys.link.inertia.mass, 2 * np.asarray(base.link.inertia.mass))
    close(sys.link.inertia.i, 2 * np.asarray(base.link.inertia.i))
    close(sys.geom_friction[:, 0], 0.25 * np.asarray(base.geom_friction)[:, 0])
    close(sys.geom_friction[:, 1:], np.asarray(base.geom_friction)[:, 1:])
    close(sys.actuator_gear, 3 * np.asarray(base.actuator_gear))
    close(sys.actuator.gear, 3 * np.asarray(base.actuator.gear))


def test_one_compile_for_all_tasks(runs):
    res, n_traces, cache_size = runs
    assert len(res) == 9
    assert n_traces == 1 and cache_size == 1


@pytest.mark.parametrize("task", [GRAVITY, FRICTION, MASS, ACTUATOR],
                         ids=["gravity", "friction", "mass", "actuator"])
def test_each_physics_parameter_changes_the_trajectory(runs, task):
    res = runs[0]
    assert np.all(np.isfinite(res[task]["q"]))
    assert np.abs(res[task]["q"] - res[BASE]["q"]).max() > 1e-2


def test_dynamics_tasks_keep_the_env_reward(runs):
    for r in runs[0][:FWD]:
        np.testing.assert_allclose(r["reward"], r["env_reward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r["reward_task"], r["v"], rtol=1e-6)


def test_objectives_change_reward_not_trajectory(runs):
    res = runs[0]
    base, fwd, bwd = res[BASE], res[FWD], res[BWD]
    for t in (FWD, BWD, TGT0, TGT1):  # same physics as the base task: same trajectory
        np.testing.assert_array_equal(res[t]["q"], base["q"])
    v = base["v"]
    assert np.abs(v).max() > 1e-2
    np.testing.assert_allclose(fwd["reward"], base["reward"], rtol=1e-6)
    np.testing.assert_allclose(fwd["reward_task"], v, rtol=1e-6)
    np.testing.assert_allclose(bwd["reward_task"], -v, rtol=1e-6)  # the sign flips
    np.testing.assert_allclose(bwd["reward"], fwd["reward"] - 2 * v, rtol=1e-5, atol=1e-5)
    for t, target in zip((TGT0, TGT1), TARGETS):
        np.testing.assert_allclose(res[t]["reward_task"], -np.abs(v - target), rtol=1e-6)
        np.testing.assert_allclose(res[t]["reward"], fwd["reward"] - v - np.abs(v - target),
                                   rtol=1e-5, atol=1e-5)


def test_family_params():
    p = be.dynamics_params(gravity_scales=[1.0, 0.5, 2.0], mass_scales=1.5)
    np.testing.assert_allclose(p.gravity, [1, .5, 2])
    np.testing.assert_allclose(p.mass, [1.5] * 3)
    np.testing.assert_allclose(p.friction, [1] * 3)
    p = be.objective_params("target_velocity", [1.0, 2.0])
    np.testing.assert_allclose(p.use_target, [1, 1])
    np.testing.assert_allclose(p.target_velocity, [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        be.dynamics_params(gravity_scales=[1, 2], friction_scales=[1, 2, 3])


@pytest.mark.parametrize("call, valid", [
    (lambda: be.dynamics("cheetah"), "halfcheetah, ant, hopper, walker2d"),
    (lambda: be.objectives("halfcheetah", backend="mujoco"), "mjx, generalized, positional, spring"),
    (lambda: be.objectives("halfcheetah", kind="speed"), "direction, target_velocity"),
    (lambda: be.params(2, gravityy=1.0), "gravity, friction, mass"),
], ids=["env", "backend", "kind", "param"])
def test_bad_names_list_valid_values(call, valid):
    with pytest.raises(ValueError, match=valid):
        call()
