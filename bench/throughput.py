"""Training throughput of plax's compiled continual loop, against a Python loop and PyTorch.

What it measures, in one invocation and on the same stream and model:

a. the machine's float32 matmul ceiling with jax (2048×2048 @ 2048×2048, jitted), in GFLOP/s,
   measured before and after the rest (the higher median is used as the ceiling);
b. plax's sweep mode — ``jax.jit(over_runs(train.run))`` over the task schedule, as
   ``continual.runner.execute(mode="sweep")`` builds it — against the same training step driven by
   a Python loop over the same schedule (one jitted call per step: sampling + learner update,
   vmapped over runs; then one jitted call per log point that evaluates every task), in wall
   seconds, analytic GFLOP/s and % of the ceiling. A single
   ``execute(mode="sweep")`` call is also timed as a user sees it (it traces and compiles anew);
c. 1, 4 and 16 seeds vmapped in one program against the same seeds run one after another with
   the one-seed program: cost per seed;
d. a plain PyTorch loop of the same MLP (Adam, cross-entropy, same batch size, steps and
   evaluations on all tasks at the same log points; data as CPU tensors, the pixel permutation
   applied per batch by indexing; ``torch.set_num_threads(<cores>)``), seeds run one after another.
   Needs ``.venv/bin/pip install torch==2.13.0`` (``pip install -e .[bench]``); skipped without it.

e. where one matrix-bound training step's time goes: the bare forward/backward matmuls, the
   learner update on a fixed batch, + sampling (= the loop's step; jitted scans); the same for
   one log point's evaluation of every task (bare forward matmuls, ``learner.evaluate`` on
   prebuilt batches, + building them); and the whole run's bound if steps and evaluations ran
   their bare matmuls only.

Two sizes: *matrix-bound* — the ``permuted-mnist`` preset's shape (MLP 784-256-256-10, batch 128,
10 tasks × 500 steps, log every 100, 1000 evaluation examples per task) on random uint8 28×28 data
with MNIST's split sizes (60000/10000; the cost is the same as MNIST's), 1 seed; and
*quickstart* — ``experiments.config.from_preset("quickstart")`` (digits, MLP 64-128-128-10, 10
tasks × 300 steps, 3 seeds), where per-step overhead dominates. Section (c) uses the quickstart
config and a shortened matrix-bound one (2 tasks × 100 steps, log every 50) to stay within minutes.

Timing: compile is excluded from steady-state numbers and reported on its own; each variant gets a
warm-up call, then ``--repeats`` rounds in which the variants of a section run round-robin (load
from other processes hits all alike); the table shows the median and the min–max range. Compare
ratios within one invocation: on a shared machine absolute numbers drift.

Run::

    .venv/bin/python bench/throughput.py            # full, several minutes on 2 cores
    .venv/bin/python bench/throughput.py --quick    # smoke run, small sizes
    .venv/bin/python bench/throughput.py --json throughput.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from continual.loop import Carry, schedule_entry  # noqa: E402
from continual.runner import execute, over_runs, run_keys  # noqa: E402
from experiments.registry import from_preset  # noqa: E402
from experiments.registry import build  # noqa: E402
from tasks.base import task_slice  # noqa: E402

# Donated carries that XLA cannot reuse on CPU only warn.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

TARGETS = {
    "matrix_pct_ceiling": 85.0,      # compiled whole run, % of the matmul ceiling
    "matrix_vs_torch": 1.2,          # torch wall / plax wall
    "quickstart_vs_torch": 3.0,      # 10 tasks × 3 seeds; torch runs the seeds one after another
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# (a) matmul ceiling
# --------------------------------------------------------------------------------------------

def jax_matmul_gflops(n: int, repeats: int) -> tuple[float, float, list[float]]:
    """Median GFLOP/s of a jitted float32 n×n @ n×n; also the compile seconds."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    start = time.perf_counter()
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    compile_s = time.perf_counter() - start
    C.block(f(a, b))
    times = [C.timed(lambda: C.block(f(a, b))) for _ in range(repeats)]
    return 2 * n ** 3 / C.median(times) / 1e9, compile_s, times


def torch_matmul_gflops(n: int, repeats: int) -> float:
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = [C.timed(lambda: a @ b) for _ in range(repeats)]
    return 2 * n ** 3 / C.median(times) / 1e9


# --------------------------------------------------------------------------------------------
# (b) the compiled loop and the Python loop over the same pieces
# --------------------------------------------------------------------------------------------

