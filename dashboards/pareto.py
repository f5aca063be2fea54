"""Pareto fronts over any metric columns with directions, computed by moocore (DESIGN §7)."""

import moocore
import numpy as np
import pandas as pd

from runrecord import PARETO_OBJECTIVES, finished_full_budget, objectives_text
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
