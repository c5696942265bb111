"""Continual RL runs survive SIGKILL as supervised ones do: killed after a checkpoint and resumed,
they end with a bit-identical table (the carry holds the agent, its memory, the envs' states and
episode counters, and every key)."""
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from experiments import registry
from experiments.cli import main
from test_resume import kill_after_first_checkpoint

HERE = Path(__file__).resolve().parent


def _kill_after_first_checkpoint(argv: list[str], out: Path, prelude: str = "") -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]  # test_plugin_kind, toy_rl
        {prelude}
        from experiments.cli import main
        sys.exit(main({argv + ['--out', str(out)]!r}))
    """)
    kill_after_first_checkpoint([sys.executable, "-c", script], out, timeout=600)


def _resumed_equals_uninterrupted(tmp_path, argv, prelude=""):
    reference = tmp_path / "reference"
    assert main([*argv, "--out", str(reference)]) == 0
    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(argv, killed, prelude)
    assert main(["run", "--resume", str(killed), "--no-plots"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(killed / "results.parquet"),
                                  pd.read_parquet(reference / "results.parquet"),
                                  check_exact=True)


@pytest.mark.slow  # two RL programs compiled end to end
def test_the_rl_loop_resumes_to_a_bit_identical_table(tmp_path):
    # The RL loop with the point-mass kind of test_plugin_kind (compiles in seconds).
    import test_plugin_kind as plugin
    registry.register(plugin.KIND)
    try:
        argv = ["run", "random-reach", "--seeds", "2", "--targets", "1,-1,0.5,0",
                "--env-steps-per-task", "64", "--no-plots"]
        _resumed_equals_uninterrupted(
            tmp_path, argv, "import test_plugin_kind as k; from experiments import registry; "
                            "registry.register(k.KIND)")
    finally:
        registry.unregister(plugin.KIND.name)


@pytest.mark.slow
def test_sac_on_halfcheetah_resumes_to_a_bit_identical_table(tmp_path, rl_tiny):
    args = {**rl_tiny, "mode": "chunked", "env_steps_per_task": 48}
    argv = ["run", "cheetah-quick", "--no-plots",
            *[a for k, v in args.items()
              for a in (f"--{k.replace('_', '-')}",
                        ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]]
    _resumed_equals_uninterrupted(tmp_path, argv)
