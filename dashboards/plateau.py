"""Learning curves of a sweep and whether each configuration trained to a plateau.

A run has reached a plateau when its validation accuracy moves by less than PLATEAU_POINTS over the
last quarter of its epochs (a larger gain: still rising; a larger loss: falling). The gain compares the mean of the last WINDOW epochs with the mean of the WINDOW
epochs that end where the last quarter starts. The means damp the epoch-to-epoch noise of a small
validation split. A configuration (method, p, ... over its seeds) is at a plateau when the mean gain of
its seeds is. Validation accuracy decides; test accuracy is never read here.
"""

import math

import numpy as np
import pandas as pd

from dashboards.runs import read_fields, reads
from runrecord import VAL_ACCURACY, comparable

PLATEAU_POINTS = 1.0  # accuracy points (percent) gained over the last quarter below which training has levelled off
WINDOW = 4  # epochs averaged at each end of the last quarter
PLATEAU_TEXT = (f"Validation accuracy gained over the last quarter of the epochs, in points, mean ± std over seeds: "
                f"the mean of the last {WINDOW} epochs minus the mean of the {WINDOW} before the last quarter (fewer "
                f"where a quarter is shorter). A plateau moves by less than {PLATEAU_POINTS:g} point "
                "(dashboards/plateau.py).")


def quarter_gain(values) -> float:
    """Points (percent) gained over the last quarter of a run's per-epoch accuracies (fractions, epoch 1
    first): mean of the last w epochs minus the mean of the w that end where the last quarter starts,
    w = min(WINDOW, the quarter's length). NaN for a run too short to have epochs before its last quarter."""
    values = np.asarray(values, dtype=float)
    quarter = math.ceil(len(values) / 4)
    start = len(values) - quarter  # index of the last quarter's first epoch
    w = min(WINDOW, quarter, start)
    if w < 1:
        return math.nan
    return 100 * (values[-w:].mean() - values[start - w:start].mean())


def plateau_table(runs: pd.DataFrame, history: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per configuration (the `by` columns) of the finished full-budget runs: epochs, seeds n,
    mean final validation accuracy (%), the last-quarter gain's mean and std over seeds (points), and
    `trend` (trend()); a field the method does not read is empty. `history`: run_id, epoch, val_accuracy
    (dashboards.runs.epoch_history)."""
    done = read_fields(comparable(runs, (VAL_ACCURACY,)), by)
    gains = {run_id: quarter_gain(group.sort_values("epoch")[VAL_ACCURACY])
             for run_id, group in history.groupby("run_id")}
    rows = done.assign(gain=done["run_id"].map(gains), final=100 * done[VAL_ACCURACY],
                       epoch=done["run_id"].map(history.groupby("run_id")["epoch"].max()))
    table = rows.groupby(by, dropna=False).agg(
        epochs=("epoch", "max"), n=("gain", "count"), val_accuracy_final=("final", "mean"),
        gain_points=("gain", "mean"), gain_points_std=("gain", "std")).reset_index()
    table["trend"] = table["gain_points"].map(trend)
    return table


def trend(gain: float) -> str:
    """'plateau' (|gain| < PLATEAU_POINTS), 'rising', 'falling', or 'too short' (no gain measured)."""
    if math.isnan(gain):
        return "too short"
    return "plateau" if abs(gain) < PLATEAU_POINTS else "rising" if gain > 0 else "falling"


def to_markdown(table: pd.DataFrame) -> str:
    """The plateau table as Markdown: gain as mean ± std (n)."""
    by = [c for c in table.columns if c not in ("epochs", "n", "val_accuracy_final", "gain_points",
                                                "gain_points_std", "trend")]
    lines = ["| " + " | ".join([*by, "epochs", "final val %", "last-quarter gain (points)", "trend"]) + " |",
             "|" + "---|" * (len(by) + 4)]
    for index, row in table.iterrows():
        spread = "" if pd.isna(row["gain_points_std"]) else f" ± {row['gain_points_std']:.1f}"
        cells = [("None" if reads(table.loc[[index]], c).iloc[0] else "") if pd.isna(row[c])  # None: unset; "": unread
                 else f"{row[c]:g}" if isinstance(row[c], float) else str(row[c]) for c in by]
        gain = "—" if pd.isna(row["gain_points"]) else f"{row['gain_points']:+.1f}{spread} (n = {row['n']})"
        lines.append("| " + " | ".join([*cells, f"{row['epochs']:.0f}", f"{row['val_accuracy_final']:.1f}", gain,
                                        row["trend"]]) + " |")
    return "\n".join(lines) + "\n"
