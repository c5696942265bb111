"""Continual-learning metrics from an accuracy matrix R, plus seed statistics.

Definitions follow REFERENCE.md §5 ("Continual metrics from R[k, j]").

Convention
----------
``R`` has shape ``[..., T+1, T]``; any leading axes (runs, seeds, ...) are
batch axes. ``R[..., k, j]`` is the accuracy on task ``j`` after training
tasks ``0..k-1``; row ``k = 0`` is the evaluation at initialisation, before
any training, so ``b_j = R[0, j]`` is the random-init baseline.

Tasks are **0-based** here, rows are "number of tasks trained". REFERENCE.md
numbers tasks from 1 with the same rows, so its ``R[k, i]`` is our
``R[k, i-1]``. In particular:

* REFERENCE ``R[i, i]`` (task i right after its own training) is our
  ``R[j+1, j]`` with ``j = i-1`` -- the sub-diagonal, see `plasticity_curve`.
* REFERENCE ``R[i-1, i]`` (task i just before its training) is our
  ``R[j, j]`` -- the diagonal.

Only the entries a metric needs are read, so the upper triangle may be NaN
(not evaluated) for everything except `fwt_gem`, which needs the diagonal
``R[j, j]``: evaluate all tasks at init and after every task.

All metrics are computed in float64; metrics that are undefined for ``T = 1``
(everything involving a "previous" task) return NaN.
"""

from __future__ import annotations

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
    "iqm",
    "bootstrap_ci",
]


def _check(R) -> tuple[np.ndarray, int]:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim < 2 or R.shape[-1] < 1 or R.shape[-2] != R.shape[-1] + 1:
        raise ValueError(f"R must have shape [..., T+1, T] with T >= 1, got {R.shape}")
    return R, R.shape[-1]


def _nan(R: np.ndarray) -> np.ndarray:
    return np.full(R.shape[:-2], np.nan)


def _diag(R: np.ndarray, offset: int) -> np.ndarray:
    """``R[..., j + offset, j]`` for all valid ``j``, shape ``[..., n]``."""
    return np.diagonal(R, offset=-offset, axis1=-2, axis2=-1)


def plasticity_curve(R) -> np.ndarray:
    """Accuracy on each task at the end of its own training, ``[..., T]``.

    Entry ``j`` is ``R[j+1, j]`` (REFERENCE.md's ``R[i, i]``, 1-based).
    """
    R, _ = _check(R)
    return _diag(R, 1)


def acc_avg_curve(R) -> np.ndarray:
    """Average accuracy over the tasks seen so far, ``[..., T]``.

    Entry ``k-1`` is ``(1/k) sum_{j<k} R[k, j]`` for ``k = 1..T``
    (GEM "ACC", Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018). Unseen tasks
    (upper triangle) are never read. Not Avalanche's ``StreamAccuracy``, which
    pools the samples of the whole evaluated stream, unseen tasks included.
    """
    R, T = _check(R)
    seen = np.tril(np.ones((T, T), dtype=bool))  # row k-1 <-> k tasks trained
    total = np.where(seen, R[..., 1:, :], 0.0).sum(axis=-1)
    return total / np.arange(1, T + 1)


def acc_avg(R) -> np.ndarray:
    """Final average accuracy ``(1/T) sum_j R[T, j]``, shape ``[...]``."""
    R, _ = _check(R)
    return R[..., -1, :].mean(axis=-1)


def forgetting_max(R) -> np.ndarray:
    """Chaudhry et al. 2018 forgetting at the end of the sequence, ``[...]``.

    ``f_j = max_{l} R[l, j] - R[T, j]`` for tasks ``j = 0..T-2`` with ``l``
    ranging over the rows after task ``j`` was trained and before the last
    task, ``l = j+1..T-1``; ``F = mean_j f_j``. REFERENCE.md writes the max
    over ``l in 1..k-1``; we do not let zero-shot rows (before task ``j`` was
    trained) set the peak. NaN for ``T = 1``.

    Differs from `forgetting_last` when a task's accuracy peaks after its own
    training (e.g. via backward transfer). Avalanche's "forgetting" is
    initial-minus-last without the max, i.e. `forgetting_last`.
    """
    R, T = _check(R)
    if T == 1:
        return _nan(R)
    l = np.arange(1, T)[:, None]  # rows 1..T-1
    j = np.arange(T - 1)[None, :]  # tasks 0..T-2
    rows = np.where(l >= j + 1, R[..., 1:T, : T - 1], -np.inf)
    return (rows.max(axis=-2) - R[..., T, : T - 1]).mean(axis=-1)


