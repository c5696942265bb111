"""Continual-learning metrics from a performance matrix R, plus seed statistics.

Definitions follow REFERENCE.md §5 ("Continual metrics from R[k, j]"), generalised from "each
task once, in order" to any *schedule of visits*.

Convention
----------
A **visit** is a maximal stretch of training on one task (a schedule ``0, 1, 0, 1`` has four
visits, ``tasks = [0, 1, 0, 1]``). ``R`` has shape ``[..., S+1, T]`` for ``S`` visits and
``T`` evaluated tasks; any leading axes (runs, seeds, ...) are batch axes. ``R[..., v, j]`` is
the performance on task ``j`` after visits ``0..v-1``; row ``v = 0`` is the evaluation at
initialisation, before any training, so ``b_j = R[0, j]`` is the random-init baseline, and row
``S`` is the final evaluation. ``tasks[v]`` (shape ``[S]``) is the task trained in visit ``v``;
consecutive visits have different tasks. Every metric takes ``tasks=None`` for the classic
sequential schedule ``tasks = arange(T)``: then ``S = T``, ``R`` is ``[..., T+1, T]`` and row
``k`` is "after training tasks ``0..k-1``".

Tasks are **0-based** here, rows are "number of visits trained". REFERENCE.md numbers tasks
from 1 with the same rows, so in the sequential case its ``R[k, i]`` is our ``R[k, i-1]``:

* REFERENCE ``R[i, i]`` (task i right after its own training) is our ``R[j+1, j]`` with
  ``j = i-1`` -- the sub-diagonal, see `plasticity_curve`;
* REFERENCE ``R[i-1, i]`` (task i just before its training) is our ``R[j, j]`` -- the diagonal.

With a schedule, for a task ``j`` let ``first_j`` / ``last_j`` be the indices of its first and
last visit and ``final = tasks[S-1]`` the task of the last visit. The metrics read:

* `acc_avg`: mean of the final row over the tasks trained at least once;
* `forgetting_max` (Chaudhry et al. 2018): over tasks ``j != final``, the best row after
  ``j``'s first visit and before the last row minus the final row;
* `forgetting_last`: over tasks ``j != final``, the row right after ``j``'s *last* visit minus
  the final row; `bwt` is its negative;
* `bwt_1step`: per visit ``v < S-1``, the change on ``tasks[v]`` caused by the next visit;
* `fwt_gem`: over first visits except visit 0, the row before the visit minus ``b_j``;
* `plasticity_curve` / `acc_avg_curve`: one entry per *visit*, not per task.

Only the entries a metric needs are read, so entries never used may be NaN (not evaluated);
`fwt_gem` needs the zero-shot rows (``R[first_j, j]``): evaluate all tasks at init and after
every visit. Tasks never trained (evaluated only) enter no metric.

All metrics are computed in float64. A metric with nothing to average returns NaN: everything
involving a task other than the last visit's (`forgetting_*`, `bwt`, `fwt_gem`) when only one
task is trained (e.g. ``T = 1``), and `bwt_1step` for a single visit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "acc_avg",
    "acc_avg_curve",
    "forgetting_max",
    "forgetting_last",
    "bwt",
    "bwt_1step",
    "fwt_gem",
    "plasticity_curve",
    "summarize",
    "ft_auc_cw",
    "ft_auc_gap",
    "iqm",
    "bootstrap_ci",
]


class _Schedule(NamedTuple):
    """The visit sequence a metric reads: ``tasks[v]`` and each trained task's first and last
    visit index."""

    tasks: np.ndarray           # [S]
    first: dict[int, int]       # task -> index of its first visit
    last: dict[int, int]        # task -> index of its last visit

    @property
    def visits(self) -> int:
        return len(self.tasks)

    @property
    def seen(self) -> list[int]:
        """The tasks trained at least once, ascending."""
        return sorted(self.first)

    @property
    def earlier(self) -> list[int]:
        """The trained tasks other than the last visit's, ascending: the ones that can have
        been forgotten by the end."""
        return [j for j in self.seen if j != self.tasks[-1]]


def _check(R, tasks=None) -> tuple[np.ndarray, _Schedule]:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim < 2 or R.shape[-1] < 1 or R.shape[-2] < 2:
        raise ValueError(f"R must have shape [..., S+1, T] with S, T >= 1, got {R.shape}")
    n_visits, n_tasks = R.shape[-2] - 1, R.shape[-1]
    if tasks is None:
        if n_visits != n_tasks:
            raise ValueError(f"R must have shape [..., T+1, T] for the sequential schedule "
                             f"(pass `tasks` for another), got {R.shape}")
        tasks = np.arange(n_tasks)
    tasks = np.asarray(tasks)
    if tasks.ndim != 1 or len(tasks) != n_visits or not np.issubdtype(tasks.dtype, np.integer):
        raise ValueError(f"tasks must be {n_visits} integer task ids (one per row of R after "
                         f"the first), got {tasks!r}")
    if tasks.min() < 0 or tasks.max() >= n_tasks:
        raise ValueError(f"tasks must lie in 0..{n_tasks - 1}, got {tasks!r}")
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for v, j in enumerate(tasks.tolist()):
        first.setdefault(j, v)
        last[j] = v
    return R, _Schedule(tasks, first, last)


def _mean(terms: list[np.ndarray], R: np.ndarray) -> np.ndarray:
    """Mean of per-task (or per-visit) terms, each ``[...]``; NaN when there are none."""
    if not terms:
        return np.full(R.shape[:-2], np.nan)
    return np.mean(np.stack(terms, axis=-1), axis=-1)


def plasticity_curve(R, tasks=None) -> np.ndarray:
    """Performance on each visit's task at the end of that visit, ``[..., S]``.

    Entry ``v`` is ``R[v+1, tasks[v]]``: how well the network still learns, visit by visit
    (the "plasticity" of Dohare et al. 2024 and Kumar et al. 2023 read off R). Sequentially
    this is the sub-diagonal ``R[j+1, j]`` (REFERENCE.md's ``R[i, i]``, 1-based); with repeats
    a task has one entry per visit.
    """
    R, s = _check(R, tasks)
    return R[..., np.arange(1, s.visits + 1), s.tasks]


def acc_avg_curve(R, tasks=None) -> np.ndarray:
    """Average performance over the tasks trained so far, after every visit, ``[..., S]``.

    Entry ``v`` is the mean of ``R[v+1, j]`` over the tasks ``j`` trained in visits
    ``0..v`` (GEM "ACC", Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018); sequentially
    ``(1/k) sum_{j<k} R[k, j]`` for ``k = 1..T``. Tasks not yet trained are never read. Not
    Avalanche's ``StreamAccuracy``, which pools the samples of the whole evaluated stream,
    unseen tasks included.
    """
    R, s = _check(R, tasks)
    seen = np.zeros((s.visits, R.shape[-1]), dtype=bool)  # seen[v, j]: j trained by visit v
    for v, j in enumerate(s.tasks):
        seen[v:, j] = True
    total = np.where(seen, R[..., 1:, :], 0.0).sum(axis=-1)
    return total / seen.sum(axis=-1)


def acc_avg(R, tasks=None) -> np.ndarray:
    """Final average performance over the trained tasks, ``[...]`` (GEM "ACC", Lopez-Paz &
    Ranzato 2017): ``mean_j R[S, j]`` over every task trained at least once (sequentially
    ``(1/T) sum_j R[T, j]``). A task that is evaluated but never trained is left out."""
    R, s = _check(R, tasks)
    return R[..., -1, s.seen].mean(axis=-1)


def forgetting_max(R, tasks=None) -> np.ndarray:
    """Chaudhry et al. 2018 forgetting at the end of the schedule, ``[...]``.

    ``f_j = max_l R[l, j] - R[S, j]`` for every trained task ``j`` other than the last visit's,
    with ``l`` ranging over the rows after ``j``'s first visit and before the last row,
    ``l = first_j+1..S-1``; ``F = mean_j f_j``. Sequentially ``l = j+1..T-1``. REFERENCE.md
    writes the max over ``l in 1..k-1``; we do not let zero-shot rows (before task ``j`` was
    first trained) set the peak. With repeats the peak may come from any visit of ``j``, so
    forgetting counts against the best ``j`` ever was. NaN when only one task is trained.

    Differs from `forgetting_last` when a task's performance peaks before its last visit ends
    (an earlier visit, or backward transfer). Avalanche's "forgetting" is initial-minus-last
    without the max, i.e. `forgetting_last`.
    """
    R, s = _check(R, tasks)
    n = s.visits
    return _mean([R[..., s.first[j] + 1 : n, j].max(axis=-1) - R[..., n, j]
                  for j in s.earlier], R)


def forgetting_last(R, tasks=None) -> np.ndarray:
    """Forgetting as "just-trained minus final", unclipped, ``[...]``.

    ``mean_j (R[last_j+1, j] - R[S, j])`` over the trained tasks other than the last visit's,
    ``last_j`` the index of ``j``'s last visit: what was lost since ``j`` was last trained.
    Sequentially ``mean_{j<T-1} (R[j+1, j] - R[T, j])`` (REFERENCE.md:
    ``mean_{j<T}(R[j,j] - R[T,j])`` 1-based). Used by Continual World (Wołczyk et al. 2021)
    and Avalanche; equals ``-bwt``. NaN when only one task is trained.
    """
    R, s = _check(R, tasks)
    n = s.visits
    return _mean([R[..., s.last[j] + 1, j] - R[..., n, j] for j in s.earlier], R)


def bwt(R, tasks=None) -> np.ndarray:
    """Backward transfer (GEM, Lopez-Paz & Ranzato 2017), ``[...]``.

    ``mean_j (R[S, j] - R[last_j+1, j])`` over the trained tasks other than the last visit's:
    the influence of the visits after ``j``'s last one on ``j``. Sequentially
    ``(1/(T-1)) sum_{j=0}^{T-2} (R[T, j] - R[j+1, j])`` (REFERENCE.md:
    ``sum_{i<T}(R[T,i] - R[i,i])`` 1-based). Identical to ``-forgetting_last``. NaN when only
    one task is trained.
    """
    R, s = _check(R, tasks)
    n = s.visits
    return _mean([R[..., n, j] - R[..., s.last[j] + 1, j] for j in s.earlier], R)


def bwt_1step(R, tasks=None) -> np.ndarray:
    """One-step backward transfer (Kumar et al. 2023), ``[...]``.

    Per visit ``v < S-1``: performance on its task ``tasks[v]`` right after the next visit
    minus right after visit ``v``, ``R[v+2, tasks[v]] - R[v+1, tasks[v]]``; the mean over
    visits (so with repeats a task counts once per visit it has a successor). Sequentially
    ``(1/(T-1)) sum_{j=0}^{T-2} (R[j+2, j] - R[j+1, j])`` (REFERENCE.md:
    ``sum_{i<T}(R[i+1,i] - R[i,i])`` 1-based). NaN for a single visit.
    """
    R, s = _check(R, tasks)
    return _mean([R[..., v + 2, j] - R[..., v + 1, j]
                  for v, j in enumerate(s.tasks[:-1].tolist())], R)


def fwt_gem(R, tasks=None) -> np.ndarray:
    """Forward transfer (GEM, Lopez-Paz & Ranzato 2017), ``[...]``.

    Performance on task ``j`` just before its *first* visit minus at init,
    ``mean_j (R[first_j, j] - R[0, j])`` over the trained tasks except the one of visit 0
    (nothing was trained before it). Later visits are not forward transfer (the task was
    seen), so they do not count. Sequentially ``(1/(T-1)) sum_{j=1}^{T-1} (R[j, j] -
    R[0, j])`` (REFERENCE.md: ``sum_{i=2..T}(R[i-1,i] - b_i)`` 1-based, ``b_i`` the random-init
    performance). Needs the zero-shot entries (the upper triangle in the usual
    lower-triangular "results" lists), so every task must be evaluated at init and after
    every visit. Pitfall: mammoth zero-pads those entries, which turns FWT into minus the mean
    init accuracy. NaN when only one task is trained.
    """
    R, s = _check(R, tasks)
    return _mean([R[..., v, j] - R[..., 0, j] for j, v in sorted(s.first.items()) if v > 0], R)


def ft_auc_cw(auc, auc_ref) -> np.ndarray:
    """Forward transfer against single-task reference runs (Continual World, Wołczyk et al.
    2021; ``continualworld/results_processing/tables.py``), ``[...]``:
    ``FT = mean_i (AUC_i − AUC_i^ref) / (1 − AUC_i^ref)``.

    ``auc[..., i]``: mean performance on task ``i`` over the evaluations in its own training
    window (see :func:`metrics.results.task_auc`); ``auc_ref[i]``: the same for a run trained on
    task ``i`` alone from scratch. Meaningful for performance in [0, 1] (success rate,
    accuracy); for returns use :func:`ft_auc_gap`."""
    auc, ref = np.asarray(auc, np.float64), np.asarray(auc_ref, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean((auc - ref) / (1.0 - ref), axis=-1)


def ft_auc_cd(auc, auc_ref) -> np.ndarray:
    """Continual-Dreamer's forward transfer (Kessler et al. 2023; skezle/continual-dreamer,
    ``notebooks/metrics.py``), ``[...]``: ``FT = mean_i (AUC_i − AUC_i^ref) / (1 − AUC_i)`` —
    normalised by the *continual* run's own gap to 1, where Continual World divides by the
    reference's. Its curves are returns clipped below at 0 before the AUC (pass AUCs of
    clipped curves); meaningful for performance in [0, 1] (Minigrid returns, success)."""
    auc, ref = np.asarray(auc, np.float64), np.asarray(auc_ref, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean((auc - ref) / (1.0 - auc), axis=-1)


def ft_auc_gap(auc, auc_ref) -> np.ndarray:
    """Forward transfer in the metric's own units (e.g. return): ``mean_i (AUC_i −
    AUC_i^ref)``, ``[...]`` — Continual World's numerator without its [0, 1] normalisation."""
    return np.mean(np.asarray(auc, np.float64) - np.asarray(auc_ref, np.float64), axis=-1)


