"""Pinned outputs: small versions of the presets give the numbers recorded before the
learner-kind redesign (issue 11) and the task-schedule loop (issue 18).

``pinned_outputs.json`` was written by the code before those changes
(``PLAX_PIN_WRITE=1 pytest tests/experiments/test_pinned_outputs.py``); the test compares every
per-run summary number, a few entries of the R (or return) matrix, and every value of every
metric in the table. Not bit for bit: XLA compiles for the host CPU's vector units, and on
another CPU model the same program sums in another order (measured: last-bit differences in
training losses and spectra, accuracies equal), so values compare to a relative 1e-4.
Regenerate the file only for an intended change of the numbers, and say so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import experiment, registry
from experiments.registry import from_preset
from metrics import results

PINNED = Path(__file__).with_name("pinned_outputs.json")

SUPERVISED_SMALL = dict(num_tasks=3, steps_per_task=40, log_every=20, seeds=2, hidden=(16,),
                        eval_examples=64, probe_examples=16, mode="sweep")
CASES = {
    "quickstart": ("quickstart", dict(SUPERVISED_SMALL, metrics="dormant,srank")),
    "plasticity-digits": ("plasticity-digits",
                          dict(SUPERVISED_SMALL, random_label_examples=64, reset="redo",
                               reset_every=20, regularizer="l2_init", metrics="effective_rank")),
    "split-synthetic": ("split-mnist",
                        dict(SUPERVISED_SMALL, dataset="synthetic", num_tasks=5,
                             replay_capacity=32, metrics="weight_sv")),
    "cheetah-quick": ("cheetah-quick", None),  # the shared tiny RL program (conftest.RL_TINY)
}


def _outputs(table) -> dict:
    per_run = results.summarize_runs(table)
    R, _ = results.r_matrix(table)
    keys = ["run", "task", "step", "metric", "layer", "eval_task"]
    ordered = table.sort_values(keys, kind="stable")
    values = {metric: [None if pd.isna(v) else float(v) for v in rows["value"]]
              for metric, rows in ordered.groupby("metric", sort=True)}
    numeric = per_run.select_dtypes("number").drop(columns=["seed"], errors="ignore")
    return {"summary": {f"{run}/{col}": (None if pd.isna(v) else float(v))
                        for run, row in numeric.iterrows() for col, v in row.items()},
            "R": [[float(x) for x in R[r, :, 0]] + [float(R[r, -1, -1])]
                  for r in range(R.shape[0])],
            "rows": len(table), "values": values}


def _close(got, want, what):
    got = np.array([np.nan if v is None else v for v in got], np.float64)
    want = np.array([np.nan if v is None else v for v in want], np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True, err_msg=what)


def _run(case: str, rl_tiny: dict) -> dict:
    preset, overrides = CASES[case]
    cfg = from_preset(preset, **(rl_tiny if overrides is None else overrides))
    table, _, _ = experiment.run(registry.build(cfg), progress=False)
    return _outputs(table)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "cheetah-quick"
                                  else c for c in CASES])
def test_small_presets_give_the_pinned_numbers_bit_for_bit(case, rl_tiny):
    got = _run(case, rl_tiny)
    if os.environ.get("PLAX_PIN_WRITE"):
        pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {}
        pinned[case] = got
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    want = json.loads(PINNED.read_text())[case]
    assert got["rows"] == want["rows"]
    assert got["summary"].keys() == want["summary"].keys()
    for name in want["summary"]:
        _close([got["summary"][name]], [want["summary"][name]], name)
    _close(np.ravel(got["R"]).tolist(), np.ravel(want["R"]).tolist(), "R")
    assert got["values"].keys() == want["values"].keys()
    for metric in want["values"]:
        _close(got["values"][metric], want["values"][metric], metric)