def forgetting_last(R) -> np.ndarray:
    """Forgetting as "just-trained minus final", unclipped, ``[...]``.

    ``mean_{j<T-1} (R[j+1, j] - R[T, j])`` (REFERENCE.md:
    ``mean_{j<T}(R[j,j] - R[T,j])`` 1-based). Used by Continual World
    (Wołczyk et al. 2021) and Avalanche; equals ``-bwt``. NaN for ``T = 1``.
    """
    R, T = _check(R)
    if T == 1:
        return _nan(R)
    return (_diag(R, 1)[..., :-1] - R[..., T, : T - 1]).mean(axis=-1)


def bwt(R) -> np.ndarray:
    """Backward transfer (GEM, Lopez-Paz & Ranzato 2017), ``[...]``.

    ``(1/(T-1)) sum_{j=0}^{T-2} (R[T, j] - R[j+1, j])``
    (REFERENCE.md: ``sum_{i<T}(R[T,i] - R[i,i])`` 1-based).
    Identical to ``-forgetting_last``. NaN for ``T = 1``.
    """
    R, T = _check(R)
    if T == 1:
        return _nan(R)
    return np.sum(R[..., T, : T - 1] - _diag(R, 1)[..., : T - 1], axis=-1) / (T - 1)


def bwt_1step(R) -> np.ndarray:
    """One-step backward transfer (Kumar et al. 2023), ``[...]``.

    Accuracy on task ``j`` right after training the next task minus right
    after training task ``j``: ``(1/(T-1)) sum_{j=0}^{T-2} (R[j+2, j] -
    R[j+1, j])`` (REFERENCE.md: ``sum_{i<T}(R[i+1,i] - R[i,i])`` 1-based).
    NaN for ``T = 1``.
    """
    R, T = _check(R)
    if T == 1:
        return _nan(R)
    return np.mean(_diag(R, 2) - _diag(R, 1)[..., : T - 1], axis=-1)


def fwt_gem(R) -> np.ndarray:
    """Forward transfer (GEM, Lopez-Paz & Ranzato 2017), ``[...]``.

    Accuracy on task ``j`` just before its training minus at init:
    ``(1/(T-1)) sum_{j=1}^{T-1} (R[j, j] - R[0, j])`` (REFERENCE.md:
    ``sum_{i=2..T}(R[i-1,i] - b_i)`` 1-based, ``b_i`` the random-init
    accuracy). Needs the diagonal (an upper-triangle entry in the usual
    lower-triangular "results" lists), so every task must be evaluated at
    init and after every task. Pitfall: mammoth zero-pads those entries, which
    turns FWT into minus the mean init accuracy. NaN for ``T = 1``.
    """
    R, T = _check(R)
    if T == 1:
        return _nan(R)
    return np.mean(_diag(R, 0)[..., 1:] - R[..., 0, 1:], axis=-1)


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


def ft_auc_gap(auc, auc_ref) -> np.ndarray:
    """Forward transfer in the metric's own units (e.g. return): ``mean_i (AUC_i −
    AUC_i^ref)``, ``[...]`` — Continual World's numerator without its [0, 1] normalisation."""
    return np.mean(np.asarray(auc, np.float64) - np.asarray(auc_ref, np.float64), axis=-1)


def summarize(R) -> dict[str, np.ndarray]:
    """All scalar metrics of this module, each of shape ``[...]``."""
    return {
        "acc_avg": acc_avg(R),
        "forgetting_max": forgetting_max(R),
        "forgetting_last": forgetting_last(R),
        "bwt": bwt(R),
        "bwt_1step": bwt_1step(R),
        "fwt_gem": fwt_gem(R),
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
