"""Checkpoint and resume: a run killed with SIGKILL in the middle of a repeated schedule
(A B A B) and resumed ends with the same table."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from experiments.cli import main

ARGS = ["run", "quickstart", "--num-tasks", "2", "--schedule", "repeat:2", "--seeds", "2",
        "--steps-per-task", "100",
        "--log-every", "50", "--hidden", "16", "--eval-examples", "64", "--probe-examples", "32",
        "--metrics", "dormant", "--replay-capacity", "100", "--no-plots"]


# Two runs in batches of one: the tests below share this program.
BATCHED = [*ARGS, "--run-batch", "1"]


def _table(run_dir):
    return pd.read_parquet(run_dir / "results.parquet")


def kill_after_first_checkpoint(command: list[str], run_dir, timeout: float,
                                at_least: int = 0) -> None:
    """Starts ``command`` (a ``plax run`` into ``run_dir``) and SIGKILLs it as soon as a
    checkpoint at position ``at_least`` or later exists: somewhere in the middle of the run,
    before any result is written."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + timeout
    while not (checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= at_least
                                            for p in checkpoints.iterdir())):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.parquet").exists()


@pytest.mark.slow  # a subprocess run killed and resumed (batched resume: test_run_batches.py)
def test_a_run_sigkilled_between_batches_resumes_to_a_bit_identical_table(tmp_path):
    """Killed once the first batch (8 log intervals) is saved, somewhere in the second, and
    resumed from there."""
    reference = tmp_path / "reference"
    assert main([*BATCHED, "--out", str(reference)]) == 0

    killed = tmp_path / "killed"
    kill_after_first_checkpoint([sys.executable, "-m", "experiments", *BATCHED, "--out",
                                 str(killed)], killed, timeout=240, at_least=8)

    assert main(["run", "--resume", str(killed), "--no-plots"]) == 0
    pd.testing.assert_frame_equal(_table(killed), _table(reference), check_exact=True)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main([*BATCHED, "--out", str(run_dir)]) == 0
    config = run_dir / "config.json"
    config.write_text(config.read_text().replace('"steps_per_task": 100', '"steps_per_task": 50'))
    assert main(["run", "--resume", str(run_dir), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "checkpoints" in err


def test_resume_without_a_run_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--keep-checkpoints", "-1"], ["--checkpoint-minutes", "-2"]])
def test_negative_checkpoint_settings_are_rejected(tmp_path, capsys, extra):
    assert main([*ARGS, *extra, "--out", str(tmp_path / "r")]) == 2
    assert "must be >= 0" in capsys.readouterr().err

