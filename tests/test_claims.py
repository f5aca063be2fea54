"""dashboards.claims: the paper's claims computed from runs, with verdicts against the seeds' spread."""

import math

import numpy as np

import pandas as pd
import pytest

from dashboards.claims import claim_table, search_rows, to_markdown, verdict
from slt.errors import InputError


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
    assert verdict(2.0, math.nan, 1) == "insufficient seeds (n = 1)"  # one seed carries no verdict
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


def test_reward_2_as_q_grows_pairs_each_tickets_loss_by_seed():
    rows = []
    for seed, (slt0, lt0) in enumerate([(0.47, 0.45), (0.46, 0.44), (0.48, 0.45)]):
        rows += [{"method": "snn", "seed": seed, "test_accuracy": 0.65}, {"method": "ann", "seed": seed, "test_accuracy": 0.68},
                 # from q=0 to q=0.6 the spiking ticket loses 1 point, the ANN ticket 3, 4, 5 -> advantage 2, 3, 4
                 {"method": "multisp-slt", "q": 0.0, "seed": seed, "test_accuracy": slt0},
                 {"method": "multisp-slt", "q": 0.3, "seed": seed, "test_accuracy": slt0 - 0.2},  # the middle: unread
                 {"method": "multisp-slt", "q": 0.6, "seed": seed, "test_accuracy": slt0 - 0.01},
                 {"method": "multisp-lt", "q": 0.0, "seed": seed, "test_accuracy": lt0},
                 {"method": "multisp-lt", "q": 0.6, "seed": seed, "test_accuracy": lt0 - [0.03, 0.04, 0.05][seed]}]
    table = claim_table(_runs(rows)).set_index("setting")
    growth = table.loc["multisp-slt vs multisp-lt, q=0 → 0.6"]
    assert growth["claim"] == "Reward 2 (as q grows)" and growth["n"] == 3
    assert growth["mean"] == pytest.approx(3.0) and growth["std"] == pytest.approx(1.0)
    assert growth["verdict"] == "holds"  # margin 2 * 1 / sqrt(3) = 1.15
    assert "spiking 1.00 ± 0.00, ANN 4.00 ± 1.00" in growth["measured"]
    assert table.loc["multisp-slt vs multisp-lt, q=0.6", "claim"] == "Reward 2"  # the per-q drops stay
    worse = [{**r, "test_accuracy": r["test_accuracy"] - 0.06} if r["method"] == "multisp-slt" and r["q"] == 0.6 else r
             for r in rows]  # now the spiking ticket loses 7 points: advantage -4, -3, -2
    assert claim_table(_runs(worse)).set_index("setting").loc["multisp-slt vs multisp-lt, q=0 → 0.6", "verdict"] \
        == "does not hold"
    one_q = [r for r in rows if r.get("q") in (None, 0.0)]  # a single q: no slope to judge
    assert "Reward 2 (as q grows)" not in set(claim_table(_runs(one_q))["claim"])


def test_timestep_trend_and_decay_shape():
    rows = [{"method": "mpslt", "p": 0.5, "T": t, "seed": s, "test_accuracy": 0.3 + 0.02 * t + 0.005 * s}
            for t in (1, 2, 4, 8) for s in range(3)]
    trend = claim_table(_runs(rows)).iloc[0]
    assert trend["claim"] == "accuracy grows with T" and trend["mean"] > 0.9 and trend["verdict"] == "holds"
    assert trend["n"] == 3  # seeds per T
    # two seeds per λ; validation peaks at 0.6, test agrees within a point
    hump = [{"method": "mpslt", "p": 0.5, "decay": d, "seed": s, "val_accuracy": 0.5 - (d - 0.6) ** 2,
             "test_accuracy": 0.5 - (d - 0.6) ** 2 + 0.004 * s} for d in (0.1, 0.3, 0.5, 0.6, 0.7, 0.9) for s in (0, 1)]
    shape = claim_table(_runs(hump)).iloc[0]
    assert shape["claim"] == "accuracy vs λ rises then falls" and shape["verdict"] == "holds" and shape["n"] == 2
    assert "best λ on validation = 0.600" in shape["measured"]
    rising = [{**row, "val_accuracy": row["decay"], "test_accuracy": row["decay"]} for row in hump]
    assert claim_table(_runs(rising)).iloc[0]["verdict"] == "does not hold"


