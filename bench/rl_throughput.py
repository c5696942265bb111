"""Environment steps per second while training SAC, against stepping the same envs alone.

For each environment (default HalfCheetah and Ant, MJX backend with the fast solver), in one
invocation and one process:

* **stepping**: a compiled scan of ``--steps`` steps of ``--envs`` envs with uniform random
  actions and the loop's own auto-reset (the ceiling of the simulator alone);
* **training**: one log interval of :func:`continual.agents.make_rl_train` — acting with the
  SAC policy, replay insertion, ``--updates`` gradient updates per env step (batch
  ``--batch``, actor and critic ``--hidden``, 2 critics) — over the same number of steps, with
  evaluation shrunk to one 1-step episode so the interval is all training. Updates run from the
  first step (``min_replay = batch``).

Both are timed after a warm-up call (compile excluded, reported separately), as the median of
``--repeats`` rounds in which the two variants alternate (load on a shared machine hits both).
Rate = envs × steps / seconds, one run (no vmap over seeds). The target of the RL issue:
training ≥ 1/3 of stepping at one update per env step.

Run::

    .venv/bin/python bench/rl_throughput.py                    # a few minutes on 2 cores
    .venv/bin/python bench/rl_throughput.py --envs 2048 --steps 1000 --hidden 256,256  # on a GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from continual.loop import schedule_entry
from continual.optimizers import HParams
from continual.agents import RLSpec, make_rl_train
from continual.agents.sac import ReplaySpec, SACSpec, make_sac, make_sac_agent
from tasks.envs import brax as brax_envs
from tasks.base import task_slice
from tasks.schedule import parse


def stepping(seq, envs: int, steps: int, episode_length: int):
    """Compiled random-action stepping with the loop's auto-reset, as ``fn(key) -> obs``."""
    task = task_slice(seq.params, 0)
    reset_many = jax.vmap(seq.reset, (None, 0))
    step_many = jax.vmap(seq.step, (None, 0, 0))

    def run(key):
        first = reset_many(task, jax.random.split(key, envs))

        def body(carry, k):
            env, t = carry
            action = jax.random.uniform(k, (envs, seq.action_size), minval=-1, maxval=1)
            nxt = step_many(task, env, action)
            t = t + 1
            finished = (nxt.done > 0) | (t >= episode_length)
            env = jax.tree.map(lambda a, b: jnp.where(
                finished.reshape(finished.shape + (1,) * (a.ndim - 1)), a, b), first, nxt)
            return (env, jnp.where(finished, 0, t)), None

        (env, _), _ = jax.lax.scan(body, (first, jnp.zeros(envs, jnp.int32)),
                                   jax.random.split(key, steps))
        return env.obs

    return jax.jit(run)


def training(seq, envs: int, steps: int, episode_length: int, updates: int, batch: int,
             hidden: tuple):
    """One training interval of the RL loop, as ``fn(carry) -> carry`` plus its first carry: the
    first interval of the one-task schedule as a non-switch entry (no key split at the switch),
    so every call is the same interval on the envs ``init`` reset."""
    sac = make_sac(SACSpec(hidden=hidden), seq.observation_size, seq.action_size)
    replay = ReplaySpec(batch_size=batch, capacity=max(envs * steps, batch), min_replay=batch,
                        val_every=0, q_bias_keep=1)
    agent = make_sac_agent(sac, replay, seq.observation_size, seq.action_size)
    spec = RLSpec(num_envs=envs, steps_per_task=steps, log_every=steps,
                  episode_length=episode_length, updates_per_step=updates, eval_envs=1,
                  eval_length=1, probe_examples=8)
    train = make_rl_train(spec, agent, seq)
    hp = HParams.defaults(learning_rate=3e-4)
    carry, _ = jax.jit(train.init)(jax.random.key(0), hp, (), seq.params)
    entry = jax.tree.map(jnp.asarray, schedule_entry(parse("sequential", 1, 1), 0)
                         ._replace(switch=np.bool_(False)))
    interval = jax.jit(lambda c: train.run_interval(c, entry, hp, (), seq.params)[0])
    return interval, carry


def timed(fn, arg) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(arg))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs-list", default="halfcheetah,ant", help="brax envs to measure")
    parser.add_argument("--envs", type=int, default=64, help="parallel environments")
    parser.add_argument("--steps", type=int, default=200, help="steps of all envs per timing")
    parser.add_argument("--updates", type=int, default=1, help="updates per env step")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    print(f"jax {jax.__version__}, devices {jax.devices()}; {args.envs} envs × {args.steps} "
          f"steps, {args.updates} update(s) per env step, batch {args.batch}, SAC {hidden}")
    rows = []
    for name in args.envs_list.split(","):
        seq = brax_envs.objectives(name, "direction", (1.0,))
        step_fn = stepping(seq, args.envs, args.steps, args.episode_length)
        train_fn, carry = training(seq, args.envs, args.steps, args.episode_length,
                                   args.updates, args.batch, hidden)
        t0 = time.perf_counter()
        jax.block_until_ready(step_fn(jax.random.key(1)))
        compile_step = time.perf_counter() - t0
        t0 = time.perf_counter()
        carry = jax.block_until_ready(train_fn(carry))  # also fills the buffer past min_replay
        compile_train = time.perf_counter() - t0
        step_times, train_times = [], []
        for r in range(args.repeats):
            step_times.append(timed(step_fn, jax.random.key(2 + r)))
            start = time.perf_counter()
            carry = jax.block_until_ready(train_fn(carry))
            train_times.append(time.perf_counter() - start)
        n = args.envs * args.steps
        rate_step = n / statistics.median(step_times)
        rate_train = n / statistics.median(train_times)
        rows.append((name, seq.env.backend, rate_step, rate_train, rate_train / rate_step,
                     compile_step, compile_train))
    print(f"\n{'env':12s} {'backend':8s} {'stepping/s':>11s} {'training/s':>11s} "
          f"{'ratio':>6s} {'target':>7s} {'compile s (step / train)':>26s}")
    for name, backend, rs, rt, ratio, cs, ct in rows:
        print(f"{name:12s} {backend:8s} {rs:11,.0f} {rt:11,.0f} {ratio:6.2f} "
              f"{'met' if ratio >= 1 / 3 else 'unmet':>7s} {cs:12.1f} / {ct:.1f}")


if __name__ == "__main__":
    main()
