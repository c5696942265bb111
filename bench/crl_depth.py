"""Compile time and update time of the CRL agent against network depth (Wang et al. 2025's
residual networks: ``depth`` Dense layers in blocks of 4, for the actor, φ and ψ alike).

For each depth: the time to trace and compile one jitted CRL update (batch ``--batch``, width
``--width``, Swish, the norm energy), then the median time of ``--steps`` updates after it. The
blocks are one ``lax.scan`` over stacked parameters, so compile time should stay flat in depth
while step time grows linearly.

``--against REV`` measures the same in a subprocess from a git worktree of revision ``REV``, in
the same invocation, for the depths up to ``--against-max-depth``: ``66857f2`` is the last
revision whose residual blocks were unrolled Python loops (compile time growing with depth).

Run::

    .venv/bin/python bench/crl_depth.py                              # ~3 min on 2 cores
    .venv/bin/python bench/crl_depth.py --against 66857f2            # + the unrolled baseline
    .venv/bin/python bench/crl_depth.py --width 256 --batch 256 --depths 4,16,64,256  # GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(depth: int, width: int, batch: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from continual.agents.crl import CRLSpec, make_crl
    from continual.agents.trajectory import GoalBatch
    from continual.optimizers import HParams
    from tasks.envs.base import GoalSpace

    goals = GoalSpace(state_size=29, indices=(0, 1), threshold=0.5)  # Ant's sizes
    crl = make_crl(CRLSpec(network="resmlp", hidden=(width,), blocks=depth // 4), goals, 8)
    hp = HParams.defaults(learning_rate=3e-4)
    k = jax.random.split(jax.random.key(0), 3)
    state_part = jax.random.normal(k[0], (batch, 29))
    goal = jax.random.normal(k[1], (batch, 2))
    data = GoalBatch(jnp.concatenate([state_part, goal], -1),
                     jax.random.uniform(k[2], (batch, 8), minval=-1, maxval=1), goal)
    state = jax.jit(crl.init)(jax.random.key(1), hp)
    start = time.perf_counter()
    update = jax.jit(crl.update).lower(state, data, hp, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        state, info = update(state, data, hp, jax.random.key(3 + i))
        jax.block_until_ready(info["critic_loss"])
        times.append(time.perf_counter() - start)
    params = sum(x.size for x in jax.tree.leaves((state.actor.params, state.phi.params,
                                                  state.psi.params)))
    return {"depth": depth, "compile_s": compile_s, "step_ms": 1e3 * statistics.median(times[1:]),
            "params_m": params / 1e6}


def against(rev: str, depths: list[int], args) -> list[dict]:
    """The same measurement from a worktree of ``rev`` (a subprocess per depth)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="plax-bench-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)
        try:
            for depth in depths:
                cmd = [sys.executable, __file__, "--one", str(depth), "--width", str(args.width),
                       "--batch", str(args.batch), "--steps", str(args.steps)]
                env = {**os.environ, "PYTHONPATH": str(tree)}
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
                if res.returncode:
                    print(res.stderr[-2000:], file=sys.stderr)
                    continue
                out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="4,16,64,256")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--against", default="", help="a git revision to compare with")
    parser.add_argument("--against-max-depth", type=int, default=64)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a subprocess of --against: one depth, JSON on the last line
        print(json.dumps(measure(args.one, args.width, args.batch, args.steps)))
        return
    sys.path.insert(0, str(ROOT))
    from bench._common import Table

    depths = [int(d) for d in args.depths.split(",")]
    rows = {d: measure(d, args.width, args.batch, args.steps) for d in depths}
    base = {}
    if args.against:
        base = {r["depth"]: r for r in against(
            args.against, [d for d in depths if d <= args.against_max_depth], args)}
    columns = ["depth", "params (M)", "compile (s)", "update (ms)"]
    if base:
        columns += [f"compile {args.against} (s)", f"update {args.against} (ms)",
                    "compile ratio"]
    table = Table(columns)
    for d, r in rows.items():
        cells = [d, r["params_m"], r["compile_s"], r["step_ms"]]
        if base:
            b = base.get(d)
            cells += ([b["compile_s"], b["step_ms"], b["compile_s"] / r["compile_s"]] if b
                      else [None, None, None])
        table.add(*cells)
    print(f"CRL update, width {args.width}, batch {args.batch}, {jax_devices()}")
    print(table.render())


def jax_devices() -> str:
    import jax
    return ", ".join(sorted({d.device_kind for d in jax.devices()}))


if __name__ == "__main__":
    main()
