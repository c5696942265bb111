"""Experiment tracking where researchers already look: TensorBoard event files and Weights &
Biases runs, written from the results table after it is saved.

The table (``results.parquet``) stays the source of truth; a sink is a view of it, so any saved
run can be exported again (``plax report RUN_DIR --tensorboard --wandb``). One tracked run per
plax run (a seed × hyperparameter setting), so seeds and settings show as separate curves:

* every scalar of the table against its ``step``, tagged ``metric``, ``metric/layer`` or
  ``metric/task<k>`` (``train_loss``, ``dormant_frac@0.025/hidden/0``, ``eval_acc/task3``);
* the run's summary (``acc_avg``, ``forgetting_max``, ...) at its last step, as ``summary/<name>``
  scalars and TensorBoard hparams (TensorBoard) or the run summary (W&B);
* its hyperparameters (the table's run columns) as hparams / the W&B config.

A sink is optional: a missing package or a failure (login, network, disk) prints one line and
never changes the exit status or the local files, which are written before any sink runs.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import pandas as pd

INSTALL = "install with pip install 'plax[tracking]'"


class Sink(NamedTuple):
    """One tracking backend: ``write(run_dir, table, per_run, config) -> what it wrote``."""

    name: str
    flag: str
    help: str
    write: Callable[[Path, pd.DataFrame, pd.DataFrame | None, Mapping[str, Any]], str]
    on_partial: bool  # also written for an interrupted run (cheap, local, rebuilt each time)


# --- what every sink logs, read from the table alone ------------------------------------------

def scalars(table: pd.DataFrame) -> pd.DataFrame:
    """``run, step, tag, value`` for every finite value of the table, sorted by run and step.

    Non-finite values are left out: they mark a diverged run, which the summary reports."""
    tag = table["metric"].astype("string")
    layer = table["layer"].astype("string").fillna("")
    tag = tag.where(layer == "", tag + "/" + layer)
    task = table["eval_task"].astype("Int64")
    tag = tag.where(task.isna(), tag + "/task" + task.astype("string"))
    out = pd.DataFrame({"run": table["run"].to_numpy(), "step": table["step"].to_numpy(),
                        "tag": tag.to_numpy(dtype=object),
                        "value": table["value"].to_numpy(dtype=float)})
    out = out[np.isfinite(out["value"].to_numpy())]
    return out.sort_values(["run", "step"], kind="stable").reset_index(drop=True)


def by_step(rows: pd.DataFrame):
    """``(step, tags, values)`` for each step of one run's :func:`scalars` rows."""
    steps, tags, values = (rows[c].to_numpy() for c in ("step", "tag", "value"))
    for idx in np.split(np.arange(len(steps)), np.flatnonzero(np.diff(steps)) + 1):
        if len(idx):
            yield int(steps[idx[0]]), tags[idx], values[idx]


def run_params(table: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Each run's hyperparameters: the table's run columns (seed, vmapped and grid fields)."""
    from metrics import results

    cols = [c for c in results.run_columns(table) if c != "run"]
    rows = table.drop_duplicates("run").set_index("run")[cols]
    return {int(run): {c: _plain(v) for c, v in row.items()} for run, row in rows.iterrows()}


def summary_values(per_run: pd.DataFrame | None, run: int, params: Mapping) -> dict[str, Any]:
    """The run's summary row without its hyperparameters, as plain Python values (missing
    ones left out)."""
    if per_run is None or run not in per_run.index:
        return {}
    row = per_run.loc[run]
    values = {c: _plain(v) for c, v in row.items() if c not in params and c != "run"}
    return {c: v for c, v in values.items() if v is not None}


def _plain(value):
    """numpy / pandas scalars as JSON-able Python values; NA and NaN as None."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (bool, int, float)) and math.isfinite(float(v))}


def _run_names(runs) -> dict[int, str]:
    width = len(str(max(runs))) if len(runs) else 1  # run07 sorts before run10
    return {int(r): f"run{int(r):0{width}d}" for r in runs}


# --- TensorBoard --------------------------------------------------------------------------------

def write_tensorboard(run_dir: Path, table: pd.DataFrame, per_run: pd.DataFrame | None,
                      config: Mapping[str, Any]) -> str:
    """Event files under ``RUN_DIR/tensorboard/run<k>/`` (rebuilt from the table each time).

    Written with tensorboardX's event writer (it comes with brax and needs neither TensorFlow
    nor PyTorch, though it imports PyTorch where installed) and Summary protos built here,
    because tensorboardX's ``add_scalar`` rewrites tags with characters such as ``@``
    (``dormant_frac@0.025`` would become ``dormant_frac_0.025``)."""
    from tensorboardX import FileWriter
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import hparams

    root = Path(run_dir) / "tensorboard"
    if root.exists():
        shutil.rmtree(root)  # a view of the table: stale events would show twice
    data = scalars(table)
    params = run_params(table)
    names = _run_names(params)
    for run, name in names.items():
        writer = FileWriter(str(root / name), max_queue=1000, flush_secs=3600)
        try:
            rows = data[data["run"] == run]
            for step, tags, values in by_step(rows):
                writer.add_summary(Summary(value=[Summary.Value(tag=t, simple_value=v)
                                                  for t, v in zip(tags, values)]), global_step=step)
            last = int(rows["step"].max()) if len(rows) else 0
            summary = {f"summary/{k}": v
                       for k, v in _numeric(summary_values(per_run, run, params[run])).items()}
            if summary:
                writer.add_summary(Summary(value=[Summary.Value(tag=k, simple_value=v)
                                                  for k, v in summary.items()]), global_step=last)
            hp = {k: v for k, v in params[run].items() if isinstance(v, (bool, int, float, str))}
            for proto in hparams(hp, summary):  # experiment, session start, session end
                writer.add_summary(proto, global_step=last)
        finally:
            writer.close()
    return f"TensorBoard: {len(names)} runs in {root} (view: tensorboard --logdir {root})"


