"""Dashboards on runs created in a temporary MLflow store: Pareto front, CSV export, errors."""

import math
import random
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from app.cli import main
from dashboards.pareto import pareto_table, parse_objectives
from dashboards.runs import load_runs
from slt.errors import InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep: parent + 30 children (accuracy, energy_mj), 5 early-stopped, 1 failed, 2 exact duplicates."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("toy", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="toy-demo").info.run_id
    rng = random.Random(0)
    trials = []
    for i in range(30):
        accuracy, energy = round(rng.uniform(0.1, 0.9), 3), round(rng.uniform(0.001, 0.01), 5)
        if i in (28, 29):  # exact duplicates of trial 3 (NSGA-II re-proposes configurations)
            accuracy, energy = trials[3][1], trials[3][2]
        full = i not in (5, 6, 7, 8, 9)
        if not full:  # early-stopped: excellent early values that must never reach the front
            accuracy, energy = 0.99, 0.0001 * (i - 4)
        run = client.create_run(experiment, run_name=f"t{i}", tags={
            "mlflow.parentRunId": parent, "trial_id": f"t{i:02d}", "status": "failed" if i == 10 else "finished",
            "full_budget": str(full).lower(), "early_stopped": str(not full).lower()})
        for key, value in {"method": "mpslt", "p": f"{0.1 + i / 40:.3f}", "T": "4", "decay": "0.5", "seed": "0"}.items():
            client.log_param(run.info.run_id, key, value)
        if i != 10:
            client.log_metric(run.info.run_id, "val_accuracy", accuracy)  # what the front ranks
            # odd trials as a sweep recorded before the metrics took slt's names ("accuracy") would have them
            client.log_metric(run.info.run_id, "accuracy" if i % 2 else "test_accuracy", round(accuracy - 0.02, 3))
            client.log_metric(run.info.run_id, "energy_mj", energy)
        client.set_terminated(run.info.run_id, "FAILED" if i == 10 else "FINISHED")
        trials.append((f"t{i:02d}", accuracy, energy, full, i != 10))
    client.set_terminated(parent, "FINISHED")
    return uri, parent, trials


def brute_force_front(points):
    """Indices not dominated (accuracy max, energy min), first of exact duplicates only."""
    front = []
    for i, (a, e) in enumerate(points):
        dominated = any((a2 >= a and e2 <= e) and (a2 > a or e2 < e) for a2, e2 in points)
        duplicate = any(points[j] == (a, e) for j in range(i))
        if not dominated and not duplicate:
            front.append(i)
    return front


def test_runs_table_is_typed_one_row_per_trial(store):
    uri, parent, trials = store
    runs, found = load_runs("toy", uri)
    assert found.info.run_id == parent and len(runs) == 30 and runs["trial_id"].is_unique
    assert "accuracy" not in runs and runs["test_accuracy"].notna().sum() == 29  # legacy names read as today's
    assert runs["p"].dtype.kind == "f" and runs["T"].dtype.kind in "if" and runs["full_budget"].dtype == bool
    assert runs.loc[runs["trial_id"] == "t10", "run_status"].item() == "FAILED"


def test_front_matches_brute_force_and_excludes_early_stopped_and_duplicates(store):
    uri, _, trials = store
    runs, _ = load_runs("toy", uri)
    table = pareto_table(runs, [("val_accuracy", "max"), ("energy_mj", "min")])
    eligible = [t for t in trials if t[3] and t[4]]
    expected = {eligible[i][0] for i in brute_force_front([(t[1], t[2]) for t in eligible])}
    assert set(table.loc[table["is_pareto"], "trial_id"]) == expected
    stopped = table[~table["full_budget"]]
    assert not stopped["is_pareto"].any() and stopped["front_rank"].isna().all()
    duplicates = table[table["trial_id"].isin(["t28", "t29"])]
    assert (duplicates["duplicate_of"] == table.loc[table["trial_id"] == "t03", "run_id"].item()).all()
    assert not duplicates["is_pareto"].any()
    assert (table.loc[table["is_pareto"], "front_rank"] == 1).all()
    with_stopped = pareto_table(runs, [("val_accuracy", "max"), ("energy_mj", "min")], include_early_stopped=True)
    assert with_stopped.loc[with_stopped["trial_id"] == "t05", "is_pareto"].item()