def summarize(R, tasks=None) -> dict[str, np.ndarray]:
    """All scalar metrics of this module, each of shape ``[...]``, for the visit sequence
    ``tasks`` (``[S]``; None: each task once, in order)."""
    return {
        "acc_avg": acc_avg(R, tasks),
        "forgetting_max": forgetting_max(R, tasks),
        "forgetting_last": forgetting_last(R, tasks),
        "bwt": bwt(R, tasks),
        "bwt_1step": bwt_1step(R, tasks),
        "fwt_gem": fwt_gem(R, tasks),
    }


# ---------------------------------------------------------------------------
# Statistics over seeds
# ---------------------------------------------------------------------------


def iqm(values, axis: int = -1) -> np.ndarray:
    """Interquartile mean: mean of the middle 50% along ``axis``.

    Same as ``scipy.stats.trim_mean(x, 0.25, axis)`` (used by rliable,
    Agarwal et al. 2021): ``int(0.25 * n)`` values are cut from each end.
    NaN propagates (sorted to the end); the mean of an empty axis is NaN.
    """
    x = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    middle = np.take(x, np.arange(cut, n - cut), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return middle.sum(axis=axis) / middle.shape[axis]


def bootstrap_ci(
    values,
    *,
    level: float = 0.95,
    n_resamples: int = 4000,
    statistic: str = "mean",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile-bootstrap confidence interval over the last axis (seeds).

    Returns ``(point, low, high)``, each of shape ``values.shape[:-1]``:
    ``point`` is the statistic ("mean" or "iqm") of the data and
    ``[low, high]`` the central ``level`` interval of the statistic over
    ``n_resamples`` resamples with replacement. Continual World reports 90%
    intervals with 4,000 resamples.

    NaN entries (e.g. diverged runs) are dropped here, separately for each
    batch entry; whether such runs should count is the caller's decision, so
    exclude them deliberately (and report how many). A batch entry with no
    finite value gives NaN. Every batch entry uses the same ``seed``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    stats = {"mean": lambda x, axis=-1: np.mean(x, axis=axis), "iqm": iqm}
    if statistic not in stats:
        raise ValueError(f"statistic must be 'mean' or 'iqm', got {statistic!r}")
    stat = stats[statistic]
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1:
        raise ValueError("values needs at least one axis (the seeds)")
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    out = np.full((3,) + values.shape[:-1], np.nan)
    for idx in np.ndindex(values.shape[:-1]):
        x = values[idx]
        x = x[~np.isnan(x)]
        if x.size == 0:
            continue
        rng = np.random.default_rng(seed)
        resampled = stat(x[rng.integers(0, x.size, (n_resamples, x.size))], axis=-1)
        out[(0,) + idx] = stat(x)
        out[(1,) + idx], out[(2,) + idx] = np.percentile(resampled, q)
    return out[0][()], out[1][()], out[2][()]
