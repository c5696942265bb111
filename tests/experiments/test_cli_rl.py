"""`plax run` on an RL preset: a tiny real run (HalfCheetah, MJX, SAC) end to end, its report,
and the RL configuration errors."""
import json

import numpy as np
import pandas as pd
import pytest

from experiments.cli import main

def _argv(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items()
            for a in (f"--{k.replace('_', '-')}",
                      ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory, rl_tiny):
    # The same program as tests/continual/test_rl_loop.py: its compilation is reused.
    out = tmp_path_factory.mktemp("runs") / "rl"
    assert main(["run", "cheetah-quick", *_argv(rl_tiny), "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # HalfCheetah's physics compiles for minutes
def test_rl_run_writes_return_matrix_summary_and_plots(rl_run):
    for name in ("results.parquet", "config.json", "summary.csv", "r_matrix.png",
                 "accuracy_curves.png", "rl.png", "diagnostics.png"):
        assert (rl_run / name).exists(), name
    config = json.loads((rl_run / "config.json").read_text())
    assert config["preset"] == "cheetah-quick" and config["env"] == "halfcheetah"
    table = pd.read_parquet(rl_run / "results.parquet")
    assert {"eval_return", "q_bias", "td_error_val", "critic_loss", "entropy",
            "dormant_frac@0.025", "sv_max"} <= set(table["metric"])
    # Steps are environment steps: 2 tasks × 2 log points of 16, plus step 0.
    assert sorted(table["step"].unique()) == [0, 16, 32, 48, 64]
    ev = table[table["metric"] == "eval_return"]
    assert set(ev["eval_task"]) == {0, 1} and np.isfinite(ev["value"]).all()
    assert {"actor/hidden/0", "critic/hidden/0"} <= set(
        table.loc[table["metric"] == "dormant_frac@0.025", "layer"])
    summary = pd.read_csv(rl_run / "summary.csv")
    assert {"return_avg", "forgetting_last", "fwt_gem", "return_online"} <= set(summary.columns)


@pytest.mark.slow  # HalfCheetah's physics compiles for minutes
def test_report_redraws_an_rl_run(rl_run, capsys):
    assert main(["report", str(rl_run)]) == 0
    out = capsys.readouterr().out
    assert "return_avg" in out and "rl.png" in out


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "mnist"], ["'dataset' is not a setting of RL presets"]),
    (["--env", "pong"], ["env: unknown value 'pong'", "halfcheetah, ant, hopper, walker2d"]),
    (["--reset", "cbp"], ["supervised-only", "redo"]),
    (["--log-every", "1001"], ["log_every (1001) must be a multiple of num_envs"]),
    (["--family", "dynamics", "--gravity", "1,0.5", "--mass", "2"], ["equal lengths"]),
    (["--replay-eviction", "lifo"], ["replay_eviction: unknown value 'lifo'", "reservoir"]),
    (["--min-replay", "999999"], ["updates would never start"]),
])
def test_rl_bad_input_names_the_value(capsys, tmp_path, argv, words):
    code = main(["run", "cheetah-quick", *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    for w in words:
        assert w in err, (w, err)


def test_unknown_preset_lists_rl_presets_too(capsys):
    assert main(["run", "cheetah-fast"]) == 2
    assert "cheetah-quick" in capsys.readouterr().err