def test_the_best_lambda_is_chosen_on_validation_not_test():
    rows = [{"method": "mpslt", "p": 0.5, "decay": d, "seed": s, "val_accuracy": 0.5 - (d - 0.6) ** 2,
             "test_accuracy": 0.5 - (d - 0.3) ** 2 + 0.001 * s} for d in (0.1, 0.3, 0.5, 0.6, 0.7, 0.9) for s in (0, 1)]
    shape = claim_table(_runs(rows)).iloc[0]
    assert "best λ on validation = 0.600" in shape["measured"]  # test accuracy alone would pick 0.3
    assert "test accuracy 41.1%" in shape["measured"]  # at λ = 0.6: 0.5 - 0.3² + 0.0005 (mean of 2 seeds)
    assert shape["verdict"] == "does not hold"  # interior on validation, but on test the low end beats it


def test_one_seed_per_configuration_gives_no_verdict():
    """A demo sweep (one seed per λ, per T, per method) may show numbers, never "holds" or "does not hold"."""
    decay = [{"method": "mpslt", "p": 0.5, "decay": d, "val_accuracy": 0.5 - (d - 0.6) ** 2,
              "test_accuracy": 0.5 - (d - 0.6) ** 2} for d in (0.1, 0.3, 0.5, 0.6, 0.7, 0.9)]
    timesteps = [{"method": "mpslt", "p": 0.5, "T": t, "test_accuracy": 0.3 + 0.02 * t} for t in (1, 2, 4, 8)]
    tickets = [{"method": m, "p": 0.5, "test_accuracy": a, "energy_mj": e, "energy_mj_sparse": e}
               for m, a, e in (("mpslt", 0.49, 0.15), ("mplt", 0.55, 1.0))]
    tickets += [{"method": m, "test_accuracy": a, "energy_mj": e, "energy_mj_sparse": e}
                for m, a, e in (("snn", 0.5, 0.2), ("ann", 0.6, 1.0))]
    for rows in (decay, timesteps, tickets):
        table = claim_table(_runs(rows))
        assert len(table) and set(table["verdict"]) == {"insufficient seeds (n = 1)"}, table[["claim", "verdict"]]
        assert (table["n"] == 1).all()
        assert not any("nan" in text for text in table["measured"]), list(table["measured"])  # no spread of one run


def test_unequal_budgets_give_no_verdict():
    rows = []
    for seed in range(3):
        rows += [{"method": "snn", "seed": seed, "test_accuracy": 0.5, "epoch": 3},
                 {"method": "ann", "seed": seed, "test_accuracy": 0.6, "epoch": 3},
                 {"method": "mpslt", "p": 0.5, "seed": seed, "test_accuracy": 0.49, "epoch": 4},  # one epoch more
                 {"method": "mplt", "p": 0.5, "seed": seed, "test_accuracy": 0.55 - 0.01 * seed, "epoch": 3}]
    row = claim_table(_runs(rows)).iloc[0]
    assert row["epochs"] == "3 / 4" and row["verdict"] == "unequal budgets (3 / 4 epochs)"
    equal = claim_table(_runs([{**r, "epoch": 3} for r in rows])).iloc[0]
    assert equal["epochs"] == "3" and equal["verdict"] == "holds"


def _search_and_grid(grid_val, grid_test):
    """A GP-like search (one seed per λ, validation peaking at λ = 0.42) and a grid (λ 0.2 … 0.8, 3 seeds) whose
    cells' validation and per-seed test accuracies are given."""
    search = [{"method": "mpslt", "p": 0.5, "decay": d, "val_accuracy": 0.6 - (d - 0.42) ** 2,
               "test_accuracy": 0.59 - (d - 0.42) ** 2} for d in (0.1, 0.3, 0.42, 0.5, 0.9)]
    grid = [{"method": "mpslt", "p": 0.5, "decay": d, "seed": s, "val_accuracy": grid_val[d],
             "test_accuracy": grid_test[d][s]} for d in grid_val for s in range(3)]
    return _runs(search), _runs(grid)


