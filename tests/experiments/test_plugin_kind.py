"""A learner kind plugs in without touching the CLI, runner, results, checkpoint or report code:
a random-policy agent on a toy environment source (a point mass that must reach a per-task
target) is registered with one call and run end to end through ``plax run`` and
``plax report``.

The three pieces a new kind needs: an agent (``random_agent``, a
:class:`continual.agents.Agent`) and an environment source (``reach_sequence``, a
:class:`tasks.envs.EnvTaskSequence`), both in ``tests/toy_rl.py``, and a kind (config
dataclass, presets, ``build``) in this file."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from continual.agents import RLSpec, make_rl_train
from experiments import registry
from experiments.cli import main
from experiments.config import ConfigBase, option, shared
from experiments.experiment import Experiment, Kind, hparams_of, run_table
from experiments.kinds import rl
from metrics import hooks
from toy_rl import random_agent, reach_sequence

# ----------------------------------------------------------------------------- the kind


@dataclass(frozen=True)
class RandomReachConfig(ConfigBase):
    kind = "random-reach"

    targets: tuple = option((0.5, -0.5), "target position per task")
    num_envs: int = option(4, "parallel environments per run")
    episode_length: int = option(5, "time limit of an episode")
    env_steps_per_task: int = option(32, "environment steps (all envs) per task")
    log_every: int = shared("log_every", 16)   # shared fields: the kind's own default
    batch_size: int = shared("batch_size", 2)

    @property
    def num_tasks(self) -> int:
        return len(self.targets)

    @property
    def intervals_per_task(self) -> int:
        return self.env_steps_per_task // self.log_every

    def describe(self) -> str:
        return f"random policy reaching {self.targets}"


def build(cfg: RandomReachConfig) -> Experiment:
    cfg.validate()
    seq = reach_sequence(cfg.targets)
    spec = RLSpec(num_envs=cfg.num_envs, steps_per_task=cfg.env_steps_per_task // cfg.num_envs,
                  log_every=cfg.log_every // cfg.num_envs, episode_length=cfg.episode_length,
                  eval_envs=2, eval_length=cfg.episode_length, probe_examples=4)
    agent = random_agent(seq.observation_size, seq.action_size, cfg.batch_size)
    diagnose = hooks.make_diagnose(hooks.parse_metrics(cfg.metrics).probes, cfg.activation)
    train = make_rl_train(spec, agent, seq, diagnose)
    runs = run_table(cfg)
    return Experiment(cfg, seq, train, runs, hparams_of(runs), spec, rl.progress)


KIND = Kind("random-reach", "random-reach", "random-policy presets (a test kind)",
            RandomReachConfig, {"random-reach": ("random actions on a point mass", {})}, build,
            rank_by=("return_avg",))


@pytest.fixture
def registered():
    registry.register(KIND)  # the one registration line
    yield KIND
    registry.unregister(KIND.name)


def test_a_kind_defined_here_runs_end_to_end_through_the_cli(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "random-reach", "--seeds", "2", "--targets", "1,-1,0",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "return_avg" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "random-reach" and config["targets"] == [1.0, -1.0, 0.0]
    table = pd.read_parquet(out / "results.parquet")
    ev = table[table["metric"] == "eval_return"]
    assert set(ev["eval_task"]) == {0, 1, 2} and np.isfinite(ev["value"]).all()
    # The mode policy (zero action) stays put: its return on a task depends on the target.
    assert ev.groupby("eval_task")["value"].mean().nunique() == 3
    # The agent's own measurements land in the table (one update per env step once ready).
    updates = table[table["metric"] == "updates"].sort_values("step")
    assert updates["value"].iloc[-1] > 0
    assert {"rollout_reward", "loss", "episode_return"} <= set(table["metric"])
    assert {"summary.csv", "r_matrix.png", "accuracy_curves.png", "rl.png"} <= {
        p.name for p in out.iterdir()}
    assert main(["report", str(out), "--no-plots"]) == 0
    assert "return_avg" in capsys.readouterr().out


def test_the_kind_appears_in_list_and_help_and_its_bad_input_is_named(registered, capsys,
                                                                     tmp_path):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "random-policy presets (a test kind)" in out and "random-reach" in out
    assert main(["run", "random-reach", "--env", "ant", "--out", str(tmp_path / "x")]) == 2
    assert "'env' is not a setting of random-reach presets" in capsys.readouterr().err


def test_registering_a_preset_name_twice_is_refused():
    clash = KIND._replace(name="other", config=type(
        "OtherConfig", (RandomReachConfig,), {"kind": "other"}),
        presets={"quickstart": ("", {})})
    with pytest.raises(ValueError, match="quickstart"):
        registry.register(clash)
