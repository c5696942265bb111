"""Cost of the on-device diagnostics relative to training without them.

At the ``permuted-mnist`` preset's size (MLP 784-256-256-10, batch 128, 10 tasks × 500 steps,
log every 100, 3 seeds vmapped, sweep mode), on random uint8 28×28 data with MNIST's split sizes
(the cost is MNIST's), this times the compiled whole run with ``metrics=""`` and with
``metrics="all"`` (every interval probe on the fixed 256-example probe batch at every log point,
plus the per-step optimisation statistics), and reports the overhead ratio. Compile time is
excluded from the steady-state numbers and reported on its own.

A second table splits the cost by diagnostic group (``representation``, ``weights``,
``optimization``) on a shortened stream of the same shapes (2 tasks; same steps per task, log
interval, batch, seeds), each against its own no-diagnostics baseline, with ``all`` repeated
there to show how the short stream compares with the full one. Shortening removes most of the
evaluation-on-all-tasks cost from the baseline, so its percentages are, if anything, higher than
at full size.

Finally it times one call of the design choice behind the rank probes: singular values of the
probe features (256×256, vmapped over 3 runs) from ``eigvalsh`` of the Gram matrix
(``metrics.diagnostics.singular_values``) against ``jnp.linalg.svd(compute_uv=False)``.

Timing: a warm-up call per variant, then ``--repeats`` rounds in which the variants run
round-robin; the overhead is the median over rounds of the per-round ratio to the baseline (so
load drifting on a shared machine cancels), with the ratio of medians alongside.

Known hang (jax 0.10.2, CPU): a *batched* ``eigvalsh`` (vmapped over runs) is split by jaxlib's
LAPACK kernel into tasks on XLA's intra-op thread pool, and the calling pool thread blocks until
they finish. When as many such calls run concurrently as the pool has threads (2 on a 2-core
machine: the rank and weight-spectrum probes issue one per layer, independent of each other), every
worker waits and the program deadlocks. ``--eigvalsh auto`` (default) first tries one short call
of the library's code in a subprocess; if that hangs, the rows are measured with the proposed fix
monkeypatched in (``metrics.diagnostics._gram_singular_values`` with an ``eigvalsh`` whose vmap
rule is a ``lax.map``, so each LAPACK call sees one matrix and runs inline) and say so.
``--eigvalsh library`` forces the library's code (a watchdog ends a hung call with a stack dump);
``--eigvalsh per-run`` forces the fix. ``--openblas-threads N`` sets ``OPENBLAS_NUM_THREADS``
before numpy loads (jaxlib's LAPACK calls run on scipy's OpenBLAS, whose own threads compete with
XLA's pool).

Run::

    .venv/bin/python bench/diagnostics_overhead.py           # several minutes on 2 cores
    .venv/bin/python bench/diagnostics_overhead.py --quick   # smoke run
    .venv/bin/python bench/diagnostics_overhead.py --json diagnostics.json
    .venv/bin/python bench/diagnostics_overhead.py --openblas-threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# OPENBLAS_NUM_THREADS must be set before numpy (imported by jax) loads OpenBLAS.
if "--openblas-threads" in sys.argv[:-1]:
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--openblas-threads") + 1]

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from experiments.config import from_preset  # noqa: E402
from metrics import diagnostics as D  # noqa: E402
from metrics import hooks  # noqa: E402
from plasticity.networks import layer_params  # noqa: E402
from tasks.base import task_slice  # noqa: E402

TARGET_OVERHEAD = 0.10
GROUPS = ("representation", "weights", "optimization")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def eigvalsh_per_run():
    """The proposed fix, monkeypatched: ``eigvalsh`` whose vmap rule maps over the batch, so
    jaxlib's LAPACK kernel gets one matrix per call and never blocks a pool thread on others."""

    @jax.custom_batching.custom_vmap
    def eigvalsh(gram):
        return jnp.linalg.eigvalsh(gram)

    @eigvalsh.def_vmap
    def _rule(axis_size, in_batched, gram):
        return jax.lax.map(eigvalsh, gram), True

    def gram_singular_values(a):
        a = D._f32(a)
        m, n = a.shape
        gram = (jnp.matmul(a.T, a, precision=D._HIGHEST) if m >= n
                else jnp.matmul(a, a.T, precision=D._HIGHEST))
        return jnp.sqrt(jnp.maximum(eigvalsh(gram)[::-1], 0.0))

    return gram_singular_values


LIBRARY_GRAM_SV = D._gram_singular_values


def hang_probe() -> int:
    """Subprocess body: one short run with every diagnostic, 3 seeds vmapped, library code."""
    cfg = dataclasses.replace(from_preset("permuted-mnist", mode="sweep", metrics="all"),
                              num_tasks=1, steps_per_task=100)
    call, _ = compiled_run(C.mirror_build(cfg, C.mnist_shaped(6000, 1000)))
    call()
    call()
    return 0


