"""`plax run` in run batches: the memory line of the header and an out-of-memory that ends in
a clear message (no traceback) and keeps the batches that finished, and two command-line
papercuts: a comma list that starts with a minus sign, and the valid keys of a bad grid."""
import json

import pandas as pd
import pytest

from experiments.cli import _overrides, build_parser, main
from oom import inject_out_of_memory
from test_cli import SMALL

SWEEP = ["run", "quickstart", *SMALL, "--seeds", "3", "--mode", "sweep", "--no-plots"]


def test_out_of_memory_is_a_message_not_a_traceback_and_keeps_finished_batches(
        tmp_path, capsys, monkeypatch):
    inject_out_of_memory(monkeypatch, fail_at=2)
    out = tmp_path / "r"
    assert main([*SWEEP, "--run-batch", "1", "--out", str(out)]) == 2
    printed, err = capsys.readouterr()
    assert "plax: memory ≈ " in printed and "→ 3 batches of 1 run, as run_batch says" in printed
    assert "Traceback" not in err
    assert "plax: stopped after 1 of 3 run batches; results so far saved in" in err
    assert "plax: error: out of device memory running 1 runs at once (3 runs in all" in err
    assert "per run" in err and "a single run does not fit" in err
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["run"].unique()) == [0]
    saved = json.loads((out / "config.json").read_text())
    assert saved["partial"] is True and saved["run_batch"] == 1
    assert saved["run_batches"]["batches"] == 3 and saved["run_batches"]["per_run_bytes"] > 0


@pytest.mark.parametrize("value, parsed", [("-1,1", (-1.0, 1.0)), ("-1e-3,2", (-0.001, 2.0)),
                                           ("-.5, -2", (-0.5, -2.0))])
def test_a_comma_list_starting_with_a_minus_sign_is_a_value(value, parsed):
    args, unknown = build_parser().parse_known_args(["run", "cheetah-quick", "--task-values",
                                                     value])
    assert not unknown and _overrides(args) == {"task_values": parsed}


def test_a_bad_grid_key_lists_the_settings_of_the_presets_kind(capsys):
    assert main(["compare", "quickstart", "--grid", "nosuch=1,2"]) == 2
    err = capsys.readouterr().err
    assert "unknown grid key 'nosuch' of supervised presets" in err
    assert "steps_per_task" in err and "num_envs" not in err and "episode_length" not in err


def test_out_of_memory_in_a_comparison_keeps_the_settings_that_finished(tmp_path, capsys,
                                                                         monkeypatch):
    inject_out_of_memory(monkeypatch, fail_at=3)  # the first batch of the second setting
    out = tmp_path / "c"
    assert main(["compare", "quickstart", "--grid", "activation=relu,tanh", *SMALL,
                 "--mode", "sweep", "--run-batch", "1", "--no-plots", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "out of device memory" in err
    assert "stopped after 1 of 2 settings; results so far saved in" in err
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["activation"]) == {"relu"} and sorted(table["run"].unique()) == [0, 1]
