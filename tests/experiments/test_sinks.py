"""Tracking sinks: `plax run --tensorboard --wandb` writes TensorBoard events and W&B offline runs
that read back to the table's numbers; a missing package or a login problem never fails a run."""
import glob
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import experiment
from experiments.cli import main

# The configuration of tests/experiments/test_cli.py (compiled once per session).
SMALL = ["--num-tasks", "2", "--seeds", "2", "--steps-per-task", "20", "--log-every", "10",
         "--hidden", "16", "--eval-examples", "50", "--probe-examples", "32",
         "--metrics", "dormant,srank"]


def _offline_wandb(mp: pytest.MonkeyPatch, root: Path) -> None:
    """W&B as on a fresh machine: no mode, no credentials, its own directories."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        mp.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        mp.setenv(var, str(root / var.lower()))
    mp.setenv("NETRC", str(root / "no-netrc"))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        _offline_wandb(mp, root)
        out = root / "run"
        assert main(["run", "quickstart", *SMALL, "--no-plots", "--tensorboard", "--wandb",
                     "--out", str(out)]) == 0
    return out


def expected_scalars(table: pd.DataFrame) -> dict:
    """{(run, tag): {step: value}} from the table, tags spelled out by hand."""
    expected: dict = {}
    for row in table.itertuples():
        if not math.isfinite(row.value):
            continue
        tag = row.metric
        if row.layer:
            tag += f"/{row.layer}"
        if not pd.isna(row.eval_task):
            tag += f"/task{row.eval_task}"
        expected.setdefault((row.run, tag), {})[row.step] = row.value
    return expected


def read_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_the_tables_scalars_at_its_steps(tracked):
    table = pd.read_parquet(tracked / "results.parquet")
    summary = pd.read_csv(tracked / "summary.csv", index_col="run")
    assert sorted(p.name for p in (tracked / "tensorboard").iterdir()) == ["run0", "run1"]
    expected = expected_scalars(table)
    for run in (0, 1):
        acc = read_events(tracked / "tensorboard" / f"run{run}")
        tags = set(acc.Tags()["scalars"])
        assert {"train_loss", "eval_acc/task0", "eval_acc/task1",
                "dormant_frac@0.025/hidden/0", "srank@0.01/hidden/0"} <= tags
        for (r, tag), by_step in expected.items():
            if r != run:
                continue
            events = acc.Scalars(tag)
            assert [e.step for e in events] == sorted(by_step), tag
            np.testing.assert_array_equal(  # TensorBoard stores float32
                [e.value for e in events],
                np.float32([by_step[s] for s in sorted(by_step)]), err_msg=tag)
        # The summary at the last step, and the run's hyperparameters as hparams.
        last = int(table["step"].max())
        for name in ("acc_avg", "forgetting_max", "plasticity_last"):
            (event,) = acc.Scalars(f"summary/{name}")
            assert event.step == last
            assert event.value == pytest.approx(summary.loc[run, name], rel=1e-6)
        from tensorboard.plugins.hparams import plugin_data_pb2
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["seed"].number_value == summary.loc[run, "seed"]
        assert hparams["learning_rate"].number_value == pytest.approx(
            summary.loc[run, "learning_rate"])


def wandb_records(path: Path):
    """The records of a W&B ``run-<id>.wandb`` file (a LevelDB-style log of protobufs:
    32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_writes_a_run_directory_per_run_with_its_summary(tracked):
    table = pd.read_parquet(tracked / "results.parquet")
    summary = pd.read_csv(tracked / "summary.csv", index_col="run")
    files = sorted(glob.glob(str(tracked / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2
    seen = {}
    for path in files:
        records = list(wandb_records(Path(path)))
        (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {u.key: json.loads(u.value_json) for u in run_rec.config.update}
        run = config["run"]
        assert run_rec.project == "plax" and run_rec.run_group == "quickstart"
        assert run_rec.display_name == f"{tracked.name}-run{run}"
        assert config["seed"] == summary.loc[run, "seed"] and config["num_tasks"] == 2
        updates = {}
        for r in records:
            if r.WhichOneof("record_type") == "summary":
                for u in r.summary.update:
                    updates[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        assert updates["acc_avg"] == pytest.approx(summary.loc[run, "acc_avg"])
        assert updates["forgetting_max"] == pytest.approx(summary.loc[run, "forgetting_max"])
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                         for i in r.history.item}
                history[items["_step"]] = items
        rows = table[(table["run"] == run) & (table["metric"] == "eval_acc")
                     & (table["eval_task"] == 1)]
        assert sorted(history) == sorted(rows["step"].unique())
        for step, value in zip(rows["step"], rows["value"]):
            assert history[step]["eval_acc/task1"] == pytest.approx(value)
        seen[run] = path
    assert sorted(seen) == [0, 1]


def test_missing_packages_print_the_install_line_and_the_run_succeeds(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "r"
    code = main(["run", "quickstart", *SMALL, "--no-plots", "--tensorboard", "--wandb",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "plax: tensorboard sink skipped" in err and "plax: wandb sink skipped" in err
    assert err.count("pip install 'plax[tracking]'") == 2
    for name in ("results.parquet", "results.csv", "summary.csv", "config.json"):
        assert (out / name).exists(), name


def test_a_wandb_login_problem_is_one_line_and_exit_code_0(tracked, tmp_path, capsys,
                                                           monkeypatch):
    _offline_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")  # and no credentials anywhere
    before = sorted(glob.glob(str(tracked / "wandb" / "offline-run-*")))
    code = main(["report", str(tracked), "--no-plots", "--wandb"])
    err = capsys.readouterr().err
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "wandb sink skipped" in line]
    assert "wandb login" in line and "WANDB_API_KEY" in line and str(tracked) in line
    assert sorted(glob.glob(str(tracked / "wandb" / "offline-run-*"))) == before


def test_report_reexports_tensorboard_from_the_table_without_duplicates(tracked, capsys):
    assert main(["report", str(tracked), "--no-plots", "--tensorboard"]) == 0
    assert "tracking: TensorBoard: 2 runs" in capsys.readouterr().out
    for run in (0, 1):
        assert len(list((tracked / "tensorboard" / f"run{run}").glob("events.*"))) == 1
        assert [e.step for e in read_events(tracked / "tensorboard" / f"run{run}")
                .Scalars("train_loss")] == [10, 20, 30, 40]


def test_an_interrupted_run_keeps_its_table_and_writes_tensorboard(tracked, tmp_path, capsys,
                                                                   monkeypatch):
    done = pd.read_parquet(tracked / "results.parquet")
    done = done[done["task"] == 0]

    def interrupted(*args, **kwargs):
        raise experiment.PartialRun(done, "2 of 4 log intervals", KeyboardInterrupt())

    monkeypatch.setattr(experiment, "run", interrupted)
    out = tmp_path / "r"
    code = main(["run", "quickstart", *SMALL, "--no-plots", "--tensorboard", "--wandb",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130  # the interruption still ends the command
    assert (out / "results.parquet").exists()
    assert "wandb sink waits for the finished run" in err and not (out / "wandb").exists()
    acc = read_events(out / "tensorboard" / "run0")
    assert [e.step for e in acc.Scalars("eval_acc/task0")] == [0, 10, 20]
    assert not any(t.startswith("summary/") for t in acc.Tags()["scalars"])


def test_run_help_explains_the_tracking_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for words in ("--tensorboard", "--wandb", "RUN_DIR/tensorboard/run<k>/", "RUN_DIR/wandb/",
                  "WANDB_MODE", "wandb sync", "pip install 'plax[tracking]'"):
        assert words in out, words
