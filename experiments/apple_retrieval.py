"""AppleRetrieval: the toy of Wołczyk et al., ICML 2024, "Fine-tuning Reinforcement Learning
Models is Secretly a Forgetting Mitigation Problem" (arXiv 2402.02868, App. A.2), in pure JAX.

A 1-D grid: the agent walks from home (x = 0) out to the apple at x = M (phase 1), then back home
(phase 2). Reward +1 for a step toward the current target, −1 for a step away; the observation
is [−c] in phase 1 and [c] in phase 2; 100 steps per episode. The policy is
π(right | o) = σ(w·o + b), trained with REINFORCE. π* is pre-trained on phase 2 alone (episodes
start at x = M in phase 2), then fine-tuned on the whole task (start at x = 0 in phase 1).
A phase-1 step of the gradient on the logit at o = −c moves w and b together, and so moves
phase 2's logit w·c + b by (1 − c²)/(1 + c²) as much: the phase-2 skill is forgotten until the
agent gets far enough to see phase 2 again, i.e. more for a far apple, and only for c < 1.
Behavioural cloning (BC), β·KL(π*(·|o) ‖ π_θ(·|o)) on π*'s pre-training states (all of them
o = c), holds it.

Choices the paper leaves open, made here:

* stepping left at x = 0 in phase 1 is clipped (the agent stays at 0) and still costs −1;
  there is no right wall (in phase 2 the agent may walk past M, at −1 a step);
* reaching x = M switches to phase 2 (that step earns +1); reaching x = 0 in phase 2 ends the
  episode: the remaining steps are absorbing, reward 0, and masked out of the loss (a perfect
  return is 2M, so M ≤ 50). A return is then the progress made, however slowly: any policy
  that gets home within the 100 steps is optimal, so π* stays stochastic (π(left|c) ≈ 0.65-0.85);
* REINFORCE: undiscounted return-to-go G_t, --episodes episodes per update, advantages
  (--advantage) G_t minus the batch mean of G_t at each t, divided by their std over the live
  steps ("normalized", the default: it fixes the gradient's scale across M, which β is measured
  against; "baseline" skips the division, "return" uses G_t itself); the surrogate is summed
  over an episode's live steps, averaged over episodes and divided by the 100 steps;
* plain SGD with --lr (Adam would rescale w's and b's steps alike and hide the role of c);
* π* is pre-trained with the same REINFORCE from w = b = 0 for --pretrain updates, so it
  depends on M, c and the seed; every β fine-tunes the same π* with the same random numbers;
* phase-2 performance is π(left | o = c) (exact) and the mean return of --episodes evaluation
  episodes from x = M in phase 2; the full-task return is the mean return of the update's own
  training episodes. All are logged before each update (update 0 is π*).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

STEPS = 100
OUT, BACK, HOME = 1, 2, 3   # phases 1 and 2, and the absorbing end
ADVANTAGES = ("normalized", "baseline", "return")


class Config(NamedTuple):
    pretrain_updates: int = 100
    finetune_updates: int = 300
    episodes: int = 16
    lr: float = 1.0
    advantage: str = "normalized"


class Trajectory(NamedTuple):
    obs: jax.Array     # [..., T] the scalar observation
    action: jax.Array  # [..., T] 1 = right, 0 = left
    reward: jax.Array  # [..., T]
    live: jax.Array    # [..., T] 1 while the episode has not ended


def observe(phase, c):
    return jnp.where(phase == OUT, -c, c)


def env_step(x, phase, action, M):
    """One step: ``(x, phase, action ∈ {0 left, 1 right}, M) → (x', phase', reward)``."""
    move = 2 * action - 1
    toward = jnp.where(phase == OUT, 1, -1)
    reward = jnp.where(phase == HOME, 0, jnp.where(move == toward, 1, -1))
    x_new = jnp.where(phase == HOME, x, jnp.maximum(x + move, 0))
    phase_new = jnp.where((phase == OUT) & (x_new == M), BACK,
                          jnp.where((phase == BACK) & (x_new == 0), HOME, phase))
    return x_new, phase_new, reward


def logit(params, obs):
    w, b = params
    return w * obs + b


def rollout(params, key, M, c, x0, phase0) -> Trajectory:
    """One episode of ``STEPS`` steps from ``(x0, phase0)``, actions sampled from π_params."""
    def step(state, k):
        x, phase = state
        obs = observe(phase, c)
        action = jax.random.bernoulli(k, jax.nn.sigmoid(logit(params, obs))).astype(jnp.int32)
        x, phase_new, reward = env_step(x, phase, action, M)
        return (x, phase_new), Trajectory(obs, action, reward.astype(jnp.float32),
                                          (phase != HOME).astype(jnp.float32))
    return jax.lax.scan(step, (jnp.asarray(x0), jnp.asarray(phase0)),
                        jax.random.split(key, STEPS))[1]


def episodes(params, key, M, c, x0, phase0, n) -> Trajectory:
    """``n`` episodes, leaves ``[n, T]``."""
    return jax.vmap(rollout, (None, 0, None, None, None, None))(
        params, jax.random.split(key, n), M, c, x0, phase0)


def returns_to_go(reward):
    return jnp.flip(jnp.cumsum(jnp.flip(reward, -1), -1), -1)


def advantages(traj: Trajectory, kind: str = "normalized"):
    """``[episodes, T]`` weights of ∇log π (see the module docstring for the kinds)."""
    g = returns_to_go(traj.reward)
    if kind == "return":
        return g
    adv = g - jnp.mean(g, axis=0)
    if kind == "baseline":
        return adv
    std = jnp.sqrt(jnp.sum(traj.live * adv**2) / jnp.maximum(jnp.sum(traj.live), 1))
    return adv / (std + 1e-6)


def reinforce_loss(params, traj: Trajectory, adv):
    """A surrogate whose gradient is the REINFORCE estimate
    ``−mean_episodes Σ_t live_t ∇log π(a_t | o_t) adv_t / T`` for a batch ``[episodes, T]``."""
    z = logit(params, traj.obs)
    logp = jnp.where(traj.action == 1, jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z))
    return -jnp.mean(jnp.sum(traj.live * logp * jax.lax.stop_gradient(adv), -1)) / STEPS


def bernoulli_kl(logit_p, logit_q):
    """``KL(Bern(σ(logit_p)) ‖ Bern(σ(logit_q)))`` in closed form, from logits (stable)."""
    ls = jax.nn.log_sigmoid
    p = jax.nn.sigmoid(logit_p)
    return p * (ls(logit_p) - ls(logit_q)) + (1 - p) * (ls(-logit_p) - ls(-logit_q))


def _update(params, key, M, c, x0, phase0, cfg: Config, star=None, beta=0.0):
    """One SGD step on a fresh batch; returns the new params and the batch's mean return."""
    traj = episodes(params, key, M, c, x0, phase0, cfg.episodes)
    adv = advantages(traj, cfg.advantage)

    def loss(p):
        # BC, forward KL as in continual.agents.retention, on π*'s pre-training states: o = c.
        bc = 0.0 if star is None else bernoulli_kl(logit(star, c), logit(p, c))
        return reinforce_loss(p, traj, adv) + beta * bc
    grad = jax.grad(loss)(params)
    return (jax.tree.map(lambda p, g: p - cfg.lr * g, params, grad),
            jnp.mean(jnp.sum(traj.reward, -1)))