# --- Weights & Biases ---------------------------------------------------------------------------

def write_wandb(run_dir: Path, table: pd.DataFrame, per_run: pd.DataFrame | None,
                config: Mapping[str, Any]) -> str:
    """One W&B run per plax run under ``RUN_DIR/wandb/``: offline unless ``WANDB_MODE`` says
    otherwise (then it uploads and needs ``wandb login``); grouped by preset, named after the
    run directory and run, configured with the resolved config and the run's hyperparameters."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return "W&B: disabled by WANDB_MODE=disabled"
    if mode not in ("offline", "dryrun"):
        _check_login(wandb)
    run_dir = Path(run_dir)
    data = scalars(table)
    params = run_params(table)
    names = _run_names(params)
    settings = wandb.Settings(silent=True, console="off")
    preset = str(config.get("preset", "plax"))
    for run, name in names.items():
        rows = data[data["run"] == run]
        wb = wandb.init(mode=mode, dir=str(run_dir), project="plax", group=preset,
                        job_type="compare" if "compare" in config else "run",
                        name=f"{run_dir.name}-{name}", tags=[run_dir.name],
                        config={**config, **params[run], "run": run, "run_dir": str(run_dir)},
                        reinit="create_new", settings=settings)
        try:
            for step, tags, values in by_step(rows):
                wb.log(dict(zip(tags, values.tolist())), step=step)
            wb.summary.update(summary_values(per_run, run, params[run]))
        finally:
            wb.finish()
    where = run_dir / "wandb"
    if mode in ("offline", "dryrun"):
        return (f"W&B: {len(names)} offline runs in {where} "
                f"(upload: wandb sync {where}/offline-run-*)")
    return f"W&B: {len(names)} runs uploaded to project plax, group {preset} ({where})"


def _check_login(wandb) -> None:
    """Online mode: fail at once, with the fix, when no credentials are set (instead of a
    prompt at the end of a run)."""
    try:
        logged_in = wandb.login(prompt=False, verify=False)
    except TypeError:  # a wandb without ``prompt``: let init report it
        return
    if not logged_in:
        raise RuntimeError(f"WANDB_MODE={os.environ.get('WANDB_MODE')} but no W&B credentials "
                           "(run `wandb login` or set WANDB_API_KEY; unset WANDB_MODE for "
                           "offline runs)")


SINKS = {
    "tensorboard": Sink("tensorboard", "--tensorboard", (
        "also write TensorBoard event files to RUN_DIR/tensorboard/run<k>/ (one run per "
        "seed × setting; every scalar of the table against its step, the summary at the last "
        "step, hparams); view with tensorboard --logdir RUN_DIR/tensorboard"),
        write_tensorboard, on_partial=True),
    "wandb": Sink("wandb", "--wandb", (
        "also write one Weights & Biases run per seed × setting to RUN_DIR/wandb/ (project "
        "plax, group = preset; same scalars, summary in the run summary); offline unless "
        "WANDB_MODE says otherwise, upload later with wandb sync RUN_DIR/wandb/offline-run-*"),
        write_wandb, on_partial=False),
}


def add_arguments(parser, export: bool = False) -> None:
    """The sink flags, in their own group of ``parser``'s help."""
    group = parser.add_argument_group(
        "experiment tracking (optional: pip install 'plax[tracking]')",
        "Views of the table: results.parquet stays the source of truth. A missing package or\n"
        "a login problem prints one line and never fails the command.")
    for sink in SINKS.values():
        text = sink.help if not export else "export the saved run: " + sink.help[len("also "):]
        group.add_argument(sink.flag, dest=f"sink_{sink.name}", action="store_true",
                           help=text.replace("%", "%%"))


def selected(args) -> list[str]:
    """Names of the sinks switched on in parsed ``args``."""
    return [name for name in SINKS if getattr(args, f"sink_{name}", False)]


def write(names, run_dir, table: pd.DataFrame, per_run: pd.DataFrame | None,
          config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
    """Runs each named sink; returns the names that failed. Never raises for a sink's sake:
    the local files are already written, so a failure is one line on stderr.

    ``partial``: an interrupted run's table (no summary); sinks that upload or cannot be
    rebuilt wait for the finished run."""
    failed = []
    for name in names:
        sink = SINKS[name]
        if partial and not sink.on_partial:
            print(f"plax: {name} sink waits for the finished run (or: plax report {run_dir} "
                  f"{sink.flag})", file=sys.stderr)
            continue
        try:
            print(f"tracking: {sink.write(Path(run_dir), table, per_run, config)}", flush=True)
        except ImportError as err:
            failed.append(name)
            print(f"plax: {name} sink skipped: {err}; {INSTALL}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 — a tracking failure must not fail the run
            failed.append(name)
            first = (str(err).strip().splitlines() or [""])[0]
            print(f"plax: {name} sink skipped: {type(err).__name__}: {first}; local results "
                  f"are in {run_dir} (retry: plax report {run_dir} {sink.flag})",
                  file=sys.stderr)
    return failed
