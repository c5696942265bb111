"""Task schedules as data: which task (or mixture of two) every log interval trains.

A schedule is a few ``[K]`` arrays over the run's ``K`` log intervals (:class:`Schedule`). The
loops scan over it with the interval's entry as *traced* data, so every schedule of the same
total length runs under one compilation (DESIGN.md, principle 1: tasks are data).

Vocabulary (``--schedule``; durations count log intervals, ``I`` = intervals per task):

* ``sequential`` — each task once, in order, ``I`` intervals each (the default);
* ``repeat:k`` — the sequence ``k`` times (A → B → A → B ...: relearning on revisits);
* ``order:0,1,0,1,2`` — visits in the given order, ``I`` intervals each; ``order:0x2,1x4`` gives
  a visit its own length (``x`` intervals);
* ``durations:1,4,1`` — each task once, in order, for the given numbers of intervals;
* ``random:dwell=2[,visits=V][,seed=S]`` — a seeded random order (never the same task twice in a
  row), each visit ``dwell`` to ``2·dwell`` intervals long, ``T·I`` intervals in total unless
  ``visits`` fixes the count; the seed defaults to the sequence's task seed;
* ``drift:window=W[,shape=linear|sigmoid]`` — the sequential schedule with gradual transitions:
  over ``W`` intervals centred on each switch, every training batch (RL: every new episode)
  comes from the next task with the scheduled probability, rising linearly or along a sigmoid;
* ``curriculum:d0,d1,...`` — each task once, in order of its difficulty ``d`` (easiest first,
  ties in task order).

**Boundaries.** A *switch* is the first interval of a visit (a change of the task trained; for a
mixture, of its larger share). With ``announced`` boundaries the learner's boundary hooks (EWC
consolidation, resets between tasks, replay emptying) run at every switch after the first,
repeats included; with ``hidden`` boundaries none ever runs, as in task-free continual learning
(Aljundi et al. 2019). The environment of an RL task changes at the switch either way.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

KINDS = ("sequential", "repeat", "order", "durations", "random", "drift", "curriculum")
BOUNDARIES = ("announced", "hidden")
SHAPES = ("linear", "sigmoid")


class Schedule(NamedTuple):
    """Per-interval arrays, leading axis ``K`` (numpy on the host; traced inside the loops)."""

    task: np.ndarray      # int32: the task trained (for a mixture, the one with the larger share)
    other: np.ndarray     # int32: the mixture's second task (= ``task`` when pure)
    share: np.ndarray     # float32 in [0, 0.5]: the probability a batch example / episode is
                          # drawn from ``other`` (0 = pure)
    switch: np.ndarray    # bool: first interval of a visit (interval 0 included)
    announce: np.ndarray  # bool: the boundary hooks run before this interval
    previous: np.ndarray  # int32: the task trained just before (its probe batch feeds EWC)
    # int32: the interval's index 0..K−1. Shared by every run (never vmapped), so a loop can
    # branch on step counts with a real ``lax.cond``: one derived from a run's own carry is
    # batched under vmap, and a batched ``cond`` runs both branches.
    interval: np.ndarray

    @property
    def length(self) -> int:
        return int(self.task.shape[0])

    @property
    def mixed(self) -> bool:
        """Whether any interval mixes two tasks."""
        return bool(np.any(self.share > 0))

    def shares(self, num_tasks: int) -> np.ndarray:
        """``[K, T]``: each task's share of every interval's training data."""
        out = np.zeros((self.length, num_tasks))
        rows = np.arange(self.length)
        out[rows, self.task] += 1.0 - self.share
        out[rows, self.other] += self.share
        return out


class ScheduleError(ValueError):
    """An invalid schedule description: the message says what is valid."""


def from_visits(visits: list[tuple[int, int]], num_tasks: int,
                boundaries: str = "announced") -> Schedule:
    """A pure schedule from ``(task, intervals)`` visits."""
    tasks = np.concatenate([np.full(n, t, np.int32) for t, n in visits])
    return _finish(tasks, tasks.copy(), np.zeros(len(tasks), np.float32), num_tasks, boundaries)


def _finish(task, other, share, num_tasks, boundaries) -> Schedule:
    if boundaries not in BOUNDARIES:
        raise ScheduleError(f"unknown boundaries {boundaries!r}; valid: {', '.join(BOUNDARIES)}")
    if len(task) == 0:
        raise ScheduleError("the schedule has no intervals")
    bad = sorted({int(t) for t in np.concatenate([task, other]) if not 0 <= t < num_tasks})
    if bad:
        raise ScheduleError(f"task(s) {bad} out of range: the sequence has tasks "
                            f"0..{num_tasks - 1}")
    switch = np.concatenate([[True], task[1:] != task[:-1]])
    previous = np.concatenate([[task[0]], task[:-1]]).astype(np.int32)
    announce = switch.copy()
    announce[0] = False
    if boundaries == "hidden":
        announce[:] = False
    return Schedule(task.astype(np.int32), other.astype(np.int32), share.astype(np.float32),
                    switch, announce, previous, np.arange(len(task), dtype=np.int32))


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ScheduleError(f"{what} must be comma-separated integers, got {text!r}") from None


def _options(text: str, allowed: dict, kind: str) -> dict:
    out = dict(allowed)
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or name not in allowed:
            raise ScheduleError(f"{kind}: unknown option {item!r}; valid: "
                                f"{', '.join(f'{k}=' for k in allowed)}")
        out[name] = value if isinstance(allowed[name], str) else _ints(value, name)[0]
    return out


def _drift(num_tasks, per_task, window, shape, boundaries) -> Schedule:
    if not 1 <= window <= per_task:
        raise ScheduleError(f"drift: window must be in 1..{per_task} (the intervals per task), "
                            f"got {window}")
    if shape not in SHAPES:
        raise ScheduleError(f"drift: unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    task = np.repeat(np.arange(num_tasks), per_task)
    other, share = task.copy(), np.zeros(len(task))
    x = (np.arange(window) + 0.5) / window          # position in the window
    rise = x if shape == "linear" else 1.0 / (1.0 + np.exp(-10.0 * (x - 0.5)))
    for s in range(per_task, len(task), per_task):  # the switch into task s // per_task
        a, b = task[s - 1], task[s]
        for j, w in zip(range(s - window // 2, s - window // 2 + window), rise):
            task[j], other[j], share[j] = (b, a, 1.0 - w) if w > 0.5 else (a, b, w)
    return _finish(task, other, share, num_tasks, boundaries)


def _random(num_tasks, total, dwell, visits, seed, boundaries) -> Schedule:
    if num_tasks < 2:
        raise ScheduleError("random: needs at least 2 tasks")
    if dwell < 1:
        raise ScheduleError(f"random: dwell must be >= 1, got {dwell}")
    rng = np.random.default_rng(seed)
    out, used, last = [], 0, -1
    while (used < total) if visits == 0 else (len(out) < visits):
        t = int(rng.choice([x for x in range(num_tasks) if x != last]))
        n = int(rng.integers(dwell, 2 * dwell + 1))
        if visits == 0:
            n = min(n, total - used)
            if n < dwell and out:  # too short a tail: lengthen the last visit instead
                out[-1] = (out[-1][0], out[-1][1] + n)
                break
        out.append((t, n))
        used, last = used + n, t
    return from_visits(out, num_tasks, boundaries)


def parse(text: str, num_tasks: int, intervals_per_task: int, *, seed: int = 0,
          boundaries: str = "announced") -> Schedule:
    """The :class:`Schedule` a ``--schedule`` description names (see the module docstring)."""
    kind, _, arg = text.strip().partition(":")
    T, I = num_tasks, intervals_per_task
    if kind == "sequential" and not arg:
        return from_visits([(t, I) for t in range(T)], T, boundaries)
    if kind == "repeat":
        k = _ints(arg, "repeat")
        if len(k) != 1 or k[0] < 1:
            raise ScheduleError(f"repeat takes one count >= 1 (repeat:3), got {arg!r}")
        return from_visits([(t, I) for _ in range(k[0]) for t in range(T)], T, boundaries)
    if kind == "order":
        visits = []
        for item in filter(None, (x.strip() for x in arg.split(","))):
            m = re.fullmatch(r"(\d+)(?:x(\d+))?", item)
            if not m or (m.group(2) is not None and int(m.group(2)) < 1):
                raise ScheduleError(f"order: visits are task or taskxINTERVALS (0,1,0 or "
                                    f"0x2,1x4), got {item!r}")
            visits.append((int(m.group(1)), int(m.group(2) or I)))
        if not visits:
            raise ScheduleError("order needs at least one visit (order:0,1,0)")
        return from_visits(visits, T, boundaries)
    if kind == "durations":
        d = _ints(arg, "durations")
        if len(d) != T or min(d) < 1:
            raise ScheduleError(f"durations needs one count >= 1 per task ({T} tasks), "
                                f"got {arg!r}")
        return from_visits(list(enumerate(d)), T, boundaries)
    if kind == "curriculum":
        try:
            difficulty = [float(x) for x in arg.split(",") if x.strip()]
        except ValueError:
            raise ScheduleError(f"curriculum needs one difficulty per task, got {arg!r}") from None
        if len(difficulty) != T:
            raise ScheduleError(f"curriculum needs one difficulty per task ({T} tasks), "
                                f"got {len(difficulty)}")
        order = np.argsort(difficulty, kind="stable")
        return from_visits([(int(t), I) for t in order], T, boundaries)
    if kind == "drift":
        o = _options(arg, {"window": 2, "shape": "linear"}, "drift")
        return _drift(T, I, o["window"], o["shape"], boundaries)
    if kind == "random":
        o = _options(arg, {"dwell": max(I // 2, 1), "visits": 0, "seed": seed}, "random")
        return _random(T, T * I, o["dwell"], o["visits"], o["seed"], boundaries)
    raise ScheduleError(f"unknown schedule {text!r}; valid: sequential, repeat:K, order:0,1,0, "
                        f"durations:1,4,1, random:dwell=D, drift:window=W[,shape=sigmoid], "
                        f"curriculum:D0,D1,...")
