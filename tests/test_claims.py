"""dashboards.claims: the paper's claims computed from runs, with verdicts against the seeds' spread."""

import math

import pandas as pd
import pytest

from dashboards.claims import claim_table, to_markdown, verdict


def _runs(rows):
    frame = pd.DataFrame(rows)
    for column, default in (("run_status", "FINISHED"), ("full_budget", True), ("p", math.nan), ("q", math.nan),
                            ("T", 4), ("decay", 0.5), ("seed", 0)):
        if column not in frame:
            frame[column] = default
        frame[column] = frame[column].fillna(default) if column in ("T", "decay", "seed") else frame[column]
    return frame


def test_verdict_compares_the_mean_with_two_standard_errors():
    assert verdict(3.0, 1.0, 4) == "holds"          # margin 1.0
    assert verdict(0.9, 1.0, 4) == "within noise"
    assert verdict(-1.5, 1.0, 4) == "does not hold"
    assert verdict(2.0, math.nan, 1) == "one run: no spread"
    assert verdict(math.nan, math.nan, 0) == "no runs"


def test_reward_1_pairs_drops_by_seed():
    rows = []
    for seed, (snn, ann) in enumerate([(0.50, 0.60), (0.52, 0.63), (0.47, 0.58)]):
        rows += [{"method": "snn", "seed": seed, "test_accuracy": snn}, {"method": "ann", "seed": seed, "test_accuracy": ann},
                 # p=0.5: spiking ticket loses 1 point, ANN ticket 5, 4.5, 5.5 -> advantage 4, 3.5, 4.5
                 {"method": "mpslt", "p": 0.5, "seed": seed, "test_accuracy": snn - 0.01},
                 {"method": "mplt", "p": 0.5, "seed": seed, "test_accuracy": ann - [0.05, 0.045, 0.055][seed]},
                 # p=0.9: the spiking ticket loses more (6 vs 2 points)
                 {"method": "mpslt", "p": 0.9, "seed": seed, "test_accuracy": snn - 0.06},
                 {"method": "mplt", "p": 0.9, "seed": seed, "test_accuracy": ann - 0.02}]
    rows.append({"method": "mpslt", "p": 0.5, "seed": 0, "test_accuracy": 0.0, "full_budget": False})  # ignored
    table = claim_table(_runs(rows)).set_index("setting")
    at_half = table.loc["mpslt vs mplt, p=0.5"]
    assert at_half["claim"] == "Reward 1" and at_half["n"] == 3
    assert at_half["mean"] == pytest.approx(4.0) and at_half["std"] == pytest.approx(0.5)
    assert at_half["verdict"] == "holds"
    assert table.loc["mpslt vs mplt, p=0.9", "mean"] == pytest.approx(-4.0)
    assert table.loc["mpslt vs mplt, p=0.9", "verdict"] == "does not hold"
    assert "slt vs lt, p=0.5" not in table.index  # no single-prize runs: no row
    assert "| Reward 1 | mpslt vs mplt, p=0.5 |" in to_markdown(claim_table(_runs(rows)))


def test_timestep_trend_and_decay_shape():
    rows = [{"method": "mpslt", "p": 0.5, "T": t, "seed": s, "test_accuracy": 0.3 + 0.02 * t + 0.005 * s}
            for t in (1, 2, 4, 8) for s in range(3)]
    trend = claim_table(_runs(rows)).iloc[0]
    assert trend["claim"] == "accuracy grows with T" and trend["mean"] > 0.9 and trend["verdict"] == "holds"
    assert trend["n"] == 12
    hump = [{"method": "mpslt", "p": 0.5, "decay": d, "test_accuracy": 0.5 - (d - 0.6) ** 2}
            for d in (0.1, 0.3, 0.5, 0.6, 0.7, 0.9)]
    shape = claim_table(_runs(hump)).iloc[0]
    assert shape["claim"] == "accuracy vs λ rises then falls" and shape["verdict"] == "holds"
    assert "best λ = 0.600" in shape["measured"]
    rising = [{**row, "test_accuracy": row["decay"]} for row in hump]
    assert claim_table(_runs(rising)).iloc[0]["verdict"] == "does not hold"


def test_energy_ratios():
    rows = [{"method": "ann", "test_accuracy": 0.6, "energy_mj": 1.0, "energy_mj_sparse": 1.0},
            {"method": "snn", "test_accuracy": 0.5, "energy_mj": 0.2, "energy_mj_sparse": 0.2},
            {"method": "mpslt", "p": 0.5, "test_accuracy": 0.5, "energy_mj": 0.15, "energy_mj_sparse": 0.08}]
    energy = claim_table(_runs(rows)).set_index("claim").loc["energy per image"]
    assert energy["mean"] == pytest.approx(0.75) and energy["verdict"] == "holds"
    assert "MPSLT/ANN = 0.150" in energy["measured"] and "SNN/ANN = 0.200" in energy["measured"]
