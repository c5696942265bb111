"""Does iterated computation generalise to harder goals? Ghugare et al. 2026's question
(REFERENCE.md §13) at CPU scale: goal-conditioned double DQN + HER (the ``lightsout-dqn``
preset) on Lights Out 3×3, trained on goals of 1–3 presses, evaluated on those and on the
held-out 4–8 presses, for an MLP, a residual MLP and the weight-tied ``think`` cell — the think
network's *final* parameters evaluated at several test-time step counts (the parameters do not
depend on the step count).

Every network trains ``--seeds`` vmapped seeds in one compiled program (the loop's
``init`` + ``run_interval`` scanned over the preset's schedule, keeping the final agent
states); then each run's greedy policy plays ``--episodes`` fresh 6-step episodes per goal
split (success = the goal board reached at any step). Printed per network (and step count):
parameters, matmul FLOPs per decision, success on train and
held-out goals and the gap, as IQM over seeds with a 95% bootstrap interval; next to a
uniformly random policy. Saves ``docs/lights-out-think.png``.

    python bench/lights_out_think.py                       # defaults: 5 seeds, 96k env steps
    python bench/lights_out_think.py --steps 96000 --seeds 8 --think-eval 1,2,3,5,8,12,20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

NETWORKS = {  # name -> config overrides (the preset's MLP is 256-256)
    "mlp": dict(network="mlp", hidden=(256, 256)),
    "resmlp": dict(network="resmlp", hidden=(64,), blocks=2, activation="swish"),
    "think": dict(network="think", hidden=(64,), think_steps=5),
}


def iqm_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Interquartile mean over seeds and its 95% bootstrap interval."""
    from metrics.continual import bootstrap_ci
    return tuple(float(v) for v in bootstrap_ci(x, statistic="iqm"))


def train_final(cfg):
    """The config's runs trained in one jitted vmap; returns (the DQN record, final agent states
    [R, ...], the task sequence, wall seconds)."""
    from continual.agents.dqn import DQNSpec, make_dqn
    from continual.runner import run_keys
    from experiments import registry

    exp = registry.build(cfg)
    train, seq = exp.train, exp.tasks
    schedule = jax.tree.map(jnp.asarray, exp.schedule)

    def one(key, hparams):
        carry, _ = train.init(key, hparams, exp.data, seq.params)
        carry, logs = jax.lax.scan(
            lambda c, e: train.run_interval(c, e, hparams, exp.data, seq.params), carry,
            schedule)
        return carry.agent, logs["eval_success"]

    start = time.perf_counter()
    agents, curve = jax.block_until_ready(jax.jit(jax.vmap(one))(
        run_keys(exp.runs["seed"].to_numpy()), exp.hparams))
    dqn = make_dqn(DQNSpec(network=cfg.network, hidden=cfg.hidden, blocks=cfg.blocks,
                           activation=cfg.activation, think_steps=cfg.think_steps),
                   seq.observation_size, seq.action_size)
    return dqn, agents, seq, np.asarray(curve), time.perf_counter() - start


def success(seq, act, task: int, episodes: int, length: int, key) -> jax.Array:
    """Fraction of ``episodes`` fresh episodes of task ``task`` that reach their goal under
    ``act(obs [E, O], key) -> one-hot [E, A]`` within ``length`` steps."""
    params = jax.tree.map(lambda a: a[task], seq.params)
    k_reset, k_act = jax.random.split(key)
    env = jax.vmap(seq.reset, in_axes=(None, 0))(params, jax.random.split(k_reset, episodes))

    def body(c, k):
        env, hit = c
        env = jax.vmap(seq.step, in_axes=(None, 0, 0))(params, env, act(env.obs, k))
        return (env, hit | (env.done > 0)), None

    (_, hit), _ = jax.lax.scan(body, (env, jnp.zeros(episodes, bool)),
                               jax.random.split(k_act, length))
    return jnp.mean(hit)


