"""The benchmarks' own arithmetic: FLOP counts, grid snapping and the replayed GP search."""

import csv

import pytest

from bench import decay_search
from bench.train_step import training_flops
from slt.config import make_config
from slt.data import load_dataset
from slt.energy import count_macs
from slt.train import TrainingRun


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, subset=64)


def test_training_flops_counts_first_layer_once_and_the_rest_T_times(digits):
    common = dict(model="vgg9", dataset="digits", width=0.25, batch_size=8)
    ann = TrainingRun(make_config(**common, method="ann"), digits)
    snn = TrainingRun(make_config(**common, method="snn", T=4), digits)
    macs = list(count_macs(ann.model, ann.pipeline(digits.test.inputs[:2], augment=False)).values())
    assert training_flops(ann) == 6 * sum(macs)
    assert training_flops(snn) == 6 * (macs[0] + 4 * sum(macs[1:]))


def test_grid_covers_the_decay_space_bounds():
    assert len(decay_search.GRID) == 46
    assert decay_search.GRID[0] == 0.05 and decay_search.GRID[-1] == 0.95
    assert decay_search.snap(0.0601) == 0.07 and decay_search.snap(0.198) == 0.19 and decay_search.snap(0.99) == 0.95


def test_replayed_gp_starts_from_the_seed_points_and_finds_a_narrow_peak():
    peak = 0.71
    response = {d: 1.0 - abs(d - peak) for d in decay_search.GRID}
    proposed = decay_search.gp_proposals(response, 0, budget=20)
    # The seed points (cell midpoints 0.14, 0.32, 0.5, 0.68, 0.86) come first, snapped to the grid.
    assert proposed[:5] == [decay_search.snap(d) for d in (0.14, 0.32, 0.50, 0.68, 0.86)]
    assert len(proposed) == 20 and set(proposed) <= set(decay_search.GRID)
    found = decay_search.first_hit(proposed, {peak})
    assert found is not None and 5 < found <= 15
    assert decay_search.first_hit(proposed[:5], {peak}) is None


def test_mean_response_needs_every_grid_point(tmp_path):
    path = tmp_path / "response.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=decay_search.FIELDS)
        writer.writeheader()
        for seed, shift in ((0, 0.0), (1, 0.1)):
            for decay in decay_search.GRID:
                writer.writerow({"decay": decay, "seed": seed, "val_accuracy": decay + shift,
                                 "test_accuracy": 1 - decay, "seconds": 1})
    mean, sem, seeds = decay_search.mean_response(path)  # the replayed response is validation accuracy
    assert seeds == 2 and mean[0.05] == pytest.approx(0.10) and sem[0.95] == pytest.approx(0.05)
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[:-1]) + "\n")  # drop seed 1 at λ=0.95: the seed-mean is still defined
    assert decay_search.mean_response(path)[2] == 1
    path.write_text("\n".join(r for r in rows if not r.startswith("0.95,")) + "\n")
    with pytest.raises(SystemExit, match="λ=0.95"):
        decay_search.mean_response(path)
    path.write_text("decay,seed,accuracy,seconds\n0.05,0,0.5,1\n")  # recorded before the validation split
    with pytest.raises(SystemExit, match="no val_accuracy column"):
        decay_search.mean_response(path)


def _parity_rows(finals: dict[tuple[str, int], list[float]]) -> list[dict]:
    return [{"precision": p, "seed": s, "epoch": e + 1, "epochs": len(curve), "val_accuracy": v, "test_accuracy": v}
            for (p, s), curve in finals.items() for e, v in enumerate(curve)]


