"""Figures from runs tables built in memory: which figures for which sweep, the data they plot, the files."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from dashboards.figures import (Bars, Baseline, Curve, Front, Heatmap, Optimum, Points, curve_data, figure_specs,
                                heatmap_data, write_figures)
from dashboards.pareto import pareto_table
from runrecord import comparable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULTS = {"model": "vgg9", "dataset": "digits", "method": "mpslt", "p": 0.5, "q": 0.3, "T": 4, "decay": 0.5,
            "seed": 0, "run_status": "FINISHED", "full_budget": True, "early_stopped": False}


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """A load_runs-like table: defaults, trial ids in order, energy from p."""
    frame = pd.DataFrame([{**DEFAULTS, "trial_id": f"t{i:03d}", "run_id": f"r{i}", **row}
                          for i, row in enumerate(rows)])
    if "energy_mj" not in frame:
        frame["energy_mj"] = 0.1 * (1 - frame["p"]) * frame["T"] / 4
    return frame


def stopped(row: dict) -> dict:
    return {**row, "full_budget": False, "early_stopped": True}


def layers(spec, kind):
    return [layer for layer in spec.layers if isinstance(layer, kind)]


def spec_named(specs, name):
    return next(s for s in specs if s.name == name)


@pytest.fixture
def p_sweep():
    """4 ticket methods x 3 p x 3 seeds, dense ann/snn x 3 seeds, plus a failed and an early-stopped run."""
    rng = np.random.default_rng(0)
    rows = [{"method": m, "p": p, "seed": s, "test_accuracy": 0.9 - 0.3 * p * (i + 1) / 4 + rng.normal(0, 0.02)}
            for i, m in enumerate(["lt", "slt", "mplt", "mpslt"]) for p in (0.1, 0.5, 0.9) for s in range(3)]
    rows += [{"method": m, "seed": s, "test_accuracy": a + rng.normal(0, 0.01)}
             for m, a in (("ann", 0.93), ("snn", 0.91)) for s in range(3)]
    rows += [stopped({"method": "mpslt", "p": 0.9, "seed": 3, "test_accuracy": 0.99}),
             {"method": "mpslt", "p": 0.9, "seed": 4, "test_accuracy": np.nan, "run_status": "FAILED"}]
    return runs_table(rows)


def test_curve_data_is_mean_and_std_over_comparable_runs_by_hand():
    runs = runs_table([{"method": "slt", "p": 0.1, "seed": s, "test_accuracy": a} for s, a in enumerate((0.5, 0.6, 0.7))]
                      + [{"method": "slt", "p": 0.5, "test_accuracy": 0.4},
                         {"method": "lt", "p": 0.1, "seed": 0, "test_accuracy": 0.8},
                         {"method": "lt", "p": 0.1, "seed": 1, "test_accuracy": 0.6},
                         stopped({"method": "slt", "p": 0.1, "seed": 3, "test_accuracy": 0.99}),
                         {"method": "slt", "p": 0.5, "seed": 4, "test_accuracy": np.nan, "run_status": "FAILED"}])
    data = curve_data(runs, "p")
    assert list(data.columns) == ["method", "p", "mean", "std", "n"]
    assert data[["method", "p", "n"]].values.tolist() == [["lt", 0.1, 2], ["slt", 0.1, 3], ["slt", 0.5, 1]]
    np.testing.assert_allclose(data["mean"], [0.7, 0.6, 0.4])
    np.testing.assert_allclose(data["std"][:2], [0.02 ** 0.5, 0.1])  # sample std (ddof 1): sqrt(0.02 / 1), sqrt(0.02 / 2)
    assert np.isnan(data["std"].iloc[2])  # one run: no spread
    assert len(comparable(runs)) == 6


def test_p_sweep_plots_ticket_curves_and_dense_baselines(p_sweep):
    specs = figure_specs(p_sweep, None)
    assert [s.name for s in specs] == ["accuracy_vs_p"]
    spec = specs[0]
    curves, baselines = layers(spec, Curve), layers(spec, Baseline)
    assert [c.label for c in curves] == ["lt", "mplt", "mpslt", "slt"]
    expected = curve_data(p_sweep, "p").set_index(["method", "p"])
    for curve in curves:
        np.testing.assert_allclose(curve.mean, expected.loc[curve.label, "mean"])
        np.testing.assert_allclose(curve.std, expected.loc[curve.label, "std"])
        assert all("n = 3" in text for text in curve.hover)
    dense = p_sweep[p_sweep["method"] == "snn"]["test_accuracy"]
    snn = next(b for b in baselines if b.label.startswith("snn"))
    assert (snn.mean, snn.std, snn.n) == pytest.approx((dense.mean(), dense.std(), 3))
    assert snn.x == (0.1, 0.9) and {b.label.split(" ")[0] for b in baselines} == {"ann", "snn"}


def test_single_runs_are_plain_points():
    runs = runs_table([{"p": p, "test_accuracy": 0.8 - p / 10} for p in (0.1, 0.3, 0.5)])
    (curve,) = layers(figure_specs(runs, None)[0], Curve)
    assert (curve.n == 1).all() and np.isnan(curve.std).all() and not any("±" in t for t in curve.hover)


def test_decay_sweep_marks_the_run_best_on_validation_at_its_test_accuracy():
    rng = np.random.default_rng(1)
    decays = rng.uniform(0.05, 0.95, 12)
    rows = [{"decay": d, "val_accuracy": 0.9 - (d - 0.6) ** 2 + rng.normal(0, 0.005),
             "test_accuracy": 0.9 - (d - 0.3) ** 2} for d in decays]  # test alone would prefer λ near 0.3
    rows.append(stopped({"decay": 0.2, "val_accuracy": 0.999, "test_accuracy": 0.999}))  # early: never the optimum
    runs = runs_table(rows)
    specs = figure_specs(runs, None)
    assert [s.name for s in specs] == ["accuracy_vs_decay"]
    (optimum,) = layers(specs[0], Optimum)
    best = runs.loc[runs["full_budget"]].sort_values("val_accuracy").iloc[-1]
    assert best["decay"] != runs.loc[runs["full_budget"]].sort_values("test_accuracy").iloc[-1]["decay"]
    assert (optimum.x, optimum.y) == (best["decay"], best["test_accuracy"])
    assert f"{best['decay']:.3g}" in optimum.text and f"{best['test_accuracy']:.4f}" in optimum.text
    assert not layers(figure_specs(runs.drop(columns="val_accuracy"), None)[0], Optimum)  # nothing chooses on test
    (points,) = layers(specs[0], Points)
    assert list(points.values) == list(range(12))  # colour = order of trial (the stopped t012 is left out)
    assert list(points.x) == list(decays)


def test_pq_grid_heatmap_cells_are_mean_accuracy():
    rng = np.random.default_rng(2)
    rows = [{"model": "spikformer-tiny", "method": "multisp-slt", "p": p, "q": q, "seed": s,
             "test_accuracy": 0.9 - 0.2 * p - 0.1 * q + rng.normal(0, 0.01)}
            for p in (0.2, 0.4, 0.6) for q in (0.0, 0.3, 0.6) for s in range(2)]
    runs = runs_table(rows[:-1])  # cell (0.6, 0.6) has one run
    mean, n = heatmap_data(runs)
    expected = runs.groupby(["q", "p"])["test_accuracy"].mean()
    for (q, p), value in expected.items():
        assert mean.loc[q, p] == pytest.approx(value)
    assert list(mean.index) == [0.0, 0.3, 0.6] and list(mean.columns) == [0.2, 0.4, 0.6] and n.loc[0.6, 0.6] == 1
    specs = figure_specs(runs, None)
    assert [s.name for s in specs] == ["accuracy_vs_p", "accuracy_vs_q", "balance_pq"]
    (heat,) = layers(spec_named(specs, "balance_pq"), Heatmap)
    np.testing.assert_allclose(heat.mean, mean.to_numpy())
    # p and q form a grid: the p curves are split by q, not averaged over it
    assert [c.label for c in layers(spec_named(specs, "accuracy_vs_p"), Curve)] == [
        "multisp-slt, q=0", "multisp-slt, q=0.3", "multisp-slt, q=0.6"]


def test_q_curves_use_transformers_only_and_dense_as_baselines():
    rows = [{"model": "spikformer-tiny", "method": m, "q": q, "p": 0.4, "test_accuracy": 0.9 - q / 5}
            for m in ("multisp-lt", "multisp-slt") for q in (0.0, 0.3, 0.6)]
    rows += [{"model": "spikformer-tiny", "method": m, "p": 0.4, "test_accuracy": 0.85} for m in ("pepsp-slt", "snn")]
    specs = figure_specs(runs_table(rows), None)
    assert [s.name for s in specs] == ["accuracy_vs_q"]
    assert [c.label for c in layers(specs[0], Curve)] == ["multisp-lt", "multisp-slt"]
    assert sorted(b.label.split(" ")[0] for b in layers(specs[0], Baseline)) == ["pepsp-slt", "snn"]


def test_time_steps_with_ann_baseline():
    rows = [{"T": t, "seed": s, "test_accuracy": 0.7 + t / 50 + s / 100} for t in (1, 2, 4) for s in range(2)]
    rows.append({"method": "ann", "T": 1, "test_accuracy": 0.9})
    specs = figure_specs(runs_table(rows), None)
    assert [s.name for s in specs] == ["accuracy_vs_T"]
    assert [b.label for b in layers(specs[0], Baseline)] == ["ann (no T)"]


def pareto_runs():
    rng = np.random.default_rng(3)
    rows = [{"p": rng.uniform(0.1, 0.9), "T": int(rng.choice([1, 2, 4])), "decay": rng.uniform(0.1, 0.9),
             "val_accuracy": rng.uniform(0.5, 0.9), "test_accuracy": rng.uniform(0.5, 0.9),
             "energy_mj": rng.uniform(0.01, 0.1)} for _ in range(20)]
    rows += [stopped({"val_accuracy": 0.99, "test_accuracy": 0.99, "energy_mj": 0.001 * k}) for k in (1, 2)]
    rows.append({"val_accuracy": np.nan, "test_accuracy": np.nan, "energy_mj": np.nan, "run_status": "FAILED"})
    return runs_table(rows)


def test_pareto_scatter_draws_the_full_budget_front_and_stopped_runs_apart():
    runs = pareto_runs()
    table = pareto_table(runs, [("val_accuracy", "max"), ("energy_mj", "min")])
    spec = spec_named(figure_specs(runs, table), "pareto_accuracy_energy")
    (front,) = layers(spec, Front)
    expected = table[table["is_pareto"]].sort_values("energy_mj")
    assert list(front.x) == list(expected["energy_mj"]) and list(front.y) == list(expected["val_accuracy"])
    assert np.all(np.diff(front.x) > 0) and np.all(np.diff(front.y) > 0)  # a staircase, accuracy up with energy
    faint = [p for p in layers(spec, Points) if p.faint]
    assert len(faint) == 1 and faint[0].label.startswith("early-stopped") and sorted(faint[0].x) == [0.001, 0.002]
    assert 0.001 not in front.x
    # even when ranked with the stopped runs, they are drawn faint and never on the front line
    loose = pareto_table(runs, [("val_accuracy", "max"), ("energy_mj", "min")], include_early_stopped=True)
    assert 0.001 not in layers(spec_named(figure_specs(runs, loose), "pareto_accuracy_energy"), Front)[0].x
    assert "pareto_accuracy_energy" not in [s.name for s in figure_specs(runs, None)]


def test_energy_models_figure_compares_every_estimate_per_method_at_the_p_nearest_half(tmp_path):
    # dense runs record p too (its default, 0.5, as MLflow params do): it must not label or select them
    rows = [{"method": "ann", "p": 0.5, "energy_mj": 0.7, "energy_mj_effective": 0.35, "energy_mj_memory_aware": 19.0},
            {"method": "snn", "p": 0.5, "seed": 0, "energy_mj": 0.1, "energy_mj_effective": 0.08,
             "energy_mj_memory_aware": 5.0},
            {"method": "snn", "p": 0.5, "seed": 1, "energy_mj": 0.2, "energy_mj_effective": 0.1,
             "energy_mj_memory_aware": 6.0}]
    rows += [{"method": "mpslt", "p": p, "energy_mj": p, "energy_mj_effective": p / 4, "energy_mj_memory_aware": 4.0}
             for p in (0.3, 0.5, 0.7)]
    rows.append(stopped({"method": "mpslt", "p": 0.5, "energy_mj": 9.0, "energy_mj_effective": 9.0,
                         "energy_mj_memory_aware": 9.0}))  # a partial budget: not compared
    spec = spec_named(figure_specs(runs_table(rows), None), "energy_models")
    (bars,) = layers(spec, Bars)
    assert bars.categories == ["ann", "snn", "mpslt p=0.5"] and bars.log
    by_label = {label: (mean, std, n) for label, _, mean, std, n in bars.series}
    assert list(by_label) == ["paper convention (dense connectivity)", "effective operations",
                              "memory-aware (Lemaire et al.)"]
    mean, std, n = by_label["paper convention (dense connectivity)"]
    assert mean.tolist() == pytest.approx([0.7, 0.15, 0.5]) and n.tolist() == [1, 2, 1]
    assert std[1] == pytest.approx(np.std([0.1, 0.2], ddof=1))
    assert by_label["effective operations"][0].tolist() == pytest.approx([0.35, 0.09, 0.125])
    written = {f["name"] for f in write_figures(runs_table(rows), None, tmp_path)}
    assert "energy_models" in written and (tmp_path / "energy_models.png").read_bytes().startswith(PNG_MAGIC)
    assert "energy_models" not in {s.name for s in figure_specs(runs_table([{"energy_mj": 0.1}]), None)}


def test_energy_layers_figure_draws_each_estimate_per_layer_of_the_given_trial():
    rows = [{"layer": "stem.0", "energy_pj": 100.0, "energy_pj_effective": 50.0, "memory_aware_pj": 900.0},
            {"layer": "fc", "energy_pj": 10.0, "energy_pj_effective": 2.0, "memory_aware_pj": 80.0}]
    best = pd.Series({"method": "mpslt", "trial_id": "t007"})
    spec = spec_named(figure_specs(runs_table([{}]), None, (best, rows)), "energy_layers")
    (bars,) = layers(spec, Bars)
    assert bars.categories == ["stem.0", "fc"] and "mpslt trial t007" in spec.title
    assert [label for label, *_ in bars.series] == ["paper convention", "effective operations", "memory-aware"]
    means = np.array([mean for _, _, mean, _, _ in bars.series])
    assert means.ravel().tolist() == pytest.approx([100e-9, 10e-9, 50e-9, 2e-9, 900e-9, 80e-9])  # pJ -> mJ
    old = [{"layer": "stem.0", "energy_pj": 100.0}]  # a table recorded before the new estimates: what it has
    spec = spec_named(figure_specs(runs_table([{}]), None, (best, old)), "energy_layers")
    assert [label for label, *_ in layers(spec, Bars)[0].series] == ["paper convention"]


def test_nothing_varies_no_figures(tmp_path):
    runs = runs_table([{"seed": s, "test_accuracy": 0.8} for s in range(3)])
    assert write_figures(runs, None, tmp_path / "figs") == []


def test_files_are_png_and_offline_html(tmp_path):
    runs = pareto_runs()
    table = pareto_table(runs, [("test_accuracy", "max"), ("energy_mj", "min")])
    written = write_figures(runs, table, tmp_path / "figs")
    assert [w["name"] for w in written] == ["accuracy_vs_p", "accuracy_vs_T", "accuracy_vs_decay",
                                            "pareto_accuracy_energy"]
    assert written[0]["title"].endswith("(λ not held fixed)")  # 20 distinct λ: the title says so,
    assert not any(c.connect for c in layers(figure_specs(runs, None)[0], Curve))  # and no line joins the points
    for figure in written:
        assert figure["png"].parent == figure["html"].parent == tmp_path / "figs"
        assert figure["png"].read_bytes()[:8] == PNG_MAGIC and figure["png"].stat().st_size > 10_000
        html = figure["html"].read_text(encoding="utf-8")
        assert "* plotly.js v" in html and "Plotly.newPlot" in html and json.dumps(figure["title"])[1:-1] in html
        assert not re.search(r"<script[^>]*\bsrc\s*=", html), "every script must be inline (no CDN)"
        assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']https?:", html)
