"""Is a training step as fast inside the compiled loop as outside it? One table per network kind.

For each network kind at its preset size (``mlp``: permuted-mnist's 784-256-256-10, batch 128;
``cnn``: split-cifar100's conv 32 → conv 64 → dense 256 on 32×32×3, batch 64; ``resmlp``: 2
residual blocks of width 256 at the permuted-mnist size; ``rational``: the mlp with a rational
activation per layer), one seed, on generated data of the real shapes:

* **loop**: ms per training step inside the compiled loop — the chunked mode's own jitted
  ``run_interval`` (:func:`continual.runner.compiled`), timed at two interval lengths; the
  difference divided by the difference in steps removes the evaluation at the interval's end;
* **step**: the same training step (sampling the batch from the stream, then the learner's
  update), jitted, called from Python once per step;
* **torch**: a plain PyTorch step (forward, backward, Adam) of the same network and batch, 2
  threads (``pip install -e .[bench]``; skipped without torch);
* ``cnn (lax conv)``: the CNN with ``jax.lax.conv_general_dilated`` instead of
  :mod:`plasticity.conv` — the loop before the fix (issue 20).

Plus SAC's update (actor and 2 critics of 256-256, batch 256, HalfCheetah's sizes) inside a
``lax.scan`` of updates against the same update called from Python.

Target: loop ≤ 1.1 × min(step, loop) for every kind, i.e. the loop's step within 1.1× of the
best JAX number. Ratios only mean anything within one invocation (a shared, noisy machine).

    .venv/bin/python bench/loop_step.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from _common import (Table, block, cifar_shaped, interleaved, median, mirror_build,  # noqa: E402
                     mnist_shaped, on_device)
from continual.loop import schedule_entry  # noqa: E402
from continual.runner import compiled  # noqa: E402
from experiments.kinds.classifier import ClassifierConfig  # noqa: E402
from plasticity import conv  # noqa: E402

KINDS = {
    "mlp": dict(dataset="mnist", family="permuted", hidden=(256, 256), batch_size=128),
    "cnn": dict(dataset="cifar100", family="split", classes_per_task=5, setting="task",
                network="cnn", channels=(32, 64), hidden=(256,), batch_size=64),
    "resmlp": dict(dataset="mnist", family="permuted", network="resmlp", blocks=2,
                   hidden=(256,), batch_size=128),
    "rational": dict(dataset="mnist", family="permuted", hidden=(256, 256), batch_size=128,
                     activation="rational"),
}


def loop_interval(kind: dict, dataset, log_every: int, steps: int):
    """A jitted interval of the chunked loop, ready to call repeatedly (carry threaded): the
    first task's first interval of the schedule, as a non-switch entry (no key split at the
    switch and no boundary hook, so every call is the same steady-state interval)."""
    cfg = ClassifierConfig(**kind, num_tasks=2, steps_per_task=steps, log_every=log_every,
                           eval_examples=500, probe_examples=64, seeds=1, mode="chunked")
    pieces = mirror_build(cfg, dataset)
    init, interval = compiled(pieces.train, "chunked")
    args = (pieces.hparams, pieces.tasks.data, pieces.tasks.params)
    carry, _ = init(pieces.keys, *args)
    entry = on_device(schedule_entry(pieces.schedule, 0)._replace(switch=np.bool_(False)))
    state = {"carry": carry}
    start = time.perf_counter()
    state["carry"], logs = interval(state["carry"], entry, *args)
    block(logs)
    compile_s = time.perf_counter() - start

    def call():
        state["carry"], logs = interval(state["carry"], entry, *args)
        block(logs)

    return call, compile_s, pieces


def python_step(pieces, n: int = 10):
    """The loop's training step (sample a batch of the first task, update), jitted, called from
    Python once per step."""
    learner, tasks = pieces.learner, pieces.tasks
    hp = jax.tree.map(lambda a: a[0], pieces.hparams)
    task = jax.tree.map(lambda a: a[0], tasks.params)

    @jax.jit
    def step(state, key):
        k_batch, k_update, key = jax.random.split(key, 3)
        batch = tasks.sample(tasks.data, task, k_batch, pieces.cfg.batch_size)
        return learner.update(state, batch, hp, k_update)[0], key

    carry = {"s": jax.jit(learner.init)(jax.random.key(0), hp), "key": jax.random.key(1)}
    block(step(carry["s"], carry["key"]))

    def call():
        for _ in range(n):
            carry["s"], carry["key"] = step(carry["s"], carry["key"])
        block(carry["s"])

    return call, n


def torch_step(name: str, kind: dict, n: int = 10):
    """A plain PyTorch training step of the same network (2 threads); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    nn = torch.nn

    class Rational(nn.Module):  # PAU version A: P(x) / (1 + Σ|b_k||x|^k), degrees (5, 4)
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.randn(6) * 0.1)
            self.b = nn.Parameter(torch.randn(4) * 0.1)

        def forward(self, x):
            p = sum(self.a[j] * x ** j for j in range(6))
            q = 1 + sum(self.b[k].abs() * x.abs() ** (k + 1) for k in range(4))
            return p / q

    act = Rational if kind.get("activation") == "rational" else nn.ReLU
    if name == "cnn":
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), act(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), act(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(8 * 8 * 64, 256), act(), nn.Linear(256, 100))
        x = torch.randn(kind["batch_size"], 3, 32, 32)
        classes = 100
    elif name == "resmlp":
        width = kind["hidden"][0]

        class ResMLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(nn.Linear(784, width), nn.LayerNorm(width), act())
                self.blocks = nn.ModuleList([nn.Sequential(*[
                    m for _ in range(4) for m in (nn.Linear(width, width), nn.LayerNorm(width),
                                                  act())]) for _ in range(kind["blocks"])])
                self.out = nn.Linear(width, 10)

            def forward(self, x):
                h = self.stem(x)
                for block_ in self.blocks:
                    h = h + block_(h)
                return self.out(h)

        model, x, classes = ResMLP(), torch.randn(kind["batch_size"], 784), 10
    else:
        widths = [784, *kind["hidden"]]
        layers = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), act())]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
        x, classes = torch.randn(kind["batch_size"], 784), 10
    y = torch.randint(0, classes, (kind["batch_size"],))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def call():
        for _ in range(n):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

    call()
    return call, n


