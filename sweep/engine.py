"""The engine: a validated search space -> a Ray Tune Tuner (search algorithm, scheduler, MLflow, storage).

A sweep runs in four steps, read top to bottom in `run_sweep`: check every input (before Ray starts
or any trial runs: the data directory, the tracking server, the storage path, what to resume), open
or resume the parent run, build or restore the Tuner, and after Tune's fit finish the sweep.
"""

import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from mlflow.entities import Metric

import runrecord
from slt.config import TrainConfig, make_config
from slt.data import read_dataset
from slt.errors import InputError
from sweep.space import SearchSpace, grid_variants
from sweep.study import FullBudgetOptunaSearch, OptunaStudyExport
from sweep.tracking import (LOST_REASON, OUTAGE_ENV, MlflowSweepCallback, check_reachable, child_runs,
                            close_running_children, deliver, experiment_id, find_parent_run, first_line,
                            share_columns, sweep_description, sweep_tags, write_json)

SWEEP_FILE = "sweep.json"  # in the sweep's storage folder: parent run, tracking URI, space; used by --resume
SCHEDULER_FILE = "mo_asha.json"  # beside it: MO-ASHA's rungs, which a resumed sweep reads back
PROGRESS_DIR = "progress"  # beside it: each trial's note of its newest checkpoint (trainables.ticket)


@dataclass
class SweepOptions:
    tracking_uri: str | None = None
    storage: str | None = None  # absolute folder shared by every node; default ./ray_results
    reports: str | None = None  # the folder the sweep's report goes to (checked writable before Ray starts)
    resume: bool = False
    address: str | None = None  # Ray cluster to join; default: start Ray on this machine
    verbose: int = 1
    # Run the next trial in the finished trial's worker process: saves the process start and the
    # torch/spikingjelly imports (seconds per trial; measured by bench/sweep_budget.py).
    reuse_actors: bool = True
    tracking_outage_s: float = 600.0  # how long MLflow may not answer before the sweep stops (resumable)


@dataclass
class Sweep:
    """What the steps of one sweep share: its checked inputs and, once opened, its record (sweep.json)."""

    space: SearchSpace
    info: dict  # the search-space file, hash, profile and overrides (sweep.space.load_space)
    options: SweepOptions
    base: dict  # the base run config, data_dir made absolute
    tracking_uri: str
    client: object  # MlflowClient
    storage: Path
    sweep_dir: Path
    record: dict | None  # None until the parent run exists

    @property
    def tune_dir(self) -> Path:
        return self.sweep_dir / "tune"

    @property
    def optuna_storage(self) -> str:
        return runrecord.optuna_storage(self.tracking_uri, self.storage)


# ---- the sweep, step by step --------------------------------------------------------------------------

class SweepInterrupted(Exception):
    """The user stopped the sweep (Ctrl-C); the running trials kept their last checkpoints, --resume goes on."""

    def __init__(self, record: dict):
        super().__init__("interrupted")
        self.record = record


def run_sweep(space: SearchSpace, info: dict, options: SweepOptions):
    """Check the inputs, then run (or resume) the sweep; returns Tune's ResultGrid and the sweep's record.
    Raises SweepInterrupted after a Ctrl-C (the parent run then ends KILLED)."""
    sweep = check_inputs(space, info, options)
    begin_sitting(sweep, open_parent_run(sweep))
    try:
        start_ray(options)
        os.environ[OUTAGE_ENV] = str(options.tracking_outage_s)  # for the MLflow callback, restored or new
        tuner = build_or_restore_tuner(sweep)
        if options.resume:
            quiet_resume_noise()
        fit_started = time.perf_counter()
        with graceful_interrupt() as interrupt:
            results = tuner.fit()
        if interrupt.requested:
            end_interrupted(sweep)
            raise SweepInterrupted({**sweep.record, "sweep_dir": str(sweep.sweep_dir)})
        return results, finish_sweep(sweep, results, fit_seconds=time.perf_counter() - fit_started)
    except BaseException as err:  # a tracking outage, a second Ctrl-C, a failed restore: the sitting ends timed
        if not sweep.record["sittings"][-1]["ended"]:
            close_sitting(sweep, f"stopped ({type(err).__name__}: {first_line(err)})"[:200])
        raise


