"""`plax run` on the goal-conditioned presets: a tiny CRL run on point-mass maze goal regions end
to end (the success matrix, goal-reaching metrics, critic statistics and diagnostics of φ, ψ
and the actor), one compiled program for every layout, its report, a tiny goal-conditioned SAC
+ HER run, and the configuration errors of both."""
import json

import numpy as np
import pandas as pd
import pytest

from continual.runner import compiled as compiled_fns
from continual.runner import execute, run_keys
from experiments import registry
from experiments.cli import main
from tasks.envs.pointmaze import maze_sequence

TINY = dict(mazes=("room_ne", "room_sw"), num_envs=4, env_steps_per_task=32, log_every=16,
            episode_length=8, eval_envs=2, eval_length=8, batch_size=8, min_replay=8,
            replay_capacity=64, hidden=(8,), repr_dim=4, seeds=2, probe_examples=8,
            mode="sweep", metrics="dormant,weight_sv")


def _argv(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items()
            for a in (f"--{k.replace('_', '-')}",
                      ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]


@pytest.fixture(scope="module")
def crl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "crl"
    assert main(["run", "maze-rooms", *_argv(TINY), "--out", str(out)]) == 0
    return out


def test_crl_run_writes_the_success_matrix_and_goal_metrics(crl_run):
    for name in ("results.parquet", "config.json", "summary.csv", "r_matrix.png", "rl.png",
                 "curves_eval_time_near_goal.png"):
        assert (crl_run / name).exists(), name
    assert json.loads((crl_run / "config.json").read_text())["kind"] == "crl"
    table = pd.read_parquet(crl_run / "results.parquet")
    per_task = {"eval_success", "eval_time_near_goal", "eval_final_distance", "eval_return"}
    for metric in per_task:
        rows = table[table["metric"] == metric]
        assert set(rows["eval_task"]) == {0, 1} and np.isfinite(rows["value"]).all(), metric
    success = table.loc[table["metric"] == "eval_success", "value"]
    assert success.between(0, 1).all()
    near = table.loc[table["metric"] == "eval_time_near_goal", "value"]
    assert near.between(0, 8).all()  # steps of an 8-step evaluation episode
    assert {"categorical_accuracy", "logits_pos", "logits_neg", "logsumexp", "alpha",
            "episode_success"} <= set(table["metric"])
    layers = set(table.loc[table["metric"] == "dormant_frac@0.025", "layer"])
    assert {"actor/hidden/0", "phi/hidden/0", "psi/hidden/0"} <= layers
    summary = pd.read_csv(crl_run / "summary.csv")
    assert {"success_avg", "forgetting_last", "success_online"} <= set(summary.columns)


def test_a_new_layout_sequence_compiles_nothing(crl_run):
    """Layouts are data: other goal regions of the same maze size run through the compiled
    program of the CLI run above, and give other results."""
    exp = registry.build(registry.from_preset("maze-rooms", **TINY))
    (sweep,) = compiled_fns(exp.train, "sweep")
    keys = run_keys(exp.runs["seed"].to_numpy())
    run = lambda params: execute(exp.train, keys, exp.hparams, (), params,  # noqa: E731
                                 exp.schedule, mode="sweep")
    _, logs = run(exp.tasks.params)
    _, other = run(maze_sequence(["room_nw", "room_se"]).params)
    assert sweep._cache_size() == 1
    assert not np.allclose(logs["eval_final_distance"], other["eval_final_distance"])


def test_report_redraws_a_crl_run(crl_run, capsys):
    assert main(["report", str(crl_run)]) == 0
    out = capsys.readouterr().out
    assert "success_avg" in out and "curves_eval_time_near_goal.png" in out


@pytest.mark.parametrize("argv, words", [
    (["--env", "halfcheetah"], ["crl needs a goal-conditioned env", "pointmaze"]),
    (["--mazes", "u_maze,big_maze"], ["same size", "u_maze (5)", "big_maze (8)"]),
    (["--mazes", "lab"], ["unknown maze 'lab'", "u_maze"]),
    (["--energy", "euclid"], ["energy: unknown value 'euclid'", "norm, l2, dot, cosine"]),
    (["--contrastive-loss", "nce"], ["fwd, bwd, sym, binary_nce"]),
    (["--min-replay", "999999"], ["updates would never start"]),
    (["--env", "reacher"], ["reacher runs --family goals (goal-conditioned)", "stages"]),
    (["--env", "reacher", "--family", "maze"], ["reacher runs --family goals"]),
    (["--env", "ant", "--family", "goals", "--goal-regions", "north"],
     ["unknown region 'north'", "circle, ne, nw, sw, se"]),
])
def test_bad_crl_settings_are_named(argv, words, capsys):
    assert main(["run", "maze-quick", *argv, "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.slow  # a second maze program (SAC + HER) compiled end to end
def test_sac_with_her_runs_on_the_maze_and_reports_success(tmp_path):
    her = {k: v for k, v in TINY.items() if k not in ("repr_dim",)}
    out = tmp_path / "her"
    assert main(["run", "maze-sac-her", *_argv({**her, "mazes": ("u_maze",),
                                                 "metrics": "dormant"}), "--out", str(out)]) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert {"eval_success", "eval_time_near_goal", "td_error_train", "q_bias",
            "episode_success"} <= set(table["metric"])
    assert "td_error_val" not in set(table["metric"])  # the trajectory ring has no held-out part
    assert np.isfinite(table.loc[table["metric"] == "critic_loss", "value"]).all()
    assert "success_avg" in pd.read_csv(out / "summary.csv").columns


@pytest.mark.parametrize("argv, words", [
    (["--env", "halfcheetah"], ["her: needs a goal-conditioned env", "pointmaze"]),
    (["--replay-eviction", "reservoir"], ["FIFO ring"]),
    (["--her", "last"], ["her: unknown value 'last'", "none, future, final"]),
    (["--her-relabel", "1.5"], ["her_relabel must lie in [0, 1]"]),
])
def test_bad_her_settings_are_named(argv, words, capsys):
    assert main(["run", "maze-sac-her", *argv, "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
