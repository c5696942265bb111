"""Train JaxGCRL's own CRL agent and report throughput as one JSON line.

Peer benchmark for plax.  JaxGCRL (github.com/MichalBortkiewicz/JaxGCRL, commit
6dccab2, pinned to jax 0.4.25 / brax 0.12.1) is NOT a dependency of plax: run this
file with the interpreter of the separate venv built by
``bench/peers/jaxgcrl_setup.sh``::

    bash bench/peers/jaxgcrl_setup.sh
    .venv-jaxgcrl/bin/python bench/peers/jaxgcrl_crl.py --env ant --num-envs 32 \
        --total-env-steps 50000 --num-evals 2 --num-eval-envs 8 --batch-size 256

It builds the environment with JaxGCRL's ``create_env`` and calls JaxGCRL's own
trainer, ``jaxgcrl.agents.crl.crl.CRL.train_fn`` (the function its ``run.py``
calls), with wandb, rendering and checkpointing disabled (a progress_fn of our
own replaces its MetricsRecorder).  The only interference is a thin subclass of
its ``ActorEvaluator`` (swapped into the ``crl`` module's namespace) that takes
timestamps and reads the trainer's own ``TrainingState`` counters
(``env_steps``, ``gradient_steps``) at each evaluation.  All JaxGCRL log lines
and any other output go to stderr; stdout gets exactly one JSON line.

What JaxGCRL's settings mean (jaxgcrl/agents/crl/crl.py, utils/config.py,
utils/replay_buffer.py at 6dccab2):

* One *training step* = collect ``unroll_length`` steps from each of
  ``num_envs`` envs (``num_envs*unroll_length`` env steps, stochastic policy),
  insert them into the replay buffer, then sample one window of
  ``episode_length`` consecutive time rows for every env (all ``num_envs``
  columns, random start), relabel goals with geometrically discounted future
  states of the same trajectory, shuffle the ``num_envs*(episode_length-1)``
  transitions and do one gradient update (actor + alpha + critic, each one
  Adam step) per minibatch of ``batch_size``:
  ``num_envs*(episode_length-1)/batch_size`` updates per training step (must
  be an integer, checked by ``CRL.check_config``).  ``train_step_multiplier``
  is only used by run.py's printed ``utd_ratio``; the CRL trainer ignores it.
* Prefill: ``ceil(min_replay_size/unroll_length)`` collection-only steps
  before training (counted in ``env_steps``).  ``min_replay_size`` and
  ``max_replay_size`` count time rows per env, i.e. the buffer holds
  ``max_replay_size*num_envs`` transitions (FIFO by rolling).
* ``num_evals`` epochs; each epoch runs
  ``(total_env_steps - min_replay_size*num_envs) // (num_evals*num_envs*unroll_length)``
  training steps and is followed by one deterministic evaluation of
  ``num_eval_envs`` envs for ``episode_length`` steps.  Because of this floor
  division (and the ceil in the prefill) the steps actually run differ from
  ``total_env_steps``; JaxGCRL then fails its own final
  ``assert total_steps >= total_env_steps`` when fewer were run.  Also, with
  ``checkpoint_logdir=None`` its ``return`` references an unbound ``params``
  (UnboundLocalError).  Both happen after all training and evaluation are
  done; this script records them in ``trainer_exit`` and reports the work.

Timing: ``train_seconds`` is the wall time of prefill + training epochs (what
consumes ``env_steps_done``), excluding evaluations and excluding compilation;
compilation is measured as the union of JAX's own compile-event intervals
(tracing, MLIR lowering, backend compile, via ``jax.monitoring``) falling in
those windows (``compile_seconds``).  ``sps = env_steps_done/train_seconds``.
``steady_epoch_sps`` (epochs after the first, which hold no compilation) and
JaxGCRL's own ``training/sps`` per epoch are reported as a cross-check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
import traceback

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MUJOCO_GL", "egl")

_REAL_STDOUT = sys.stdout


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    # RunConfig (jaxgcrl/utils/config.py); defaults are JaxGCRL's.
    a("--env", default="ant", help="JaxGCRL env name (create_env), default ant")
    a("--backend", default=None, help="brax backend; default: JaxGCRL's per-env default (ant: spring)")
    a("--num-envs", type=int, default=256)
    a("--total-env-steps", type=int, default=50_000_000)
    a("--episode-length", type=int, default=1001)
    a("--num-evals", type=int, default=200, help="epochs; one evaluation after each")
    a("--num-eval-envs", type=int, default=256)
    a("--action-repeat", type=int, default=1)
    a("--seed", type=int, default=0)
    # CRL agent (jaxgcrl/agents/crl/crl.py); defaults are JaxGCRL's.
    a("--batch-size", type=int, default=256)
    a("--unroll-length", type=int, default=62)
    a("--min-replay-size", type=int, default=1000, help="time rows per env collected before training")
    a("--max-replay-size", type=int, default=10000, help="time rows per env kept (x num_envs transitions)")
    a("--discounting", type=float, default=0.99)
    a("--policy-lr", type=float, default=3e-4)
    a("--critic-lr", type=float, default=3e-4)
    a("--alpha-lr", type=float, default=3e-4)
    a("--logsumexp-penalty-coeff", type=float, default=0.1)
    a("--h-dim", type=int, default=256, help="network width (actor and both encoders)")
    a("--n-hidden", type=int, default=2, help="network depth (hidden Dense layers)")
    a("--skip-connections", type=int, default=4, help="residual every N layers (0: none)")
    a("--repr-dim", type=int, default=64)
    a("--use-relu", action="store_true", help="ReLU instead of swish")
    a("--use-ln", action="store_true", help="LayerNorm in the encoders")
    a("--contrastive-loss-fn", default="fwd_infonce",
      choices=["fwd_infonce", "sym_infonce", "bwd_infonce", "binary_nce"])
    a("--energy-fn", default="norm", choices=["norm", "l2", "dot", "cosine"])
    return p.parse_args(argv)


class _CompileClock:
    """Collects the intervals of JAX compile events (tracing, lowering, compile)."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.intervals = []  # (start, end) in time.time() seconds, possibly nested

    def __call__(self, event, duration, **kwargs):
        if event in self.EVENTS:
            now = time.time()
            self.intervals.append((now - float(duration), now))

    def seconds_in(self, windows):
        """Length of (union of compile intervals) intersected with the windows."""
        merged = []
        for s, e in sorted(self.intervals):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        total = 0.0
        for ws, we in windows:
            for s, e in merged:
                total += max(0.0, min(e, we) - max(s, ws))
        return total


