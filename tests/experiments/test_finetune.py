"""Pre-train → fine-tune: ``plax run --snapshots`` saves every visit's state, ``--init-from``
restores exactly the saved networks into the paired runs, and bad inputs get clear errors. A
tiny SAC (no HER) in the pure-JAX point maze: task 1 is pre-trained, task 0 fine-tuned."""
import jax
import numpy as np
import pytest

from continual.runner import compiled, run_keys
from experiments import experiment, pretrained, registry
from experiments.cli import main
from experiments.config import ConfigError

TINY = dict(her="none", mazes=("u_maze", "u_maze"), num_envs=4, env_steps_per_task=96,
            log_every=48, episode_length=24, min_replay=32, batch_size=16,
            replay_capacity=400, hidden=(16, 16), eval_envs=2, probe_examples=8, seeds=2)


def _argv(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items()
            for a in (f"--{k.replace('_', '-')}",
                      ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]


@pytest.fixture(scope="module")
def pre_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pre"
    assert main(["run", "maze-sac-her", *_argv(TINY), "--schedule", "order:1", "--snapshots",
                 "--no-plots", "--out", str(out)]) == 0
    return out


def _final_state(cfg):
    """The pre-training's last state, recomputed by running its program again."""
    exp = registry.build(cfg)
    init, interval = compiled(exp.train, "chunked")
    keys = run_keys(exp.runs["seed"].to_numpy())
    carry, _ = init(keys, exp.hparams, exp.data, exp.tasks.params)
    schedule = exp.schedule
    for k in range(schedule.length):
        entry = jax.tree.map(lambda a: a[k], schedule)
        carry, _ = interval(carry, entry, exp.hparams, exp.data, exp.tasks.params)
    return jax.device_get(carry.agent)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow  # compiles the pre-training program a second time (~25 s)
def test_snapshot_holds_the_recomputed_final_state(pre_run):
    pre = pretrained.load(pre_run, registry.get('sac'))
    assert _same(jax.device_get(pre.state.agent), _final_state(pre.config))


def test_init_from_restores_the_snapshot_exactly(pre_run):
    pre = pretrained.load(pre_run, registry.get('sac'))
    assert (pre.visit, pre.task) == (0, 1)
    final = jax.device_get(pre.state.agent)   # the recomputed final state: the slow test above

    cfg = registry.from_preset("maze-sac-her", **{**TINY, "seeds": 1}, schedule="order:0",
                               init_from=str(pre_run), seed=1, bc_coef=(0.0, 1.0),
                               retention_memory=64)
    exp = registry.build(cfg)
    np.testing.assert_array_equal(exp.runs["source_run"], [1, 1])  # seed 1 ↔ pre-trained run 1
    init = jax.jit(jax.vmap(exp.train.init, in_axes=(0, 0, None, None)))
    carry, _ = init(run_keys(exp.runs["seed"].to_numpy()), exp.hparams, exp.data,
                    exp.tasks.params)
    agent = jax.device_get(carry.agent)
    for run, source in enumerate(exp.runs["source_run"]):
        row = lambda t, r=source: jax.tree.map(lambda a: a[r], t)  # noqa: E731
        mine = jax.tree.map(lambda a: a[run], agent)
        assert _same(mine.actor.params, row(final.actor.params))
        assert _same(mine.critic.params, row(final.critic.params))
        assert _same(mine.target, row(final.target))
        assert _same(mine.anchor.actor, row(final.actor.params))
    # π*'s transitions come from the pre-trained replay's stored rows.
    stored = {tuple(o) for o in np.asarray(jax.device_get(
        pre.state.memory.buffer.items[0]))[1].round(5)}
    assert {tuple(o) for o in np.asarray(agent.anchor.memory.obs[0]).round(5)} <= stored


def test_init_from_names_what_differs(pre_run):
    with pytest.raises(ConfigError, match=r"hidden: \(16, 16\) there, \(8,\) here"):
        registry.build(registry.from_preset("maze-sac-her", **{**TINY, "hidden": (8,)},
                                            init_from=str(pre_run)))
    with pytest.raises(ConfigError, match=r"init_visit: .* has visits 0 \(task 1\); got 3"):
        registry.build(registry.from_preset("maze-sac-her", **TINY, init_from=str(pre_run),
                                            init_visit=3))


def test_init_from_without_snapshots_or_pairs_says_what_to_do(tmp_path, pre_run):
    (tmp_path / "config.json").write_text((pre_run / "config.json").read_text()
                                          .replace('"snapshots": true', '"snapshots": false'))
    with pytest.raises(ConfigError, match="run its pre-training with --snapshots"):
        pretrained.load(tmp_path, registry.get('sac'))
    with pytest.raises(ConfigError, match="no pre-trained partner"):
        registry.build(registry.from_preset("maze-sac-her", **TINY, init_from=str(pre_run),
                                            seed=5))
    with pytest.raises(ConfigError, match="give --init-from"):
        registry.from_preset("maze-sac-her", **TINY, kickstart_coef=(0.5,))


def test_run_rows_pair_with_pre_trained_seeds():
    np.testing.assert_array_equal(pretrained.source_runs([3, 4, 5], [5, 3]), [2, 0])
    np.testing.assert_array_equal(pretrained.source_runs([7], [0, 1, 2]), [0, 0, 0])


@pytest.mark.slow  # a second compile: the fine-tuning program with every retention term
def test_fine_tuning_cli_run_logs_retention_terms(pre_run, tmp_path):
    out = tmp_path / "ft"
    assert main(["run", "maze-sac-her", *_argv(TINY), "--schedule", "order:0", "--init-from",
                 str(pre_run), "--bc-coef", "0,1", "--kickstart-coef", "0.5", "--ewc-coef",
                 "100", "--memory-share", "0.1", "--retention-memory", "64", "--no-plots",
                 "--out", str(out)]) == 0
    import pandas as pd
    table = pd.read_parquet(out / "results.parquet")
    assert {"bc_kl", "kickstart_kl", "ewc_penalty"} <= set(table["metric"])
    assert set(table["bc_coef"]) == {0.0, 1.0}
    assert experiment.run_table  # the run table API the CLI used
