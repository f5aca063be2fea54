"""MLflow for sweeps: one parent run per sweep, one child run per trial, the same names everywhere.

Logging happens on the driver (a Tune callback), so only the driver needs the tracking server, and a
trial's child run is found again by its `trial_id` tag after a driver restart: a resumed sweep never
makes a second run for a trial. Ray's MLflowLoggerCallback makes no parent and duplicates runs on
restore, and setup_mlflow leaves early-stopped trials RUNNING (DESIGN §7), hence this callback.
"""

import json
import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import runrecord
from runrecord import PARENT_TAG, TRIAL_TAG
from slt.config import make_config
from slt.errors import InputError


logger = logging.getLogger(__name__)

RETRY_EVERY_S = 5.0  # while MLflow does not answer, try the oldest held record again this often
OUTAGE_ENV = "SLT_TRACKING_OUTAGE_S"  # the sweep's bound, set by the engine for the (maybe restored) callback


class TrackingOutage(Exception):
    """MLflow did not answer for longer than the sweep's bound; the sweep stops and can be resumed."""

    def __init__(self, uri: str, seconds: float, reason: str):
        super().__init__(f"MLflow at {uri} has not answered for {seconds:.0f} s ({reason}); the sweep stopped "
                         "with its state saved: start the server and run the same command with --resume")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


_UNANSWERED = ("Max retries exceeded", "Connection refused", "Connection reset", "Connection aborted",
               "timed out", "Read timed out", "database is locked", "Failed to establish", "Remote end closed",
               "status code 502", "status code 503", "status code 504")