def test_parity_pairs_seeds_and_tests_the_difference_against_two_standard_errors():
    from bench import parity

    curves = {("fp32", 0): [0.3, 0.50, 0.600, 0.605], ("bf16", 0): [0.3, 0.5, 0.59, 0.600],
              ("fp32", 1): [0.3, 0.50, 0.600, 0.620], ("bf16", 1): [0.3, 0.5, 0.59, 0.600],
              ("fp32", 2): [0.3, 0.50, 0.600, 0.610]}  # seed 2 has no bf16 run: left out of the pairs
    result = parity.parity(_parity_rows(curves))
    assert result["seeds"] == [0, 1]
    assert result["differences"] == pytest.approx([-0.005, -0.02])
    assert result["mean"] == pytest.approx(-0.0125) and result["se"] == pytest.approx(0.0075)
    assert result["within"]  # |-1.25| <= 2 x 0.75 points
    assert result["plateau"]["fp32", 0] and not result["plateau"]["fp32", 1]  # +0.5 vs +2.0 points in the last quarter
    curves["bf16", 0], curves["bf16", 1] = [0.3, 0.5, 0.59, 0.565], [0.3, 0.5, 0.59, 0.560]
    result = parity.parity(_parity_rows(curves))
    assert result["mean"] == pytest.approx(-0.05) and result["se"] == pytest.approx(0.01)
    assert not result["within"]  # |-5| > 2 x 1 points


def _synthetic_pareto_response():
    from bench import pareto_search as ps

    # accuracy grows with epochs and falls with p; energy is T; every epoch takes one second
    response = {point: [((1 - point[0]) * e / ps.EPOCHS, float(point[1])) for e in range(1, ps.EPOCHS + 1)]
                for point in ps.grid()}
    return response, {point: [1.0] * ps.EPOCHS for point in ps.grid()}


def test_replayed_full_budget_search_spends_its_epochs_two_trials_at_a_time():
    from bench import pareto_search as ps

    response, durations = _synthetic_pareto_response()
    events = ps.search(response, durations, "full", 0, budget=2 * ps.EPOCHS)
    assert len(events) == 2 * ps.EPOCHS and [n for n, _ in events] == list(range(1, 2 * ps.EPOCHS + 1))
    finished = [(n, values) for n, values in events if values is not None]
    assert [n for n, _ in finished] == [2 * ps.EPOCHS - 1, 2 * ps.EPOCHS]  # both ran side by side to the end
    assert all(values in [r[-1] for r in response.values()] for _, values in finished)
    assert ps.snap({"p": 0.41, "T": 4, "decay": 0.19}) == (0.5, 4, 0.1)


def test_replayed_mo_asha_stops_trials_at_rungs_and_only_full_budget_trials_add_volume():
    from bench import pareto_search as ps
    from dashboards.pareto import hypervolume

    response, durations = _synthetic_pareto_response()
    budget = 12 * ps.EPOCHS
    full = ps.search(response, durations, "full", 1, budget)
    early = ps.search(response, durations, "mo_asha", 1, budget)
    finished = [values for _, values in early if values is not None]
    # stopped trials spend fewer epochs, so MO-ASHA starts more trials but finishes fewer at full budget
    assert 0 < len(finished) < sum(values is not None for _, values in full)
    reference = [0.0, 7.0]
    curve = ps.hypervolume_by_epoch(early, reference, budget)
    assert len(curve) == budget and curve == sorted(curve)  # a front only grows
    assert curve[-1] == pytest.approx(hypervolume(finished, [True, False], reference))
    assert ps.first_epoch_at(curve, curve[-1]) <= budget and ps.first_epoch_at(curve, curve[-1] + 1) is None


def test_pareto_response_needs_every_grid_point_for_every_epoch(tmp_path):
    from bench import pareto_search as ps
    from bench.recording import append_rows

    path = tmp_path / "response.csv"
    rows = [{"p": p, "T": T, "decay": d, "seed": 0, "epoch": e, "val_accuracy": 0.5, "test_accuracy": 0.5,
             "energy_mj": 0.001 * T, "seconds": e} for p, T, d in ps.grid() for e in range(1, ps.EPOCHS + 1)]
    append_rows(path, ps.FIELDS, rows[:-1])  # the last grid point lacks its last epoch
    with pytest.raises(SystemExit, match=r"p=0.9 T=6 λ=0.9 is not recorded for 16 epochs"):
        ps.read_response(path)
    append_rows(path, ps.FIELDS, rows[-1:])
    response, durations = ps.read_response(path)
    assert len(response) == 100 and response[(0.9, 6, 0.9)][-1] == (0.5, 0.006)
    assert durations[(0.1, 1, 0.1)] == [1.0] * ps.EPOCHS  # per-epoch seconds from the cumulative column