def check_inputs(space: SearchSpace, info: dict, options: SweepOptions) -> Sweep:
    """Everything a user can get wrong, checked in the driver before Ray starts; one-line errors."""
    base = resolved_base(space)
    check_scheduler(space, base)
    check_data(base)
    storage = Path(options.storage or "ray_results").expanduser().resolve()
    check_writable("storage", storage)
    if options.reports is not None:
        check_writable("reports", Path(options.reports).expanduser().resolve())
    prefix = f"{space.name}-{info['profile']}"
    record = None
    if options.resume:
        sweep_dir = latest_sweep(storage, prefix)
        if sweep_dir is None:
            raise InputError("resume", f"no sweep {prefix}-* in {storage} to resume; run without --resume")
        record = json.loads((sweep_dir / SWEEP_FILE).read_text())
        check_same_space(sweep_dir.name, record.get("space", {}), info)
    else:
        sweep_dir = storage / f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = options.tracking_uri or (record or {}).get("tracking_uri") or runrecord.default_tracking_uri()
    if (database := runrecord.sqlite_path(tracking_uri)) is not None:
        check_writable("tracking_uri", database.expanduser().resolve().parent)
    client = check_reachable(tracking_uri)
    return Sweep(space, info, options, base, tracking_uri, client, storage, sweep_dir, record)


def check_same_space(name: str, started_from: dict, info: dict) -> None:
    """A sweep is resumed only with the space it was started from: the same merged profile and overrides
    (content_sha256), so a comment edited in the file between sittings does not matter. A sweep started
    before that hash was kept is compared by its file's sha256 and --set overrides, and gains the content
    hash when they match (sweep.json is written as the sitting begins)."""
    if "content_sha256" in started_from:
        then, now = (started_from["content_sha256"], info["content_sha256"])
        what = "what its profile runs (with the --set overrides) differs"
    else:
        then, now = ((started_from.get("sha256"), started_from.get("overrides", [])), (info["sha256"], info["overrides"]))
        what = "the file or the --set overrides differ"
    if then != now:
        raise InputError("resume", f"the latest sweep {name} was started from {started_from.get('file')} "
                                   f"(sha256 {started_from.get('sha256')}, --set {started_from.get('overrides')}); "
                                   f"the space is now {info['file']} (sha256 {info['sha256']}, --set "
                                   f"{info['overrides']}), and {what}: run without --resume for a new sweep")
    started_from.setdefault("content_sha256", info["content_sha256"])


def open_parent_run(sweep: Sweep) -> None:
    """A new sweep gets its folder and sweep.json first, then its parent run (so a driver killed at any
    moment leaves a sweep --resume finds); a resumed one finds its parent (or makes it) and marks it RUNNING."""
    if sweep.record is None:
        sweep.sweep_dir.mkdir(parents=True)
        sweep.record = {"parent_run_id": None, "experiment_id": None, "tracking_uri": sweep.tracking_uri,
                        "space": sweep.info, "name": sweep.sweep_dir.name}
        write_json(sweep.sweep_dir / SWEEP_FILE, sweep.record)
    try:
        if sweep.record.get("parent_run_id"):
            parent_id = sweep.record["parent_run_id"]
            earlier = sweep.client.get_run(parent_id)  # as the last driver left it
            sweep.client.update_run(parent_id, status="RUNNING")
            if runrecord.REASON_TAG in earlier.data.tags:  # why it stopped last time
                sweep.client.delete_tag(parent_id, runrecord.REASON_TAG)
            return earlier.info
        experiment = experiment_id(sweep.client, sweep.space.name)
        share_columns(sweep.client, experiment, sweep.record["name"], searched_fields(sweep.space),
                      [o.metric for o in sweep.space.objectives])
        parent_id = find_parent_run(sweep.client, experiment, sweep.record["name"]) or create_parent_run(sweep, experiment)
    except Exception as err:  # a read-only database, a server refusing writes: nothing has started yet
        raise InputError("tracking_uri", f"cannot write to MLflow at {sweep.tracking_uri} ({first_line(err)})") from None
    sweep.record.update(parent_run_id=parent_id, experiment_id=experiment)
    write_json(sweep.sweep_dir / SWEEP_FILE, sweep.record)
    return None


