"""Learning curves and the plateau check (dashboards/plateau.py) on hand-made per-epoch histories."""

import math

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboards.figures import figure_specs
from dashboards.plateau import plateau_table, quarter_gain
from dashboards.report import write_report
from dashboards.runs import epoch_history, load_runs


def test_quarter_gain_compares_the_last_epochs_with_those_before_the_last_quarter():
    # 8 epochs: the last quarter is epochs 7-8, so 2-epoch means: (0.53 + 0.56)/2 - (0.50 + 0.52)/2
    assert quarter_gain([0.10, 0.20, 0.30, 0.40, 0.50, 0.52, 0.53, 0.56]) == pytest.approx(3.5)
    # 80 epochs: the last quarter is epochs 61-80; epochs 77-80 against 57-60
    values = np.zeros(80)
    values[56:60], values[76:80], values[60:76] = 0.60, 0.605, 0.99  # the middle of the quarter is not read
    assert quarter_gain(values) == pytest.approx(0.5)
    assert quarter_gain([0.2, 0.3]) == pytest.approx(10.0)  # 2 epochs: the last against the first
    assert math.isnan(quarter_gain([0.4]))  # nothing before the last quarter


def test_trend_tells_a_plateau_from_a_rise_a_collapse_and_a_run_too_short():
    from dashboards.plateau import trend

    assert [trend(g) for g in (0.0, 0.99, -0.99, 1.0, 4.0, -1.0, -10.0, math.nan)] == [
        "plateau", "plateau", "plateau", "rising", "rising", "falling", "falling", "too short"]