def pretrain(key, M, c, cfg: Config = Config()):
    """π* = (w, b): REINFORCE from w = b = 0 on phase 2 alone (start at x = M, phase 2)."""
    def body(params, k):
        return _update(params, k, M, c, M, BACK, cfg)[0], None
    params = (jnp.zeros(()), jnp.zeros(()))
    return jax.lax.scan(body, params, jax.random.split(key, cfg.pretrain_updates))[0]


def finetune(key, star, M, c, beta, cfg: Config = Config()):
    """Fine-tunes π* on the whole task with BC weight β; per-update curves
    ``[finetune_updates]``: ``phase2_left`` π(left | c), ``phase2_return`` (from x = M),
    ``full_return``."""
    def body(params, k):
        k_train, k_eval = jax.random.split(k)
        ev = episodes(params, k_eval, M, c, M, BACK, cfg.episodes)
        new, full = _update(params, k_train, M, c, 0, OUT, cfg, star, beta)
        return new, dict(phase2_left=jax.nn.sigmoid(-logit(params, c)),
                         phase2_return=jnp.mean(jnp.sum(ev.reward, -1)), full_return=full)
    return jax.lax.scan(body, star, jax.random.split(key, cfg.finetune_updates))[1]


def _run(seed, M, c, beta, cfg: Config):
    k_pre, k_ft = jax.random.split(jax.random.PRNGKey(seed))
    return finetune(k_ft, pretrain(k_pre, M, c, cfg), M, c, beta, cfg)


def sweep(seeds, distances, scales, betas, cfg: Config = Config()) -> pd.DataFrame:
    """Every (seed, M, c, β) in one jitted, vmapped program → a tidy table with columns
    seed, M, c, beta, update, metric, value."""
    grid = np.meshgrid(np.asarray(seeds), np.asarray(distances), np.asarray(scales, np.float32),
                       np.asarray(betas, np.float32), indexing="ij")
    s, m, c, b = (a.ravel() for a in grid)
    run = jax.jit(jax.vmap(_run, (0, 0, 0, 0, None)), static_argnums=4)
    curves = jax.device_get(run(jnp.asarray(s, jnp.uint32), jnp.asarray(m, jnp.int32),
                                jnp.asarray(c), jnp.asarray(b), cfg))
    n = cfg.finetune_updates
    cols = dict(seed=np.repeat(s, n), M=np.repeat(m, n), c=np.repeat(c, n).astype(float),
                beta=np.repeat(b, n).astype(float), update=np.tile(np.arange(n), len(s)))
    return pd.concat([pd.DataFrame(dict(cols, metric=name, value=np.ravel(v).astype(float)))
                      for name, v in curves.items()], ignore_index=True)


