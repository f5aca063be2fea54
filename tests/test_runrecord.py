"""runrecord: the names, rules and builders every layer above slt/ shares."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

import runrecord


def test_parent_tag_is_mlflows():
    assert runrecord.PARENT_TAG == MLFLOW_PARENT_RUN_ID


@pytest.mark.parametrize("uri,folder", [
    ("sqlite:////data/sweeps/mlflow.db", "/data/sweeps"),
    ("sqlite:///mlruns/mlflow.db", str(Path("mlruns").resolve())),
    ("http://127.0.0.1:5000", "/ray_results"),
    ("postgresql://mlflow@db/mlflow", "/ray_results"),
])
def test_the_optuna_study_lives_beside_a_sqlite_store_else_at_the_storage_root(uri, folder):
    assert runrecord.optuna_storage(uri, Path("/ray_results")) == f"sqlite:///{folder}/optuna.db"


def test_variants_are_packed_into_one_grid_axis_and_unpacked_into_run_fields():
    variants = [{"p": 0.3, "seed": 0}, {"p": 0.3, "seed": 1}, {"method": "ann", "lr": 0.002, "seed": 0}]
    packed = runrecord.pack_variants({"model": "vgg9", "p": 0.5, "lr": 0.4, "seed": 9, "epochs": 2, "energy_batch": 8},
                                     variants, lambda values: {"grid_search": values})
    # a variant that does not set a moved field keeps the base's value of it (the tickets' lr 0.4, the baseline's p)
    assert packed == {"model": "vgg9", "epochs": 2, "energy_batch": 8, "variant": {"grid_search": [
        {"p": 0.3, "lr": 0.4, "seed": 0}, {"p": 0.3, "lr": 0.4, "seed": 1},
        {"p": 0.5, "method": "ann", "lr": 0.002, "seed": 0}]}}
    trial_config = {**{k: v for k, v in packed.items() if k != "variant"},
                    "variant": packed["variant"]["grid_search"][0]}
    assert runrecord.run_fields(trial_config) == {"model": "vgg9", "epochs": 2, "p": 0.3, "lr": 0.4, "seed": 0}


def test_full_budget_end_tags_and_comparable_runs():
    assert runrecord.full_budget(3, 3) and not runrecord.full_budget(2, 3)
    assert runrecord.end_tags("finished", False) == {"status": "finished", "full_budget": "false",
                                                     "early_stopped": "true"}
    assert runrecord.end_tags("failed", False, "boom")["early_stopped"] == "false"
    runs = pd.DataFrame({"run_status": ["FINISHED", "FINISHED", "FAILED", "FINISHED"],
                         "full_budget": [True, False, False, True], "test_accuracy": [0.5, 0.9, None, None]})
    assert list(runrecord.comparable(runs).index) == [0]
    assert runrecord.comparable(runs.drop(columns="test_accuracy")).empty


def test_epoch_metrics_take_slts_names_and_say_when_the_budget_is_full():
    entry = {"epoch": 2, "phase": "search", "lr": 0.1, "test_accuracy": 0.4, "test_loss": 1.2, "train_accuracy": 0.5,
             "train_loss": 1.1, "mean_firing_rate": None, "firing_rates": {}, "epoch_time_s": 3.0}
    energy = {"energy_mj": 0.2, "energy_mj_sparse": 0.1, "energy_mj_effective": 0.05, "energy_mj_memory_aware": 3.0,
              "break_even_spike_rate": None, "mean_input_spike_rate": 0.25, "macs": 7}  # None (an ANN's): not logged
    values = runrecord.epoch_metrics(entry, 2, energy, 0.5)
    assert values == {"epoch": 2, "phase": "search", "test_accuracy": 0.4, "test_loss": 1.2, "train_accuracy": 0.5,
                      "train_loss": 1.1, "mean_firing_rate": 0.0, "epoch_time_s": 3.0, "pruned_fraction": 0.5,
                      "full_budget": True, "energy_mj": 0.2, "energy_mj_sparse": 0.1, "energy_mj_effective": 0.05,
                      "energy_mj_memory_aware": 3.0, "mean_input_spike_rate": 0.25}
