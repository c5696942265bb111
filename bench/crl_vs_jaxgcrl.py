"""plax's CRL against JaxGCRL's own trainer on the goal-conditioned Ant, and plax's cost per
vmapped seed (issue 12, benchmarks 1 and 2).

In one invocation:

1. **plax**: the ``crl`` kind on ``--env ant --family goals`` (goals on JaxGCRL's radius-10
   circle), Brax's Ant on the ``spring`` backend (JaxGCRL's default for its ``ant``), built by
   :func:`experiments.kinds.crl.build` and driven through the compiled interval function the
   CLI uses (:func:`continual.runner.compiled`). The first interval (compilation, and the
   replay prefill without updates) is not timed; then ``--intervals`` intervals of
   ``--unroll`` steps of all envs are timed, each with ``updates_per_step`` updates per step.
2. **JaxGCRL** (commit 6dccab2, jax 0.4.25, in its own venv built by
   ``bench/peers/jaxgcrl_setup.sh``; never a dependency of plax): its own ``CRL.train_fn``
   through ``bench/peers/jaxgcrl_crl.py``, whose ``steady_epoch_sps`` is the rate of the
   training epochs after the first (compilation, prefill and evaluations excluded).
3. **seeds**: the plax measurement again with ``--seeds`` vmapped seeds in one program;
   per-seed cost = (time of N seeds / N) / time of one seed (JaxGCRL runs one seed per
   process: its per-seed cost is 1 by construction).

Equal settings: ``--envs`` envs, episodes of ``--episode-length`` steps, batch ``--batch``,
actor and both encoders 2 × 256 Swish (no LayerNorm; JaxGCRL's defaults), representation 64,
the ``norm`` energy, forward InfoNCE with logsumexp penalty 0.1, one learning rate 3e-4, replay
of 10,000 steps per env. JaxGCRL does ``envs × (episode_length − 1) / batch`` updates after every
``unroll`` steps of all envs; plax does ``updates_per_step`` after every step, so ``--unroll``
is chosen to make the two equal (default: 125 steps, 1 update per step of 32 envs). Rates are
env steps per second *including* those updates; evaluation is excluded from both (plax's is
shrunk to one 1-step episode).

Run::

    bash bench/peers/jaxgcrl_setup.sh                          # once: JaxGCRL's own venv
    .venv/bin/python bench/crl_vs_jaxgcrl.py                   # ~10 min on 2 cores
    .venv/bin/python bench/crl_vs_jaxgcrl.py --no-peer --seeds 1,4,16
    .venv/bin/python bench/crl_vs_jaxgcrl.py --envs 256 --unroll 62 ...   # GPU sizes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-jaxgcrl" / "bin" / "python"
PEER_SCRIPT = ROOT / "bench" / "peers" / "jaxgcrl_crl.py"


def updates_per_step(args) -> int:
    """JaxGCRL's updates per step of all envs: envs·(L−1)/batch per ``unroll`` steps."""
    per_training_step = args.envs * (args.episode_length - 1) / args.batch
    per_step = per_training_step / args.unroll
    if per_step != int(per_step) or per_step < 1:
        raise SystemExit(f"envs·(episode_length−1)/batch/unroll = {per_step:g} must be a whole "
                         "number ≥ 1 for equal update ratios; change --unroll or --envs")
    return int(per_step)


def plax(args, seeds: int) -> dict:
    """Env steps/s of plax's CRL with ``seeds`` vmapped seeds (timed intervals only)."""
    import jax
    import jax.numpy as jnp

    from continual.runner import compiled, run_keys
    from experiments.kinds.crl import CRLConfig, build

    interval_steps = args.envs * args.unroll
    cfg = CRLConfig(
        env="ant", family="goals", goal_regions=("circle",), backend="spring",
        num_envs=args.envs, episode_length=args.episode_length,
        env_steps_per_task=interval_steps * (1 + args.intervals), log_every=interval_steps,
        updates_per_step=updates_per_step(args), batch_size=args.batch, hidden=(256, 256),
        repr_dim=64, learning_rate=(3e-4,), replay_capacity=10_000 * args.envs,
        min_replay=interval_steps, eval_envs=1, eval_length=1, probe_examples=8,
        seeds=seeds, mode="chunked")
    exp = build(cfg)
    init, interval = compiled(exp.train, "chunked")
    keys = run_keys(exp.runs["seed"].to_numpy())
    schedule = jax.tree.map(jnp.asarray, exp.schedule)
    start = time.perf_counter()  # the first "interval" also holds init and compilation
    carry, _ = init(keys, exp.hparams, exp.tasks.data, exp.tasks.params)
    times = []
    for k in range(exp.schedule.length):
        if k:
            start = time.perf_counter()
        entry = jax.tree.map(lambda a: a[k], schedule)
        carry, logs = interval(carry, entry, exp.hparams, exp.tasks.data, exp.tasks.params)
        jax.block_until_ready(logs)
        times.append(time.perf_counter() - start)
    updates = float(jnp.sum(carry.updates)) / seeds
    timed = statistics.median(times[1:])
    return {"seeds": seeds, "first_s": times[0], "interval_s": timed,
            "sps": seeds * interval_steps / timed, "sps_per_seed": interval_steps / timed,
            "updates_per_env_step": updates / (interval_steps * args.intervals),
            "backend": exp.tasks.env.backend}


