"""The engine: a validated search space -> a Ray Tune Tuner (search algorithm, scheduler, MLflow, storage).

A sweep runs in four steps, read top to bottom in `run_sweep`: check every input (before Ray starts
or any trial runs: the data directory, the tracking server, the storage path, what to resume), open
or resume the parent run, build or restore the Tuner, and after Tune's fit finish the sweep.
"""

import itertools
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import runrecord
from slt.config import make_config
from slt.data import read_dataset
from slt.errors import InputError
from sweep.space import SearchSpace
from sweep.study import OptunaStudyExport
from sweep.tracking import MlflowSweepCallback, check_reachable, close_lost_trials, experiment_id, sweep_tags, write_json

SWEEP_FILE = "sweep.json"  # in the sweep's storage folder: parent run, tracking URI, space; used by --resume


@dataclass
class SweepOptions:
    tracking_uri: str | None = None
    storage: str | None = None  # absolute folder shared by every node; default ./ray_results
    resume: bool = False
    address: str | None = None  # Ray cluster to join; default: start Ray on this machine
    verbose: int = 1
    # Run the next trial in the finished trial's worker process: saves the process start and the
    # torch/spikingjelly imports (seconds per trial; measured by bench/sweep_budget.py).
    reuse_actors: bool = True


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

def run_sweep(space: SearchSpace, info: dict, options: SweepOptions):
    """Check the inputs, then run (or resume) the sweep; returns Tune's ResultGrid and the sweep's record."""
    started = time.perf_counter()
    sweep = check_inputs(space, info, options)
    open_parent_run(sweep)
    start_ray(options)
    tuner = build_or_restore_tuner(sweep)
    fit_started = time.perf_counter()
    results = tuner.fit()
    return results, finish_sweep(sweep, results, started, fit_seconds=time.perf_counter() - fit_started)


def check_inputs(space: SearchSpace, info: dict, options: SweepOptions) -> Sweep:
    """Everything a user can get wrong, checked in the driver before Ray starts; one-line errors."""
    base = resolved_base(space)
    check_data(base)
    storage = Path(options.storage or "ray_results").expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    prefix = f"{space.name}-{info['profile']}"
    record = None
    if options.resume:
        sweep_dir = latest_sweep(storage, prefix)
        if sweep_dir is None:
            raise InputError("resume", f"no sweep {prefix}-* in {storage} to resume; run without --resume")
        record = json.loads((sweep_dir / SWEEP_FILE).read_text())
    else:
        sweep_dir = storage / f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = options.tracking_uri or (record or {}).get("tracking_uri") or runrecord.default_tracking_uri()
    client = check_reachable(tracking_uri)
    return Sweep(space, info, options, base, tracking_uri, client, storage, sweep_dir, record)


def open_parent_run(sweep: Sweep) -> None:
    """A new sweep gets its parent run and sweep.json; a resumed one marks its parent RUNNING again."""
    if sweep.record is not None:
        sweep.client.update_run(sweep.record["parent_run_id"], status="RUNNING")
        return
    space = sweep.space
    experiment = experiment_id(sweep.client, space.name)
    parent = sweep.client.create_run(experiment, run_name=sweep.sweep_dir.name, tags={
        **sweep_tags(sweep.sweep_dir.name, space.name, sweep.info), "overrides": " ".join(sweep.info["overrides"]),
        "storage": str(sweep.sweep_dir), "algorithm": space.search.algorithm,
        "sampler": space.search.sampler if space.search.algorithm == "optuna" else "",
        "objectives": runrecord.objectives_text((o.metric, o.mode) for o in space.objectives),
        "scheduler": space.scheduler.type})
    sweep.client.log_param(parent.info.run_id, "num_samples", space.num_samples)
    sweep.sweep_dir.mkdir(parents=True)
    sweep.record = {"parent_run_id": parent.info.run_id, "experiment_id": experiment,
                    "tracking_uri": sweep.tracking_uri, "space": sweep.info, "name": sweep.sweep_dir.name}
    write_json(sweep.sweep_dir / SWEEP_FILE, sweep.record)


