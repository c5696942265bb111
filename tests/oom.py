"""A simulated XLA out-of-memory for tests: the sweep program fails at its n-th call (batch),
as a real ``RESOURCE_EXHAUSTED`` from a device allocation would."""
from __future__ import annotations

import jax

from continual import runner


class _FailingCall:
    """A compiled function whose ``fail_at``-th call raises XLA's out-of-memory error."""

    def __init__(self, fn, fail_at: int):
        self.fn, self.fail_at, self.calls = fn, fail_at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.fail_at:
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory allocating 88628094464 bytes.")
        return self.fn(*args)

    def lower(self, *args):
        return self.fn.lower(*args)


def inject_out_of_memory(monkeypatch, fail_at: int) -> None:
    """The sweep program runs out of memory at its ``fail_at``-th call (batch)."""
    real = runner.compiled
    failing = {}

    def compiled(train, mode, mesh=None):
        fns = real(train, mode, mesh)
        if mode != "sweep":
            return fns
        key = (train, mode)
        failing.setdefault(key, _FailingCall(fns[0], fail_at))
        return (failing[key],)

    monkeypatch.setattr(runner, "compiled", compiled)