def in_chain(err: BaseException | None, match: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception in `err`'s chain (itself, its cause or context, ...) that `match`es, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if match(err):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def unanswered(err: BaseException) -> bool:
    """Whether an MLflow call failed because the store did not answer (down, unreachable, overloaded,
    locked), as opposed to refusing the write (a bad request, a deleted run) or a bug in the caller."""
    return in_chain(err, lambda e: isinstance(e, (ConnectionError, TimeoutError))
                    or any(s in str(e) for s in _UNANSWERED)) is not None


def deliver(limit_s: float, uri: str, *actions: Callable[[], object]) -> None:
    """Run the driver's own MLflow writes in order, retrying while the server does not answer, for up to
    `limit_s` in all (one outage is said once)."""
    outbox = Outbox(uri, limit_s)
    for action in actions:
        outbox.put(action)
    outbox.flush(wait=True)


class Outbox:
    """MLflow writes in the order they were made. A write that fails (the server is down, the database is
    locked) is held with every later one and tried again; the first failure and the recovery are said once
    each in the log. After `limit_s` seconds without an answer, TrackingOutage."""

    def __init__(self, uri: str, limit_s: float):
        self.uri, self.limit_s = uri, limit_s
        self.pending: deque[Callable[[], object]] = deque()
        self.down_since: float | None = None
        self.last_try = 0.0
        self.on_failure: Callable[[], None] = lambda: None  # e.g. forget cached server state

    def put(self, action: Callable[[], object]) -> None:
        self.pending.append(action)

    def flush(self, wait: bool = False) -> None:
        """Deliver what is held. Without `wait`, a down server is tried at most every RETRY_EVERY_S and the
        caller goes on; with it, this returns only once everything is delivered (or raises TrackingOutage)."""
        while self.pending:
            if self.down_since is not None and (waited := time.monotonic() - self.last_try) < RETRY_EVERY_S:
                if not wait:
                    return
                time.sleep(RETRY_EVERY_S - waited)
            self.last_try = time.monotonic()
            try:
                self.pending[0]()
            except Exception as err:
                if not unanswered(err):  # a rejected write or a bug: say it now, never retry it for minutes
                    raise
                self.on_failure()
                self._failed(err)
                if not wait:
                    return
                continue
            self.pending.popleft()
            if self.down_since is not None:
                logger.warning("sweep: MLflow at %s answers again after %.0f s; delivering the %d held records",
                               self.uri, time.monotonic() - self.down_since, len(self.pending) + 1)
                self.down_since = None

    def _failed(self, err: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            logger.warning("sweep: MLflow at %s does not answer (%s); holding its records and retrying every %.0f s "
                           "for up to %.0f s", self.uri, first_line(err), RETRY_EVERY_S, self.limit_s)
        if now - self.down_since > self.limit_s:
            raise TrackingOutage(self.uri, now - self.down_since, first_line(err)) from None


def check_reachable(uri: str) -> MlflowClient:
    """Fail in seconds, in one line, when the tracking server cannot be reached."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as err:  # connection refused, DNS, auth, bad URI: all mean "cannot track"
        raise InputError("tracking_uri", f"cannot reach MLflow at {uri} ({first_line(err)})") from None
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


def find_parent_run(client: MlflowClient, experiment: str, sweep: str) -> str | None:
    """The parent run of sweep `sweep` if one was made (a driver killed before it noted the id in sweep.json)."""
    runs = client.search_runs([experiment], filter_string=f"tags.sweep = '{sweep}'", max_results=1000)
    parents = [r.info.run_id for r in runs if PARENT_TAG not in r.data.tags]
    return parents[0] if parents else None


def experiment_id(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """The experiment's id, made if need be; it is marked a model-training experiment so that MLflow 3's UI
    opens it on its runs, not on the GenAI trace overview (an experiment of an older sweep is marked now,
    one a user gave another kind keeps it)."""
    kind = {runrecord.EXPERIMENT_KIND_TAG: runrecord.MODEL_TRAINING_KIND}
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_root, tags=kind)
    if runrecord.EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, *next(iter(kind.items())))
    return found.experiment_id


def share_columns(client: MlflowClient, experiment: str, key: str, searched, objectives) -> None:
    """A shared view of the experiment's runs table (an experiment tag the UI opens with ?viewStateShareKey=key):
    the dataset, the sweep's searched fields and method/seed as param columns, its objectives and accuracy,
    energy and epochs as metric columns (the last values), in that order."""
    params = [f"params.`{name}`" for name in dict.fromkeys(["method", *searched, "seed"])]
    metrics = [f"metrics.`{name}`" for name in dict.fromkeys([*objectives, *runrecord.SUMMARY_METRICS])]
    columns = ["attributes.`Dataset`", *params, *metrics]
    # the default order (newest first) keeps the trials under their sweep; sorted by a metric the UI lists them flat
    view = {"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns],
            "columnWidths": {"attributes.`Run Name`": 250}}  # 'mpslt p=0.5 λ=0.31 s0' whole
    client.set_experiment_tag(experiment, f"{runrecord.SHARED_VIEW_TAG}{key}", json.dumps(view))


def dataset_input(data: dict) -> DatasetInput:
    """A trial's dataset (runrecord.DATA_KEY of its results) as an MLflow dataset input: name, source, digest,
    and the sizes of its training / validation / test splits as the profile the UI shows."""
    profile = {"num_rows": data["train"], **{split: data[split] for split in ("train", "validation", "test")}}
    dataset = Dataset(name=data["name"], digest=data["digest"], source_type="local",
                      source=json.dumps({"uri": data["source"]}), profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def sweep_description(space, info: dict, best: str | None = None, report: str | None = None) -> str:
    """The parent run's description (Markdown, MLflow's note): search space, objectives, the trial chosen on
    validation with its test accuracy, and where the report is."""
    searched = ", ".join(f"`{name}` {p.type}" + (f" {p.values}" if hasattr(p, "values") else f" [{p.low}, {p.high}]")
                         for name, p in space.searched.items()) or "none"
    lines = [f"**{space.name}** ({info['profile']} profile): {space.description or 'a sweep'}", "",
             f"- search space `{info['file']}`; searched: {searched}; "
             f"{space.search.algorithm}" + (f" ({space.search.sampler})" if space.search.algorithm == "optuna" else ""),
             f"- objectives: {runrecord.objectives_text((o.metric, o.mode) for o in space.objectives)} "
             "(validation; test accuracy is recorded, never chooses)",
             f"- scheduler: {space.scheduler.type}; {space.num_samples} samples, {space.max_concurrent} at once"]
    if best:
        lines.append(f"- {best}")
    if report:
        lines.append(f"- report: `{report}` (also the `report/` artifacts of this run)")
    return "\n".join(lines)


class MlflowSweepCallback(tune.Callback):
    """Every trial event becomes MLflow writes, in order, through an Outbox: while the server does not
    answer they are held and retried (the trials go on), for up to `outage_limit_s` seconds."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, tags: dict[str, str],
                 outage_limit_s: float = 600.0, searched: tuple[str, ...] = ()):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.tags = tags
        self.outage_limit_s = outage_limit_s
        self.searched = tuple(searched)  # the fields the sweep varies: they name the child runs
        self._client = None
        self._outbox = None
        self._runs: dict[str, str] = {}  # trial_id -> MLflow run id
        self._steps: dict[str, set[int]] = {}  # run id -> epochs already logged (a resumed trial may repeat one)
        self._datasets: set[str] = set()  # run ids whose dataset input is logged

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; clients are not picklable
        return {**self.__dict__, "_client": None, "_outbox": None, "_runs": {}, "_steps": {}, "_datasets": set()}

    def __setstate__(self, state):  # Tuner.restore brings back the pickled callback, maybe an older version's
        self.__dict__.update({"outage_limit_s": 600.0, "searched": (), **state, "_client": None, "_outbox": None,
                              "_datasets": set()})

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            # a resumed sweep runs the callback Tune pickled: --tracking-outage-s reaches it through OUTAGE_ENV
            limit = float(os.environ.get(OUTAGE_ENV, self.outage_limit_s))
            self._outbox = Outbox(self.tracking_uri, limit)
            # a write that failed may still have landed: read the logged epochs again before the next one
            self._outbox.on_failure = self._steps.clear
        return self._outbox

    def _send(self, action: Callable[[], object]) -> None:
        self.outbox.put(action)
        self.outbox.flush()

    def on_step_end(self, iteration, trials, **info):
        if self.outbox.pending:
            self.outbox.flush()

    def on_experiment_end(self, trials, **info):
        self.outbox.flush(wait=True)

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
        cfg = make_config(**runrecord.run_fields(trial.config))
        params = cfg.model_dump()  # every field, defaults included
        if existing:  # a resumed or restarted trial: its run goes on, and no longer says why it stopped
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.client.set_tag(run_id, runrecord.STATUS_TAG, "running")
            if runrecord.REASON_TAG in existing[0].data.tags:
                self.client.delete_tag(run_id, runrecord.REASON_TAG)
            logged = existing[0].data.params  # made, but its params never arrived (an outage in between)
        else:
            name = runrecord.trial_run_name(cfg, self.searched)
            run = self.client.create_run(self.experiment, run_name=name, tags={
                **self.tags, PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id,
                runrecord.STATUS_TAG: "running",
                "method": str(params.get("method", "")), "model": str(params.get("model", ""))})
            run_id, logged = run.info.run_id, {}
        if not logged:
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._send(lambda: self._run_id(trial))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._send(lambda: self._run_id(trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed (its worker or node died, an exception) and Tune restarts it from its last checkpoint:
        the same child run goes on; it counts the restarts and says why."""
        restarts, reason = str(trial.run_metadata.num_failures), failure_reason(trial)
        self._send(lambda: self.client.log_batch(self._run_id(trial), tags=_tags(
            {"restarts": restarts, "restart_reason": reason})))

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
        values, timestamp = dict(result), int(result.get("timestamp", 0) * 1000)
        self._send(lambda: self._log_epoch(self._run_id(trial), values, step, timestamp))
        if isinstance(data := result.get(runrecord.DATA_KEY), dict):
            self._send(lambda: self._log_dataset(self._run_id(trial), data))

    def _log_dataset(self, run_id: str, data: dict) -> None:
        """The run's dataset input, once (MLflow keeps one input per dataset and run; a resume re-sends it)."""
        if run_id not in self._datasets:
            self.client.log_inputs(run_id, datasets=[dataset_input(data)])
            self._datasets.add(run_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        tags, checkpoint = runrecord.end_tags("finished", bool(last.get(runrecord.FULL_BUDGET_TAG)),
                                              epoch=last.get("epoch")), trial.checkpoint
        self._send(lambda: self.end_run(trial, checkpoint, tags, "FINISHED", backfill=True))

    def on_trial_error(self, iteration, trials, trial, **info):
        tags, checkpoint = runrecord.end_tags("failed", False, failure_reason(trial)), trial.checkpoint
        self._send(lambda: self.end_run(trial, checkpoint, tags, "FAILED"))

    def end_run(self, trial, checkpoint, tags: dict[str, str], status: str, backfill: bool = False) -> None:
        """Close a trial's run: epochs missing from it (backfill), its artifacts, its end tags and status."""
        run_id = self._run_id(trial)
        if backfill:
            self._backfill(run_id, checkpoint)
        self._log_artifacts(run_id, checkpoint)
        self.client.log_batch(run_id, tags=_tags(tags))
        self.client.set_terminated(run_id, status)

    def _backfill(self, run_id: str, checkpoint) -> None:
        """Epochs a trial reported while the driver was down (seen only in its final metrics.json)."""
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

    def _log_artifacts(self, run_id: str, checkpoint) -> None:
        if checkpoint is None:
            return
        directory = Path(checkpoint.path)
        for name in (runrecord.METRICS_FILE, runrecord.ENERGY_TABLE_FILE):
            if (directory / name).is_file():
                self.client.log_artifact(run_id, str(directory / name))


_LOGGED = (*runrecord.EPOCH_METRICS, "time_total_s")


def _tags(tags: dict[str, str]) -> list[RunTag]:
    return [RunTag(k, v) for k, v in tags.items()]


LOST_REASON = "the driver was killed before Tune recorded this trial; the resumed sweep ran another in its place"


def child_runs(client, experiment: str, parent_id: str, status: str) -> list:
    """The parent's child runs (one per trial) whose MLflow status is `status` (RUNNING, FINISHED, ...)."""
    return client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                                          f"attributes.status = '{status}'", max_results=50000)


def close_running_children(client, experiment: str, parent_id: str, trial_ids: set, status: str, reason: str) -> None:
    """End the parent's child runs still RUNNING, except those of `trial_ids`, as KILLED with `status` and
    `reason` (nothing is deleted). After a sweep they belong to trials a killed driver started after Tune's
    last snapshot ("lost": the resumed sweep does not know them); after a Ctrl-C, to the stopped trials
    ("interrupted": --resume continues them in the same runs)."""
    for run in child_runs(client, experiment, parent_id, "RUNNING"):
        if run.data.tags.get(TRIAL_TAG) in trial_ids:
            continue
        client.log_batch(run.info.run_id, tags=_tags(runrecord.end_tags(status, False, reason)))
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