def hparams_for(p: C.Pieces, runs: int):
    """The first run's hyperparameters repeated for ``runs`` runs (seeds differ by key only)."""
    return jax.tree.map(lambda a: jnp.repeat(a[:1], runs, axis=0), p.hparams)


def compile_sweep(p: C.Pieces, keys=None, hparams=None):
    """The program ``execute(mode="sweep")`` runs, compiled ahead of time (seconds returned)."""
    keys = p.keys if keys is None else keys
    hparams = p.hparams if hparams is None else hparams
    fn = jax.jit(over_runs(p.train.run, (0, 0, None, None, None)))
    start = time.perf_counter()
    compiled = fn.lower(keys, hparams, p.tasks.data, p.tasks.params,
                        C.on_device(p.schedule)).compile()
    return compiled, time.perf_counter() - start


def sweep_call(compiled, p: C.Pieces, keys=None, hparams=None):
    keys = p.keys if keys is None else keys
    hparams = p.hparams if hparams is None else hparams
    schedule = C.on_device(p.schedule)
    return lambda: jax.device_get(compiled(keys, hparams, p.tasks.data, p.tasks.params,
                                           schedule))


def make_python_loop(p: C.Pieces):
    """The loop's step as one jitted call per step (vmapped over runs), driven from Python over
    the task schedule; the library's own jitted ``init`` (with the step-0 evaluation); at the
    first interval of each visit one jitted call of what the loop's ``at_switch`` does there (the
    key split, and the learner's boundary hook where the schedule announces the boundary); one
    jitted evaluation of every task per log point. The step and the switch mirror
    ``continual.loop``'s (key splitting, sampling, learner update), so both give the same numbers
    (checked below). Returns ``(compile_seconds, run)``; ``run()`` returns host arrays
    ``(eval_acc [R, 1 + K, T], train_loss [R, K*log_every])``."""
    learner, tasks, spec, train = p.learner, p.tasks, p.spec, p.train
    schedule = p.schedule
    if spec.replay_capacity or spec.intervention_every:
        raise ValueError("the Python-loop driver covers the plain loop (no replay/interventions)")
    if schedule.mixed:
        raise ValueError("the Python-loop driver covers pure schedules (no drift mixtures)")

    def switch(carry: Carry, entry, data, task_params):
        # continual.loop's at_switch for a learner without interventions.
        key, k_boundary, _ = jax.random.split(carry.key, 3)

        def apply(state):
            probe = tasks.probe_batch(data, task_slice(task_params, entry.previous))
            return learner.boundary(state, probe, k_boundary)

        state = jax.lax.cond(entry.announce, apply, lambda s: s, carry.state)
        return carry._replace(state=state, key=key)

    def step(carry: Carry, task, hparams, data):
        key, batch_key, update_key, _ = jax.random.split(carry.key, 4)
        batch = tasks.sample(data, task, batch_key, spec.batch_size)
        state, info = learner.update(carry.state, batch, hparams, update_key)
        # (the loop's divergence check runs once per log interval and never fires here)
        return carry._replace(state=state, key=key), info

    def evaluate(state, data, task_params):
        return jax.lax.map(
            lambda task: learner.evaluate(state, tasks.eval_batch(data, task))["acc"],
            task_params)

    data, params, keys, hparams = p.tasks.data, p.tasks.params, p.keys, p.hparams
    start = time.perf_counter()
    init_c = (jax.jit(over_runs(train.init, (0, 0, None, None)))
              .lower(keys, hparams, data, params).compile())
    carry0, _ = init_c(keys, hparams, data, params)
    t0 = jnp.int32(0)
    entries = [C.on_device(schedule_entry(schedule, k)) for k in range(schedule.length)]
    switch_c = (jax.jit(over_runs(switch, (0, None, None, None)), donate_argnums=0)
                .lower(carry0, entries[0], data, params).compile())
    slice_c = jax.jit(task_slice).lower(params, t0).compile()
    task0 = slice_c(params, t0)
    step_c = (jax.jit(over_runs(step, (0, None, 0, None)), donate_argnums=0)
              .lower(carry0, task0, hparams, data).compile())
    eval_c = (jax.jit(over_runs(evaluate, (0, None, None)))
              .lower(carry0.state, data, params).compile())
    compile_s = time.perf_counter() - start
    switches = [bool(s) for s in schedule.switch]

    def run():
        carry, logs0 = init_c(keys, hparams, data, params)
        evals, losses = [logs0["eval_acc"]], []
        task = None
        for k, entry in enumerate(entries):
            if switches[k]:  # the first interval of a visit (interval 0 included)
                carry = switch_c(carry, entry, data, params)
                task = slice_c(params, entry.task)
            for _ in range(spec.log_every):
                carry, info = step_c(carry, task, hparams, data)
                losses.append(info["train_loss"])
            evals.append(eval_c(carry.state, data, params))
        evals, losses = jax.device_get((evals, losses))
        return np.stack(evals, axis=1), np.stack(losses, axis=1)

    return compile_s, run