def begin_sitting(sweep: Sweep, earlier=None) -> None:
    """Note in sweep.json that a driver starts on the sweep: its sittings (the first, then one per
    --resume) with their start, end and outcome, so the sweep's wall time and resumes are known.
    `earlier`: the parent run's info as the last driver left it (open_parent_run), for a resumed sweep
    begun before sittings were kept; its earlier drivers become one sitting, from the parent's start
    to its end where a driver last ended it (interrupted; idle time between them included), else untimed."""
    sittings = sweep.record.setdefault("sittings", [])
    if not sittings and earlier is not None:
        ended = earlier.end_time / 1000 if earlier.status == "KILLED" and earlier.end_time else None
        sittings.append({"started": earlier.start_time / 1000, "ended": ended,
                         "outcome": "interrupted (recorded before sittings were kept)" if ended
                         else "unknown (recorded before sittings were kept)"})
    sittings.append({"started": time.time(), "ended": None, "outcome": "running, or killed"})
    write_json(sweep.sweep_dir / SWEEP_FILE, sweep.record)


def close_sitting(sweep: Sweep, outcome: str) -> None:
    """End this driver's sitting in sweep.json with its outcome."""
    sweep.record["sittings"][-1].update(ended=time.time(), outcome=outcome)
    write_json(sweep.sweep_dir / SWEEP_FILE, sweep.record)


def sittings_wall_s(sittings: list[dict]) -> float:
    """The summed wall time of the sittings that ended with a record (a SIGKILL leaves none)."""
    return sum(s["ended"] - s["started"] for s in sittings if s.get("ended"))


def end_sitting(sweep: Sweep, outcome: str) -> list[Metric]:
    """close_sitting, and the parent's metrics `sittings` (drivers that ran the sweep: 1 + resumes) and
    `wall_time_s` (their summed wall time; a sitting killed by SIGKILL is counted but cannot be timed)."""
    close_sitting(sweep, outcome)
    sittings, now = sweep.record["sittings"], int(time.time() * 1000)
    return [Metric("sittings", len(sittings), now, 0), Metric("wall_time_s", sittings_wall_s(sittings), now, 0)]


def create_parent_run(sweep: Sweep, experiment: str) -> str:
    space = sweep.space
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parent = sweep.client.create_run(experiment, run_name=f"{space.name} {sweep.info['profile']} {started}", tags={
        runrecord.NOTE_TAG: sweep_description(space, sweep.info),
        **sweep_tags(sweep.sweep_dir.name, space.name, sweep.info), "overrides": " ".join(sweep.info["overrides"]),
        "storage": str(sweep.sweep_dir), "algorithm": space.search.algorithm,
        "sampler": space.search.sampler if space.search.algorithm == "optuna" else "",
        "objectives": runrecord.objectives_text((o.metric, o.mode) for o in space.objectives),
        "scheduler": space.scheduler.type})
    sweep.client.log_param(parent.info.run_id, "num_samples", space.num_samples)
    return parent.info.run_id


def close_ended_trials(sweep: Sweep, results) -> None:
    """Trials Tune has as ended whose child runs are still RUNNING (their end was held when a tracking
    outage stopped the driver): end them now as the callback would have, from their last checkpoints."""
    running = child_runs(sweep.client, sweep.record["experiment_id"], sweep.record["parent_run_id"], "RUNNING")
    open_ids = {run.data.tags.get(runrecord.TRIAL_TAG) for run in running}
    callback = MlflowSweepCallback(sweep.tracking_uri, sweep.record["experiment_id"], sweep.record["parent_run_id"],
                                   sweep_tags(sweep.record["name"], sweep.space.name, sweep.info))
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id not in open_ids:
            continue
        trial = SimpleNamespace(trial_id=trial_id, config=result.config)
        if result.error:
            tags, status = runrecord.end_tags("failed", False, first_line(result.error)), "FAILED"
        else:
            tags = runrecord.end_tags("finished", bool(result.metrics.get(runrecord.FULL_BUDGET_TAG)),
                                      epoch=result.metrics.get("epoch"))
            status = "FINISHED"
        callback.end_run(trial, result.checkpoint, tags, status, backfill=not result.error)


def end_interrupted(sweep: Sweep) -> None:
    """After a Ctrl-C: the parent and the children of unfinished trials end KILLED, saying why (--resume
    marks them RUNNING again and goes on from the trials' last checkpoints)."""
    reason = "interrupted by the user (SIGINT); continue with --resume"
    parent_id = sweep.record["parent_run_id"]
    totals = end_sitting(sweep, "interrupted")
    deliver(sweep.options.tracking_outage_s, sweep.tracking_uri,
            lambda: sweep.client.log_batch(parent_id, metrics=totals),
            lambda: close_running_children(sweep.client, sweep.record["experiment_id"], parent_id, set(),
                                           "interrupted", reason),
            lambda: sweep.client.set_tag(parent_id, runrecord.REASON_TAG, reason),
            lambda: sweep.client.set_terminated(parent_id, "KILLED"))