def per_seed(table: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """One row per (M, c, β, seed): π(left|c) at the start, its minimum and the forgetting
    (start − min); the phase-2 return's minimum and the full-task return at the end, both over
    ``window``-update running means (single updates are 16 noisy episodes)."""
    keys = ["M", "c", "beta", "seed"]
    curve = {m: g.sort_values("update").groupby(keys)["value"]
             for m, g in table.groupby("metric")}
    out = pd.DataFrame({"start": curve["phase2_left"].first(),
                        "min": curve["phase2_left"].min()})
    out["forgetting"] = out["start"] - out["min"]
    out["p2 return min"] = curve["phase2_return"].apply(lambda v: v.rolling(window).mean().min())
    out["full return end"] = curve["full_return"].apply(lambda v: v.iloc[-window:].mean())
    return out


def summarize(rows: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean [bootstrap CI] over seeds of every column of :func:`per_seed`, per (M, c, β)."""
    from metrics.continual import bootstrap_ci

    def cell(values, digits):
        point, lo, hi = bootstrap_ci(values.to_numpy(float), level=level)
        return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return rows.groupby(level=["M", "c", "beta"]).agg(
        {col: (lambda v, d=(3 if "return" not in col else 1): cell(v, d)) for col in rows})


def plot(table: pd.DataFrame, rows: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_f, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    forget = rows["forgetting"].groupby(level=["M", "c", "beta"]).mean().unstack(["c", "beta"])
    scales = sorted(set(forget.columns.get_level_values("c")))
    for (c, beta), col in forget.items():
        ax_f.plot(col.index, col.values, marker="o", ls="-" if beta == 0 else "--",
                  color=f"C{scales.index(c)}", label=f"c={c:g}, β={beta:g}")
    ax_f.set(xlabel="apple distance M", ylabel="forgetting: π(left|c) start − min",
             title="forgetting of phase 2 while fine-tuning (mean over seeds)")
    ax_f.legend(fontsize=8)
    left = table[(table.metric == "phase2_left") & (table.c == scales[0])]
    distances = sorted(left.M.unique())
    for i, M in enumerate(sorted({distances[0], distances[len(distances) // 2], distances[-1]})):
        for beta, g in left[left.M == M].groupby("beta"):
            curve = g.groupby("update")["value"].mean()
            ax_c.plot(curve.index, curve.values, color=f"C{i}", ls="-" if beta == 0 else "--",
                      label=f"M={M}, β={beta:g}")
    ax_c.set(xlabel="fine-tuning update", ylabel="π(left | o=c)",
             title=f"phase-2 performance, c={scales[0]:g} (mean over seeds)")
    ax_c.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    d = Config()
    parser = argparse.ArgumentParser(prog="python -m experiments.apple_retrieval",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (default 8)")
    parser.add_argument("--distances", default="5,10,20,30,40",
                        help="apple distances M, 1..50 (default 5,10,20,30,40)")
    parser.add_argument("--scales", default="0.5,1,2", help="observation scales c (default "
                        "0.5,1,2)")
    parser.add_argument("--betas", default="0,1", help="BC coefficients β (default 0,1)")
    parser.add_argument("--pretrain", type=int, default=d.pretrain_updates,
                        help=f"pre-training updates (default {d.pretrain_updates})")
    parser.add_argument("--updates", type=int, default=d.finetune_updates,
                        help=f"fine-tuning updates (default {d.finetune_updates})")
    parser.add_argument("--episodes", type=int, default=d.episodes,
                        help=f"episodes per update (default {d.episodes})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"SGD step (default {d.lr:g})")
    parser.add_argument("--advantage", choices=ADVANTAGES, default=d.advantage,
                        help=f"REINFORCE weights (default {d.advantage})")
    parser.add_argument("--plot", default="docs/apple-retrieval.png",
                        help="figure path (default docs/apple-retrieval.png)")
    args = parser.parse_args(argv)

    distances = [int(v) for v in args.distances.split(",")]
    if not all(1 <= M <= STEPS // 2 for M in distances):
        parser.error(f"distances must be in 1..{STEPS // 2} (there and back in {STEPS} steps)")
    cfg = Config(args.pretrain, args.updates, args.episodes, args.lr, args.advantage)
    start = time.perf_counter()
    table = sweep(range(args.seeds), distances, [float(v) for v in args.scales.split(",")],
                  [float(v) for v in args.betas.split(",")], cfg)
    wall = time.perf_counter() - start
    rows = per_seed(table)
    print(f"AppleRetrieval: {args.seeds} seeds, {cfg.pretrain_updates} pre-training + "
          f"{cfg.finetune_updates} fine-tuning updates of {cfg.episodes} episodes, lr {cfg.lr:g},"
          f" {cfg.advantage} advantages; one program, {wall:.1f} s with compilation")
    print("start / min / forgetting: π(left | o=c), the phase-2 skill; p2 return: from x = M "
          "(best M); full return: the whole task (best 2M); mean [95% bootstrap CI] over seeds\n")
    print(summarize(rows).to_string())
    plot(table, rows, Path(args.plot))
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
