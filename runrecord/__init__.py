"""The vocabulary of a recorded run, in one place for the trainables, the sweep and the dashboards.

What a run is called wherever it is recorded: metric, param, tag and artifact names; what "finished
at full budget" and "comparable" mean; how a grid variant is packed into a Tune config and unpacked;
the default tracking URI and where the Optuna study lives beside it; and the one builder of a run's
final record (`metrics.json`), used by `slt train` and by the trainable alike.

Importing this module loads neither Ray nor torch (nor MLflow or pandas): the functions that read
runs take pandas frames or plain dicts, the record builder takes a `slt.train.TrainingRun`.
"""

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from slt.config import TrainConfig

# ---- names ----------------------------------------------------------------------------------------

METRICS_FILE = "metrics.json"  # a run's final record (final_record), in `slt train --out` and every trial
ENERGY_TABLE_FILE = "energy_layers.json"  # the per-layer energy table, a trial's second artifact
CHECKPOINT_FILE = "checkpoint.pt"  # `slt train`'s whole TrainingRun state
# a trial's Tune checkpoint folder: its TrainingRun state, and {"epoch": n} to pick the most advanced one
TRIAL_STATE_FILE = "state.pt"
TRIAL_PROGRESS_FILE = "progress.json"

# Metrics reported by a trial every epoch and logged to MLflow under these names (slt emits them so).
# val_*: the validation split carved from the training data; test_*: the test split. mean_firing_rate is
# the unweighted mean over LIF layers of their output spikes per neuron per time step, on validation.
EPOCH_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_accuracy", "train_loss",
                 "energy_mj", "energy_mj_sparse", "energy_mj_effective", "energy_mj_memory_aware",
                 "break_even_spike_rate", "mean_input_spike_rate", "mean_firing_rate", "pruned_fraction", "epoch", "epoch_time_s",
                 "full_budget")
# The ones a search space may name as an objective, and the direction that means "better". Searchers and
# schedulers read validation only: test metrics are recorded and reported, never used to choose.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "energy_mj": "min", "energy_mj_sparse": "min",
              "energy_mj_effective": "min", "energy_mj_memory_aware": "min", "mean_firing_rate": "min"}
# measured by a trial on its energy batch (slt.energy): the paper's convention, scaled by kept weights, effective
# operations, memory-aware; beside them the SNN's break-even spike rate against its ANN and its input spike rate
ENERGY_METRICS = ("energy_mj", "energy_mj_sparse", "energy_mj_effective", "energy_mj_memory_aware")
ESTIMATES = {"energy_mj": "paper convention (dense connectivity)", "energy_mj_sparse": "scaled by kept weights",
             "energy_mj_effective": "effective operations", "energy_mj_memory_aware": "memory-aware (Lemaire et al.)"}
SPIKE_RATE_METRICS = ("break_even_spike_rate", "mean_input_spike_rate")
VAL_ACCURACY = "val_accuracy"  # what chooses: the default objective, "best" trials, the best λ, fronts
ACCURACY = "test_accuracy"  # what tables, curves and claims report (of what was chosen on validation)
PARETO_OBJECTIVES = ((VAL_ACCURACY, "max"), ("energy_mj", "min"))  # the front a report and `slt export pareto` rank
# Runs recorded before the metrics took slt's names called test accuracy and loss "accuracy" and "loss".
LEGACY_METRICS = {"accuracy": "test_accuracy", "loss": "test_loss"}

# MLflow's MLFLOW_PARENT_RUN_ID (mlflow.utils.mlflow_tags), spelt out so that reading it needs no MLflow import.
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "trial_id"
STATUS_TAG = "status"  # running, finished, failed, lost
REASON_TAG = "reason"  # why a trial failed or was lost
FULL_BUDGET_TAG = "full_budget"
EARLY_STOPPED_TAG = "early_stopped"
STOPPED_AT_TAG = "stopped_at_epoch"  # the rung (epoch) a scheduler stopped an early-stopped trial at
TEXT_TAGS = (STATUS_TAG, REASON_TAG, TRIAL_TAG, STOPPED_AT_TAG)
BOOLEAN_TAGS = (FULL_BUDGET_TAG, EARLY_STOPPED_TAG)
RUN_FIELDS = tuple(TrainConfig.model_fields)  # every run-config field is an MLflow param of the same name

VARIANT = "variant"  # the Tune config key holding one grid variant (grid values and seed)
DATA_KEY = "data"  # a trial result's description of its dataset (slt.train.TrainingRun.data_description)

# MLflow 3's experiment kind: model training (not GenAI). MLflow 3.17.2's UI decides by its own GenAI / Model
# training switch, hence ui_url's workflowType; the tag says what the experiment is to MLflow and to later UIs
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
SYMBOLS = {"decay": "λ"}  # how run names write a field (the rest by their own names)
# The MLflow UI's runs table reads its columns from a shared view: an experiment tag under this prefix, named by
# the URL's viewStateShareKey (MLflow 3.17; the view state may be plain JSON)
SHARED_VIEW_TAG = "mlflow.sharedViewState."
SUMMARY_METRICS = ("val_accuracy", "test_accuracy", "energy_mj", "epoch")  # the runs table's metric columns


def ui_url(server: str, experiment_id: str, view_key: str | None = None) -> str:
    """The MLflow UI page of an experiment's runs in the model-training view (MLflow 3.17 opens the GenAI
    overview unless the URL or the user's last choice says otherwise), with the sweep's columns."""
    url = f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return url + (f"&viewStateShareKey={view_key}" if view_key else "")