def peer(args) -> dict:
    """JaxGCRL's trainer at the same settings, in its own venv (one JSON line back)."""
    if not PEER_PYTHON.exists():
        return {"error": f"no {PEER_PYTHON}: run bash bench/peers/jaxgcrl_setup.sh first"}
    per_epoch = 2  # training steps (of `unroll` steps of all envs) per epoch
    total = 1000 * args.envs + (1 + args.intervals) * per_epoch * args.envs * args.unroll
    cmd = [str(PEER_PYTHON), str(PEER_SCRIPT), "--env", "ant", "--backend", "spring",
           "--num-envs", str(args.envs), "--episode-length", str(args.episode_length),
           "--unroll-length", str(args.unroll), "--batch-size", str(args.batch),
           "--min-replay-size", "1000", "--max-replay-size", "10000",
           "--total-env-steps", str(total), "--num-evals", str(1 + args.intervals),
           "--num-eval-envs", "4", "--h-dim", "256", "--n-hidden", "2", "--repr-dim", "64"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "PLAX_"))}
    res = subprocess.run(cmd, capture_output=True, text=True, env={**env, "JAX_PLATFORMS": "cpu"})
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {res.returncode}: {res.stderr[-2000:]}"}
    out = json.loads(lines[-1])
    if "error" in out:
        return out
    t = out["timing"]
    return {"sps": t["steady_epoch_sps"], "first_s": t["epoch_walls"][0],
            "updates_per_env_step": out["updates"] / max(out["env_steps_train"], 1),
            "compile_s": out["compile_seconds"], "jax": out["settings"]["jax"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=32, help="parallel envs (one seed)")
    parser.add_argument("--episode-length", type=int, default=1001,
                        help="time limit of an episode (JaxGCRL's default)")
    parser.add_argument("--unroll", type=int, default=125,
                        help="steps of all envs per JaxGCRL training step = per plax interval")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--intervals", type=int, default=3, help="timed intervals / epochs")
    parser.add_argument("--seeds", default="1,4,16", help="vmapped seed counts (plax)")
    parser.add_argument("--no-peer", action="store_true", help="skip JaxGCRL")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one seed count
    args = parser.parse_args()
    if args.one:  # a fresh process per seed count: no memory or cache carried over
        print(json.dumps(plax(args, args.one)))
        return

    import jax
    print(f"plax: jax {jax.__version__}, {jax.devices()}; ant (spring), {args.envs} envs, "
          f"batch {args.batch}, {updates_per_step(args)} update(s) per step of all envs, "
          f"{args.unroll} steps per interval × {args.intervals} timed", flush=True)
    rows = {}
    for n in sorted({1, *(int(s) for s in args.seeds.split(","))}):
        cmd = [sys.executable, __file__, "--one", str(n), "--envs", str(args.envs),
               "--episode-length", str(args.episode_length), "--unroll", str(args.unroll),
               "--batch", str(args.batch), "--intervals", str(args.intervals)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            raise SystemExit(f"plax with {n} seeds failed:\n{res.stderr[-3000:]}")
        rows[n] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  plax {n} seed(s): {rows[n]['sps']:,.0f} env steps/s", flush=True)
    one = rows[1]

    print("\n1. env steps/s with updates, one seed (compile, prefill and evaluation excluded)")
    print("   (first s: plax's init, compilation and prefill interval; JaxGCRL's first "
          "training epoch)")
    print(f"{'trainer':10s} {'env steps/s':>12s} {'upd/env step':>13s} {'first s':>8s} "
          f"{'ratio':>6s} {'target':>7s}")
    print(f"{'plax':10s} {one['sps']:12,.0f} {one['updates_per_env_step']:13.4f} "
          f"{one['first_s']:8.1f} {'':>6s}")
    if not args.no_peer:
        theirs = peer(args)
        if "error" in theirs:
            print(f"{'JaxGCRL':10s} failed: {theirs['error']}")
        else:
            ratio = one["sps"] / theirs["sps"]
            print(f"{'JaxGCRL':10s} {theirs['sps']:12,.0f} "
                  f"{theirs['updates_per_env_step']:13.4f} {theirs['first_s']:8.1f} "
                  f"{ratio:6.2f} {'met' if ratio >= 1.5 else 'unmet':>7s}")
            print(f"   (plax ÷ JaxGCRL; target ≥ 1.5×; JaxGCRL on jax {theirs['jax']}, its "
                  f"compile time {theirs['compile_s']:.1f} s)")

    print("\n2. vmapped seeds in one program (plax)")
    print(f"{'seeds':>5s} {'env steps/s':>12s} {'per seed':>10s} {'cost per seed':>14s}")
    for n, row in rows.items():
        cost = (row["interval_s"] / n) / one["interval_s"]
        print(f"{n:5d} {row['sps']:12,.0f} {row['sps_per_seed']:10,.0f} {cost:14.2f}")


if __name__ == "__main__":
    main()