def start_ray(options: SweepOptions) -> None:
    """Join the given cluster, the one of `ray job submit`, or start a private Ray on this machine."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local Ray on loopback (DESIGN §7)
    # Tune snapshots its experiment state at most every 10 s by default; trials started after the
    # last snapshot are unknown to a resumed sweep. Once a second keeps that window small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=options.verbose > 0)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=options.verbose > 0)  # inside `ray job submit`: join that cluster
    else:
        ray.init(include_dashboard=False, log_to_driver=options.verbose > 0)


def build_or_restore_tuner(sweep: Sweep):
    """Tune's Tuner for the sweep: restored from its folder on --resume, else built from the space."""
    from ray import tune

    from trainables import train_ticket

    space, record = sweep.space, sweep.record
    callbacks = [MlflowSweepCallback(sweep.tracking_uri, record["experiment_id"], record["parent_run_id"],
                                     sweep_tags(record["name"], space.name, sweep.info)),
                 OptunaStudyExport(sweep.optuna_storage, record["name"], space)]
    trainable = tune.with_resources(train_ticket, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    if sweep.options.resume and tune.Tuner.can_restore(str(sweep.tune_dir)):
        return tune.Tuner.restore(str(sweep.tune_dir), trainable=trainable, resume_errored=True)
    single = None if space.multi_objective else space.objectives[0]
    return tune.Tuner(
        trainable,
        param_space=param_space(space, sweep.base, progress_dir=str(sweep.sweep_dir / "progress")),
        tune_config=tune.TuneConfig(
            metric=single.metric if single else None, mode=single.mode if single else None,
            num_samples=space.num_samples, search_alg=make_searcher(space),
            scheduler=make_scheduler(space, max_budget(space, sweep.base)), reuse_actors=sweep.options.reuse_actors),
        run_config=tune.RunConfig(
            name=sweep.tune_dir.name, storage_path=str(sweep.sweep_dir), callbacks=callbacks,
            verbose=sweep.options.verbose, failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def finish_sweep(sweep: Sweep, results, started: float, fit_seconds: float) -> dict:
    """Close child runs Tune lost track of, log the sweep's totals on the parent and end it."""
    parent_id = sweep.record["parent_run_id"]
    close_lost_trials(sweep.client, sweep.record["experiment_id"], parent_id,
                      {r.metrics.get("trial_id") for r in results})
    sweep.client.log_metric(parent_id, "trials", len(results))
    sweep.client.log_metric(parent_id, "failed_trials", sum(1 for r in results if r.error))
    sweep.client.log_metric(parent_id, "wall_time_s", time.perf_counter() - started)
    sweep.client.set_terminated(parent_id, "FINISHED")
    return {**sweep.record, "sweep_dir": str(sweep.sweep_dir), "tracking_uri": sweep.tracking_uri,
            "optuna_storage": sweep.optuna_storage, "fit_seconds": fit_seconds}


# ---- the pieces the steps use ----------------------------------------------------------------------

def resolved_base(space: SearchSpace) -> dict:
    """The base run config with a data directory made absolute (trials run in other working dirs)."""
    base = dict(space.base)
    if base.get("data_dir"):
        base["data_dir"] = str(Path(base["data_dir"]).expanduser().resolve())
    return base


def check_data(base: dict) -> None:
    """Read the dataset once in the driver: a missing or malformed directory fails before any trial."""
    read_dataset(base.get("dataset", "digits"), base.get("data_dir"), frames=base.get("T", 4),
                 image_size=base.get("image_size"), label_kind=base.get("label_kind", "fine"), subset=1)


def latest_sweep(storage: Path, prefix: str) -> Path | None:
    candidates = sorted(p for p in storage.glob(f"{prefix}-*") if (p / SWEEP_FILE).is_file())
    return candidates[-1] if candidates else None


def grid_variants(space: SearchSpace) -> list[dict]:
    """Every configuration of the grid parameters plus `include`, each repeated over seeds 0..repeats-1."""
    grids = {k: v.values for k, v in space.searched.items() if v.grid}
    combos = [dict(zip(grids, values)) for values in itertools.product(*grids.values())] if grids else []
    combos += [dict(extra) for extra in space.include]
    combos = combos or [{}]
    if space.repeats > 1:
        combos = [{**combo, "seed": seed} for combo in combos for seed in range(space.repeats)]
    return combos


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
    return [{name: parameter.low + step * (i + 0.5)} for i in range(given)]  # cell midpoints, inside the bounds


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
    from ray.tune.search.optuna import OptunaSearch

    metrics = [o.metric for o in space.objectives]
    modes = [o.mode for o in space.objectives]
    searcher = OptunaSearch(metric=metrics if space.multi_objective else metrics[0],
                            mode=modes if space.multi_objective else modes[0], sampler=make_sampler(space),
                            points_to_evaluate=seed_points(space) or None)
    return ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent)


def make_scheduler(space: SearchSpace, max_epochs: int):
    """ASHA on the first objective; it names the metric itself only in multi-objective sweeps
    (with one objective Tune takes metric and mode from the TuneConfig and refuses them twice)."""
    if space.scheduler.type != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    first = space.objectives[0]
    named = {"metric": first.metric, "mode": first.mode} if space.multi_objective else {}
    return ASHAScheduler(max_t=max_epochs, grace_period=space.scheduler.grace_period,
                         reduction_factor=space.scheduler.reduction_factor, **named)


def max_budget(space: SearchSpace, base: dict) -> int:
    """The most epochs any trial runs over all its phases (search, fine-tune, patch pruning): ASHA's max_t."""
    from slt.train import plan_phases

    extremes = [{}] + grid_variants(space) + [{name: value} for name, parameter in space.searched.items()
                                              if not parameter.grid for value in parameter.probes()]
    return max(sum(phase.epochs for phase in plan_phases(make_config(**{**base, **extra}))) for extra in extremes)