def test_export_writes_csv_with_types_and_logs_it_to_the_parent(store, tmp_path, capsys):
    uri, parent, _ = store
    out = tmp_path / "pareto.csv"
    assert main(["export", "pareto", "--experiment", "toy", "--tracking-uri", uri, "--out", str(out)]) == 0
    csv = pd.read_csv(out)
    assert {"run_id", "trial_id", "method", "p", "T", "val_accuracy", "test_accuracy", "energy_mj", "is_pareto", "front_rank",
            "full_budget", "early_stopped", "ranked_on"} <= set(csv.columns)
    assert csv["is_pareto"].dtype == bool and csv["p"].dtype.kind == "f" and len(csv) == 30
    assert (csv["ranked_on"] == "full budget only").all()
    artifacts = [a.path for a in MlflowClient(uri).list_artifacts(parent, "pareto")]
    assert artifacts == ["pareto/pareto_val_accuracy_energy_mj.csv"]
    assert main(["export", "pareto", "--experiment", "toy", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("slt: error: out: ")


@pytest.mark.parametrize("argv,field", [
    (["--experiment", "nope"], "experiment"),
    (["--experiment", "toy", "--objectives", "val_accuracy"], "objectives"),
    (["--experiment", "toy", "--objectives", "val_accuracy:max,joules:min"], "objectives"),
    (["--experiment", "toy", "--objectives", "val_accuracy:max"], "objectives"),
    (["--experiment", "toy", "--objectives", "test_accuracy:max,energy_mj:min"], "objectives"),  # test never ranks
])
def test_bad_experiment_or_objectives_are_one_line(store, tmp_path, capsys, argv, field):
    uri, _, _ = store
    code = main(["export", "pareto", *argv, "--tracking-uri", uri, "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"slt: error: {field}: ") and err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_parse_objectives_directions():
    assert parse_objectives("val_accuracy:max, energy_mj:min", ["val_accuracy", "energy_mj"]) == [
        ("val_accuracy", "max"), ("energy_mj", "min")]
    with pytest.raises(InputError, match="METRIC:max"):
        parse_objectives("val_accuracy:up,energy_mj:min", ["val_accuracy", "energy_mj"])
    with pytest.raises(InputError, match="test set"):
        parse_objectives("test_accuracy:max,energy_mj:min", ["test_accuracy", "energy_mj"])


def test_table_cells_equal_mean_and_std_of_the_runs(tmp_path):
    from dashboards.tables import paper_table, write_tables

    rng = random.Random(1)
    rows = []
    for method in ("ann", "snn", "slt", "mpslt"):
        for p in (0.5, 0.9):
            for seed in range(3):
                rows.append({"method": method, "p": None if method in ("ann", "snn") else p, "q": None,
                             "seed": seed, "dataset": "cifar10", "model": "vgg9", "run_status": "FINISHED",
                             "full_budget": seed != 2 or method != "slt", "test_accuracy": rng.uniform(0.2, 0.6),
                             "epoch": 4})
    rows.append({**rows[0], "run_status": "FAILED", "test_accuracy": 0.99})
    runs = pd.DataFrame(rows)
    long = paper_table(runs, "III", p=0.5)
    for method in ("ann", "snn", "slt", "mpslt"):
        mine = runs[(runs["method"] == method) & runs["full_budget"] & (runs["run_status"] == "FINISHED")]
        if method not in ("ann", "snn"):
            mine = mine[mine["p"] == 0.5]
        cell = long[(long["method"] == method) & (long["dataset"] == "cifar10") & (long["model"] == "vgg9")].iloc[0]
        assert cell["n"] == len(mine) == {"ann": 6, "snn": 6, "slt": 2, "mpslt": 3}[method]
        assert cell["mean"] == pytest.approx(100 * mine["test_accuracy"].mean())
        assert cell["std"] == pytest.approx(100 * mine["test_accuracy"].std(ddof=1))
    assert long.loc[(long["row"] == "MPSLTs") & (long["dataset"] == "cifar10") & (long["model"] == "vgg9"),
                    "paper"].item() == 87.76
    assert (long.loc[long["dataset"] != "cifar10", "n"] == 0).all()
    written = write_tables(runs, tmp_path, p=0.5)
    assert [w["table"] for w in written] == ["III"]
    markdown = (tmp_path / "table_III.md").read_text()
    assert "| MPSLTs |" in markdown and "[87.76]" in markdown and "(n=3, 4 ep)" in markdown
    one = paper_table(runs[runs["seed"] == 0], "III", p=0.5)  # one run per cell: a mean, no spread
    cell = one[(one["method"] == "mpslt") & (one["dataset"] == "cifar10") & (one["model"] == "vgg9")].iloc[0]
    assert cell["n"] == 1 and math.isnan(cell["std"])
    (tmp_path / "one").mkdir()
    write_tables(runs[runs["seed"] == 0], tmp_path / "one", p=0.5)
    assert f"| MPSLTs | {cell['mean']:.2f} (n=1, 4 ep) [87.76] |" in (tmp_path / "one" / "table_III.md").read_text()
    assert "\\begin{tabular}" in (tmp_path / "table_III.tex").read_text()


def test_table_ii_uses_the_papers_q_where_the_sweep_ran_it():
    from dashboards.tables import paper_table

    rows = [{"method": "multisp-slt", "p": 0.4, "q": q, "seed": seed, "dataset": "cifar10", "model": "spikformer-tiny",
             "run_status": "FINISHED", "full_budget": True, "test_accuracy": 0.3 + q / 10}
            for q in (0.0, 0.3, 0.6) for seed in range(2)]
    cell = paper_table(pd.DataFrame(rows), "II").query("method == 'multisp-slt' and model == 'spikformer-tiny' and dataset == 'cifar10'")
    assert cell["q"].item() == 0.3 and cell["mean"].item() == pytest.approx(33.0) and cell["n"].item() == 2
    without = pd.DataFrame([r for r in rows if r["q"] != 0.3])  # no q = 0.3 runs: of a tie, the nearest 0.3, then the larger
    assert paper_table(without, "II").query("method == 'multisp-slt'")["q"].iloc[0] == 0.6


def test_a_table_cell_pools_seeds_of_one_configuration_not_a_swept_t(tmp_path):
    """A timestep sweep's MPSLT runs at five T are five configurations: the cell shows T = 4 (the run default)
    where the sweep ran it, else the T most runs used; two models stay two columns."""
    from dashboards.figures import energy_model_data
    from dashboards.tables import paper_table, write_tables

    rows = [{"method": "mpslt", "p": 0.5, "q": None, "T": t, "decay": 0.5, "seed": seed, "dataset": "cifar10",
             "model": model, "run_status": "FINISHED", "full_budget": True, "epoch": 100,
             "test_accuracy": 0.40 + 0.01 * t + 0.001 * seed + (0.1 if model == "resnet19" else 0),
             "energy_mj": 0.001 * t}
            for t in (1, 2, 4) for seed in range(2) for model in ("vgg9", "resnet19")]
    long = paper_table(pd.DataFrame(rows), "III").query("method == 'mpslt' and dataset == 'cifar10'").set_index("model")
    assert long.loc["vgg9", "n"] == 2 and long.loc["vgg9", "mean"] == pytest.approx(44.05)  # T = 4: 0.44 + 0.0005
    assert long.loc["resnet19", "mean"] == pytest.approx(54.05) and long.loc["vgg9", "setting"] == "T=4 (of 1, 2, 4)"
    write_tables(pd.DataFrame(rows), tmp_path)
    assert ("Each cell pools the seeds of one configuration; of several: mpslt cifar10 vgg9 at T=4 (of 1, 2, 4); "
            "mpslt cifar10 resnet19 at T=4 (of 1, 2, 4).") in (tmp_path / "table_III.md").read_text()
    no_t4 = [r for r in rows if r["T"] != 4] + [{**r, "seed": 2} for r in rows if r["T"] == 1 and r["seed"] == 0]  # T = 1: 3 seeds
    cell = paper_table(pd.DataFrame(no_t4), "III").query("method == 'mpslt' and model == 'vgg9' and dataset == 'cifar10'")
    assert cell["n"].item() == 3 and cell["setting"].item() == "T=1 (of 1, 2)"
    energy = energy_model_data(pd.DataFrame([r for r in rows if r["model"] == "vgg9"]))
    assert list(energy.index) == ["mpslt p=0.5 T=4"] and energy["energy_mj"]["count"].item() == 2
    assert energy["energy_mj"]["mean"].item() == pytest.approx(0.004)
    assert energy.attrs["setting"] == {"mpslt p=0.5 T=4": "T=4 (of 1, 2, 4)"}


def test_report_writes_every_file_links_them_and_logs_to_the_parent(store, tmp_path, capsys):
    uri, parent, trials = store
    out = tmp_path / "report"
    assert main(["report", "--experiment", "toy", "--tracking-uri", uri, "--out", str(out)]) == 0
    index = (out / "index.html").read_text()
    energy = pd.read_csv(out / "energy.csv")  # mpslt at p = 0.5 (the default): trial 16's p = 0.1 + 16/40, one run
    assert energy[["method", "p", "energy_mj_count"]].values.tolist() == [["mpslt", 0.5, 1]]
    assert energy["energy_mj_mean"].iloc[0] == pytest.approx(trials[16][2])
    for name in ("runs.csv", "pareto.csv", "energy.csv"):
        assert (out / name).is_file() and f'href="{name}"' in index
    figures = sorted(out.rglob("*.png"))
    assert figures and all(f'src="{f.relative_to(out)}"' in index for f in figures)
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/index.html", "report/pareto.csv", "report/runs.csv"} <= logged
    assert "report:" in capsys.readouterr().out
    assert main(["report", "--experiment", "toy", "--tracking-uri", uri, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("slt: error: out: ")


def test_report_against_a_grid_judges_the_search_and_refuses_an_unknown_grid(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    def sweep(name, trials):  # trials: (λ, seed, validation, test)
        experiment = client.create_experiment(name, artifact_location=str(tmp_path / name))
        parent = client.create_run(experiment, run_name=f"{name}-cpu").info.run_id
        for i, (decay, seed, val, test) in enumerate(trials):
            run = client.create_run(experiment, run_name=f"t{i}", tags={
                "mlflow.parentRunId": parent, "trial_id": f"t{i:02d}", "status": "finished", "full_budget": "true",
                "early_stopped": "false"}).info.run_id
            for key, value in {"method": "mpslt", "p": "0.5", "decay": str(decay), "seed": str(seed)}.items():
                client.log_param(run, key, value)
            for metric, value in (("val_accuracy", val), ("test_accuracy", test), ("epoch", 100)):
                client.log_metric(run, metric, value)
            client.set_terminated(run, "FINISHED")
        client.set_terminated(parent, "FINISHED")
        return parent

    sweep("decay_rate", [(0.15, 0, 0.50, 0.49), (0.33, 0, 0.61, 0.60), (0.8, 0, 0.52, 0.50)])
    grid = sweep("decay_grid", [(d, s, 0.6 - abs(d - 0.3), 0.55 + 0.01 * s - abs(d - 0.3))
                                for d in (0.1, 0.3, 0.5) for s in range(2)])
    out = tmp_path / "report"
    assert main(["report", "--experiment", "decay_rate", "--tracking-uri", uri, "--out", str(out),
                 "--against", f"decay_grid:{grid}"]) == 0
    row = pd.read_csv(out / "claims.csv").set_index("claim").loc["the search finds the best λ"]
    assert row["verdict"] == "holds" and row["n"] == 2 and row["epochs"] == 100  # 0.33 is nearest 0.3, the best
    assert "the grid's best on validation: λ = 0.3 (test 55.5 ± 0.7 % (n = 2))" in row["measured"]
    assert f"judged against the grid sweep decay_grid-cpu (parent run {grid})" in (out / "index.html").read_text()
    capsys.readouterr()
    assert main(["report", "--experiment", "decay_rate", "--tracking-uri", uri, "--out", str(tmp_path / "again"),
                 "--against", "decay_grd"]) == 2
    assert capsys.readouterr().err.startswith("slt: error: against: no MLflow experiment 'decay_grd'")
    assert not (tmp_path / "again").exists()  # refused before any work


def test_dashboard_optuna_refuses_unknown_study_in_one_line(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=storage, study_name="decay_rate-demo-1")
    capsys.readouterr()
    code = main(["dashboard", "optuna", "--study", "nope", "--storage", storage])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("slt: error: study: no study 'nope'") and "decay_rate-demo-1" in err


def test_a_sweeps_own_objectives_rank_its_report_front_and_a_leftover_partial_report_is_redone(tmp_path):
    from dashboards.report import partial_dir, write_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("effective", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="pareto-demo",
                               tags={"objectives": "val_accuracy:max,energy_mj_effective:min"}).info.run_id
    # (val_accuracy, energy_mj, energy_mj_effective): by energy_mj the front is A, B; by effective ops A, C
    for name, (accuracy, paper, effective) in {"A": (0.8, 0.010, 0.002), "B": (0.7, 0.005, 0.004),
                                               "C": (0.6, 0.008, 0.001)}.items():
        run = client.create_run(experiment, run_name=name, tags={
            "mlflow.parentRunId": parent, "trial_id": name, "status": "finished", "full_budget": "true",
            "early_stopped": "false"}).info.run_id
        client.log_param(run, "method", "mpslt")
        for metric, value in (("val_accuracy", accuracy), ("test_accuracy", accuracy), ("energy_mj", paper),
                              ("energy_mj_effective", effective)):
            client.log_metric(run, metric, value)
        client.set_terminated(run, "FINISHED")
    out = tmp_path / "report"
    leftover = partial_dir(out)
    leftover.mkdir()
    (leftover / "index.html").write_text("half written")  # what a writer killed half-way left
    report = write_report("effective", uri, out, parent)
    pareto = pd.read_csv(out / "pareto.csv").set_index("trial_id")
    assert pareto["is_pareto"].to_dict() == {"A": True, "B": False, "C": True}
    assert "val_accuracy:max,energy_mj_effective:min" in (out / "index.html").read_text()
    assert not leftover.exists() and report["index"] == out / "index.html"
    assert all(Path(f["png"]).parent == out for f in report["figures"])


def test_hypervolume_curve_counts_every_trial_epochs_and_only_full_budget_volume():
    from dashboards.pareto import hypervolume, hypervolume_curve, reference_point

    runs = pd.DataFrame([
        {"run_id": "r1", "trial_id": "a", "run_status": "FINISHED", "full_budget": True, "early_stopped": False,
         "val_accuracy": 0.8, "energy_mj": 2.0, "epoch": 16, "end_time": 1},
        {"run_id": "r3", "trial_id": "c", "run_status": "FINISHED", "full_budget": True, "early_stopped": False,
         "val_accuracy": 0.6, "energy_mj": 1.0, "epoch": 16, "end_time": 3},
        {"run_id": "r2", "trial_id": "b", "run_status": "FINISHED", "full_budget": False, "early_stopped": True,
         "val_accuracy": 0.3, "energy_mj": 0.5, "epoch": 4, "end_time": 2},
        {"run_id": "r4", "trial_id": "d", "run_status": "RUNNING", "full_budget": False, "early_stopped": False,
         "val_accuracy": 0.99, "energy_mj": 0.1, "epoch": 3, "end_time": None}])
    objectives = [("val_accuracy", "max"), ("energy_mj", "min")]
    # worst full-budget value + 10 % of the range: accuracy 0.6 - 0.02, energy 2.0 + 0.1
    assert reference_point([(0.8, 2.0), (0.6, 1.0)], [True, False]) == pytest.approx([0.58, 2.1])
    assert reference_point([(0.5, 0.0)], [True, False]) == pytest.approx([0.45, 0.1])  # no range: 10 % of |v|, or of 1
    curve = hypervolume_curve(runs, objectives)
    assert curve["trial_id"].tolist() == ["a", "b", "c"]  # in the order they ended; d has not
    assert curve["epochs_spent"].tolist() == [16, 20, 36]
    # a alone: 0.22 x 0.1; b (stopped early) adds none; c adds 0.02 x 1.1 less the 0.02 x 0.1 both cover
    assert curve["hypervolume"].tolist() == pytest.approx([0.022, 0.022, 0.042])
    assert curve.attrs["reference"] == pytest.approx({"val_accuracy": 0.58, "energy_mj": 2.1})
    assert hypervolume([], [True, False], [0.0, 1.0]) == 0.0
    assert hypervolume_curve(runs.drop(columns="end_time"), objectives).attrs["reference"] is None