def test_a_search_is_judged_by_the_grid_cell_nearest_its_pick_against_the_grids_best():
    test = {0.2: [0.50, 0.51, 0.52], 0.4: [0.58, 0.59, 0.60], 0.6: [0.59, 0.61, 0.63], 0.8: [0.55, 0.55, 0.55]}
    search, grid = _search_and_grid({0.2: 0.50, 0.4: 0.60, 0.6: 0.58, 0.8: 0.55}, test)
    (row,) = search_rows(search, grid)
    assert row["claim"] == "the search finds the best λ" and row["verdict"] == "holds"  # 0.42 lies in 0.4's cell
    assert row["mean"] == 0 and row["n"] == 3 and row["setting"] == "5 search runs against a grid of 12 (4 values)"
    assert "λ = 0.42 (validation 60.0 %, test 59.0 % (n = 1))" in row["measured"]
    assert "the grid's best on validation: λ = 0.4 (test 59.0 ± 1.0 % (n = 3))" in row["measured"]
    # the grid's best on validation is 0.6 (test never chooses); the nearest cell, 0.4, loses 1, 2, 3 points
    (worse,) = search_rows(search, _search_and_grid({0.2: 0.5, 0.4: 0.58, 0.6: 0.60, 0.8: 0.55}, test)[1])
    assert worse["mean"] == pytest.approx(-2.0) and worse["std"] == pytest.approx(1.0)  # margin 2/√3 = 1.15
    assert worse["verdict"] == "does not hold" and "the grid cell nearest the pick: λ = 0.4" in worse["measured"]
    test[0.6] = [0.59, 0.58, 0.60]  # now 0.4 against 0.6: -1, +1, 0 points
    (close,) = search_rows(search, _search_and_grid({0.2: 0.5, 0.4: 0.58, 0.6: 0.60, 0.8: 0.55}, test)[1])
    assert close["mean"] == pytest.approx(0.0) and close["verdict"] == "within noise"
    one_seed = grid[grid["seed"] == 0]
    assert search_rows(search, one_seed)[0]["verdict"] == "insufficient seeds (n = 1)"
    assert claim_table(search, grid)["claim"].tolist()[-1] == "the search finds the best λ"


def test_a_grid_of_another_field_or_configuration_is_refused_naming_against():
    test = {d: [0.5, 0.5, 0.5] for d in (0.2, 0.4)}
    search, grid = _search_and_grid({0.2: 0.5, 0.4: 0.6}, test)
    with pytest.raises(InputError, match=r"^against: the search and the grid differ in p \(0.5 vs 0.7\)"):
        search_rows(search, grid.assign(p=0.7))
    with pytest.raises(InputError, match=r"^against: a search is judged against a grid of the one field it varies; "
                                         r"the search varies \['decay'\], the grid \['T'\]"):
        search_rows(search, grid.assign(decay=0.5, T=[1, 2, 4, 6, 8, 1]))


