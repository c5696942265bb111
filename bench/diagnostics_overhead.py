"""Cost of the on-device diagnostics relative to training without them.

At the ``permuted-mnist`` preset's size (MLP 784-256-256-10, batch 128, 10 tasks × 500 steps,
log every 100, 3 seeds vmapped, sweep mode), on random uint8 28×28 data with MNIST's split sizes
(the cost is MNIST's), this times the compiled whole run with ``metrics=""`` and with
``metrics="all"`` (every interval probe on the fixed 256-example probe batch at every log point,
plus grad_norm/update_ratio on the last step of each log interval), and reports the overhead
ratio. A third full-size row, ``representation,weights``, is every interval probe without the
optimisation statistics. Compile time is excluded from the steady-state numbers and reported on
its own.

A second table splits the cost by diagnostic group (``representation``, ``weights``,
``optimization``) on a shortened stream of the same shapes (2 tasks; same steps per task, log
interval, batch, seeds), each against its own no-diagnostics baseline, with ``all`` repeated
there to show how the short stream compares with the full one. Shortening removes most of the
evaluation-on-all-tasks cost from the baseline, so its percentages are, if anything, higher than
at full size.

Finally it times one call of the singular values the probes use, on real probe features
(256×256) and the first kernel (784×256), vmapped over 3 runs: the library's feature spectrum
(``metrics.diagnostics.singular_values``: QR, then the eigenvalues of the Jordan–Wielandt matrix,
no squared condition number), the Gram matrix + ``jnp.linalg.eigvalsh`` (an older code path; the
weight probes still take the Gram route, eigenvalues only), and
``jnp.linalg.svd(compute_uv=False)``.

Timing: a warm-up call per variant, then ``--repeats`` rounds in which the variants run
round-robin; the overhead is the median over rounds of the per-round ratio to the baseline (so
load drifting on a shared machine cancels), with the ratio of medians alongside.

``OPENBLAS_NUM_THREADS`` defaults to 1 here as in ``plax`` (``experiments/__init__.py``: jaxlib's
LAPACK calls run on scipy's OpenBLAS, whose own threads fight XLA's pool); ``--openblas-threads N``
overrides it (read before numpy loads).

Run::

    .venv/bin/python bench/diagnostics_overhead.py           # ~10 minutes on 2 cores
    .venv/bin/python bench/diagnostics_overhead.py --quick   # smoke run
    .venv/bin/python bench/diagnostics_overhead.py --json diagnostics.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# OPENBLAS_NUM_THREADS must be set before numpy (imported by jax) loads OpenBLAS.
if "--openblas-threads" in sys.argv[:-1]:
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--openblas-threads") + 1]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # plax's default

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from continual.runner import over_runs  # noqa: E402
from experiments.registry import from_preset  # noqa: E402
from metrics import diagnostics as D  # noqa: E402
from metrics import hooks  # noqa: E402
from plasticity.networks import layer_params  # noqa: E402
from tasks.base import task_slice  # noqa: E402

TARGET_OVERHEAD = 0.10
GROUPS = ("representation", "weights", "optimization")
PROBES_ONLY = "representation,weights"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gram_eigvalsh_with_vectors(a):
    """The previous code path: Gram matrix + ``jnp.linalg.eigvalsh`` (LAPACK ``syevd`` with
    eigenvectors on CPU), mapped per run."""
    a = D._f32(a.reshape(a.shape[0], -1))
    m, n = a.shape
    gram = (jnp.matmul(a.T, a, precision=D._HIGHEST) if m >= n
            else jnp.matmul(a, a.T, precision=D._HIGHEST))
    return jnp.sqrt(jnp.maximum(D._eigvalsh_per_matrix(gram)[::-1], 0.0))


def compiled_run(p: C.Pieces):
    fn = jax.jit(over_runs(p.train.run, (0, 0, None, None, None)))
    schedule = C.on_device(p.schedule)
    start = time.perf_counter()
    compiled = fn.lower(p.keys, p.hparams, p.tasks.data, p.tasks.params, schedule).compile()
    compile_s = time.perf_counter() - start

    def call():
        return jax.device_get(compiled(p.keys, p.hparams, p.tasks.data, p.tasks.params, schedule))

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
    """One call of each way to the singular values, on real probe features [3, 256, 256] and
    the first kernel [3, 784, 256]."""
    p = C.mirror_build(cfg, dataset)
    states = jax.vmap(p.learner.init)(jax.random.split(jax.random.key(0), cfg.seeds), p.hparams)
    probe = p.tasks.probe_batch(p.tasks.data, task_slice(p.tasks.params, 0))
    feats = jax.vmap(lambda params: p.learner.features(params, probe))(states.params)
    phi = C.block(feats["hidden/0"])  # [runs, 256, 256]
    kernel = C.block(layer_params(states.params)["hidden/0"]["kernel"])  # [runs, 784, 256]
    out = {}
    for name, x in (("features", phi), ("kernel", kernel)):
        fns = {"library": jax.jit(jax.vmap(D.singular_values)),
               "with_vectors": jax.jit(jax.vmap(gram_eigvalsh_with_vectors)),
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
        ref = res["svd"]["sv"]
        out[name] = dict(shape=list(x.shape), library_ms=res["library"]["ms"],
                         with_vectors_ms=res["with_vectors"]["ms"], svd_ms=res["svd"]["ms"],
                         library_compile_s=res["library"]["compile_s"],
                         svd_compile_s=res["svd"]["compile_s"],
                         max_rel_err_vs_sigma1=float(np.max(
                             np.abs(res["library"]["sv"] - ref) / ref[:, :1])))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    ap.add_argument("--openblas-threads", metavar="N", help="set OPENBLAS_NUM_THREADS=N "
                    "(read before numpy loads; default 1, as plax sets it)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    full = from_preset("permuted-mnist", mode="sweep")  # 3 seeds
    short = dataclasses.replace(full, num_tasks=2)
    if args.quick:
        full = dataclasses.replace(full, num_tasks=2, steps_per_task=200, log_every=100)
        short = dataclasses.replace(full, num_tasks=1)
    mnist = C.mnist_shaped()

    rows = measure(full, mnist, ["", "all", PROBES_ONLY], args.repeats, "full")
    rows += measure(short, mnist, ["", *GROUPS, "all"], args.repeats, "short")
    log("singular values: library (per platform: SVD on CPU, QR + Jordan-Wielandt elsewhere) "
        "vs Gram with eigenvectors vs SVD")
    sv = sv_microbench(full, mnist, calls=20)

    def describe(cfg):
        return (f"{cfg.num_tasks} tasks x {cfg.steps_per_task} steps, log every {cfg.log_every} "
                f"({1 + cfg.num_tasks * (cfg.steps_per_task // cfg.log_every)} log points), "
                f"batch {cfg.batch_size}, hidden {'-'.join(map(str, cfg.hidden))}, "
                f"{cfg.seeds} seeds vmapped")

    print(f"plax diagnostics overhead{' (--quick)' if args.quick else ''}: jax {jax.__version__} "
          f"on {jax.devices()[0].platform}, {os.cpu_count()} cores; sweep mode, steady state; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"full  = permuted-mnist preset size on random uint8 28x28 data: {describe(full)}")
    print(f"short = the same with {short.num_tasks} task(s): {describe(short)}")
    print(f"timing: warm-up + {args.repeats} interleaved rounds; overhead = median over rounds of "
          "(run with metrics / run without) - 1; 'of medians' = ratio of the median walls - 1")
    print("'all' = metrics.hooks.parse_metrics('all'): every interval probe at every log point "
          "on the 256-example probe batch + grad_norm/update_ratio on each interval's last step; "
          f"'{PROBES_ONLY}' = every interval probe, no optimisation statistics")
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
    probes_only = next(r for r in rows if r["size"] == "full" and r["metrics"] == PROBES_ONLY)
    met = headline["overhead"] <= TARGET_OVERHEAD
    print(f"target: metrics='all' at the permuted-mnist size costs <= "
          f"{100 * TARGET_OVERHEAD:.0f}% extra: measured {100 * headline['overhead']:.1f}% -> "
          f"{'met' if met else 'NOT met'} (interval probes alone: "
          f"{100 * probes_only['overhead']:.1f}%)")
    print()
    st = C.Table(["singular values of", "shape", "library ms", "with eigvecs ms", "svd ms",
                  "compile s (library/svd)", "max |diff|/sigma1"])
    for name, r in sv.items():
        st.add(name, "x".join(map(str, r["shape"])), r["library_ms"], r["with_vectors_ms"],
               r["svd_ms"], f"{r['library_compile_s']:.2f}/{r['svd_compile_s']:.2f}",
               r["max_rel_err_vs_sigma1"])
    print("one call, vmapped over runs, median of 20 after a warm-up (features: hidden/0 "
          "post-activations of the initial network on the probe batch; kernel: hidden/0 weights; "
          "library = metrics.diagnostics.singular_values (CPU: gesdd; GPU/TPU: QR + Jordan-Wielandt), "
          "with eigvecs = Gram + jnp.linalg.eigvalsh, an older path; max diff is the "
          "library's, against the SVD)")
    print(st.render())
    total = time.perf_counter() - t_start
    print(f"total benchmark time {total:.0f} s")

    if args.json:
        out = dict(quick=args.quick, repeats=args.repeats, jax=jax.__version__,
                   openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
                   cores=os.cpu_count(), configs=dict(full=full.to_dict(), short=short.to_dict()),
                   target=dict(max_overhead=TARGET_OVERHEAD, measured=headline["overhead"],
                               probes_only=probes_only["overhead"], met=met),
                   rows=rows, singular_values=sv, total_s=total)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