def quiet_resume_noise() -> None:
    """Two things Ray and Optuna say after every resume of a killed sweep that are no fault of the user's:
    Tune's snapshot still lists an old checkpoint the killed driver had already deleted (num_to_keep), and
    tries to delete it again (a logged FileNotFoundError traceback); a trial restored from its checkpoint
    reports its epoch again, which Optuna ignores with a warning."""
    def not_a_deleted_checkpoint(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Trial") and "Error handling checkpoint" in record.getMessage()
                    and isinstance(error, FileNotFoundError))

    logging.getLogger("ray.tune.execution.tune_controller").addFilter(not_a_deleted_checkpoint)
    warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=",
                            category=UserWarning)


@contextmanager
def graceful_interrupt():
    """The first SIGINT (Ctrl-C) asks Tune to stop gracefully: it saves its state and ends the running
    trials, which keep their last checkpoints; a second SIGINT stops at once (KeyboardInterrupt)."""
    state = SimpleNamespace(requested=False)

    def on_sigint(signum, frame):
        if state.requested or signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt  # a second Ctrl-C, or Tune is not listening yet
        state.requested = True
        print("sweep: stopping after Tune saves its state (Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)  # tune.run's own graceful stop listens to SIGUSR1 as well

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours decides; Tune's would not tell us it fired
    # Tune then suggests its Python Tuner.restore(...); this product's own --resume line follows instead
    logging.getLogger("ray.tune.tune").addFilter(
        lambda record: not record.getMessage().startswith("Experiment has been interrupted"))
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def start_ray(options: SweepOptions) -> None:
    """Join the given cluster, the one of `ray job submit`, or start a private Ray on this machine."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local Ray on loopback (DESIGN §7)
    # Tune snapshots its experiment state at most every 10 s by default; trials started after the
    # last snapshot are unknown to a resumed sweep. Once a second keeps that window small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # ...and Tune warns on every sweep that snapshots come often (they do, by that choice): not shown
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=options.verbose > 0)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=options.verbose > 0)  # inside `ray job submit`: join that cluster
    else:
        # A private cluster gets Ray's default, token authentication, and a warning saying so on every sweep:
        # the user chose nothing there, so that one line is not shown (a disabled-auth warning still is).
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: not record.getMessage().startswith("Token authentication is enabled"))
        ray.init(include_dashboard=False, log_to_driver=options.verbose > 0)


def build_or_restore_tuner(sweep: Sweep):
    """Tune's Tuner for the sweep: restored from its folder on --resume, else built from the space."""
    from ray import tune

    from trainables import train_ticket

    space, record = sweep.space, sweep.record
    callbacks = [MlflowSweepCallback(sweep.tracking_uri, record["experiment_id"], record["parent_run_id"],
                                     sweep_tags(record["name"], space.name, sweep.info),  # bound: OUTAGE_ENV
                                     searched=searched_fields(space)),
                 OptunaStudyExport(sweep.optuna_storage, record["name"], space)]
    trainable = tune.with_resources(train_ticket, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    if sweep.options.resume and tune.Tuner.can_restore(str(sweep.tune_dir)):
        remake_named_checkpoints(sweep.tune_dir)
        return tune.Tuner.restore(str(sweep.tune_dir), trainable=trainable, resume_errored=True)
    single = None if space.multi_objective else space.objectives[0]
    return tune.Tuner(
        trainable,
        param_space=param_space(space, sweep.base, progress_dir=str(sweep.sweep_dir / PROGRESS_DIR)),
        tune_config=tune.TuneConfig(
            metric=single.metric if single else None, mode=single.mode if single else None,
            num_samples=space.num_samples, search_alg=make_searcher(space),
            scheduler=make_scheduler(space, max_budget(space, sweep.base), sweep.sweep_dir / SCHEDULER_FILE),
            reuse_actors=sweep.options.reuse_actors),
        run_config=tune.RunConfig(
            name=sweep.tune_dir.name, storage_path=str(sweep.sweep_dir), callbacks=callbacks,
            verbose=sweep.options.verbose, failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def remake_named_checkpoints(tune_dir: Path) -> list[Path]:
    """Make again, empty, the checkpoint folders of unfinished trials that Tune's last snapshot names but that
    are gone; returns them. Tune snapshots its state once a second while a trial may checkpoint more often,
    and keeps each trial's newest two (num_to_keep), so a driver killed between snapshots can have deleted
    the checkpoint its snapshot names as a trial's latest; Tune then refuses to restore that trial ("does
    not exist on storage anymore") and fails it. With the folder there the trial starts, and the trainable
    continues from the newest state it noted (trainables.ticket.latest_state_file); Tune deletes the empty
    folder in turn, as it deletes the checkpoints it knows."""
    from functools import partial

    from ray.tune.utils.serialization import TuneFunctionDecoder

    snapshots = sorted(tune_dir.glob("experiment_state-*.json"))  # the one Tune restores: the newest by name
    if not snapshots:
        return []
    # Tune's own snapshot, written by this sweep's driver: its cloudpickled checkpoint records are trusted
    decoder = partial(TuneFunctionDecoder, allow_cloudpickle=True)
    made = []
    for trial, metadata in json.loads(snapshots[-1].read_text())["trial_data"]:
        if json.loads(trial).get("status") == "TERMINATED":  # not restored (a carried sweep lacks its checkpoints)
            continue
        manager = json.loads(metadata, cls=decoder).get("checkpoint_manager")
        named = [*getattr(manager, "best_checkpoint_results", []), getattr(manager, "latest_checkpoint_result", None)]
        for result in (r for r in named if r is not None and r.checkpoint is not None):
            folder = Path(result.checkpoint.path)
            if not folder.exists():
                folder.mkdir(parents=True)
                made.append(folder)
    return made


def finish_sweep(sweep: Sweep, results, fit_seconds: float) -> dict:
    """Close the runs of trials that ended while their records could not be written (an earlier driver
    stopped by a tracking outage), close child runs Tune lost track of, log the totals and end the parent."""
    parent_id, client = sweep.record["parent_run_id"], sweep.client
    known = {r.metrics.get("trial_id") for r in results}
    now = int(time.time() * 1000)
    totals = [Metric("trials", len(results), now, 0), Metric("failed_trials", sum(1 for r in results if r.error), now, 0),
              *end_sitting(sweep, "finished")]
    deliver(sweep.options.tracking_outage_s, sweep.tracking_uri,
            lambda: close_ended_trials(sweep, results),
            lambda: close_running_children(client, sweep.record["experiment_id"], parent_id, known, "lost",
                                           LOST_REASON),
            lambda: client.log_batch(parent_id, metrics=totals),
            lambda: client.set_terminated(parent_id, "FINISHED"))
    return {**sweep.record, "sweep_dir": str(sweep.sweep_dir), "tracking_uri": sweep.tracking_uri,
            "optuna_storage": sweep.optuna_storage, "fit_seconds": fit_seconds}


# ---- the pieces the steps use ----------------------------------------------------------------------

MIN_FREE_BYTES = 64 * 2**20  # checkpoints, Tune's state and a report need room; less counts as a full disk


def check_writable(field: str, folder: Path) -> None:
    """`folder` exists (made if need be), takes a file, and has MIN_FREE_BYTES free; else a one-line error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".slt-write-check-"):
            pass
    except OSError as err:
        raise InputError(field, f"cannot write to {folder} ({err.strerror or type(err).__name__})") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise InputError(field, f"{folder} has {free / 2**20:.1f} MiB free; a sweep needs at least "
                                f"{MIN_FREE_BYTES // 2**20} MiB there")


def resolved_base(space: SearchSpace) -> dict:
    """The base run config with its paths (data directory, energy table) made absolute (trials run in other
    working dirs)."""
    base = dict(space.base)
    for name in ("data_dir", "energy_table"):
        if base.get(name):
            base[name] = str(Path(base[name]).expanduser().resolve())
    return base


def check_scheduler(space: SearchSpace, base: dict) -> None:
    """A scheduler whose first rung is not below the trials' budget would never stop one: say so."""
    if space.scheduler.type == "none":
        return
    budget = max_budget(space, base)
    if space.scheduler.grace_period >= budget:
        raise InputError("scheduler.grace_period", f"{space.scheduler.grace_period} leaves no rung below the trials' "
                                                   f"{budget} epochs; allowed: 1 to {budget - 1}")


def check_data(base: dict) -> None:
    """Read the dataset once in the driver: a missing or malformed directory fails before any trial."""
    read_dataset(base.get("dataset", "digits"), base.get("data_dir"), frames=base.get("T", 4),
                 image_size=base.get("image_size"), label_kind=base.get("label_kind", "fine"), subset=1)


def latest_sweep(storage: Path, prefix: str) -> Path | None:
    candidates = sorted(p for p in storage.glob(f"{prefix}-*") if (p / SWEEP_FILE).is_file())
    return candidates[-1] if candidates else None


def searched_fields(space: SearchSpace) -> tuple[str, ...]:
    """The run-config fields the sweep varies (searched, set by `include` or `by_method`), and `seed` with
    repeats."""
    names = [*space.searched, *(name for extra in [*space.include, *space.by_method.values()] for name in extra)]
    return tuple(dict.fromkeys([*names, *(["seed"] if space.repeats > 1 else [])]))


def param_space(space: SearchSpace, base: dict, progress_dir: str | None = None) -> dict:
    """Tune's param_space: the base config, the trainable's options, each searched parameter's Tune
    domain, and the grid variants (grid values x seeds, with `include`) as one grid axis."""
    from ray import tune

    params = {**base, "checkpoint_every": space.checkpoint_every, "energy_batch": space.energy_batch,
              "energy_each_epoch": space.energy_each_epoch, "progress_dir": progress_dir}
    params.update({name: p.to_tune() for name, p in space.searched.items() if not p.grid})
    variants = grid_variants(space)
    return params if variants == [{}] else runrecord.pack_variants(params, variants, tune.grid_search)


def seed_points(space: SearchSpace) -> list[dict]:
    """Evenly spaced first points for a 1-D continuous search (e.g. 5 values of λ), or the given list."""
    given = space.search.seed_points
    if isinstance(given, list):
        return given
    continuous = [(k, v) for k, v in space.searched.items() if v.continuous]
    if not given or len(continuous) != 1 or len(space.searched) != 1:
        return []
    name, parameter = continuous[0]
    step = (parameter.high - parameter.low) / given
    # cell midpoints, inside the bounds (rounded: 0.5, not 0.49999999999999994, in run names and tables)
    return [{name: round(parameter.low + step * (i + 0.5), 12)} for i in range(given)]


def make_sampler(space: SearchSpace):
    """The Optuna sampler of an `optuna` search (GP, NSGA-II or TPE), seeded from the space."""
    import optuna

    seed = space.search.seed
    if space.search.sampler == "gp":
        # Accuracy at a given λ carries seed noise (init, batch order) far larger than the response's
        # fine structure: a GP that models that noise, rather than interpolating it, finds the optimum
        # region in fewer trials on a recorded response (bench/decay_search.py).
        return optuna.samplers.GPSampler(seed=seed, deterministic_objective=False,
                                         n_startup_trials=max(1, len(seed_points(space))))
    if space.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=space.search.population_size, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_searcher(space: SearchSpace):
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if space.search.algorithm != "optuna":
        return BasicVariantGenerator(max_concurrent=space.max_concurrent, random_state=space.search.seed)
    metrics = [o.metric for o in space.objectives]
    modes = [o.mode for o in space.objectives]
    searcher = FullBudgetOptunaSearch(metric=metrics if space.multi_objective else metrics[0],
                            mode=modes if space.multi_objective else modes[0], sampler=make_sampler(space),
                            points_to_evaluate=seed_points(space) or None)
    return ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent)


def make_scheduler(space: SearchSpace, max_epochs: int, state_file: Path | None = None):
    """None, ASHA on the first objective, or MO-ASHA on all of them (its rungs kept in `state_file`).
    ASHA names the metric itself only in multi-objective sweeps (with one objective Tune takes metric and
    mode from the TuneConfig and refuses them twice)."""
    settings = space.scheduler
    if settings.type == "mo_asha":
        from sweep.mo_asha import MultiObjectiveASHA

        return MultiObjectiveASHA([(o.metric, o.mode) for o in space.objectives], max_t=max_epochs,
                                  grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
                                  state_file=str(state_file) if state_file else None)
    if settings.type != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    first = space.objectives[0]
    named = {"metric": first.metric, "mode": first.mode} if space.multi_objective else {}
    return ASHAScheduler(max_t=max_epochs, grace_period=settings.grace_period,
                         reduction_factor=settings.reduction_factor, **named)


def max_budget(space: SearchSpace, base: dict) -> int:
    """The most epochs any trial runs over all its phases (search, fine-tune, patch pruning): ASHA's max_t."""
    from slt.train import plan_phases

    extremes = [{}] + grid_variants(space) + [{name: value} for name, parameter in space.searched.items()
                                              if not parameter.grid for value in parameter.probes()]
    return max(sum(phase.epochs for phase in plan_phases(make_config(**{**base, **extra}))) for extra in extremes)
