"""Two local processes on JAX's distributed runtime (CPU, gloo) produce the table of one."""
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from experiments.cli import main

ARGS = ["run", "quickstart", "--num-tasks", "2", "--seeds", "3", "--steps-per-task", "20",
        "--log-every", "10", "--hidden", "16", "--eval-examples", "32", "--probe-examples", "16",
        "--no-plots", "--mode", "sweep"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two fresh processes compiling (~25 s on 2 cores); run with -m slow
def test_two_processes_give_the_same_table_as_one(tmp_path):
    single = tmp_path / "single"
    assert main([*ARGS, "--out", str(single)]) == 0

    multi = tmp_path / "multi"
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid), JAX_PLATFORMS="cpu")
        procs.append(subprocess.Popen([sys.executable, "-m", "experiments", *ARGS,
                                       "--out", str(multi)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    a = pd.read_parquet(single / "results.parquet")
    b = pd.read_parquet(multi / "results.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)