def main(argv=None):
    args = _parse_args(argv)
    result = {"env": args.env, "num_envs": args.num_envs, "env_steps_requested": args.total_env_steps}
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result.update(_run(args))
        except Exception as e:  # noqa: BLE001 - report as JSON
            traceback.print_exc()
            result["error"] = f"{type(e).__name__}: {e}"
    _REAL_STDOUT.write(json.dumps(result) + "\n")
    _REAL_STDOUT.flush()
    return 0 if "error" not in result else 1


def _run(args):
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s %(levelname)-8s|  %(message)s", datefmt="%H:%M:%S",
    )
    t_import = time.time()
    import jax
    import jax.monitoring
    import numpy as np

    import jaxgcrl.agents.crl.crl as crl_mod
    from jaxgcrl.agents.crl.crl import CRL
    from jaxgcrl.utils.config import RunConfig
    from jaxgcrl.utils.env import create_env

    import_seconds = time.time() - t_import
    clock = _CompileClock()
    jax.monitoring.register_event_duration_secs_listener(clock)

    # --- JaxGCRL's own configuration objects -------------------------------------
    agent = CRL(
        policy_lr=args.policy_lr, critic_lr=args.critic_lr, alpha_lr=args.alpha_lr,
        batch_size=args.batch_size, discounting=args.discounting,
        logsumexp_penalty_coeff=args.logsumexp_penalty_coeff,
        max_replay_size=args.max_replay_size, min_replay_size=args.min_replay_size,
        unroll_length=args.unroll_length, h_dim=args.h_dim, n_hidden=args.n_hidden,
        skip_connections=args.skip_connections, use_relu=args.use_relu, repr_dim=args.repr_dim,
        use_ln=args.use_ln, contrastive_loss_fn=args.contrastive_loss_fn, energy_fn=args.energy_fn,
    )
    run = RunConfig(
        env=args.env, total_env_steps=args.total_env_steps, episode_length=args.episode_length,
        num_envs=args.num_envs, num_eval_envs=args.num_eval_envs, action_repeat=args.action_repeat,
        num_evals=args.num_evals, seed=args.seed, backend=args.backend,
        log_wandb=False, wandb_mode="offline", checkpoint_logdir=None, cuda=False,
    )

    # --- what crl.py lines 202-207 will compute ----------------------------------
    env_steps_per_actor_step = run.num_envs * agent.unroll_length
    prefill_actor_steps = int(np.ceil(agent.min_replay_size / agent.unroll_length))
    steps_per_epoch = (run.total_env_steps - agent.min_replay_size * run.num_envs) // (
        run.num_evals * env_steps_per_actor_step
    )
    updates_per_training_step = run.num_envs * (run.episode_length - 1) / agent.batch_size
    expected = {
        "env_steps_per_training_step": env_steps_per_actor_step,
        "prefill_actor_steps": prefill_actor_steps,
        "training_steps_per_epoch": int(steps_per_epoch),
        "training_steps": int(steps_per_epoch * run.num_evals),
        "updates_per_training_step": updates_per_training_step,
        "env_steps_prefill": prefill_actor_steps * env_steps_per_actor_step,
        "env_steps_train": int(steps_per_epoch * run.num_evals * env_steps_per_actor_step),
        "updates": updates_per_training_step * steps_per_epoch * run.num_evals,
        "eval_env_steps": run.num_evals * run.num_eval_envs * run.episode_length,
    }
    expected["env_steps_done"] = expected["env_steps_prefill"] + expected["env_steps_train"]
    logging.info("expected (from JaxGCRL's formulas): %s", expected)

    # --- instrumentation: timestamps + trainer counters at each evaluation -----
    marks = {"evals": []}  # each: dict(start, end, env_steps, gradient_steps)

    class TimedEvaluator(crl_mod.ActorEvaluator):
        def __init__(self, *a, **k):
            marks["prefill_end"] = time.time()  # constructed right after prefill (crl.py:540)
            super().__init__(*a, **k)
            marks["eval_init_end"] = time.time()

        def run_evaluation(self, training_state, training_metrics, aggregate_episodes=True):
            t0 = time.time()
            env_steps = int(training_state.env_steps.item())
            grad_steps = int(training_state.gradient_steps.item())
            actor_steps = int(training_state.actor_state.step.item())
            critic_steps = int(training_state.critic_state.step.item())
            out = super().run_evaluation(training_state, training_metrics, aggregate_episodes)
            marks["evals"].append(dict(start=t0, end=time.time(), env_steps=env_steps,
                                       gradient_steps=grad_steps, actor_steps=actor_steps,
                                       critic_steps=critic_steps))
            return out

    crl_mod.ActorEvaluator = TimedEvaluator

    progress = []  # (time at end of progress_fn, step, selected metrics)

    def progress_fn(step, metrics, *unused, **unused_kw):
        keep = ("training/sps", "training/walltime", "training/envsteps", "training/critic_loss",
                "training/actor_loss", "training/categorical_accuracy", "training/buffer_current_size",
                "eval/epoch_eval_time", "eval/episode_success", "eval/episode_success_any",
                "eval/episode_dist", "eval/avg_episode_length")
        sel = {k: float(np.asarray(metrics[k])) for k in keep if k in metrics}
        logging.info("progress step=%d %s", step, sel)
        progress.append((time.time(), int(step), sel))

    train_env = create_env(env_name=run.env, backend=run.backend)
    eval_env = create_env(env_name=run.env, backend=run.backend)

    trainer_exit = "returned"
    t_start = time.time()
    try:
        agent.train_fn(config=run, train_env=train_env, eval_env=eval_env, progress_fn=progress_fn)
    except (AssertionError, UnboundLocalError, NameError) as e:
        # Known end-of-run failures in crl.py (lines 600 and 604) -- only accepted if
        # every epoch and its evaluation completed.
        if len(progress) != run.num_evals:
            raise
        trainer_exit = f"{type(e).__name__}: {e}".strip()
        logging.warning("JaxGCRL train_fn ended with %s after completing all epochs", trainer_exit)
    t_end = time.time()

    evals = marks["evals"]
    assert len(evals) == run.num_evals == len(progress)
    # Windows that consume env steps: [start, first eval) and [end of progress_fn i, eval i+1)
    prefill_window = (t_start, marks["prefill_end"])
    epoch_windows = [(marks["eval_init_end"], evals[0]["start"])]
    epoch_windows += [(progress[i][0], evals[i + 1]["start"]) for i in range(run.num_evals - 1)]
    wall = lambda ws: sum(e - s for s, e in ws)  # noqa: E731
    prefill_wall = wall([prefill_window])
    epochs_wall = wall(epoch_windows)
    prefill_compile = clock.seconds_in([prefill_window])
    epochs_compile = clock.seconds_in(epoch_windows)
    eval_windows = [(ev["start"], ev["end"]) for ev in evals]
    eval_wall = wall(eval_windows)
    eval_compile = clock.seconds_in(eval_windows)

    env_steps_done = evals[-1]["env_steps"]
    # per-epoch env steps measured from the trainer's counter (formula if only one epoch)
    if len(evals) > 1:
        per_epoch = (evals[-1]["env_steps"] - evals[0]["env_steps"]) // (len(evals) - 1)
    else:
        per_epoch = steps_per_epoch * env_steps_per_actor_step
    env_steps_prefill = evals[0]["env_steps"] - per_epoch
    env_steps_train = env_steps_done - env_steps_prefill
    train_seconds = prefill_wall + epochs_wall - prefill_compile - epochs_compile
    train_loop_seconds = epochs_wall - epochs_compile
    steady = epoch_windows[1:]
    steady_steps = per_epoch * len(steady)

    out = {
        "env_steps_done": env_steps_done,
        "env_steps_prefill": int(env_steps_prefill),
        "env_steps_train": int(env_steps_train),
        "train_seconds": round(train_seconds, 3),
        "compile_seconds": round(prefill_compile + epochs_compile, 3),
        "sps": round(env_steps_done / train_seconds, 1) if train_seconds > 0 else None,
        "updates": evals[-1]["gradient_steps"],
        "updates_per_env_step": round(evals[-1]["gradient_steps"] / env_steps_done, 6),
        "timing": {
            "definition": "train_seconds = wall(prefill + training epochs) - JAX compile time in it; "
                          "evaluations excluded",
            "prefill_wall": round(prefill_wall, 3), "prefill_compile": round(prefill_compile, 3),
            "epochs_wall": round(epochs_wall, 3), "epochs_compile": round(epochs_compile, 3),
            "epoch_walls": [round(e - s, 3) for s, e in epoch_windows],
            "train_loop_seconds": round(train_loop_seconds, 3),
            "train_loop_sps": round(env_steps_train / train_loop_seconds, 1) if train_loop_seconds > 0 else None,
            "steady_epoch_sps": round(steady_steps / wall(steady), 1) if steady else None,
            "jaxgcrl_training_sps": [p[2].get("training/sps") for p in progress],
            "jaxgcrl_training_walltime": progress[-1][2].get("training/walltime"),
            "eval_wall": round(eval_wall, 3), "eval_compile": round(eval_compile, 3),
            "eval_env_steps": run.num_evals * run.num_eval_envs * run.episode_length,
            "import_seconds": round(import_seconds, 3),
            "total_wall": round(t_end - t_start, 3),
        },
        "trainer_exit": trainer_exit,
        "final_metrics": progress[-1][2],
        "counters_per_eval": [{k: ev[k] for k in ("env_steps", "gradient_steps", "actor_steps", "critic_steps")}
                              for ev in evals],
        "expected_from_formulas": expected,
        "counts_match_formulas": (env_steps_done == expected["env_steps_done"]
                                  and evals[-1]["gradient_steps"] == expected["updates"]),
        "settings": {
            **{k: getattr(run, k) for k in ("env", "backend", "total_env_steps", "episode_length", "num_envs",
                                            "num_eval_envs", "num_evals", "action_repeat", "seed")},
            **{k: getattr(agent, k) for k in ("batch_size", "unroll_length", "min_replay_size",
                                              "max_replay_size", "discounting", "policy_lr", "critic_lr",
                                              "alpha_lr", "logsumexp_penalty_coeff", "h_dim", "n_hidden",
                                              "skip_connections", "repr_dim", "use_relu", "use_ln",
                                              "contrastive_loss_fn", "energy_fn")},
            "backend_resolved": type(train_env).__name__ + ":" + str(getattr(train_env, "backend", None)),
            "observation_size": int(train_env.observation_size),
            "action_size": int(train_env.action_size),
            "state_dim": int(train_env.state_dim),
            "goal_indices": [int(i) for i in np.asarray(train_env.goal_indices)],
            "run_py_utd_ratio": (run.num_envs * run.episode_length / agent.batch_size)
                                / (run.num_envs * agent.unroll_length),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "jaxgcrl_commit": _jaxgcrl_commit(crl_mod.__file__),
        },
    }
    # sanity: float32 counter exactness
    if not math.isclose(env_steps_done, expected["env_steps_done"]):
        logging.warning("env_steps counter %d != formula %d", env_steps_done, expected["env_steps_done"])
    return out


def _jaxgcrl_commit(crl_file):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(crl_file)))))
    try:
        with open(os.path.join(root, ".jaxgcrl_commit")) as f:
            return f.read().strip()
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
