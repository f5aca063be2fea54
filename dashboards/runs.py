"""A sweep's MLflow runs -> one typed pandas DataFrame, a row per trial."""

import math
import numbers

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from slt.config import TrainConfig
from slt.errors import InputError
from slt.methods import METHODS
from runrecord import BOOLEAN_TAGS, LEGACY_METRICS, PARENT_TAG, RUN_FIELDS, TEXT_TAGS, TRIAL_TAG, VAL_ACCURACY, comparable


def _typed(name: str, values: pd.Series) -> pd.Series:
    """MLflow params are strings; give each run-config field its declared type."""
    annotation = TrainConfig.model_fields[name].annotation
    if annotation in (int, float) or str(annotation).startswith(("int |", "float |")):
        return pd.to_numeric(values, errors="coerce")
    if annotation is bool:
        return values.map({"True": True, "False": False, "true": True, "false": False})
    return values.replace({"None": None})


def at(rows: pd.DataFrame, column: str, value: float) -> pd.DataFrame:
    """The rows whose `column` equals `value` (numbers with a tolerance: params come back from MLflow as text)."""
    return rows[equals(rows[column], value)]


def reads(rows: pd.DataFrame, column: str) -> pd.Series:
    """Whether each row's method reads run-config field `column` (slt.methods Method.reads; unknown methods do)."""
    return rows["method"].map(lambda m: m not in METHODS or METHODS[m].reads(column)).astype(bool)


def read_fields(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`rows` with each of `columns` emptied (NaN) where the row's method does not read that field, so a dense
    twin's recorded default p (or an ANN's T) is neither shown as a setting nor splits its configurations."""
    rows = rows.copy()
    for column in columns:
        if column != "method" and column in rows:
            rows[column] = rows[column].where(reads(rows, column))
    return rows


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not math.isnan(value)


def equals(values: pd.Series, value) -> pd.Series:
    """Which of `values` equal `value`: numbers within a tolerance (params come back as text), None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return values.isna()
    if _number(value):
        return pd.to_numeric(values, errors="coerce").sub(value).abs() < 1e-9
    return values == value


def _choose(values: pd.Series, wanted):
    """`wanted` where some of `values` equal it, else the value most of them have (ties: the nearest `wanted`
    for numbers, then the larger; else the first in order)."""
    if equals(values, wanted).any():
        return wanted
    counts = values.value_counts(dropna=False)
    top = list(counts[counts == counts.max()].index)
    if _number(wanted) and all(_number(v) for v in top):
        return min(top, key=lambda v: (abs(v - wanted), -v))
    return sorted(top, key=str)[0]


def one_configuration(rows: pd.DataFrame, preferred: dict | None = None,
                      by: tuple[str, ...] = ("method",)) -> tuple[pd.DataFrame, dict]:
    """Per method, the runs of one configuration, so that a table cell or an energy bar pools seeds and not
    settings (a timestep sweep's MPSLT runs at T = 1 … 8 are five cells, not one): for each run-config field
    a method reads and its runs differ in (the seed aside), the `preferred` value, else TrainConfig's default,
    where runs used it; else the value most runs used. `by`: the fields that stay apart (a table's
    dataset and model columns). Returns the rows kept and, per group of `by` (its values joined by spaces:
    'mpslt'), each field chosen as {field: (value chosen, every value the runs had)}."""
    preferred = preferred or {}
    kept, chosen = [], {}
    for group, mine in rows.groupby(list(by), sort=False, dropna=False):
        picks = {}
        for field in RUN_FIELDS:
            if field in (*by, "seed") or field not in mine or not reads(mine.head(1), field).all():
                continue
            if mine[field].nunique(dropna=False) < 2:
                continue
            wanted = preferred.get(field, TrainConfig.model_fields[field].default)
            value = _choose(mine[field], wanted)
            picks[field] = (value, sorted(mine[field].unique(), key=lambda v: (not _number(v), v if _number(v) else str(v))))
            mine = mine[equals(mine[field], value)]
        kept.append(mine)
        chosen[" ".join(map(str, group))] = picks
    return (pd.concat(kept) if kept else rows.iloc[:0]), chosen