def sweep_eval_matrix(logs0, logs) -> np.ndarray:
    """eval_acc of the sweep's logs as ``[R, 1 + K, T]`` (the Python loop's layout)."""
    acc = np.asarray(logs["eval_acc"])  # [R, K, T]
    return np.concatenate([np.asarray(logs0["eval_acc"])[:, None], acc], 1)


# --------------------------------------------------------------------------------------------
# (d) PyTorch
# --------------------------------------------------------------------------------------------

def have_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


class TorchLoop:
    """A plain PyTorch loop over the same stream: MLP (torch's default init), Adam, cross-entropy;
    every log point evaluates every task on its fixed test indices. Data are CPU tensors; each
    batch is gathered, normalised and permuted by indexing, like plax's ``sample``."""

    def __init__(self, p: C.Pieces):
        import torch
        if p.cfg.network != "mlp" or p.cfg.setting != "class" or p.cfg.optimizer != "adam":
            raise ValueError("the torch baseline covers mlp / class setting / adam only")
        if p.cfg.activation != "relu" or p.cfg.layer_norm:
            raise ValueError("the torch baseline covers relu without layer norm only")
        self.torch = torch
        self.cfg, self.spec = p.cfg, p.spec
        self.widths = C.mlp_widths(p.cfg, p.tasks)
        ds = p.dataset
        self.scale, self.mean, self.std = ds.scale, ds.mean, ds.std
        params = jax.device_get(p.tasks.params)
        n_pix = int(np.prod(ds.image_shape[:2]))
        self.channels = ds.image_shape[2]
        t = lambda a, dtype=torch.int64: torch.as_tensor(np.array(a)).to(dtype)  # noqa: E731
        self.x_train = t(ds.x_train.reshape(len(ds.x_train), n_pix, self.channels), torch.uint8)
        self.x_test = t(ds.x_test.reshape(len(ds.x_test), n_pix, self.channels), torch.uint8)
        self.y_train, self.y_test = t(ds.y_train), t(ds.y_test)
        self.perm, self.label_map = t(params.perm), t(params.label_map)
        self.train_index, self.train_count = t(params.train_index), params.train_count.tolist()
        self.test_index = t(params.test_index)
        self.test_weight = t(params.test_weight, torch.float32)
        self.lr = float(p.cfg.learning_rate[0])

    def _x(self, x_uint8, t):
        b = x_uint8.shape[0]
        x = (x_uint8.float() / self.scale - self.mean) / self.std
        return x[:, self.perm[t], :].reshape(b, -1)

    def _evaluate(self, model):
        torch = self.torch
        out = []
        with torch.no_grad():
            for t in range(self.cfg.num_tasks):
                idx = self.test_index[t]
                logits = model(self._x(self.x_test[idx], t))
                y = self.label_map[t][self.y_test[idx]]
                w = self.test_weight[t]
                out.append(((logits.argmax(-1) == y).float() * w).sum() / w.sum().clamp(min=1))
        return torch.stack(out)

    def run(self, seed: int, steps_per_task: int | None = None):
        """One seed, the whole sequence. Returns eval_acc ``[1 + T*I, T]`` (numpy)."""
        torch = self.torch
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        layers: list = []
        for a, b in zip(self.widths[:-2], self.widths[1:-1]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers, torch.nn.Linear(self.widths[-2], self.widths[-1]))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        spec, batch = self.spec, self.cfg.batch_size
        intervals = spec.intervals_per_task if steps_per_task is None else 1
        log_every = spec.log_every if steps_per_task is None else steps_per_task
        evals = [self._evaluate(model)]
        for t in range(self.cfg.num_tasks):
            for _ in range(intervals):
                loss_sum = torch.zeros(())
                acc_sum = torch.zeros(())
                for _ in range(log_every):
                    j = torch.randint(0, self.train_count[t], (batch,), generator=gen)
                    idx = self.train_index[t][j]
                    x = self._x(self.x_train[idx], t)
                    y = self.label_map[t][self.y_train[idx]]
                    logits = model(x)
                    loss = torch.nn.functional.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach()
                    acc_sum += (logits.detach().argmax(-1) == y).float().mean()
                evals.append(self._evaluate(model))
            if steps_per_task is not None:
                break
        return torch.stack(evals).numpy()