def sac_rows(repeats: int):
    """SAC's update scanned on device vs called from Python (HalfCheetah sizes)."""
    from continual.agents.sac import SACSpec, Transition, make_sac
    from continual.optimizers import HParams
    obs, act, batch_size, n = 17, 6, 256, 20
    sac = make_sac(SACSpec(hidden=(256, 256)), obs, act)
    hp = HParams.defaults(learning_rate=3e-4)
    k = jax.random.split(jax.random.key(0), 5)
    batch = Transition(jax.random.normal(k[0], (batch_size, obs)),
                       jax.random.uniform(k[1], (batch_size, act), minval=-1, maxval=1),
                       jax.random.normal(k[2], (batch_size,)), jnp.ones(batch_size),
                       jax.random.normal(k[3], (batch_size, obs)))
    state = {"py": sac.init(k[4], hp), "scan": sac.init(k[4], hp)}
    update = jax.jit(sac.update)
    scanned = jax.jit(lambda s: lax.scan(lambda c, kk: (update(c, batch, hp, kk)[0], None), s,
                                         jax.random.split(jax.random.key(1), n))[0])

    def py():
        for i in range(n):
            state["py"], _ = update(state["py"], batch, hp, jax.random.key(i))
        block(state["py"])

    def scan():
        state["scan"] = scanned(state["scan"])
        block(state["scan"])

    times = interleaved({"py": py, "scan": scan}, repeats)
    return {name: 1000 * median(ts) / n for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default=",".join([*KINDS, "cnn (lax conv)"]))
    args = parser.parse_args()
    started = time.perf_counter()
    mnist, cifar = mnist_shaped(20000, 2000), cifar_shaped(5000, 1000)
    table = Table(["network", "loop ms/step", "step from Python ms", "torch ms/step",
                   "loop / best JAX", "torch / loop", "interval compile s"])
    for name in args.kinds.split(","):
        lax_conv = name == "cnn (lax conv)"
        kind = KINDS["cnn" if lax_conv else name]
        dataset = cifar if kind["dataset"] == "cifar100" else mnist
        short, long_ = (5, 10) if lax_conv else (10, 40)  # the naive path is ~1 s a step
        original = conv.conv_general_dilated
        if lax_conv:
            conv.conv_general_dilated = lax.conv_general_dilated
        try:
            a, compile_s, pieces = loop_interval(kind, dataset, short, long_)
            b, _, _ = loop_interval(kind, dataset, long_, long_)
            from_python, n = python_step(pieces)
        finally:
            conv.conv_general_dilated = original
        variants = {"short": a, "long": b, "python": from_python}
        torch = None if lax_conv else torch_step(name, kind)
        if torch is not None:
            variants["torch"] = torch[0]
        times = interleaved(variants, args.repeats)
        loop = 1000 * (median(times["long"]) - median(times["short"])) / (long_ - short)
        python = 1000 * median(times["python"]) / n
        torch_ms = 1000 * median(times["torch"]) / torch[1] if torch is not None else None
        table.add(name, loop, python, torch_ms, loop / min(loop, python),
                  None if torch_ms is None else torch_ms / loop, compile_s)
        print(f"  {name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)
    print(f"\nTraining step inside the compiled loop vs outside it (1 seed, median of "
          f"{args.repeats} interleaved rounds, {jax.devices()[0].platform}):\n")
    print(table.render())
    sac = sac_rows(args.repeats)
    print(f"\nSAC update (actor + 2 critics 256-256, batch 256): scan {sac['scan']:.2f} ms, "
          f"Python {sac['py']:.2f} ms per update (scan / Python {sac['scan'] / sac['py']:.2f})")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
