"""MLflow for sweeps: one parent run per sweep, one child run per trial, the same names everywhere.

Logging happens on the driver (a Tune callback), so only the driver needs the tracking server, and a
trial's child run is found again by its `trial_id` tag after a driver restart: a resumed sweep never
makes a second run for a trial. Ray's MLflowLoggerCallback makes no parent and duplicates runs on
restore, and setup_mlflow leaves early-stopped trials RUNNING (DESIGN §7), hence this callback.
"""

import json
import os
import subprocess
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import runrecord
from runrecord import PARENT_TAG, TRIAL_TAG
from slt.config import make_config
from slt.errors import InputError


def check_reachable(uri: str) -> MlflowClient:
    """Fail in seconds, in one line, when the tracking server cannot be reached."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as err:  # connection refused, DNS, auth, bad URI: all mean "cannot track"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError("tracking_uri", f"cannot reach MLflow at {uri} ({reason})") from None
    return client


def code_version() -> str:
    """The git commit of this checkout (with -dirty), or the package version outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    from slt import __version__

    return sha or __version__


def sweep_tags(sweep: str, space_name: str, info: dict) -> dict[str, str]:
    """Tags that say which sweep, search space (file and hash), profile and code a run belongs to."""
    return {"sweep": sweep, "profile": info["profile"], "search_space": space_name, "search_space_file": info["file"],
            "search_space_sha256": info["sha256"], "code_version": code_version()}


def experiment_id(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root)


class MlflowSweepCallback(tune.Callback):
    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, tags: dict[str, str]):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.tags = tags
        self._client = None
        self._runs: dict[str, str] = {}  # trial_id -> MLflow run id
        self._steps: dict[str, set[int]] = {}  # run id -> epochs already logged (a resumed trial may repeat one)

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; clients are not picklable
        return {**self.__dict__, "_client": None, "_runs": {}, "_steps": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        existing = self.client.search_runs(
            [self.experiment], filter_string=f"tags.{TRIAL_TAG} = '{trial.trial_id}' and "
                                             f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'", max_results=1)
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            params = make_config(**runrecord.run_fields(trial.config)).model_dump()  # every field, defaults included
            run = self.client.create_run(self.experiment, run_name=f"{trial.trial_id}", tags={
                **self.tags, PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id,
                runrecord.STATUS_TAG: "running",
                "method": str(params.get("method", "")), "model": str(params.get("model", ""))})
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def _logged_steps(self, run_id: str) -> set[int]:
        if run_id not in self._steps:
            self._steps[run_id] = {m.step for m in self.client.get_metric_history(run_id, "epoch")}
        return self._steps[run_id]

    def _log_epoch(self, run_id: str, values: dict, step: int, timestamp: int) -> None:
        """Log one epoch's metrics once: a trial resumed after a driver crash may report an epoch again."""
        if step in self._logged_steps(run_id):
            return
        metrics = [Metric(k, float(v), timestamp, step) for k, v in values.items()
                   if k in _LOGGED and isinstance(v, (int, float)) and not isinstance(v, bool)]
        metrics.append(Metric(runrecord.FULL_BUDGET_TAG, float(bool(values.get(runrecord.FULL_BUDGET_TAG))), timestamp,
                              step))
        self.client.log_batch(run_id, metrics=metrics)
        self._steps[run_id].add(step)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self._log_epoch(self._run_id(trial), result, step, int(result.get("timestamp", 0) * 1000))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        full = bool((trial.last_result or {}).get(runrecord.FULL_BUDGET_TAG))
        self._backfill(run_id, trial)
        self._log_artifacts(run_id, trial)
        self.client.log_batch(run_id, tags=_tags(runrecord.end_tags("finished", full)))
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        self.client.log_batch(run_id, tags=_tags(runrecord.end_tags("failed", False, failure_reason(trial))))
        self._log_artifacts(run_id, trial)
        self.client.set_terminated(run_id, "FAILED")

    def _backfill(self, run_id: str, trial) -> None:
        """Epochs a trial reported while the driver was down (seen only in its final metrics.json)."""
        checkpoint = trial.checkpoint
        summary = Path(checkpoint.path) / runrecord.METRICS_FILE if checkpoint is not None else None
        if summary is None or not summary.is_file():
            return
        record = json.loads(summary.read_text())
        history = record.get("history", [])
        total = record.get("total_epochs", len(history))
        pruned = record.get("sparsity", {}).get("pruned_fraction", 0.0)
        for entry in history:
            self._log_epoch(run_id, runrecord.epoch_metrics(entry, total, None, pruned), int(entry["epoch"]),
                            int(time.time() * 1000))

    def _log_artifacts(self, run_id: str, trial) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        directory = Path(checkpoint.path)
        for name in (runrecord.METRICS_FILE, runrecord.ENERGY_TABLE_FILE):
            if (directory / name).is_file():
                self.client.log_artifact(run_id, str(directory / name))


_LOGGED = (*runrecord.EPOCH_METRICS, "time_total_s")


def _tags(tags: dict[str, str]) -> list[RunTag]:
    return [RunTag(k, v) for k, v in tags.items()]


def close_lost_trials(client, experiment: str, parent_id: str, trial_ids: set) -> None:
    """Child runs still RUNNING after the sweep belong to trials a killed driver started after Tune's
    last snapshot; the resumed sweep does not know them. Close them (nothing is deleted), saying why."""
    running = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                                              "attributes.status = 'RUNNING'", max_results=10000)
    for run in running:
        if run.data.tags.get(TRIAL_TAG) in trial_ids:
            continue
        client.log_batch(run.info.run_id, tags=_tags(runrecord.end_tags(
            "lost", False, "the driver was killed before Tune recorded this trial; the resumed sweep ran "
                           "another in its place")))
        client.set_terminated(run.info.run_id, "KILLED")


def failure_reason(trial) -> str:
    """The last line of a failed trial's error (e.g. 'FloatingPointError: training loss is nan ...')."""
    text = ""
    if trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:500]


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
