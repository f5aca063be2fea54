"""Pareto fronts over any metric columns with directions, computed by moocore (DESIGN §7)."""

import moocore
import numpy as np
import pandas as pd

from runrecord import (EARLY_STOPPED_TAG, FULL_BUDGET_TAG, PARETO_OBJECTIVES, TRIAL_TAG, finished_full_budget,
                       objectives_text)
from slt.errors import InputError


def parse_objectives(text: str, columns) -> list[tuple[str, str]]:
    """'val_accuracy:max,energy_mj:min' -> [('val_accuracy', 'max'), ('energy_mj', 'min')], checked against `columns`
    (test metrics never rank runs)."""
    result = []
    for item in text.split(","):
        name, _, mode = item.strip().partition(":")
        if mode not in ("max", "min"):
            raise InputError("objectives", f"{item.strip()!r} needs a direction; write METRIC:max or METRIC:min")
        if name.startswith("test_"):
            raise InputError("objectives", f"{name} is measured on the test set, which is reported but never ranks "
                                           "runs; rank on validation (e.g. val_accuracy), test accuracy is a column")
        if name not in columns:
            raise InputError("objectives", f"no metric {name!r} in the runs; metrics: {', '.join(sorted(columns))}")
        result.append((name, mode))
    if len(result) < 2:
        raise InputError("objectives", "a Pareto front needs at least two objectives, e.g. "
                         + objectives_text(PARETO_OBJECTIVES))
    return result


def pareto_table(runs: pd.DataFrame, objectives: list[tuple[str, str]], *,
                 include_early_stopped: bool = False) -> pd.DataFrame:
    """Every run with `is_pareto` and `front_rank` (1 = the front), over finished runs.

    Only full-budget runs are ranked unless `include_early_stopped` (an ASHA-stopped trial's early
    values would otherwise dominate); unranked runs get rank NaN and is_pareto False. Runs with the
    same objective values are collapsed: the first stays on the front, its duplicates are marked.
    """
    table = runs.copy()
    table.attrs["objectives"] = [tuple(o) for o in objectives]  # what was ranked (figures read it)
    names = [name for name, _ in objectives]
    eligible = (table["run_status"] == "FINISHED") & table[names].notna().all(axis=1)
    if not include_early_stopped:
        eligible &= finished_full_budget(table)
    table["ranked_on"] = "full budget only" if not include_early_stopped else "all finished runs"
    table["duplicate_of"] = None
    table["is_pareto"] = False
    table["front_rank"] = np.nan
    candidates = table[eligible].drop_duplicates(subset=names)
    for index, row in table[eligible].iterrows():
        if index not in candidates.index:
            same = candidates[(candidates[names] == row[names]).all(axis=1)]
            table.at[index, "duplicate_of"] = same["run_id"].iloc[0]
    if len(candidates):
        points = candidates[names].to_numpy(dtype=float)
        maximise = [mode == "max" for _, mode in objectives]
        table.loc[candidates.index, "front_rank"] = moocore.pareto_rank(points, maximise=maximise) + 1
        table.loc[candidates.index, "is_pareto"] = moocore.is_nondominated(points, maximise=maximise)
    return table


def reference_point(points, maximise) -> np.ndarray:
    """The hypervolume's reference point: each objective's worst value over `points`, moved outward by a tenth
    of its range (of its magnitude where all values are equal, of 1 where that is 0 too), so that every
    point, the extremes included, adds volume."""
    values = np.asarray(points, dtype=float)
    sign = np.where(np.asarray(maximise), -1.0, 1.0)  # every objective as "lower is better"
    signed = values * sign
    margin = np.ptp(signed, axis=0)
    margin = np.where(margin > 0, margin, np.abs(signed.max(axis=0)))
    margin = np.where(margin > 0, margin, 1.0)
    return (signed.max(axis=0) + 0.1 * margin) * sign


def hypervolume(points, maximise, reference) -> float:
    """moocore's hypervolume of `points` against `reference` (0 for no points)."""
    values = np.asarray(points, dtype=float).reshape(-1, len(reference))
    return float(moocore.hypervolume(values, ref=reference, maximise=list(maximise))) if len(values) else 0.0


def hypervolume_curve(table: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """The trials in the order they ended, with the epochs spent so far (every trial's, stopped ones too) and
    the hypervolume of the front of the full-budget trials so far; the reference point (reference_point over
    the full-budget trials) is in `attrs["reference"]` (None where no full-budget trial has every objective)."""
    names = [name for name, _ in objectives]
    maximise = [mode == "max" for _, mode in objectives]
    if not {"end_time", "epoch", *names} <= set(table.columns):  # runs recorded without them: no curve
        table = table.iloc[:0].reindex(columns=[*table.columns, *{"end_time", "epoch", *names} - set(table.columns)])
    ended = table[table["run_status"].isin(["FINISHED", "FAILED"]) & table["end_time"].notna()]
    ended = ended.sort_values("end_time")
    ranked = finished_full_budget(ended) & ended[names].notna().all(axis=1)
    curve = ended[["run_id", TRIAL_TAG, "run_status", FULL_BUDGET_TAG, EARLY_STOPPED_TAG, *names]].copy()
    curve["epochs_spent"] = ended["epoch"].fillna(0).cumsum().to_numpy()
    curve["ranked"] = ranked.to_numpy()
    if not ranked.any():
        curve["hypervolume"] = 0.0
        curve.attrs["reference"] = None
        return curve.reset_index(drop=True)
    reference = reference_point(ended.loc[ranked, names].to_numpy(float), maximise)
    points = ended[names].to_numpy(float)
    curve["hypervolume"] = [hypervolume(points[: i + 1][ranked.to_numpy()[: i + 1]], maximise, reference)
                            for i in range(len(ended))]
    curve.attrs["reference"] = dict(zip(names, map(float, reference)))
    return curve.reset_index(drop=True)


def reference_text(curve: pd.DataFrame) -> str:
    """A hypervolume curve's reference point as 'val_accuracy 0.58, energy_mj 2.1' (figure and index)."""
    return ", ".join(f"{name} {value:.4g}" for name, value in curve.attrs["reference"].items())
