"""Environment steps per second of the pure-JAX grid tasks (Lights Out, box moving), stepped
alone and while training, at 1 / 16 / 64 vmapped seeds — against the same Lights Out written in
vectorised NumPy, in one invocation.

For each env (``--envs``: ``lightsout`` 3×3, ``boxes`` 4×4 with 2 boxes) and each seed count:

* **stepping**: one compiled scan of ``--steps`` steps of ``--num-envs`` envs per seed, seeds
  vmapped, uniform random one-hot actions, a fresh puzzle drawn where an episode ends (success
  or the ``--episode-length`` limit), as the RL loop does;
* **training**: the env's DQN preset (``lightsout-dqn`` / ``boxes-dqn``: goal-conditioned double
  DQN + HER, MLP 256-256) through the whole compiled loop (``init`` + one log interval of
  ``--train-steps`` env steps per seed, evaluation shrunk to 8 episodes), seeds vmapped;
* **NumPy** (Lights Out only): the same dynamics and resets as one vectorised NumPy program over
  all envs of all seeds (a generous Gym-vector-env baseline: no per-env Python loop).

Rate = seeds × envs × steps / median seconds of ``--repeats`` rounds (the variants of one seed
count alternate), compile excluded and shown on its own. Compare ratios within one run.

    .venv/bin/python bench/grid_envs.py                   # ~5 min on 2 cores
    .venv/bin/python bench/grid_envs.py --seeds 1,16 --envs lightsout --repeats 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Table, interleaved  # noqa: E402

PRESETS = {"lightsout": "lightsout-dqn", "boxes": "boxes-dqn"}


def env_sequence(name: str):
    from experiments import registry
    from experiments.kinds import rl
    return rl.env_sequence(registry.from_preset(PRESETS[name]))


def stepping(seq, seeds: int, envs: int, steps: int, episode_length: int):
    """A compiled ``fn(key) -> done count`` stepping ``seeds × envs`` envs for ``steps`` steps."""
    task = jax.tree.map(lambda a: a[0], seq.params)
    reset = jax.vmap(seq.reset, (None, 0))
    step = jax.vmap(seq.step, (None, 0, 0))

    def one_seed(key):
        k0, key = jax.random.split(key)

        def body(c, k):
            env, t, done = c
            k_act, k_reset = jax.random.split(k)
            action = jax.nn.one_hot(jax.random.randint(k_act, (envs,), 0, seq.action_size),
                                    seq.action_size)
            nxt = step(task, env, action)
            last = (nxt.done > 0) | (t + 1 >= episode_length)
            fresh = reset(task, jax.random.split(k_reset, envs))
            env = jax.tree.map(lambda a, b: jnp.where(
                last.reshape(last.shape + (1,) * (a.ndim - 1)), a, b), fresh, nxt)
            return (env, jnp.where(last, 0, t + 1), done + jnp.sum(nxt.done)), None

        init = (reset(task, jax.random.split(k0, envs)), jnp.zeros(envs, jnp.int32),
                jnp.zeros(()))
        return jax.lax.scan(body, init, jax.random.split(key, steps))[0][2]

    keys = jax.random.split(jax.random.key(0), seeds)
    fn = jax.jit(jax.vmap(one_seed)).lower(keys).compile()
    return lambda: jax.block_until_ready(fn(keys))


def numpy_lights_out(seeds: int, envs: int, steps: int, episode_length: int):
    """Lights Out 3×3 in vectorised NumPy over all ``seeds × envs`` envs: boards as 0/1 rows,
    a press XORs its toggle row, goals of 1–3 distinct presses from a random board."""
    n, cells, rng = seeds * envs, 9, np.random.default_rng(0)
    r, c = np.divmod(np.arange(cells), 3)
    toggles = (np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None]) <= 1).astype(np.uint8)

    def reset(count):
        board = rng.integers(0, 2, (count, cells), dtype=np.uint8)
        k = rng.integers(1, 4, count)
        presses = (np.argsort(np.argsort(rng.random((count, cells)), 1), 1)
                   < k[:, None]).astype(np.uint8)
        return board, board ^ ((presses @ toggles) % 2).astype(np.uint8)

    def run():
        board, goal = reset(n)
        t = np.zeros(n, np.int64)
        for _ in range(steps):
            board ^= toggles[rng.integers(0, cells, n)]
            done = (board == goal).all(1)
            t += 1
            last = done | (t >= episode_length)
            if last.any():
                board[last], goal[last] = reset(int(last.sum()))
                t[last] = 0
        return board

    return run


def training(name: str, seeds: int, steps: int):
    """A compiled ``fn()`` running ``init`` + one log interval of the env's DQN preset for
    ``seeds`` vmapped seeds; returns (fn, env steps per seed)."""
    from continual.runner import run_keys
    from experiments import registry

    base = registry.from_preset(PRESETS[name])
    steps = max(steps // base.num_envs, 1) * base.num_envs
    cfg = registry.from_preset(PRESETS[name], seeds=seeds, env_steps_per_task=steps,
                               log_every=steps, eval_envs=8, min_replay=base.batch_size)
    exp = registry.build(cfg)
    entry = jax.tree.map(lambda a: jnp.asarray(a[0]), exp.schedule)
    train, seq = exp.train, exp.tasks

    def one(key, hparams):
        carry, _ = train.init(key, hparams, exp.data, seq.params)
        carry, logs = train.run_interval(carry, entry, hparams, exp.data, seq.params)
        return logs["train"]["critic_loss"]

    keys = run_keys(exp.runs["seed"].to_numpy())
    fn = jax.jit(jax.vmap(one)).lower(keys, exp.hparams).compile()
    return (lambda: jax.block_until_ready(fn(keys, exp.hparams))), steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="lightsout,boxes")
    parser.add_argument("--seeds", default="1,16,64")
    parser.add_argument("--num-envs", type=int, default=32, help="envs per seed (the presets')")
    parser.add_argument("--steps", type=int, default=200, help="stepping: steps per env")
    parser.add_argument("--train-steps", type=int, default=3200,
                        help="training: env steps per seed (all its envs)")
    parser.add_argument("--episode-length", type=int, default=0,
                        help="stepping's time limit (0: the preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from experiments import registry

    table = Table(["env", "seeds", "variant", "env steps/s", "× 1 seed", "× numpy",
                   "compile s"])
    for name in args.envs.split(","):
        seq = env_sequence(name)
        length = args.episode_length or registry.from_preset(PRESETS[name]).episode_length
        single: dict[str, float] = {}
        for seeds in (int(s) for s in args.seeds.split(",")):
            variants, counts, compile_s = {}, {}, {}
            start = time.perf_counter()
            variants["stepping"] = stepping(seq, seeds, args.num_envs, args.steps, length)
            compile_s["stepping"] = time.perf_counter() - start
            counts["stepping"] = seeds * args.num_envs * args.steps
            start = time.perf_counter()
            variants["training"], per_seed = training(name, seeds, args.train_steps)
            compile_s["training"] = time.perf_counter() - start
            counts["training"] = seeds * per_seed
            if name == "lightsout":
                variants["numpy"] = numpy_lights_out(seeds, args.num_envs, args.steps, length)
                counts["numpy"] = counts["stepping"]
            times = interleaved(variants, args.repeats)
            rates = {v: counts[v] / statistics.median(t) for v, t in times.items()}
            for variant, rate in rates.items():
                single.setdefault(variant, rate)
                table.add(name, seeds, variant, rate, rate / single[variant],
                          rate / rates["numpy"] if "numpy" in rates else None,
                          compile_s.get(variant))
            print(table.render().splitlines()[-1], flush=True)
    print()
    print(f"{jax.devices()[0].platform}, {args.num_envs} envs per seed, stepping {args.steps} "
          f"steps, training {args.train_steps} env steps per seed (DQN presets), median of "
          f"{args.repeats}")
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
