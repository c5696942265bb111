"""A diverging run is frozen and flagged inside the program; the other runs go on untouched."""
import numpy as np

from experiments.kinds.classifier import ClassifierConfig as Config
from experiments.experiment import run
from experiments.registry import build

SMALL = dict(dataset="synthetic", family="permuted", num_tasks=2, hidden=(16,), optimizer="sgd",
             steps_per_task=20, log_every=10, batch_size=16, seeds=1, eval_examples=32,
             probe_examples=16, mode="sweep")


def test_diverging_run_is_frozen_flagged_and_excluded_while_others_continue():
    table, per_run, _ = run(build(Config(**SMALL, learning_rate=(1e-2, 1e30))), progress=False)
    assert per_run["diverged"].tolist() == [False, True]
    bad = per_run.loc[1]
    assert bad["diverged_task"] == 0 and bad["diverged_by_step"] == 10
    assert bad["diverged_quantity"] in ("loss", "params", "loss+params")
    assert np.isnan(bad["acc_avg"])  # kept out of every average
    # Frozen at its last finite state: its evaluations stay finite.
    evals = table[(table["run"] == 1) & (table["metric"] == "eval_acc")]["value"]
    assert np.isfinite(evals).all()
    # The results table marks every row of the diverged run.
    assert table.groupby("run")["diverged"].all().tolist() == [False, True]
    assert table.groupby("run")["diverged"].any().tolist() == [False, True]

    alone, per_alone, _ = run(build(Config(**SMALL, learning_rate=(1e-2,))), progress=False)
    ours = table[table["run"] == 0].reset_index(drop=True)
    ref = alone[alone["run"] == 0].reset_index(drop=True)
    np.testing.assert_allclose(ours["value"].to_numpy(), ref["value"].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not per_alone["diverged"].any()