def _sweep(tmp_path):
    """A parent and six trials of 12 epochs: two seeds of a dense SNN that levels off (gains 0.5 and 0.9
    points), two of a ticket still rising (4 and 6 points), one early-stopped and one failed trial."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("curves", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="curves cpu").info.run_id
    trials = [("snn", 0, 0.005, "FINISHED", True), ("snn", 1, 0.009, "FINISHED", True),
              ("mpslt", 0, 0.04, "FINISHED", True), ("mpslt", 1, 0.06, "FINISHED", True),
              ("mpslt", 2, 0.5, "FINISHED", False), ("mpslt", 3, 0.5, "FAILED", True)]
    for i, (method, seed, gain, status, full) in enumerate(trials):
        run = client.create_run(experiment, run_name=f"{method} s{seed}", tags={
            "mlflow.parentRunId": parent, "trial_id": f"t{i}", "full_budget": str(full).lower(),
            "early_stopped": str(not full).lower()}).info.run_id
        for key, value in {"method": method, "p": "0.5", "T": "4", "seed": str(seed)}.items():
            client.log_param(run, key, value)
        # epochs 1-9 climb to 0.5 (epochs 6-9 at exactly 0.5); epochs 10-12 the same, and the last 3 end `gain` higher
        curve = [0.1 * e for e in range(1, 6)] + [0.5] * 4 + [0.5 + gain] * 3
        for epoch, value in enumerate(curve, start=1):
            client.log_metric(run, "val_accuracy", value, step=epoch)
            client.log_metric(run, "epoch", epoch, step=epoch)
        client.log_metric(run, "test_accuracy", curve[-1] - 0.01, step=12)
        client.set_terminated(run, status)
    client.set_terminated(parent, "FINISHED")
    return uri


def test_plateau_table_reads_every_epoch_from_mlflow_and_judges_each_configuration(tmp_path):
    uri = _sweep(tmp_path)
    runs, _ = load_runs("curves", uri)
    history = epoch_history(uri, runs)
    assert len(history) == 4 * 12  # full-budget finished trials only, every epoch once
    table = plateau_table(runs, history, ["method"]).set_index("method")
    # 12 epochs: quarter 3, windows of 3: epochs 10-12 against 7-9
    assert table.loc["snn", "gain_points"] == pytest.approx(0.7)
    assert table.loc["snn", "gain_points_std"] == pytest.approx(np.std([0.5, 0.9], ddof=1))
    assert table.loc["mpslt", "gain_points"] == pytest.approx(5.0)
    assert table["n"].to_dict() == {"mpslt": 2, "snn": 2} and set(table["epochs"]) == {12}
    assert table["trend"].to_dict() == {"mpslt": "rising", "snn": "plateau"}
    assert table.loc["snn", "val_accuracy_final"] == pytest.approx(100 * 0.507)

    curves = {spec.name: spec for spec in figure_specs(runs, None, history=history)}["learning_curves"]
    by_label = {layer.label: layer for layer in curves.layers}
    assert set(by_label) == {"mpslt", "snn"}
    assert list(by_label["snn"].x) == list(range(1, 13)) and list(by_label["snn"].n) == [2] * 12
    assert by_label["mpslt"].mean[-1] == pytest.approx(0.55) and by_label["mpslt"].std[-1] == pytest.approx(
        np.std([0.54, 0.56], ddof=1))


def test_report_writes_the_plateau_table_and_the_learning_curves(tmp_path):
    uri = _sweep(tmp_path)
    out = tmp_path / "report"
    written = write_report("curves", uri, out, log_to_mlflow=False)
    table = pd.read_csv(out / "plateau.csv")
    assert table[["method", "n", "trend"]].values.tolist() == [["mpslt", 2, "rising"], ["snn", 2, "plateau"]]
    assert "| snn | 12 | 50.7 | +0.7 ± 0.3 (n = 2) | plateau |" in (out / "plateau.md").read_text()
    assert {"learning_curves"} <= {f["name"] for f in written["figures"]}
    assert (out / "learning_curves.png").stat().st_size > 0
    page = (out / "learning_curves.html").read_text()
    assert page.count('"fill":"toself"') == 2  # a ±1 std band for each of the two curves (2 seeds each)
    assert 'href="plateau.csv"' in (out / "index.html").read_text()


def test_a_configuration_is_the_method_and_every_field_that_differs_between_runs():
    from dashboards.figures import learning_columns

    rows = [{"method": m, "lr": lr, "p": 0.5, "seed": seed, "run_status": "FINISHED", "full_budget": True,
             "early_stopped": False, "val_accuracy": 0.5} for m, lr in (("slt", 0.1), ("slt", 0.4), ("lt", 0.2))
            for seed in (0, 1)]
    rows.append({**rows[0], "lr": 0.8, "run_status": "FAILED"})  # a failed run varies nothing
    assert learning_columns(pd.DataFrame(rows)) == ["method", "lr"]  # seeds are averaged; p is the same for all
    history = pd.DataFrame([{"run_id": f"r{i}", "epoch": e, "val_accuracy": 0.1 * e} for i in range(6)
                            for e in (1, 2, 3, 4)])
    frame = pd.DataFrame(rows[:6]).assign(run_id=[f"r{i}" for i in range(6)], epoch=4)
    table = plateau_table(frame, history, learning_columns(frame))
    assert table[["method", "lr", "n"]].values.tolist() == [["lt", 0.2, 2], ["slt", 0.1, 2], ["slt", 0.4, 2]]
    assert table["gain_points"].tolist() == pytest.approx([10.0, 10.0, 10.0])  # epoch 4 against epoch 3


def test_a_field_the_method_does_not_read_neither_labels_nor_splits_it_and_each_method_gets_a_panel(tmp_path):
    from dashboards.figures import learning_columns, write_figures

    # the dense ANN records the default p and a T it ignores (ANN twins run one step): 0.5 / T 4 and 8
    rows = [{"method": "ann", "lr": 0.002, "p": 0.5, "T": T, "seed": seed} for seed, T in ((0, 4), (1, 8))]
    rows += [{"method": "slt", "lr": 0.2, "p": p, "T": 4, "seed": seed} for p in (0.3, 0.7) for seed in (0, 1)]
    frame = pd.DataFrame([{**r, "run_id": f"r{i}", "run_status": "FINISHED", "full_budget": True,
                           "early_stopped": False, "val_accuracy": 0.5, "test_accuracy": 0.5, "epoch": 4}
                          for i, r in enumerate(rows)])
    history = pd.DataFrame([{"run_id": f"r{i}", "epoch": e, "val_accuracy": 0.1 * e + 0.01 * i}
                            for i in range(len(rows)) for e in (1, 2, 3, 4)])
    assert learning_columns(frame) == ["method", "lr", "p"]  # T differs only where no method reads it
    table = plateau_table(frame, history, learning_columns(frame))
    assert table["method"].tolist() == ["ann", "slt", "slt"] and table["n"].tolist() == [2, 2, 2]
    assert math.isnan(table["p"].iloc[0]) and table["p"].tolist()[1:] == [0.3, 0.7]

    curves = {s.name: s for s in figure_specs(frame, None, history=history)}["learning_curves"]
    assert [(layer.panel, layer.label, list(layer.n)) for layer in curves.layers] == [
        ("ann, lr=0.002", "ann", [2] * 4), ("slt, lr=0.2", "p=0.3", [2] * 4), ("slt, lr=0.2", "p=0.7", [2] * 4)]
    assert curves.layers[1].mean[-1] == pytest.approx(0.4 + 0.01 * (2 + 3) / 2)  # runs r2, r3 at epoch 4
    written = {f["name"]: f for f in write_figures(frame, None, tmp_path, history=history)}
    page = written["learning_curves"]["html"].read_text()
    assert '"text":"ann, lr=0.002"' in page and '"text":"slt, lr=0.2"' in page  # a titled subplot per method
    assert '"name":"slt, lr=0.2: p=0.3"' in page and page.count('"fill":"toself"') == 3
    assert written["learning_curves"]["png"].stat().st_size > 0


def test_a_field_set_for_some_runs_and_left_unset_for_others_splits_the_configurations():
    from dashboards.figures import learning_columns
    from dashboards.plateau import to_markdown

    # slt at the dataset's own size (image_size None) and at 16x16; the dense snn never sets it
    rows = [{"method": "slt", "image_size": size, "p": 0.5, "seed": seed} for size in (None, 16) for seed in (0, 1)]
    rows += [{"method": "snn", "image_size": None, "p": 0.5, "seed": seed} for seed in (0, 1)]
    frame = pd.DataFrame([{**r, "run_id": f"r{i}", "run_status": "FINISHED", "full_budget": True,
                           "early_stopped": False, "val_accuracy": 0.5, "test_accuracy": 0.5, "epoch": 2}
                          for i, r in enumerate(rows)])
    history = pd.DataFrame([{"run_id": f"r{i}", "epoch": e, "val_accuracy": 0.1 * e} for i in range(6) for e in (1, 2)])
    assert learning_columns(frame) == ["method", "image_size"]  # p is 0.5 for every run that reads it
    table = plateau_table(frame, history, learning_columns(frame))
    assert table["n"].tolist() == [2, 2, 2]  # slt None, slt 16, snn: not one slt row of 4
    markdown = to_markdown(table)
    assert "| slt | None |" in markdown and "| slt | 16 |" in markdown and "| snn | None |" in markdown
    curves = {s.name: s for s in figure_specs(frame, None, history=history)}["learning_curves"]
    assert [(layer.panel, layer.label) for layer in curves.layers] == [
        ("slt", "image_size=16"), ("slt", "image_size=None"), ("snn, image_size=None", "snn")]
    assert [list(layer.x) for layer in curves.layers] == [[1, 2]] * 3  # one point per epoch, not two runs' zigzag


def test_which_fields_each_method_reads():
    from slt.methods import METHODS

    read = {name: [f for f in ("p", "finetune_epochs", "T", "decay", "q", "patch_epochs", "lr") if m.reads(f)]
            for name, m in METHODS.items()}
    assert read["ann"] == ["lr"] and read["snn"] == ["T", "decay", "lr"]
    assert read["lt"] == read["mplt"] == ["p", "finetune_epochs", "lr"]
    assert read["slt"] == read["mpslt"] == read["pepsp-slt"] == ["p", "finetune_epochs", "T", "decay", "lr"]
    assert read["multisp-slt"] == ["p", "finetune_epochs", "T", "decay", "q", "patch_epochs", "lr"]
    assert read["multisp-lt"] == ["p", "finetune_epochs", "q", "patch_epochs", "lr"]