def flops(params, steps) -> float:
    """Matmul FLOPs of one decision, 2 × the kernel entries applied (think's cell kernels
    ``forget`` and ``input`` once per step); layer norms and activations are left out. (XLA's
    cost analysis counts a scanned body once, so it misses think's steps and resmlp's
    blocks.)"""
    from plasticity.networks import layer_params
    total = 0
    for layer, leaves in layer_params(jax.tree.map(lambda a: a[0], params)).items():
        if "kernel" in leaves:
            uses = steps if steps and layer in ("forget", "input") else 1
            total += 2 * int(np.prod(leaves["kernel"].shape)) * uses
    return float(total)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=96_000, help="env steps of training")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=1024, help="per run and goal split")
    parser.add_argument("--think-eval", default="1,2,3,5,8,12,20",
                        help="test-time step counts of the think network")
    parser.add_argument("--networks", default="mlp,resmlp,think")
    parser.add_argument("--out", default="docs/lights-out-think.png")
    args = parser.parse_args(argv)

    from experiments import registry

    think_eval = [int(s) for s in args.think_eval.split(",")]
    rows, curves = [], {}
    length = 6
    for name in args.networks.split(","):
        cfg = registry.from_preset("lightsout-dqn", **NETWORKS[name], seeds=args.seeds,
                                   env_steps_per_task=args.steps,
                                   log_every=args.steps // 8 // 32 * 32)
        dqn, agents, seq, curve, wall = train_final(cfg)
        curves[name] = curve
        n_params = sum(int(np.prod(a.shape[1:])) for a in jax.tree.leaves(agents.q.params))
        counts = think_eval if name == "think" else [None]
        for steps in counts:
            def run_success(state, key, task, steps=steps):
                act = lambda obs, k: dqn.greedy(state, obs, steps)  # noqa: E731
                return success(seq, act, task, args.episodes, length, key)
            keys = jax.random.split(jax.random.key(1), args.seeds)
            per = {t: np.asarray(jax.jit(jax.vmap(lambda s, k: run_success(s, k, t)))(
                agents, keys)) for t in (0, 1)}
            label = f"think@{steps}" + (" (trained)" if steps == cfg.think_steps else "") \
                if steps else name
            rows.append(dict(net=label, params=n_params,
                             flops=flops(agents.q.params, steps),
                             train=per[0], held=per[1], gap=per[0] - per[1], wall=wall,
                             steps=steps, kind=name))
        print(f"[{name}: trained {args.seeds} seeds × {args.steps} env steps in {wall:.0f} s "
              f"(compile included)]", flush=True)

    # The uniformly random policy on the same goals.
    def random_act(obs, k):
        return jax.nn.one_hot(jax.random.randint(k, obs.shape[:1], 0, seq.action_size),
                              seq.action_size)
    rand = {t: float(jax.jit(lambda k, t=t: success(seq, random_act, t, 16 * args.episodes,
                                                    length, k))(jax.random.key(2)))
            for t in (0, 1)}

    def cell(x):
        m, lo, hi = iqm_ci(x)
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"

    print(f"\nLights Out 3×3, goal-conditioned double DQN + HER, {args.seeds} seeds × "
          f"{args.steps} env steps; success of the greedy policy on {args.episodes} fresh "
          f"episodes (6 steps) per run, IQM [95% bootstrap CI] over seeds")
    header = (f"{'network':<20} {'params':>8} {'FLOPs/decision':>15} "
              f"{'train goals (1-3)':>24} {'held-out (4-8)':>24} {'gap':>24}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['net']:<20} {r['params']:>8} {r['flops']:>15,.0f} {cell(r['train']):>24} "
              f"{cell(r['held']):>24} {cell(r['gap']):>24}")
    print(f"{'random policy':<20} {'':>8} {'':>15} {rand[0]:>24.3f} {rand[1]:>24.3f} "
          f"{rand[0] - rand[1]:>24.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split, title in ((axes[0], "train", "train goals (1–3 presses)"),
                             (axes[1], "held", "held-out goals (4–8 presses)")):
        think = [r for r in rows if r["kind"] == "think"]
        if think:
            xs = [r["steps"] for r in think]
            stats = np.array([iqm_ci(r[split]) for r in think])
            ax.plot(xs, stats[:, 0], "o-", color="C2", label="think (trained at 5 steps)")
            ax.fill_between(xs, stats[:, 1], stats[:, 2], color="C2", alpha=0.2)
        for i, r in enumerate(r for r in rows if r["kind"] != "think"):
            m, lo, hi = iqm_ci(r[split])
            ax.axhline(m, color=f"C{i}", ls="--", label=f"{r['net']} ({r['params']:,} params)")
            ax.axhspan(lo, hi, color=f"C{i}", alpha=0.1)
        ax.axhline(rand[0 if split == "train" else 1], color="grey", ls=":", label="random")
        ax.set_xscale("log")
        ax.set_xlabel("think steps at test time")
        ax.set_title(title)
    axes[0].set_ylabel("success rate (IQM over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Lights Out 3×3, DQN + HER, {args.seeds} seeds × {args.steps} env steps")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
