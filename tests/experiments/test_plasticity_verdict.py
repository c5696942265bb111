"""The default run's verdict: which setting kept its plasticity (last new-task accuracy at least
90% of the first), from the summary the run prints."""
import pandas as pd

from experiments import report
from experiments.cli import build_parser


def _table(strengths=(0.0, 0.01)) -> pd.DataFrame:
    rows = [dict(run=r, seed=0, reg_strength=s, task=t, step=10 * (t + 1), metric="eval_acc",
                 layer="", eval_task=t, value=0.5)
            for r, s in enumerate(strengths) for t in range(2)]
    table = pd.DataFrame(rows)
    table["eval_task"] = table["eval_task"].astype("Int64")
    return table


def test_a_setting_that_drops_below_90_percent_of_its_first_task_lost_plasticity():
    agg = pd.DataFrame({"reg_strength": [0.0, 0.01], "plasticity_first": [0.6, 0.58],
                        "plasticity_last": [0.3, 0.57]})
    lines = report.plasticity_verdicts(_table(), agg).splitlines()
    assert lines == ["  reg_strength=0.0: 0.600 → 0.300 (-50%): lost",
                     "  reg_strength=0.01: 0.580 → 0.570 (-2%): kept"]


def test_the_boundary_is_90_percent_and_returns_get_no_verdict():
    agg = pd.DataFrame({"reg_strength": [0.0, 0.01], "plasticity_first": [1.0, 1.0],
                        "plasticity_last": [0.9, 0.8999]})
    assert report.plasticity_verdicts(_table(), agg).splitlines()[0].endswith("kept")
    assert report.plasticity_verdicts(_table(), agg).splitlines()[1].endswith("lost")
    rl = _table().assign(metric="eval_return")
    assert report.plasticity_verdicts(rl, agg) == ""


def test_plax_run_defaults_to_the_demo_preset():
    args = build_parser().parse_args(["run"])
    assert args.preset == "demo"