def test_finetuning_gain_is_paired_by_seed_per_method_and_p():
    rows = []
    for seed in range(3):
        base = 0.40 + 0.05 * seed  # seeds differ by far more than fine-tuning's gain: pairing removes that
        rows += [{"method": "mpslt", "p": 0.5, "seed": seed, "finetune_epochs": 0, "test_accuracy": base},
                 {"method": "mpslt", "p": 0.5, "seed": seed, "finetune_epochs": 20,
                  "test_accuracy": base + [0.02, 0.03, 0.025][seed]},
                 {"method": "slt", "p": 0.5, "seed": seed, "finetune_epochs": 0, "test_accuracy": base},
                 {"method": "slt", "p": 0.5, "seed": seed, "finetune_epochs": 20, "test_accuracy": base + [-0.01, 0.005, -0.005][seed]}]
    rows.append({"method": "snn", "seed": 0, "finetune_epochs": 0, "test_accuracy": 0.6})  # dense: not a ticket
    table = claim_table(_runs(rows)).set_index("setting")
    assert list(table.index) == ["mpslt p=0.5, 20 epochs fine-tuned vs 0", "slt p=0.5, 20 epochs fine-tuned vs 0"]
    mpslt = table.loc["mpslt p=0.5, 20 epochs fine-tuned vs 0"]
    assert mpslt["claim"] == "fine-tuning after the ticket" and mpslt["n"] == 3
    assert mpslt["mean"] == pytest.approx(2.5) and mpslt["std"] == pytest.approx(0.5)  # margin 0.58 < 2.5
    assert mpslt["verdict"] == "holds"
    assert "fine-tuned 47.50 ± 5.27, not 45.00 ± 5.00" in mpslt["measured"]
    slt = table.loc["slt p=0.5, 20 epochs fine-tuned vs 0"]
    assert slt["mean"] == pytest.approx(-1 / 3) and slt["verdict"] == "within noise"  # std 0.76: margin 0.88
    one_seed = claim_table(_runs([r for r in rows if r["seed"] == 0 and r["method"] == "mpslt"])).iloc[0]
    assert one_seed["verdict"] == "insufficient seeds (n = 1)"


def test_energy_ratios():
    rows = []
    for seed, snn in enumerate((0.2, 0.25)):
        rows += [{"method": "ann", "seed": seed, "test_accuracy": 0.6, "energy_mj": 1.0, "energy_mj_sparse": 1.0},
                 {"method": "snn", "seed": seed, "test_accuracy": 0.5, "energy_mj": snn, "energy_mj_sparse": snn},
                 {"method": "mpslt", "p": 0.5, "seed": seed, "test_accuracy": 0.5,
                  "energy_mj": 0.75 * snn + 0.01 * seed, "energy_mj_sparse": 0.08}]
    energy = claim_table(_runs(rows)).set_index("claim").loc["energy per image"]
    # per seed: 0.15 / 0.2 = 0.75 and 0.1975 / 0.25 = 0.79
    assert energy["mean"] == pytest.approx(0.77) and energy["n"] == 2 and energy["verdict"] == "holds"
    assert "MPSLT/ANN = 0.174" in energy["measured"] and "SNN/ANN = 0.225" in energy["measured"]


def test_energy_ratios_under_every_recorded_estimate_pair_seeds():
    rows = []
    for seed, (snn, ticket) in enumerate(((0.2, 0.1), (0.25, 0.15))):
        rows += [{"method": "ann", "seed": seed, "test_accuracy": 0.6, "energy_mj": 1.0, "energy_mj_effective": 0.5},
                 {"method": "snn", "seed": seed, "test_accuracy": 0.5, "energy_mj": snn, "energy_mj_effective": snn},
                 {"method": "mpslt", "p": 0.5, "seed": seed, "test_accuracy": 0.5, "energy_mj": 0.2,
                  "energy_mj_effective": ticket}]
    table = claim_table(_runs(rows)).set_index(["claim", "setting"])
    vs_ann = table.loc[("energy per image (paper convention (dense connectivity))", "mpslt p=0.5 vs ANN")]
    assert vs_ann["mean"] == pytest.approx(0.2) and vs_ann["std"] == pytest.approx(0.0) and vs_ann["n"] == 2
    assert vs_ann["verdict"] == "holds" and "11%" in vs_ann["paper"]
    effective = table.loc[("energy per image (effective operations)", "mpslt p=0.5 vs dense SNN")]
    # per seed: 0.1 / 0.2 = 0.5 and 0.15 / 0.25 = 0.6
    assert effective["mean"] == pytest.approx(0.55) and effective["std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert effective["verdict"] == "holds"
    against_ann = table.loc[("energy per image (effective operations)", "mpslt p=0.5 vs ANN")]
    assert against_ann["mean"] == pytest.approx(np.mean([0.2, 0.3]))  # 0.1 / 0.5 and 0.15 / 0.5
    assert ("energy per image (paper convention (dense connectivity))", "mpslt p=0.5 vs dense SNN") not in table.index
    assert not any("scaled by kept weights" in claim for claim, _ in table.index)  # not recorded: no row