# --------------------------------------------------------------------------------------------
# (e) where one training step's time goes
# --------------------------------------------------------------------------------------------

def step_breakdown(p: C.Pieces, steps: int, repeats: int) -> list[dict]:
    """Per-step cost of cumulative pieces of the loop's step, each a jitted scan of ``steps``
    steps over one run: the bare matmuls of forward + backward (same shapes), the learner update
    on a fixed batch, + sampling the batch (= the loop's step)."""
    learner, tasks, spec = p.learner, p.tasks, p.spec
    hp = jax.tree.map(lambda a: a[0], p.hparams)
    key = jax.random.key(0)
    state = learner.init(key, hp)
    data = p.tasks.data
    task = task_slice(p.tasks.params, 1)
    batch = tasks.sample(data, task, key, spec.batch_size)
    widths = C.mlp_widths(p.cfg, p.tasks)
    ws = [jnp.full((a, b), 0.01, jnp.float32) for a, b in zip(widths[:-1], widths[1:])]
    x0 = batch.x.reshape(spec.batch_size, -1)

    def matmuls(c):
        x, acts = x0 + 1e-9 * c[1].astype(jnp.float32), []
        for w in ws:
            acts.append(x)
            x = jnp.maximum(x @ w, 0.0)
        g, total = x, 0.0
        for i in reversed(range(len(ws))):
            total = total + jnp.sum(acts[i].T @ g)  # weight gradient
            if i:                                   # input gradient (none for the data)
                g = g @ ws[i].T
        return c[0], c[1] + (total > 1e30).astype(jnp.int32)

    def update_fixed(c):
        st, k = c
        k, uk = jax.random.split(k)
        return learner.update(st, batch, hp, uk)[0], k

    def update_sampled(c):
        st, k = c
        k, bk, uk = jax.random.split(k, 3)
        return learner.update(st, tasks.sample(data, task, bk, spec.batch_size), hp, uk)[0], k

    # The loop checks divergence once per log interval (not per step), so the sampled update is
    # the loop's step.
    pieces = {"matmuls only (fwd+bwd shapes)": (matmuls, (state, jnp.int32(0))),
              "learner.update, fixed batch": (update_fixed, (state, key)),
              "+ tasks.sample (gather, permute) = loop step": (update_sampled, (state, key))}
    calls = {}
    for name, (body, c0) in pieces.items():
        f = jax.jit(lambda c, body=body: jax.lax.scan(lambda c, _: (body(c), None), c,
                                                      length=steps)[0])
        f = f.lower(c0).compile()
        calls[name] = lambda f=f, c0=c0: C.block(f(c0))
    times = C.interleaved(calls, repeats, warmup=1)
    flop = 6 * spec.batch_size * C.sum_in_out(widths)
    return [dict(piece=name, ms_per_step=1e3 * C.median(ts) / steps,
                 gflops=flop / (C.median(ts) / steps) / 1e9) for name, ts in times.items()]


