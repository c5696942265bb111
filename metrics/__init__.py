"""What we measure: continual metrics from R, diagnostics as pure functions, results tables."""
from metrics import continual, diagnostics, results
from metrics.probes import GROUPS, PROBES, Probe, ProbeInputs, make_probes, run_probes

__all__ = ["continual", "diagnostics", "results", "GROUPS", "PROBES", "Probe", "ProbeInputs",
           "make_probes", "run_probes"]
