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
