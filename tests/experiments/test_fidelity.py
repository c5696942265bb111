"""Fidelity: the central loss-of-plasticity finding at CPU scale (marked slow, ~4 min)."""
import pytest

from experiments import compare

pytestmark = pytest.mark.slow


def test_relu_adam_loses_plasticity_while_interventions_keep_it():
    """Lyle et al. 2023 / Kumar et al. 2023 / Abbas et al. 2023 / Sokar et al. 2023: on a
    sequence of memorisation tasks a ReLU MLP trained with Adam fits later tasks worse and worse;
    L2-init, spectral regularisation, CReLU and ReDo keep the ability (preset's seeds)."""
    grid = {"regularizer": ("none", "l2_init", "spectral_reg"), "activation": ("relu", "crelu"),
            "reset": ("none", "redo")}
    configs = compare.grid_configs("plasticity-digits", grid, one_at_a_time=True)
    table = compare.run_grid(configs, progress=False)
    by = ["regularizer", "activation", "reset"]
    per_run, rank = compare.compare_tables(table, by, ["plasticity_last", "plasticity_slope"])
    rank = rank.set_index(by)
    plain = rank.loc[("none", "relu", "none")]
    assert plain["plasticity_slope_hi"] < 0  # declines, with the whole CI below zero
    for setting in [("l2_init", "relu", "none"), ("spectral_reg", "relu", "none"),
                    ("none", "crelu", "none"), ("none", "relu", "redo")]:
        other = rank.loc[setting]
        assert other["plasticity_last_lo"] > plain["plasticity_last_hi"], setting
        assert other["plasticity_slope"] > plain["plasticity_slope"], setting
