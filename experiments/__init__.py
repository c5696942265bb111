"""How a person runs it: learner kinds and their presets, the `plax` CLI, comparisons, reports
and plots."""
import os

# jaxlib's CPU LAPACK calls (eigvalsh in the rank probes) run on OpenBLAS, whose own threads fight
# XLA's pool: measured median 5.6 s, max 31 s per call of a diagnostics program with the default,
# 0.85 s / 0.93 s with one thread (bench/diagnostics_overhead.py). Must precede numpy's import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from experiments.config import ConfigBase, ConfigError  # noqa: E402
from experiments.experiment import Experiment, Kind, run  # noqa: E402
from experiments.registry import KINDS, build, from_preset, register  # noqa: E402

__all__ = ["ConfigBase", "ConfigError", "Experiment", "Kind", "run", "KINDS", "build",
           "from_preset", "register"]
