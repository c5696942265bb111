"""DM Control Suite (MuJoCo Playground) env steps per second: stepping alone, training SAC, and
the per-seed cost of vmapped seeds, in one invocation and one process.

For one DMC task (default CheetahRun, :mod:`tasks.envs.playground`):

1. **stepping**: a compiled scan of ``--steps`` steps of ``--envs`` envs with uniform random
   actions and the loop's own auto-reset, for each MJX implementation of ``--impls`` (default:
   the platform's, ``jax`` on a CPU; ``--impls jax,warp`` compares them);
2. **training**: one log interval of :func:`continual.agents.make_rl_train` with SAC (acting,
   replay insertion, ``--updates`` gradient updates per env step of all envs, batch ``--batch``,
   actor and 2 critics ``--hidden``) over the same steps, evaluation shrunk to one 1-step
   episode, updates from the first step — the setup of ``bench/rl_throughput.py``, whose
   ``stepping`` it reuses;
3. **per-seed cost**: the same interval vmapped over 1, 4 and 16 seeds (``--seeds``) in one
   program; the time per seed relative to one seed alone (1.0: N seeds take N times as long;
   below 1: vmapping shares work).

Timed after a warm-up call (compile reported separately), median of ``--repeats`` rounds in
which the variants alternate (load on a shared machine hits all of them). Rate = envs × steps ×
seeds / seconds. The target of the DMC issue: training ≥ 1/3 of stepping at one update per env
step.

Run::

    .venv/bin/python bench/dmc_throughput.py       # 5-8 min on 2 shared cores, ~3 compiling
    .venv/bin/python bench/dmc_throughput.py --envs 256 --seeds 1   # more envs per update
    .venv/bin/python bench/dmc_throughput.py --impls jax,warp --seeds 1
    .venv/bin/python bench/dmc_throughput.py --envs 2048 --steps 1000 --seeds 1,4,16  # a GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from continual.agents import RLSpec, make_rl_train
from continual.agents.sac import ReplaySpec, SACSpec, make_sac, make_sac_agent
from continual.loop import schedule_entry
from continual.optimizers import HParams
from rl_throughput import stepping
from tasks.envs import playground
from tasks.schedule import parse


def training(seq, envs: int, steps: int, episode_length: int, updates: int, batch: int,
             hidden: tuple, seeds: int):
    """One training interval of the RL loop vmapped over ``seeds`` runs, as ``fn(carry) ->
    carry`` plus its first carry (a non-switch entry: every call is the same interval)."""
    sac = make_sac(SACSpec(hidden=hidden), seq.observation_size, seq.action_size)
    replay = ReplaySpec(batch_size=batch, capacity=max(envs * steps, batch), min_replay=batch,
                        val_every=0, q_bias_keep=1)
    agent = make_sac_agent(sac, replay, seq.observation_size, seq.action_size)
    spec = RLSpec(num_envs=envs, steps_per_task=steps, log_every=steps,
                  episode_length=episode_length, updates_per_step=updates, eval_envs=1,
                  eval_length=1, probe_examples=8)
    train = make_rl_train(spec, agent, seq)
    hp = HParams.defaults(learning_rate=3e-4)
    keys = jax.random.split(jax.random.key(0), seeds)
    carry = jax.jit(jax.vmap(lambda k: train.init(k, hp, (), seq.params)[0]))(keys)
    entry = jax.tree.map(jnp.asarray, schedule_entry(parse("sequential", 1, 1), 0)
                         ._replace(switch=np.bool_(False)))
    interval = jax.jit(jax.vmap(lambda c: train.run_interval(c, entry, hp, (), seq.params)[0]))
    return interval, carry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="CheetahRun", help="DMC task name")
    parser.add_argument("--impls", default="", help="MJX impls to step (default: the "
                        "platform's; jax,warp compares them)")
    parser.add_argument("--envs", type=int, default=64, help="parallel environments per run")
    parser.add_argument("--steps", type=int, default=100, help="steps of all envs per timing")
    parser.add_argument("--updates", type=int, default=1, help="updates per env step")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--seeds", default="1,4,16", help="vmapped seed counts")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    impls = args.impls.split(",") if args.impls else [playground.default_impl()]
    counts = sorted({1, *(int(s) for s in args.seeds.split(","))})
    print(f"jax {jax.__version__}, devices {jax.devices()}; {args.task}, {args.envs} envs × "
          f"{args.steps} steps, {args.updates} update(s) per env step, batch {args.batch}, "
          f"SAC {hidden}, seeds {counts}")

    variants, compile_s, work = {}, {}, {}
    n = args.envs * args.steps
    for impl in impls:
        seq = playground.sequence([args.task], impl=impl)
        fn = stepping(seq, args.envs, args.steps, args.episode_length)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(1)))
        compile_s[f"stepping {impl}"] = time.perf_counter() - t0
        variants[f"stepping {impl}"] = (lambda f: lambda r: f(jax.random.key(2 + r)))(fn)
        work[f"stepping {impl}"] = n
    seq = playground.sequence([args.task], impl=impls[0])
    carries = {}
    for seeds in counts:
        name = f"training {impls[0]}, {seeds} seed(s)"
        fn, carry = training(seq, args.envs, args.steps, args.episode_length, args.updates,
                             args.batch, hidden, seeds)
        t0 = time.perf_counter()
        carries[name] = jax.block_until_ready(fn(carry))  # also fills past min_replay
        compile_s[name] = time.perf_counter() - t0

        def call(r, fn=fn, name=name):
            carries[name] = fn(carries[name])
            return carries[name]

        variants[name] = call
        work[name] = n * seeds
    times = {k: [] for k in variants}
    for r in range(args.repeats):
        for k, fn in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(r))
            times[k].append(time.perf_counter() - start)
    rate = {k: work[k] / statistics.median(v) for k, v in times.items()}

    step0 = rate[f"stepping {impls[0]}"]
    one = f"training {impls[0]}, 1 seed(s)"
    print(f"\n{'variant':34s} {'env steps/s':>12s} {'vs stepping':>12s} {'compile s':>10s}")
    for k in variants:
        print(f"{k:34s} {rate[k]:12,.0f} {rate[k] / step0:12.2f} {compile_s[k]:10.1f}")
    ratio = rate[one] / step0
    print(f"\ntraining / stepping ({impls[0]}, one seed): {ratio:.2f} (target ≥ 0.33: "
          f"{'met' if ratio >= 1 / 3 else 'unmet'})")
    print(f"\n{'seeds':>5s} {'env steps/s (all seeds)':>24s} {'each seed':>10s} "
          f"{'time per seed vs 1 seed':>24s}")
    for seeds in counts:
        k = f"training {impls[0]}, {seeds} seed(s)"
        print(f"{seeds:5d} {rate[k]:24,.0f} {rate[k] / seeds:10,.0f} "
              f"{rate[one] / rate[k]:24.2f}")


if __name__ == "__main__":
    main()
