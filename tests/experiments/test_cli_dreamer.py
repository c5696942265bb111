"""`plax run` on the world-model presets: a tiny Dreamer run on a 3-task grid sequence end to end
(the return matrix, world-model forgetting on each task's probe set, the buffer's task
composition, model losses, diagnostics of the world model, actor and critic), one compiled
program for every grid sequence of the same size, the replay kept across intervals, its
report, and the configuration errors. The end-to-end run is ``slow``; building the program (no
compile) for a grid and for Lights Out is not."""
import json

import numpy as np
import pandas as pd
import pytest

from continual.runner import compiled as compiled_fns
from continual.runner import execute, run_keys
from experiments import registry
from experiments.cli import main
from tasks.envs.grid import grid_sequence

TINY = dict(grids=("empty-5x5", "doorkey-5x5", "lavacrossing-s5n1"), num_envs=4,
            env_steps_per_task=64, log_every=32, episode_length=8, eval_envs=2, eval_length=8,
            batch_size=2, sequence_length=4, train_ratio=2.0, min_replay=16,
            replay_capacity=128, hidden=(8,), deter=8, stoch=2, classes=2, horizon=3,
            probe_chunks=2, seeds=2, probe_examples=8, mode="sweep", metrics="dormant")


def _argv(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items()
            for a in (f"--{k.replace('_', '-')}",
                      ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]


@pytest.fixture(scope="module")
def dreamer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dreamer"
    assert main(["run", "grid-quick", *_argv(TINY), "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the end-to-end Dreamer program compiles for about a minute
def test_dreamer_run_writes_returns_world_model_forgetting_and_buffer_composition(dreamer_run):
    for name in ("results.parquet", "summary.csv", "r_matrix.png", "rl.png",
                 "matrix_wm_recon.png", "curves_buffer_tasks.png"):
        assert (dreamer_run / name).exists(), name
    assert json.loads((dreamer_run / "config.json").read_text())["kind"] == "dreamer"
    table = pd.read_parquet(dreamer_run / "results.parquet")
    for metric in ("eval_return", "wm_recon", "wm_reward", "wm_kl", "buffer_tasks"):
        assert set(table.loc[table["metric"] == metric, "eval_task"]) == {0, 1, 2}, metric
    recon = table[table["metric"] == "wm_recon"]
    # A task's probe set exists from its first interval on: NaN before, finite after.
    first = recon[recon["step"] == 32]
    assert np.isfinite(first.loc[first["eval_task"] == 0, "value"]).all()
    assert first.loc[first["eval_task"] > 0, "value"].isna().all()
    assert np.isfinite(recon.loc[recon["step"] == recon["step"].max(), "value"]).all()
    # The replay persists: at the end it holds chunks of all three tasks, shares summing to 1.
    share = table[(table["metric"] == "buffer_tasks") & (table["step"] == table["step"].max())]
    by_run = share.groupby("run")["value"]
    np.testing.assert_allclose(by_run.sum(), 1.0, rtol=1e-6)
    assert (share["value"] > 0).all()
    assert {"model_loss", "model_recon", "model_reward", "model_cont", "model_dyn",
            "actor_loss", "critic_loss", "entropy", "return_scale"} <= set(table["metric"])
    assert np.isfinite(table.loc[table["metric"] == "model_loss", "value"].dropna()).all()
    layers = set(table.loc[table["metric"] == "dormant_frac@0.025", "layer"])
    assert {"actor/hidden/0", "critic/hidden/0", "world_model/encoder/hidden/0",
            "world_model/gru"} <= layers
    summary = pd.read_csv(dreamer_run / "summary.csv")
    assert {"return_avg", "forgetting_last", "wm_recon_forgetting"} <= set(summary.columns)


@pytest.mark.slow  # the end-to-end Dreamer program compiles for about a minute
def test_a_new_grid_sequence_compiles_nothing(dreamer_run):
    """Grids are data: another sequence of the same size runs through the compiled program."""
    exp = registry.build(registry.from_preset("grid-quick", **TINY))
    (sweep,) = compiled_fns(exp.train, "sweep")
    keys = run_keys(exp.runs["seed"].to_numpy())
    run = lambda params: execute(exp.train, keys, exp.hparams, (), params,  # noqa: E731
                                 exp.schedule, mode="sweep")
    _, logs = run(exp.tasks.params)
    _, other = run(grid_sequence(["simplecrossing-s5n1", "empty-5x5", "doorkey-5x5"]).params)
    assert sweep._cache_size() == 1
    assert not np.allclose(logs["wm_recon"][:, -1], other["wm_recon"][:, -1])


@pytest.mark.slow  # the end-to-end Dreamer program compiles for about a minute
def test_report_redraws_a_dreamer_run(dreamer_run, capsys):
    assert main(["report", str(dreamer_run)]) == 0
    out = capsys.readouterr().out
    assert "wm_recon_forgetting" in out and "matrix_wm_recon.png" in out


@pytest.mark.parametrize("argv, words", [
    (["--grids", "doorkey-7x7"], ["unknown grid 'doorkey-7x7'", "doorkey-9x9"]),
    (["--updates-per-step", "4"], ["--train_ratio"]),
    (["--network", "resmlp"], ["leave network at mlp"]),
    (["--replay-eviction", "lifo"], ["fifo", "reservoir"]),
    (["--train-ratio", "0.001"], ["more than a log interval"]),
])
def test_bad_dreamer_settings_are_named(argv, words, capsys):
    assert main(["run", "grid-quick", *argv, "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


def test_a_grid_needs_a_discrete_agent(capsys):
    assert main(["run", "cheetah-quick", "--env", "grid", "--out", "/nonexistent/x"]) == 2
    assert "run a dreamer preset" in capsys.readouterr().err


@pytest.mark.parametrize("env, extra", [("grid", {}), ("lightsout", dict(episode_length=6))])
def test_the_program_builds_with_a_categorical_policy_on_discrete_envs(env, extra):
    """Tracing the init (no compile) checks the kind's wiring: on both discrete envs the actor's
    output layer gives one logit per action (a continuous actor gives a mean and a scale per
    action entry), and only the grid's one-hot view is stored as uint8."""
    import jax

    cfg = registry.from_preset("grid-quick", **{**TINY, "env": env, **extra})
    exp = registry.build(cfg)
    one_run = jax.tree.map(lambda a: a[0], exp.hparams)
    carry, _ = jax.eval_shape(exp.train.init, jax.random.key(0), one_run, exp.data,
                              exp.tasks.params)
    leaves = jax.tree_util.tree_flatten_with_path(carry.agent)[0]
    actor_out = [leaf.shape for path, leaf in leaves
                 if "actor" in jax.tree_util.keystr(path)
                 and jax.tree_util.keystr(path).endswith("['out']['kernel'].value")]
    assert actor_out and actor_out[0][-1] == exp.tasks.action_size
    dtypes = {leaf.dtype.name for leaf in jax.tree.leaves(carry.memory)}
    assert ("uint8" in dtypes) == (env == "grid")
