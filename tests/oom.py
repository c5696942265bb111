"""A simulated XLA out-of-memory for tests: the sweep program fails at its n-th call (counting
the calls of every sweep program, i.e. batches over settings), as a real ``RESOURCE_EXHAUSTED``
from a device allocation would."""
from __future__ import annotations

import jax

from continual import runner


class _FailingCall:
    """A compiled function that raises XLA's out-of-memory error at the ``fail_at``-th call
    counted in ``calls`` (shared by every wrapped function)."""

    def __init__(self, fn, fail_at: int, calls: list):
        self.fn, self.fail_at, self.calls = fn, fail_at, calls

    def __call__(self, *args):
        self.calls.append(1)
        if len(self.calls) == self.fail_at:
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory allocating 88628094464 bytes.")
        return self.fn(*args)

    def lower(self, *args):
        return self.fn.lower(*args)


def inject_out_of_memory(monkeypatch, fail_at: int) -> None:
    """The ``fail_at``-th call of a sweep program runs out of memory."""
    real = runner.compiled
    calls: list = []

    def compiled(train, mode, mesh=None):
        fns = real(train, mode, mesh)
        return (_FailingCall(fns[0], fail_at, calls),) if mode == "sweep" else fns

    monkeypatch.setattr(runner, "compiled", compiled)
