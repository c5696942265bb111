"""A multi-stage Reacher in the shape of Wołczyk et al.'s RoboticSequence (ICML 2024, arXiv
2402.02868, App. B.3, Alg. 1): stages in one episode, the stage in the observation, a per-stage
time limit, and tasks that differ only in the stage their episodes start in — so a policy can
be pre-trained on the later stages (episodes reset into them) and fine-tuned from the first,
while the loop's evaluation of the later-stage task measures what fine-tuning forgets of them
(REFERENCE.md §6 "Retention for fine-tuning").

RoboticSequence chains four Meta-World tasks (hammer → push → peg-unplug-side → push-wall); here
the stages are Brax's two-link Reacher reaching ``K`` fixed points in turn (:data:`TARGETS`:
four points at radius 0.15 m, 90° apart; the arm starts pointing along +x, so the first stage is
the nearest). What carries over from the paper, per Alg. 1:

* **Stage and time in the observation**: ``obs = arm (8) ‖ one-hot(stage) (K) ‖ t/T (1)``, arm =
  cos θ, sin θ, θ̇ and the fingertip's x, y (:func:`tasks.envs.brax_goals.reacher_arm`). The
  targets are *not* observed: each stage's target is a fact the policy must hold, like the
  paper's subtasks, so learning one stage can overwrite another.
* **Per-stage time limit** ``T`` (``stage_steps``): the stage counter restarts at each success;
  a stage not solved within ``T`` steps terminates the episode (``done``, no bootstrap, as the
  paper's "no bootstrap at the end"). Solving the last stage also terminates it.
* **Reward**: ``r_t = 1 − tanh(d_t / 0.1)`` with ``d_t`` the fingertip's distance to the current
  stage's target (Meta-World-style shaping in [0, 1]), plus on success the
  paper's bonus ``1.5 · r_t · (T − t)``: finishing a stage early is worth more than hovering.
  *Success* is reaching and settling: ``d_t <`` 0.03 m with joint speed ``‖θ̇‖ <`` 2 rad/s. The
  speed condition keeps chance low: measured over 256 uniformly random 50-step episodes, the
  flailing arm passed within 0.03 m of the first target in 27 % of them but settled there in
  0.4 % (in none at 0.5 rad/s).
* **Resetting into later stages**: task ``k`` starts its episodes in stage ``start_stage[k]``
  (data, ``[T_tasks]``, so every task runs under one compilation). Unlike a Meta-World
  sequence, where reaching stage 3 leaves the objects where stages 1–2 put them, a Reacher
  stage's start state does not depend on the earlier stages, so a reset into stage ``s`` starts
  the arm at Brax's initial pose (with its reset noise) and the stage counter at 0.

The Brax target body's slide joints hold the first stage's target at rest (it has no collision
geometry, so the physics is the Reacher's own); Brax's reward and ``done`` are replaced.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasks.envs import brax as brax_envs
from tasks.envs.base import EnvTaskSequence
from tasks.envs.brax_goals import REACHER_STATE_SIZE, reacher_arm, reacher_init

RADIUS = 0.15
# The stage targets (x, y), in order: 90° apart at RADIUS, starting at 45°.
TARGETS = tuple((RADIUS * math.cos(a), RADIUS * math.sin(a))
                for a in (math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4))
THRESHOLD = 0.03     # a stage is solved within this distance (m) ...
SPEED_LIMIT = 2.0    # ... with the joints slower than this (rad/s)
SHAPING_SCALE = 0.1  # r_t = 1 − tanh(d / SHAPING_SCALE)
BONUS = 1.5          # success bonus BONUS · r_t · (T − t) (RoboticSequence's)


class StageTask(NamedTuple):
    """One task (scalar) or a sequence's (``[T]``): the stage its episodes start in."""

    start_stage: Any   # int32


class StageState(NamedTuple):
    inner: Any            # the Brax state
    obs: jax.Array        # arm ‖ one-hot(stage) ‖ t / T
    reward: jax.Array
    done: jax.Array
    stage: jax.Array      # int32 current stage
    stage_step: jax.Array  # int32 steps into the current stage


def reacher_stages(start_stages: Sequence[int] = (0, 2), *, stages: int = 4,
                   stage_steps: int = 50, backend: Optional[str] = None) -> EnvTaskSequence:
    """The multi-stage Reacher with ``stages`` stages (the first of :data:`TARGETS`), one task
    per entry of ``start_stages`` (see the module docstring)."""
    if not 1 <= stages <= len(TARGETS):
        raise ValueError(f"stages must be in 1..{len(TARGETS)}, got {stages}")
    bad = [s for s in start_stages if not 0 <= s < stages]
    if bad or not start_stages:
        raise ValueError(f"start stages must lie in 0..{stages - 1} (one task each), got "
                         f"{list(start_stages)}")
    if stage_steps < 1:
        raise ValueError(f"stage_steps must be >= 1, got {stage_steps}")
    env = brax_envs.make_env("reacher", backend)
    targets = jnp.asarray(TARGETS[:stages], jnp.float32)
    params = StageTask(jnp.asarray(np.asarray(start_stages, np.int32)))

    def observe(pipeline_state, stage, stage_step):
        return jnp.concatenate([reacher_arm(pipeline_state),
                                jax.nn.one_hot(stage, stages),
                                (stage_step / stage_steps)[None].astype(jnp.float32)])

    def reset(task: StageTask, key) -> StageState:
        inner = reacher_init(env, key, targets[0])
        stage = jnp.asarray(task.start_stage, jnp.int32)
        zero_step = jnp.zeros((), jnp.int32)
        zero = jnp.zeros(())
        return StageState(inner, observe(inner.pipeline_state, stage, zero_step), zero, zero,
                          stage, zero_step)

    def step(task: StageTask, state: StageState, action) -> StageState:
        del task  # the start stage only matters at reset
        inner = env.step(state.inner, action)
        arm = reacher_arm(inner.pipeline_state)
        distance = jnp.linalg.norm(arm[6:8] - targets[state.stage])
        shaped = 1.0 - jnp.tanh(distance / SHAPING_SCALE)
        solved = (distance < THRESHOLD) & (jnp.linalg.norm(arm[4:6]) < SPEED_LIMIT)
        t = state.stage_step + 1
        reward = shaped + jnp.where(solved, BONUS * shaped * (stage_steps - t), 0.0)
        done = jnp.where(solved, state.stage == stages - 1, t >= stage_steps)
        stage = jnp.minimum(state.stage + solved, stages - 1)
        stage_step = jnp.where(solved, 0, t)
        return StageState(inner, observe(inner.pipeline_state, stage, stage_step), reward,
                          done.astype(jnp.float32), stage, stage_step)

    return EnvTaskSequence(f"reacher-stages-{env.backend}", env, params, reset, step,
                           len(start_stages), REACHER_STATE_SIZE + stages + 1,
                           int(env.action_size))
