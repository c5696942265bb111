"""The `plax` command: a smoke run, report, list, and every bad input with its message."""
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from experiments.cli import main

SMALL = ["--num-tasks", "2", "--seeds", "2", "--steps-per-task", "20", "--log-every", "10",
         "--hidden", "16", "--eval-examples", "50", "--probe-examples", "32"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["run", "quickstart", *SMALL, "--metrics", "dormant,srank", "--out", str(out)]) == 0
    return out


def test_run_quickstart_writes_table_config_summary_and_plots(small_run):
    for name in ("results.csv", "results.parquet", "config.json", "summary.csv",
                 "r_matrix.png", "accuracy_curves.png", "plasticity.png", "diagnostics.png"):
        assert (small_run / name).exists(), name
    config = json.loads((small_run / "config.json").read_text())
    assert config["preset"] == "quickstart" and config["num_tasks"] == 2 and config["seeds"] == 2
    table = pd.read_parquet(small_run / "results.parquet")
    assert set(table["seed"]) == {0, 1}
    assert {"eval_acc", "train_loss", "dormant_frac@0.025", "srank@0.01"} <= set(table["metric"])
    # Two tasks × two log points each, plus the evaluation at step 0.
    assert sorted(table["step"].unique()) == [0, 10, 20, 30, 40]
    assert not list(small_run.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_report_reprints_summary_from_saved_run(small_run, capsys):
    code, out, _ = run_cli(capsys, "report", str(small_run), "--no-plots")
    assert code == 0
    assert "acc_avg" in out and "forgetting_max" in out


def test_list_shows_presets_and_choices(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for word in ("quickstart", "permuted-mnist", "split-cifar100", "adamw", "crelu", "srank"):
        assert word in out


def test_existing_run_directory_is_not_overwritten(small_run, capsys):
    before = (small_run / "results.csv").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "run", *SMALL, "--out", str(small_run))
    assert code == 2 and "exists" in err and "--force" in err
    assert (small_run / "results.csv").stat().st_mtime_ns == before


@pytest.mark.parametrize("argv, words", [
    (["run", "nosuchpreset"], ["nosuchpreset", "quickstart", "permuted-mnist"]),
    (["run", "--optimizer", "rmsprop"], ["optimizer", "rmsprop", "adamw"]),
    (["run", "--activation", "swoosh"], ["activation", "swoosh", "relu", "gelu"]),
    (["run", "--dataset", "imagenet"], ["dataset", "imagenet", "digits", "mnist"]),
    (["run", "--family", "rotated"], ["family", "rotated", "permuted"]),
    (["run", "--metrics", "dormnat"], ["dormnat", "dormant", "srank"]),
    (["run", "--steps-per-task", "-5"], ["steps_per_task", "-5"]),
    (["run", "--num-tasks", "0"], ["num_tasks"]),
    (["run", "--steps-per-task", "30", "--log-every", "20"], ["steps_per_task", "log_every"]),
    (["run", "--learning-rate", "fast"], ["learning_rate", "fast"]),
    (["run", "--family", "split", "--classes-per-task", "3", "--num-tasks", "4"],
     ["classes_per_task", "12", "10"]),
])
def test_bad_input_names_the_value_and_lists_valid_ones(capsys, tmp_path, argv, words):
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "r"))
    assert code == 2
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "r").exists()


def test_unknown_override_key_lists_valid_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--learning-rat", "0.1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--learning-rat" in err and "--learning-rate" in err and "--num-tasks" in err


def test_missing_tfds_dataset_fails_at_once_with_prepare_command(capsys, tmp_path):
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "run", "permuted-mnist", "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "r"))
    assert time.perf_counter() - start < 5
    assert code == 2
    assert "plax data prepare mnist" in err and str(tmp_path) in err


def test_python_dash_m_experiments_help_explains_options():
    proc = subprocess.run([sys.executable, "-m", "experiments", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for word in ("--learning-rate", "vmapped", "--metrics", "presets:", "reshuffled"):
        assert word in proc.stdout


def test_force_starts_afresh_instead_of_resuming_stale_checkpoints(tmp_path, capsys):
    out = tmp_path / "r"
    small = [*SMALL, "--metrics", "dormant,srank", "--no-plots"]  # small_run's program
    assert main(["run", "quickstart", *small, "--out", str(out)]) == 0
    assert (out / "checkpoints").exists()
    # Another configuration into the same directory (other seeds: the same program): the old
    # checkpoints must not be used, which would be a fingerprint error.
    code, _, err = run_cli(capsys, "run", "quickstart", *small, "--seed", "7", "--out", str(out),
                           "--force")
    assert code == 0, err
    assert set(pd.read_parquet(out / "results.parquet")["seed"]) == {7, 8}