def setting_text(picks: dict) -> str:
    """'T=4 (of 1, 2, 4, 6, 8)' for one method's choices from one_configuration, '' where none was made."""
    def shown(value):
        return f"{value:g}" if _number(value) else "None" if pd.isna(value) else str(value)
    return ", ".join(f"{field}={shown(value)} (of {', '.join(map(shown, values))})"
                     for field, (value, values) in picks.items())


def budget(*cells: pd.DataFrame) -> str:
    """The epochs the compared runs trained ("4", or "3 / 4" when they differ), from their last `epoch`."""
    values = sorted({int(v) for cell in cells if "epoch" in cell for v in cell["epoch"].dropna()})
    return " / ".join(map(str, values)) if values else "?"


def parent_run(client: MlflowClient, experiment: str, parent_run_id: str | None = None):
    """The sweep's parent run: the given one, else the latest parent in the experiment."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise InputError("experiment", f"no MLflow experiment {experiment!r}; there are: {', '.join(names) or 'none'}")
    if parent_run_id:
        return client.get_run(parent_run_id), found
    parents = [r for r in client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"],
                                             max_results=1000) if PARENT_TAG not in r.data.tags]
    if not parents:
        raise InputError("experiment", f"experiment {experiment!r} has no sweep (parent) run")
    return parents[0], found


def load_runs(experiment: str, tracking_uri: str, parent_run_id: str | None = None) -> tuple[pd.DataFrame, object]:
    """Every trial (child run) of a sweep: params typed as in TrainConfig, metrics (last values), tags."""
    client = MlflowClient(tracking_uri)
    parent, found = parent_run(client, experiment, parent_run_id)
    children = client.search_runs([found.experiment_id], max_results=10000,
                                  filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    rows = []
    for run in children:
        row = {"run_id": run.info.run_id, "run_status": run.info.status, "end_time": run.info.end_time}
        row.update({f: run.data.params.get(f) for f in RUN_FIELDS})
        row.update({LEGACY_METRICS.get(k, k): v for k, v in run.data.metrics.items()})
        row.update({t: run.data.tags.get(t) for t in TEXT_TAGS + BOOLEAN_TAGS})
        rows.append(row)
    columns = ["run_id", "run_status", "end_time", *RUN_FIELDS, *TEXT_TAGS, *BOOLEAN_TAGS]
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=[*columns, *sorted(c for c in frame.columns if c not in columns)])
    for name in RUN_FIELDS:
        frame[name] = _typed(name, frame[name])
    for tag in BOOLEAN_TAGS:
        frame[tag] = frame[tag].map({"true": True, "false": False}).fillna(False).astype(bool)
    return frame.sort_values(TRIAL_TAG, ignore_index=True), parent


def energy_layers(tracking_uri: str, runs: pd.DataFrame) -> tuple[pd.Series, list[dict]] | None:
    """The per-layer energy table (the trial's energy_layers.json artifact) of the full-budget trial best on
    validation accuracy, with its row of `runs`; None where no such trial or table exists."""
    import json
    import tempfile

    from runrecord import ENERGY_TABLE_FILE, VAL_ACCURACY, comparable

    done = comparable(runs, (VAL_ACCURACY,))
    if done.empty:
        return None
    best = done.loc[done[VAL_ACCURACY].idxmax()]
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = MlflowClient(tracking_uri).download_artifacts(best["run_id"], ENERGY_TABLE_FILE, scratch)
            return best, json.loads(open(path).read())
        except Exception:  # noqa: BLE001 (no artifact: a run recorded without it, or an unreachable store)
            return None


def epoch_history(tracking_uri: str, runs: pd.DataFrame, metric: str = VAL_ACCURACY) -> pd.DataFrame:
    """`metric` after every epoch of each finished full-budget trial of `runs`: columns run_id, epoch,
    and the metric (MLflow's metric history, whose steps are epochs; a resumed trial logs each epoch once)."""
    client = MlflowClient(tracking_uri)
    rows = [{"run_id": run_id, "epoch": m.step, metric: m.value}
            for run_id in comparable(runs, (metric,))["run_id"] for m in client.get_metric_history(run_id, metric)]
    return pd.DataFrame(rows, columns=["run_id", "epoch", metric])
