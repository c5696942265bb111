"""Does an RL preset learn? Its runs against a uniformly random policy on the same tasks, in one
invocation: for every task, the random policy's return (``--random-episodes`` first episodes of
``eval_length`` steps, uniform actions in [−1, 1] — a uniform one-hot on discrete-action envs
(grid, lightsout) — summed until the episode ends, as the loop's
evaluation does), the trained policy's evaluation return before any training and at the end of
the task's own visit (mean over seeds), and their difference in random-return standard
deviations.

    python bench/learn_check.py reacher-stages-quick               # a preset as it is
    python bench/learn_check.py cheetah-quick --set env=hopper --set task_values=[1]

``--set FIELD=VALUE`` (JSON value, repeatable) overrides a config field. Writes nothing; prints
the table and the wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _value(text: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def random_returns(seq, task: int, episodes: int, length: int, seed: int = 0,
                   discrete: bool = False) -> np.ndarray:
    """[episodes] returns of the first episode under uniform random actions (``discrete``: a
    one-hot of a uniform action index)."""
    from tasks.base import task_slice

    params = task_slice(seq.params, task)

    def one(key):
        k_reset, k_act = jax.random.split(key)

        def body(carry, k):
            state, alive, total = carry
            action = (jax.nn.one_hot(jax.random.randint(k, (), 0, seq.action_size),
                                     seq.action_size) if discrete else
                      jax.random.uniform(k, (seq.action_size,), minval=-1.0, maxval=1.0))
            state = seq.step(params, state, action)
            total = total + alive * state.reward
            return (state, alive * (1.0 - state.done), total), None

        carry = (seq.reset(params, k_reset), jnp.ones(()), jnp.zeros(()))
        return jax.lax.scan(body, carry, jax.random.split(k_act, length))[0][2]

    keys = jax.random.split(jax.random.key(seed), episodes)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--random-episodes", type=int, default=64)
    args = parser.parse_args(argv)

    from experiments import experiment, registry
    from experiments.kinds import rl

    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = _value(value)
    cfg = registry.from_preset(args.preset, **overrides)
    start = time.perf_counter()
    seq = rl.env_sequence(cfg)
    length = cfg.eval_length or cfg.episode_length
    discrete = getattr(cfg, "discrete_env", False)
    rand = [random_returns(seq, t, args.random_episodes, length, discrete=discrete)
            for t in range(cfg.num_tasks)]
    random_seconds = time.perf_counter() - start
    table, _, wall = experiment.run(registry.build(cfg), progress=True)

    ev = table[table["metric"] == "eval_return"]
    print(f"\n{args.preset} {overrides or ''}: {cfg.describe()}, {cfg.seeds} seeds; "
          f"training {wall:.0f} s, random policy {random_seconds:.0f} s")
    print(f"{'task':>4} {'random':>16} {'untrained':>10} {'trained':>10} {'per seed':>22} "
          f"{'(trained−random)/sd':>20}")
    for t in range(cfg.num_tasks):
        own = ev[(ev["eval_task"] == t) & (ev["task"] == t)]
        end = own[own["step"] == own["step"].max()].groupby("seed")["value"].mean()
        first = ev[(ev["eval_task"] == t) & (ev["step"] == ev["step"].min())]["value"].mean()
        r = rand[t]
        gap = (end.mean() - r.mean()) / max(r.std(), 1e-9)
        seeds = ", ".join(f"{v:.1f}" for v in end)
        print(f"{t:>4} {r.mean():>9.1f} ± {r.std():<5.1f} {first:>10.1f} {end.mean():>10.1f} "
              f"{seeds:>22} {gap:>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
