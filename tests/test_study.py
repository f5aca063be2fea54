"""sweep.study: a sweep's trials exported to an Optuna study for optuna-dashboard."""

import logging
from types import SimpleNamespace

import optuna

from sweep.space import load_space
from sweep.study import OptunaStudyExport, distributions


def _trial(trial_id, variant, accuracy=0.5):
    return SimpleNamespace(trial_id=trial_id, config={"model": "vgg9", "variant": variant},
                           last_result={"val_accuracy": accuracy, "test_accuracy": accuracy - 0.01, "full_budget": True,
                                        "epoch": 4})


def test_grid_choices_include_the_dense_baselines_of_include():
    space, _ = load_space("pruning_ratio", "cpu")
    assert distributions(space)["method"].choices == ("lt", "slt", "mplt", "mpslt", "ann", "snn")


def test_dense_baseline_trials_are_exported_and_a_bad_one_never_fails_the_trial(tmp_path, caplog):
    space, _ = load_space("pruning_ratio", "cpu")
    export = OptunaStudyExport(f"sqlite:///{tmp_path / 'optuna.db'}", "pruning_ratio-cpu-1", space)
    export.on_trial_complete(0, [], _trial("a", {"method": "ann", "seed": 0}, 0.34))
    export.on_trial_complete(0, [], _trial("b", {"method": "mpslt", "p": 0.5, "seed": 0}, 0.29))
    with caplog.at_level(logging.WARNING, logger="sweep.study"):
        export.on_trial_complete(0, [], _trial("c", {"method": "resnet-only", "seed": 0}))
    assert "optuna-dashboard export of trial c skipped" in caplog.text
    export.on_trial_complete(0, [], _trial("a", {"method": "ann", "seed": 0}, 0.34))  # once per trial
    trials = optuna.load_study(study_name="pruning_ratio-cpu-1", storage=export.storage).trials
    assert [(t.params, t.values, t.user_attrs["trial_id"]) for t in trials] == [
        ({"method": "ann"}, [0.34], "a"), ({"method": "mpslt", "p": 0.5}, [0.29], "b")]


def test_an_early_stopped_trial_is_exported_pruned_without_values(tmp_path):
    space, _ = load_space("pareto", "demo", ["scheduler.type=mo_asha"])
    export = OptunaStudyExport(f"sqlite:///{tmp_path / 'optuna.db'}", "pareto-demo-1", space)
    full = SimpleNamespace(trial_id="a", config={"p": 0.5, "T": 4, "decay": 0.3},
                           last_result={"val_accuracy": 0.7, "energy_mj": 0.002, "full_budget": True, "epoch": 16})
    stopped = SimpleNamespace(trial_id="b", config={"p": 0.2, "T": 2, "decay": 0.6},
                              last_result={"val_accuracy": 0.3, "energy_mj": 0.001, "full_budget": False, "epoch": 4})
    export.on_trial_complete(0, [], full)
    export.on_trial_complete(0, [], stopped)
    trials = optuna.load_study(study_name="pareto-demo-1", storage=export.storage).trials
    assert [(t.state, t.values, t.user_attrs["epochs"]) for t in trials] == [
        (optuna.trial.TrialState.COMPLETE, [0.7, 0.002], 16), (optuna.trial.TrialState.PRUNED, None, 4)]
