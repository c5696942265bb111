"""Multi-process runs on JAX's own distributed runtime.

``plax`` joins a job when ``JAX_COORDINATOR_ADDRESS`` is set: the number of processes and this
process's id come from ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` or, when those are unset,
from JAX's cluster auto-detection (SLURM, Open MPI, ...). The run axis is then sharded over
every process's devices (each process computes its own slice of the runs, no collectives between
runs); logs are gathered and process 0 alone writes the run directory.
"""
from __future__ import annotations

import os

import jax


def initialize_from_env() -> bool:
    """Initialises ``jax.distributed`` from the environment; returns whether it did."""
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return False
    num = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    # CPU processes exchange the gathered logs through gloo (GPUs use NCCL by default).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(num_processes=int(num) if num else None,
                               process_id=int(pid) if pid else None)
    return True


def is_writer() -> bool:
    """Only process 0 prints summaries and writes files."""
    return jax.process_index() == 0