def library_completes(timeout_s: int) -> tuple[bool, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hang-probe"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout_s, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return False, f"hung: no result after {timeout_s} s (compile + 2 calls of 1 task x 100 steps, ~20 s when it works)"
    if proc.returncode != 0:
        return False, f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    return True, f"completed 2 short calls in {time.perf_counter() - start:.0f} s (incl. compile)"


def compiled_run(p: C.Pieces):
    fn = jax.jit(jax.vmap(p.train.run, in_axes=(0, 0, None, None)))
    start = time.perf_counter()
    compiled = fn.lower(p.keys, p.hparams, p.tasks.data, p.tasks.params).compile()
    compile_s = time.perf_counter() - start
    call = lambda: jax.device_get(compiled(p.keys, p.hparams, p.tasks.data, p.tasks.params))  # noqa: E731
    return call, compile_s


def count_outputs(cfg, metrics: str) -> int:
    d = hooks.parse_metrics(metrics, tau=cfg.dormant_tau)
    return len(d.probes) + int(d.optimization)


def measure(cfg, dataset, metrics_list, repeats: int, label: str) -> list[dict]:
    """Times the whole run for each ``metrics`` value, interleaved; the first is the baseline."""
    calls, compiles = {}, {}
    for m in metrics_list:
        log(f"{label}: compiling metrics={m!r}")
        p = C.mirror_build(dataclasses.replace(cfg, metrics=m), dataset)
        calls[m], compiles[m] = compiled_run(p)
    log(f"{label}: timing {len(calls)} variants, {repeats} rounds after a warm-up")
    def watchdog(name, previous):
        return 900 if previous is None else max(120, 20 * previous)

    times = C.interleaved(calls, repeats, warmup=1, watchdog=watchdog)
    base = metrics_list[0]
    log_points = 1 + cfg.num_tasks * (cfg.steps_per_task // cfg.log_every)
    rows = []
    for m in metrics_list:
        paired = [t / b for t, b in zip(times[m], times[base])]
        extra = C.median(times[m]) - C.median(times[base])
        rows.append(dict(size=label, metrics=m or "(none)", seeds=cfg.seeds,
                         num_tasks=cfg.num_tasks, compile_s=compiles[m],
                         wall_s=C.median(times[m]), wall_s_all=times[m],
                         overhead=C.median(paired) - 1.0,
                         overhead_of_medians=C.median(times[m]) / C.median(times[base]) - 1.0,
                         extra_ms_per_log_point=1e3 * extra / log_points,
                         probes=count_outputs(cfg, m)))
    return rows


def sv_microbench(cfg, dataset, calls: int) -> dict:
    """One call of Gram-eigvalsh vs SVD singular values on real probe features [3, 256, 256]."""
    p = C.mirror_build(cfg, dataset)
    states = jax.vmap(p.learner.init)(jax.random.split(jax.random.key(0), cfg.seeds), p.hparams)
    probe = p.tasks.probe_batch(p.tasks.data, task_slice(p.tasks.params, 0))
    feats = jax.vmap(lambda params: p.learner.features(params, probe))(states.params)
    phi = C.block(feats["hidden/0"])  # [runs, 256, 256]
    kernel = C.block(layer_params(states.params)["hidden/0"]["kernel"])  # [runs, 784, 256]
    out = {}
    for name, x in (("features", phi), ("kernel", kernel)):
        per_run = eigvalsh_per_run()
        fns = {"gram_eigvalsh": jax.jit(jax.vmap(
                   lambda a: LIBRARY_GRAM_SV(a.reshape(a.shape[0], -1)))),
               "gram_eigvalsh_per_run": jax.jit(jax.vmap(per_run)),
               "svd": jax.jit(jax.vmap(lambda a: jnp.linalg.svd(a, compute_uv=False)))}
        res = {}
        for k, f in fns.items():
            start = time.perf_counter()
            f = f.lower(x).compile()
            compile_s = time.perf_counter() - start
            C.block(f(x))
            ts = [C.timed(lambda f=f: C.block(f(x))) for _ in range(calls)]
            res[k] = dict(ms=1e3 * C.median(ts), ms_all=[1e3 * t for t in ts], compile_s=compile_s,
                          sv=np.asarray(f(x)))
        a, b = res["gram_eigvalsh"]["sv"], res["svd"]["sv"]
        top = b[:, :1]
        out[name] = dict(shape=list(x.shape), gram_ms=res["gram_eigvalsh"]["ms"],
                         gram_per_run_ms=res["gram_eigvalsh_per_run"]["ms"],
                         svd_ms=res["svd"]["ms"],
                         gram_compile_s=res["gram_eigvalsh"]["compile_s"],
                         svd_compile_s=res["svd"]["compile_s"],
                         speedup=res["svd"]["ms"] / res["gram_eigvalsh"]["ms"],
                         max_rel_err_vs_sigma1=float(np.max(np.abs(a - b) / top)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    ap.add_argument("--eigvalsh", choices=("auto", "library", "per-run"), default="auto",
                    help="library: plax's batched eigvalsh; per-run: the proposed fix "
                    "monkeypatched in; auto: library unless a short probe of it hangs")
    ap.add_argument("--openblas-threads", metavar="N", help="set OPENBLAS_NUM_THREADS=N "
                    "(read before numpy loads)")
    ap.add_argument("--hang-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hang_probe:
        return hang_probe()
    t_start = time.perf_counter()
    probe_note = None
    mode = args.eigvalsh
    if mode == "auto":
        log("probing whether the library's batched eigvalsh completes (subprocess)")
        ok, probe_note = library_completes(60)
        mode = "library" if ok else "per-run"
    if mode == "per-run":
        D._gram_singular_values = eigvalsh_per_run()

    full = from_preset("permuted-mnist", mode="sweep")  # 3 seeds
    short = dataclasses.replace(full, num_tasks=2)
    if args.quick:
        full = dataclasses.replace(full, num_tasks=2, steps_per_task=200, log_every=100)
        short = dataclasses.replace(full, num_tasks=1)
    mnist = C.mnist_shaped()

    rows = measure(full, mnist, ["", "all"], args.repeats, "full")
    rows += measure(short, mnist, ["", *GROUPS, "all"], args.repeats, "short")
    log("singular values: Gram eigvalsh vs SVD")
    sv = sv_microbench(full, mnist, calls=20)

    def describe(cfg):
        return (f"{cfg.num_tasks} tasks x {cfg.steps_per_task} steps, log every {cfg.log_every} "
                f"({1 + cfg.num_tasks * (cfg.steps_per_task // cfg.log_every)} log points), "
                f"batch {cfg.batch_size}, hidden {'-'.join(map(str, cfg.hidden))}, "
                f"{cfg.seeds} seeds vmapped")

    print(f"plax diagnostics overhead{' (--quick)' if args.quick else ''}: jax {jax.__version__} "
          f"on {jax.devices()[0].platform}, {os.cpu_count()} cores; sweep mode, steady state")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}; "
          f"singular values in the probes: "
          + ("library code (batched eigvalsh under vmap)" if mode == "library" else
             "PROPOSED FIX monkeypatched (eigvalsh mapped per run)"))
    if probe_note:
        print(f"probe of the library's batched eigvalsh (3 seeds, metrics=all): {probe_note}")
    print(f"full  = permuted-mnist preset size on random uint8 28x28 data: {describe(full)}")
    print(f"short = the same with {short.num_tasks} task(s): {describe(short)}")
    print(f"timing: warm-up + {args.repeats} interleaved rounds; overhead = median over rounds of "
          "(run with metrics / run without) - 1; 'of medians' = ratio of the median walls - 1")
    print("'all' = metrics.hooks.parse_metrics('all'): every interval probe at every log point "
          "on the 256-example probe batch + per-step grad_norm/update_ratio")
    print()
    table = C.Table(["size", "metrics", "probes", "compile s", "wall s", "range s", "overhead %",
                     "of medians %", "extra ms/log pt"])
    for r in rows:
        table.add(r["size"], r["metrics"], r["probes"], r["compile_s"], r["wall_s"],
                  C.spread(r["wall_s_all"]), 100 * r["overhead"], 100 * r["overhead_of_medians"],
                  r["extra_ms_per_log_point"])
    print(table.render())
    print()
    headline = next(r for r in rows if r["size"] == "full" and r["metrics"] == "all")
    met = headline["overhead"] <= TARGET_OVERHEAD
    print(f"target: metrics='all' at the permuted-mnist size costs <= "
          f"{100 * TARGET_OVERHEAD:.0f}% extra: measured {100 * headline['overhead']:.1f}% -> "
          f"{'met' if met else 'NOT met'}")
    print()
    st = C.Table(["singular values of", "shape", "gram+eigvalsh ms", "per-run fix ms", "svd ms",
                  "svd/gram", "compile s (gram/svd)", "max |diff|/sigma1"])
    for name, r in sv.items():
        st.add(name, "x".join(map(str, r["shape"])), r["gram_ms"], r["gram_per_run_ms"],
               r["svd_ms"], r["speedup"],
               f"{r['gram_compile_s']:.2f}/{r['svd_compile_s']:.2f}", r["max_rel_err_vs_sigma1"])
    print("one call, vmapped over runs, median of 20 after a warm-up (features: hidden/0 "
          "post-activations of the initial network on the probe batch; kernel: hidden/0 weights; "
          "gram+eigvalsh = the library's batched call, per-run fix = eigvalsh mapped per run)")
    print(st.render())
    total = time.perf_counter() - t_start
    print(f"total benchmark time {total:.0f} s")

    if args.json:
        out = dict(quick=args.quick, repeats=args.repeats, jax=jax.__version__, eigvalsh=mode,
                   probe=probe_note,
                   openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
                   cores=os.cpu_count(), configs=dict(full=full.to_dict(), short=short.to_dict()),
                   target=dict(max_overhead=TARGET_OVERHEAD, measured=headline["overhead"],
                               met=met),
                   rows=rows, singular_values=sv, total_s=total)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
