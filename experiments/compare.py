"""``plax compare``: a grid of settings on one task sequence, ranked with confidence intervals.

Static grid keys (activation, network, regularizer, ...) change code or shapes, so each
combination compiles once; vmapped keys (learning_rate, ...) are folded into every compiled
program as extra runs. All runs go into one results table with a column per grid key.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import pandas as pd

from experiments import experiment, registry
from experiments.config import ConfigError
from metrics import continual, results

# Which direction is better, for ranking.
HIGHER_IS_BETTER = {"acc_avg": True, "acc_online": True, "plasticity_first": True,
                    "plasticity_last": True, "plasticity_slope": True, "fwt_gem": True,
                    "bwt": True, "forgetting_max": False, "forgetting_last": False,
                    "bwt_1step": True, "return_avg": True, "return_online": True,
                    "success_avg": True, "success_online": True}


def parse_grid(items: Sequence[str], preset: str | None = None) -> dict[str, tuple]:
    """``["activation=relu,crelu", "learning_rate=1e-3,1e-4"]`` → typed value tuples.

    A vmapped field keeps its list as one value (it becomes runs of the same program). Values
    are read as the fields of ``preset``'s kind where given."""
    grid: dict[str, tuple] = {}
    kind = registry.kind_of_preset(preset) if preset is not None else None
    fields = kind.config.fields() if kind is not None else registry.all_fields()
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"grid entry {item!r} must look like key=value1,value2")
        if key not in fields:
            of = f" of {kind.label} presets" if kind is not None else ""
            raise ConfigError(f"unknown grid key {key!r}{of}; valid: {', '.join(fields)}")
        if fields[key].metadata["vmapped"] or isinstance(fields[key].default, tuple):
            grid[key] = (registry.parse_override(key, values, preset),)
        else:
            grid[key] = tuple(registry.parse_override(key, v, preset) for v in values.split(","))
    return grid


def grid_configs(preset: str, grid: dict[str, tuple], *, one_at_a_time: bool = False,
                 **overrides) -> list[tuple[dict, Any]]:
    """One validated config per setting: every combination of the grid values, or with
    ``one_at_a_time`` the first value of every key as the baseline plus each other value of
    one key alone (an ablation: n₁ + n₂ + ... − k + 1 settings instead of n₁·n₂·...)."""
    keys = list(grid)
    if one_at_a_time:
        base = {k: v[0] for k, v in grid.items()}
        settings = [base] + [{**base, k: v} for k in keys for v in grid[k][1:]]
    else:
        settings = [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
    return [(setting, registry.from_preset(preset, **{**overrides, **setting}))
            for setting in settings]


def run_grid(configs: list[tuple[dict, Any]], *, progress: bool = True):
    """Runs every configuration; returns one table with a column per grid key (before ``task``,
    so they count as run configuration) and unique run ids across settings. A setting that
    stops early raises :class:`experiments.experiment.PartialRun` with the table of every
    setting so far."""
    tables = []
    offset = 0

    def add(table, setting):
        nonlocal offset
        table["run"] += offset
        offset = int(table["run"].max()) + 1
        for i, (key, value) in enumerate(setting.items()):
            if key in table.columns:  # a vmapped field: already a column
                continue
            table.insert(1 + i, key, str(value) if isinstance(value, tuple) else value)
        tables.append(table)

    for n, (setting, cfg) in enumerate(configs):
        if progress:
            print("setting: " + ", ".join(f"{k}={v}" for k, v in setting.items()), flush=True)
        try:
            exp = registry.build(cfg)
            batches = experiment.plan(exp)
            if progress:
                print(f"memory {batches.describe()}", flush=True)
            table, _, _ = experiment.run(exp, batches=batches, progress=progress)
        except (Exception, KeyboardInterrupt) as err:
            partial = err if isinstance(err, experiment.PartialRun) else None
            if partial is not None:
                add(partial.table, setting)
            if not tables:
                raise
            cause = err if partial is None else partial.cause
            done = f"{n} of {len(configs)} settings" + (
                "" if partial is None else f" and {partial.progress} of the next")
            raise experiment.PartialRun(pd.concat(tables, ignore_index=True), done,
                                        cause) from cause
        add(table, setting)
    return pd.concat(tables, ignore_index=True)


def ranking(per_run: pd.DataFrame, by: list[str], metrics: Sequence[str], *,
            statistic: str = "mean", level: float = 0.95) -> pd.DataFrame:
    """Settings sorted by the first metric, with bootstrap CIs over seeds; diverged runs are
    excluded and counted, never averaged."""
    per_run = per_run.copy()
    for m in metrics:
        if m not in per_run.columns:
            raise ConfigError(f"unknown ranking metric {m!r}; valid: "
                              f"{', '.join(sorted(HIGHER_IS_BETTER))}")
    rows = []
    for key, group in per_run.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        ok = group[~group["diverged"]]
        row["seeds"], row["diverged"] = len(ok), int(group["diverged"].sum())
        for m in metrics:
            point, low, high = continual.bootstrap_ci(ok[m].to_numpy(float), level=level,
                                                      statistic=statistic)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = float(point), float(low), float(high)
        rows.append(row)
    table = pd.DataFrame(rows)
    first = metrics[0]
    table = table.sort_values(first, ascending=not HIGHER_IS_BETTER.get(first, True),
                              ignore_index=True, na_position="last")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def add_plasticity_slope(per_run: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of the plasticity curve (performance at the end of each visit) over
    the visit index (negative = losing plasticity), one value per run; for the sequential
    schedule the visit index is the task index."""
    R, _ = results.r_matrix(table)
    curve = continual.plasticity_curve(R, results.visit_tasks(table))
    x = np.arange(curve.shape[1]) - (curve.shape[1] - 1) / 2
    slope = (curve * x).sum(-1) / max((x**2).sum(), 1e-12)
    per_run = per_run.copy()
    per_run["plasticity_slope"] = np.where(per_run["diverged"], np.nan, slope)
    return per_run


def add_final_dormant(per_run: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``dormant_final``: the total dormant fraction at the last log point, when logged."""
    d = table[table["metric"].str.startswith("dormant_frac@") & (table["layer"] == "total")]
    if d.empty:
        return per_run
    last = d[d["step"] == d["step"].max()].groupby("run")["value"].mean()
    per_run = per_run.copy()
    per_run["dormant_final"] = np.where(per_run["diverged"], np.nan,
                                        last.reindex(per_run.index).to_numpy())
    return per_run


HIGHER_IS_BETTER["dormant_final"] = False


def metrics_for(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """``metrics`` in the table's own performance names: a kind's default ranking names one
    performance (``return_avg``), and its goal-conditioned runs summarise another
    (``success_avg``)."""
    prefixes = {r.prefix for r in results.READOUTS.values()}
    own = results.readout(table).prefix
    out = []
    for m in metrics:
        head, _, tail = m.partition("_")
        out.append(f"{own}_{tail}" if head in prefixes and tail in ("avg", "online") else m)
    return out


def compare_tables(table: pd.DataFrame, by: list[str], metrics: Sequence[str],
                   statistic: str = "mean") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run summary (with slope and dormant columns) and the ranking of settings."""
    per_run = results.summarize_runs(table)
    per_run = add_final_dormant(add_plasticity_slope(per_run, table), table)
    return per_run, ranking(per_run, by, metrics, statistic=statistic)