def eval_breakdown(p: C.Pieces, evals: int, repeats: int) -> list[dict]:
    """Per-call cost of cumulative pieces of one log point's evaluation of every task (what
    ``continual.loop``'s ``measure`` runs), each a jitted scan of ``evals`` calls whose parameters
    change every call (so nothing is hoisted out of the scan): the bare forward matmuls + ReLU of
    all tasks' examples as one ``[T*E, D]`` batch, ``learner.evaluate`` on prebuilt batches, +
    building them (``tasks.eval_batch``: gather, permute, normalise = the loop's evaluation)."""
    learner, tasks = p.learner, p.tasks
    hp = jax.tree.map(lambda a: a[0], p.hparams)
    state = learner.init(jax.random.key(0), hp)
    data, params = tasks.data, tasks.params
    batches = jax.jit(jax.vmap(tasks.eval_batch, in_axes=(None, 0)))(data, params)
    widths = C.mlp_widths(p.cfg, p.tasks)
    ws = [jnp.full((a, b), 0.01, jnp.float32) for a, b in zip(widths[:-1], widths[1:])]
    x2d = batches.x.reshape(-1, widths[0])

    def bump(i):  # a per-call change, so that XLA cannot hoist the evaluation out of the scan
        return state._replace(params=jax.tree.map(lambda a: a * (1 + 1e-7 * i), state.params))

    def matmuls(i, x2d):
        h = x2d * (1 + 1e-7 * i)
        for w in ws:
            h = jnp.maximum(h @ w, 0.0)
        return jnp.sum(h)

    def prebuilt(i, batches):
        s = bump(i)
        return jnp.sum(jax.vmap(lambda b: learner.evaluate(s, b)["acc"])(batches))

    def built(i, data, params):
        s = bump(i)
        return jnp.sum(jax.vmap(lambda t: learner.evaluate(s, tasks.eval_batch(data, t))["acc"])(
            params))

    pieces = {"matmuls + ReLU only (all tasks, one batch)": (matmuls, (x2d,)),
              "learner.evaluate, prebuilt batches": (prebuilt, (batches,)),
              "+ tasks.eval_batch (gather, permute) = loop's evaluation": (built, (data, params))}
    calls = {}
    for name, (body, args) in pieces.items():
        f = jax.jit(lambda *a, body=body: jax.lax.scan(
            lambda c, i: (c + body(i, *a), None), 0.0, jnp.arange(evals, dtype=jnp.float32))[0])
        f = f.lower(*args).compile()
        calls[name] = lambda f=f, args=args: C.block(f(*args))
    times = C.interleaved(calls, repeats, warmup=1)
    rows_per_eval = int(x2d.shape[0])  # T * E (padded rows are computed too)
    flop = 2 * rows_per_eval * C.sum_in_out(widths)
    return [dict(piece=name, ms_per_call=1e3 * C.median(ts) / evals,
                 gflops=flop / (C.median(ts) / evals) / 1e9) for name, ts in times.items()]


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def configs(quick: bool):
    short = dict(num_tasks=2, steps_per_task=100, log_every=50)
    matrix = from_preset("permuted-mnist", seeds=1, mode="sweep")
    quickstart = from_preset("quickstart", mode="sweep")
    matrix_seeds = dataclasses.replace(matrix, **short)
    if quick:
        matrix = dataclasses.replace(matrix, **short)
        quickstart = dataclasses.replace(quickstart, num_tasks=3, steps_per_task=100, log_every=50)
        matrix_seeds = dataclasses.replace(matrix, num_tasks=1)
    return matrix, quickstart, matrix_seeds