def trial_run_name(cfg: TrainConfig, searched) -> str:
    """A child run's name: its method, the values of the fields its sweep varies that this method uses (a
    dense baseline has no p, an ANN no T or λ), its seed; e.g. 'mpslt p=0.5 λ=0.31 s0' (3 significant digits)."""
    unused = {"p"} if not cfg.is_ticket else set()
    unused |= {"q"} if not cfg.method_info.patch_pruning else set()
    unused |= {"T", "decay"} if not cfg.spiking else set()
    fields = cfg.model_dump()

    def value(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    shown = [f"{SYMBOLS.get(name, name)}={value(fields[name])}" for name in dict.fromkeys(searched)
             if name not in ("method", "seed", *unused) and fields.get(name) is not None]
    return " ".join([cfg.method, *shown, f"s{cfg.seed}"])


def objectives_text(objectives) -> str:
    """((metric, mode), ...) -> 'metric:mode,...', as `slt export pareto --objectives` takes them."""
    return ",".join(f"{metric}:{mode}" for metric, mode in objectives)


# ---- what a run's status means --------------------------------------------------------------------

def full_budget(epoch: int, total_epochs: int) -> bool:
    """Whether a run that completed `epoch` epochs has trained its whole budget (every phase)."""
    return epoch >= total_epochs


def end_tags(status: str, full: bool, reason: str | None = None, epoch: int | None = None) -> dict[str, str]:
    """The tags that close a child run: its status, whether it ran its full budget, whether it was stopped
    early and, if it was, after how many epochs (`epoch`: its last)."""
    early = status == "finished" and not full
    tags = {STATUS_TAG: status, FULL_BUDGET_TAG: str(full).lower(), EARLY_STOPPED_TAG: str(early).lower()}
    if early and epoch is not None:
        tags[STOPPED_AT_TAG] = str(int(epoch))
    return {**tags, REASON_TAG: reason} if reason else tags


def finished_full_budget(runs):
    """Boolean mask over a runs frame (dashboards.runs.load_runs): FINISHED and trained its whole budget."""
    return (runs["run_status"] == "FINISHED") & runs[FULL_BUDGET_TAG].astype(bool)


def comparable(runs, metrics: tuple[str, ...] = (ACCURACY,)):
    """The runs whose values can be compared: finished at full budget with every metric in `metrics`.
    An early-stopped trial's values are those of a shorter training, a failed one's of none."""
    if any(metric not in runs for metric in metrics):  # no trial has reported it yet
        return runs.iloc[:0]
    return runs[finished_full_budget(runs) & runs[list(metrics)].notna().all(axis=1)]


# ---- grid variants --------------------------------------------------------------------------------

def pack_variants(params: dict, variants: list[dict], grid_search) -> dict:
    """`params` with the fields that `variants` set moved into one grid axis of whole variants
    (`grid_search`: Tune's), so that grid values and seeds vary together, not as a product. A variant
    that leaves a moved field out keeps the value of `params` (e.g. the tickets keep the base lr where
    only the dense baselines of `include` set their own)."""
    moved = {k: v for k, v in params.items() if any(k in variant for variant in variants)}
    packed = {k: v for k, v in params.items() if k not in moved}
    return {**packed, VARIANT: grid_search([{**moved, **variant} for variant in variants])}


def run_fields(config: dict) -> dict:
    """The run-config fields of a trial config, with its grid variant merged in."""
    merged = {**config, **config.get(VARIANT, {})}
    return {k: merged[k] for k in RUN_FIELDS if k in merged}


# ---- where runs are recorded ------------------------------------------------------------------------

def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite file in ./mlruns (made absolute so that every process agrees)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path("mlruns").resolve()
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def checkpoint_epochs(directory: Path) -> int:
    """The epochs a trial's checkpoint folder holds (its progress file), or -1 if it cannot be read."""
    try:
        return json.loads((Path(directory) / TRIAL_PROGRESS_FILE).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:` URI (sqlite:///relative or sqlite:////absolute), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(unquote(parsed.path[1:]))  # "/rel/x.db" -> rel/x.db, "//abs/x.db" -> /abs/x.db


def optuna_storage(tracking_uri: str, storage_root: Path) -> str:
    """One Optuna study file per tracking store: beside a SQLite MLflow database, else at the Tune
    storage root (/ray_results/optuna.db in docker-compose, where optuna-dashboard opens it)."""
    database = sqlite_path(tracking_uri)
    folder = database.resolve().parent if database is not None else Path(storage_root)
    return f"sqlite:///{folder / 'optuna.db'}"


# ---- the record of a run ------------------------------------------------------------------------------

def epoch_metrics(entry: dict, total_epochs: int, energy: dict | None, pruned_fraction: float) -> dict:
    """One epoch as reported to Tune and logged to MLflow: slt's history entry (already under its final
    names) plus energy per image, the pruned fraction and whether the budget is complete."""
    values = {k: entry[k] for k in EPOCH_METRICS if k in entry}
    values.update(phase=entry["phase"], mean_firing_rate=entry.get("mean_firing_rate") or 0.0,
                  pruned_fraction=pruned_fraction, full_budget=full_budget(entry["epoch"], total_epochs))
    if energy is not None:
        values.update({name: energy[name] for name in ENERGY_METRICS})
        values.update({name: energy[name] for name in SPIKE_RATE_METRICS if energy.get(name) is not None})
    return values


def final_record(run, energy: dict, wall_time_s: float | None = None) -> dict:
    """metrics.json of a finished run (a slt.train.TrainingRun): its config, summary, energy totals and
    per-layer table, timing and every epoch's metrics."""
    record = {"config": run.cfg.model_dump(), **run.summary(),
              "energy": {k: v for k, v in energy.items() if k not in ("layers", "neurons")},
              "energy_layers": energy["layers"], "energy_neurons": energy.get("neurons", []),
              "macs": energy["macs"], "history": run.history}
    if wall_time_s is not None:
        record["wall_time_s"] = wall_time_s
    return record