def describe(cfg) -> str:
    return (f"{cfg.num_tasks} tasks x {cfg.steps_per_task} steps, log every {cfg.log_every}, "
            f"batch {cfg.batch_size}, hidden {'-'.join(map(str, cfg.hidden))}, {cfg.seeds} seed(s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the rows (and targets) as JSON")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (>= 3 "
                    "for medians worth quoting)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    args = ap.parse_args(argv)
    repeats = args.repeats
    seed_counts = (1, 4) if args.quick else (1, 4, 16)
    cores = os.cpu_count() or 1
    use_torch = not args.no_torch and have_torch()
    torch_note = None
    if not args.no_torch and not use_torch:
        torch_note = ("torch is not installed: PyTorch rows skipped "
                      "(.venv/bin/pip install torch==2.13.0)")
    if use_torch:
        import torch
        torch.set_num_threads(cores)

    t_start = time.perf_counter()
    rows: list[dict] = []
    mat_n = 1024 if args.quick else 2048
    log(f"matmul ceiling ({mat_n}x{mat_n} f32)")
    ceil_before, mm_compile, mm_times_before = jax_matmul_gflops(mat_n, 10)
    torch_ceiling = torch_matmul_gflops(mat_n, 10) if use_torch else None

    matrix_cfg, quick_cfg, matrix_seeds_cfg = configs(args.quick)
    log("building the matrix-bound stream (random uint8 data of MNIST's shape)")
    mnist = C.mnist_shaped()
    sizes = [("matrix-bound", C.mirror_build(matrix_cfg, mnist)),
             ("quickstart", C.mirror_build(quick_cfg))]

    checks: dict[str, float] = {}
    results: dict[str, dict[str, dict]] = {}
    for size, p in sizes:
        cfg = p.cfg
        seeds = cfg.seeds
        flops = C.run_flops(cfg, p.tasks, seeds)
        log(f"{size}: {describe(cfg)}; compiling")
        sweep_c, sweep_compile = compile_sweep(p)
        py_compile, py_run = make_python_loop(p)
        variants = {"plax sweep (compiled loop)": sweep_call(sweep_c, p),
                    "python loop, jitted step": py_run}
        torch_loop = None
        if use_torch:
            torch_loop = TorchLoop(p)
            variants["pytorch loop (seeds in turn)"] = lambda: [torch_loop.run(s)
                                                                for s in range(seeds)]
        log(f"{size}: timing {len(variants)} variants, {repeats} rounds after a warm-up")
        warm = {name: fn for name, fn in variants.items() if not name.startswith("pytorch")}
        for fn in warm.values():
            fn()
        if torch_loop is not None:
            torch_loop.run(0)  # a full-length run, like the others' warm-up
        last: dict = {}
        keep = lambda name, fn: lambda: last.__setitem__(name, fn())  # noqa: E731
        times = C.interleaved({n: keep(n, fn) for n, fn in variants.items()}, repeats, warmup=0)

        # Sanity: the Python loop computes what the compiled loop computes.
        logs0, logs = last["plax sweep (compiled loop)"]
        sweep_acc = sweep_eval_matrix(logs0, logs)
        py_acc, _ = last["python loop, jitted step"]
        checks[f"{size}: max |eval_acc sweep - python loop|"] = float(np.max(np.abs(sweep_acc - py_acc)))

        # One execute(mode="sweep") call as a user makes it: it traces and compiles anew.
        if size == "quickstart":
            exp = build(cfg)  # the real path, by name
            train, hp, data, params = exp.train, exp.hparams, exp.tasks.data, exp.tasks.params
            keys, schedule = run_keys(exp.runs["seed"].to_numpy()), exp.schedule
        else:
            train, hp, data, params, keys = p.train, p.hparams, p.tasks.data, p.tasks.params, p.keys
            schedule = p.schedule
        start = time.perf_counter()
        e_logs0, e_logs = execute(train, keys, hp, data, params, schedule, mode="sweep")
        execute_s = time.perf_counter() - start
        checks[f"{size}: max |eval_acc execute() - steady-state sweep|"] = float(
            np.max(np.abs(sweep_eval_matrix(e_logs0, e_logs) - sweep_acc)))
        if torch_loop is not None:
            tacc = np.stack(last["pytorch loop (seeds in turn)"])
            checks[f"{size}: final mean eval_acc plax / torch (sanity, not a target)"] = (
                f"{sweep_acc[:, -1].mean():.3f} / {tacc[:, -1].mean():.3f}")

        compile_of = {"plax sweep (compiled loop)": sweep_compile,
                      "python loop, jitted step": py_compile,
                      "pytorch loop (seeds in turn)": None}
        results[size] = {}
        for name, ts in times.items():
            row = dict(section="b/d", size=size, variant=name, seeds=seeds,
                       compile_s=compile_of[name], wall_s=C.median(ts), wall_s_all=ts,
                       per_seed_s=C.median(ts) / seeds, gflop=flops / 1e9,
                       gflops=flops / 1e9 / C.median(ts))
            rows.append(row)
            results[size][name] = row
        rows.append(dict(section="b", size=size, variant="execute(mode='sweep'), one call",
                         seeds=seeds, compile_s=None, wall_s=execute_s, wall_s_all=[execute_s],
                         per_seed_s=execute_s / seeds, gflop=flops / 1e9,
                         gflops=flops / 1e9 / execute_s, note="includes trace + compile"))
        del variants, sweep_c

    # (c) seeds vmapped vs one after another.
    log("seeds: building")
    seed_sizes = [("quickstart", sizes[1][1]),
                  ("matrix-bound short", C.mirror_build(matrix_seeds_cfg, mnist))]
    for size, p in seed_sizes:
        cfg = p.cfg
        one_keys, one_hp = run_keys([0]), hparams_for(p, 1)
        one_c, one_compile = compile_sweep(p, one_keys, one_hp)
        for s in seed_counts:
            log(f"seeds: {size} ({describe(dataclasses.replace(cfg, seeds=s))})")
            keys = run_keys(list(range(s)))
            hp = hparams_for(p, s)
            flops = C.run_flops(cfg, p.tasks, s)
            if s == 1:
                vm_c, vm_compile = one_c, one_compile
            else:
                vm_c, vm_compile = compile_sweep(p, keys, hp)
            per_seed = [(run_keys([i]), one_hp)
                        for i in range(s)]
            variants = {"vmapped": sweep_call(vm_c, p, keys, hp)}
            if s > 1:
                variants["sequential"] = lambda per_seed=per_seed: [
                    sweep_call(one_c, p, k, h)() for k, h in per_seed]
            # The sequential variant reuses the one-seed program, already warm: skip its warm-up.
            variants["vmapped"]()
            times = C.interleaved(variants, repeats, warmup=0)
            for name, ts in times.items():
                rows.append(dict(section="c", size=size, variant=f"{s} seeds {name}", seeds=s,
                                 compile_s=vm_compile if name == "vmapped" else one_compile,
                                 wall_s=C.median(ts), wall_s_all=ts,
                                 per_seed_s=C.median(ts) / s, gflop=flops / 1e9,
                                 gflops=flops / 1e9 / C.median(ts)))

    log("step breakdown (matrix-bound, 1 run)")
    breakdown = step_breakdown(sizes[0][1], 100 if args.quick else 300, repeats)
    log("evaluation breakdown (matrix-bound, 1 run)")
    eval_pieces = eval_breakdown(sizes[0][1], 3 if args.quick else 10, repeats)

    log("matmul ceiling again")
    ceil_after, _, mm_times_after = jax_matmul_gflops(mat_n, 10)
    ceiling = max(ceil_before, ceil_after)
    for row in rows:
        row["pct_ceiling"] = 100.0 * row["gflops"] / ceiling

    # ---------------------------------------------------------------------------------------
    # Report
    # ---------------------------------------------------------------------------------------
    print(f"plax throughput benchmark{' (--quick)' if args.quick else ''}: jax {jax.__version__} "
          f"on {jax.devices()[0].platform}, {cores} cores"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if use_torch else ""))
    print(f"sizes: matrix-bound = permuted-mnist shape on random uint8 28x28 data: "
          f"{describe(matrix_cfg)}; quickstart = preset: {describe(quick_cfg)}")
    print(FLOP_NOTE)
    print(f"timing: median of {repeats} rounds after a warm-up, variants interleaved per round; "
          "compile excluded (own column)")
    print()
    print(f"(a) matmul ceiling, jax jit f32 {mat_n}x{mat_n}@{mat_n}x{mat_n}: "
          f"{ceil_before:.1f} GFLOP/s before, {ceil_after:.1f} after -> ceiling {ceiling:.1f} "
          f"GFLOP/s (compile {mm_compile:.2f} s)"
          + (f"; torch matmul for reference: {torch_ceiling:.1f} GFLOP/s" if use_torch else ""))
    if torch_note:
        print(f"NOTE: {torch_note}")
    print()
    table = C.Table(["size", "variant", "seeds", "compile s", "wall s", "range s", "s/seed",
                     "GFLOP", "GFLOP/s", "% ceil", "torch/this"])
    for row in rows:
        torch_row = results.get(row["size"], {}).get("pytorch loop (seeds in turn)")
        ratio = (torch_row["wall_s"] / row["wall_s"]) if torch_row and row["section"] != "c" else None
        row["torch_wall_over_this"] = ratio
        table.add(row["size"], f"({row['section']}) {row['variant']}", row["seeds"],
                  row["compile_s"], row["wall_s"], C.spread(row["wall_s_all"]),
                  row["per_seed_s"], row["gflop"], row["gflops"], row["pct_ceiling"], ratio)
    print(table.render())
    print()

    pieces_tables = [
        ("(e) where a matrix-bound training step's time goes (1 run, jitted scan, per step; "
         "GFLOP/s = 6*B*S per step / time):", breakdown, "ms_per_step", "ms/step"),
        ("(e) where one matrix-bound log point's evaluation of every task goes (1 run, jitted "
         "scan, per call; GFLOP/s = 2*T*E*S per call / time):", eval_pieces, "ms_per_call",
         "ms/call")]
    for title, pieces, ms_key, ms_label in pieces_tables:
        print(title)
        pt = C.Table(["cumulative piece", ms_label, "GFLOP/s", "% ceil"])
        for r in pieces:
            r["pct_ceiling"] = 100.0 * r["gflops"] / ceiling
            pt.add(r["piece"], r[ms_key], r["gflops"], r["pct_ceiling"])
        print(pt.render())
        print()
    # The whole run is its steps and its log points' evaluations: if each ran only its bare
    # matmuls, this is the share of the ceiling the run would reach (the bound on this machine
    # without faster matmul kernels).
    mcfg = matrix_cfg
    n_steps = mcfg.num_tasks * mcfg.steps_per_task
    n_evals = 1 + mcfg.num_tasks * (mcfg.steps_per_task // mcfg.log_every)

    def run_seconds(step_piece: dict, eval_piece: dict) -> float:
        return 1e-3 * (n_steps * step_piece["ms_per_step"] + n_evals * eval_piece["ms_per_call"])

    bound_s = run_seconds(breakdown[0], eval_pieces[0])
    parts_s = run_seconds(breakdown[-1], eval_pieces[-1])
    mat_row = results["matrix-bound"]["plax sweep (compiled loop)"]
    bound_pct = 100.0 * mat_row["gflop"] / bound_s / ceiling
    print(f"whole matrix-bound run: {n_steps} steps x loop step + {n_evals} x loop evaluation = "
          f"{parts_s:.2f} s (measured sweep {mat_row['wall_s']:.2f} s); with bare matmuls only "
          f"{bound_s:.2f} s = {bound_pct:.1f}% of the ceiling (the bound without faster kernels)")
    print()

    # Targets.
    verdicts = []
    mat = results["matrix-bound"]["plax sweep (compiled loop)"]
    verdicts.append(("matrix-bound whole run >= 85% of matmul ceiling",
                     f"{mat['pct_ceiling']:.1f}%", mat["pct_ceiling"] >= TARGETS["matrix_pct_ceiling"]))
    if use_torch:
        r = results["matrix-bound"]["pytorch loop (seeds in turn)"]["wall_s"] / mat["wall_s"]
        verdicts.append(("matrix-bound >= 1.2x faster than PyTorch", f"{r:.2f}x",
                         r >= TARGETS["matrix_vs_torch"]))
        q = results["quickstart"]
        r = q["pytorch loop (seeds in turn)"]["wall_s"] / q["plax sweep (compiled loop)"]["wall_s"]
        verdicts.append((f"quickstart ({quick_cfg.num_tasks} tasks x {quick_cfg.seeds} seeds) >= 3x "
                         "faster than PyTorch", f"{r:.2f}x", r >= TARGETS["quickstart_vs_torch"]))
    else:
        verdicts.append(("PyTorch comparisons", "skipped (no torch)", None))
    by_key = {(r["size"], r["variant"]): r for r in rows if r["section"] == "c"}
    worst, vs_one = [], []
    for size, _ in seed_sizes:
        one = by_key[(size, "1 seeds vmapped")]["per_seed_s"]
        for s in seed_counts[1:]:
            vm = by_key[(size, f"{s} seeds vmapped")]["per_seed_s"]
            sq = by_key[(size, f"{s} seeds sequential")]["per_seed_s"]
            worst.append((vm / sq, f"{size}, {s} seeds: {vm / sq:.2f}"))
            vs_one.append(f"{size} {s}: {vm / one:.2f}")
    ratio, where = max(worst)
    verdicts.append(("vmapped seeds never cost more per seed than sequential ones",
                     f"worst vmapped/sequential per-seed {where}", ratio <= 1.0))
    vt = C.Table(["target", "measured", "met"])
    for name, measured, met in verdicts:
        vt.add(name, measured, "-" if met is None else ("yes" if met else "NO"))
    print(vt.render())
    print()
    print("per-seed cost of S vmapped seeds / 1 seed alone (info): " + "; ".join(vs_one))
    print()
    print("checks:")
    for name, value in checks.items():
        print(f"  {name}: {value if isinstance(value, str) else f'{value:.3g}'}")
    total = time.perf_counter() - t_start
    print(f"total benchmark time {total:.0f} s")

    if args.json:
        out = dict(quick=args.quick, repeats=repeats, cores=cores, jax=jax.__version__,
                   torch=(torch.__version__ if use_torch else None), note=torch_note,
                   flop_formula=C.FLOP_FORMULA,
                   ceiling_gflops=dict(before=ceil_before, after=ceil_after, used=ceiling,
                                       torch=torch_ceiling, size=mat_n,
                                       times_before=mm_times_before, times_after=mm_times_after),
                   configs=dict(matrix=matrix_cfg.to_dict(), quickstart=quick_cfg.to_dict(),
                                matrix_seeds=matrix_seeds_cfg.to_dict()),
                   targets=[dict(target=n, measured=m, met=ok) for n, m, ok in verdicts],
                   checks=checks, rows=rows, step_breakdown=breakdown,
                   eval_breakdown=eval_pieces, bare_matmul_bound_pct=bound_pct,
                   total_s=total)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


FLOP_NOTE = f"FLOP count: {C.FLOP_FORMULA}"

if __name__ == "__main__":
    sys.exit(main())
