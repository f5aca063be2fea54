"""The engine: a validated search space -> a Ray Tune Tuner (search algorithm, scheduler, MLflow, storage).

Everything a user can get wrong is checked before Ray starts or any trial runs: the search space,
profile and overrides, the data directory, the tracking server, the storage path.
"""

import itertools
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slt.data import load_dataset
from slt.errors import InputError
from sweep.space import SearchSpace
from sweep.study import OptunaStudyExport
from sweep.tracking import (PARENT_TAG, MlflowSweepCallback, check_reachable, code_version, default_tracking_uri,
                            experiment_id, write_json)

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


def resolved_base(space: SearchSpace) -> dict:
    """The base run config with a data directory made absolute (trials run in other working dirs)."""
    base = dict(space.base)
    if base.get("data_dir"):
        base["data_dir"] = str(Path(base["data_dir"]).expanduser().resolve())
    return base


def check_data(base: dict) -> None:
    """Read the dataset once in the driver: a missing or malformed directory fails before any trial."""
    load_dataset(base.get("dataset", "digits"), base.get("data_dir"), frames=base.get("T", 4),
                 image_size=base.get("image_size"), label_kind=base.get("label_kind", "fine"), subset=1)


def grid_variants(space: SearchSpace) -> list[dict]:
    """Every configuration of the grid parameters plus `include`, each repeated over seeds 0..repeats-1."""
    grids = {k: v.values for k, v in space.searched.items() if v.type == "grid"}
    combos = [dict(zip(grids, values)) for values in itertools.product(*grids.values())] if grids else []
    combos += [dict(extra) for extra in space.include]
    combos = combos or [{}]
    if space.repeats > 1:
        combos = [{**combo, "seed": seed} for combo in combos for seed in range(space.repeats)]
    return combos


def param_space(space: SearchSpace, base: dict, trial_root: str | None = None) -> dict:
    from ray import tune

    params = {**base, "checkpoint_every": space.checkpoint_every, "energy_batch": space.energy_batch,
              "trial_root": trial_root}
    for name, parameter in space.searched.items():
        if parameter.type == "choice":
            params[name] = tune.choice(parameter.values)
        elif parameter.type == "uniform":
            params[name] = tune.uniform(parameter.low, parameter.high)
        elif parameter.type == "loguniform":
            params[name] = tune.loguniform(parameter.low, parameter.high)
        elif parameter.type == "int":
            params[name] = tune.randint(parameter.low, parameter.high + 1)
    variants = grid_variants(space)
    if variants != [{}]:
        for name in {key for variant in variants for key in variant}:
            params.pop(name, None)
        # One grid axis of whole variants (grid values x seeds), merged into the config by the trainable.
        params["variant"] = tune.grid_search(variants)
    return params


def seed_points(space: SearchSpace) -> list[dict]:
    """Evenly spaced first points for a 1-D continuous search (e.g. 5 values of λ), or the given list."""
    given = space.search.seed_points
    if isinstance(given, list):
        return given
    continuous = [(k, v) for k, v in space.searched.items() if v.type in ("uniform", "loguniform")]
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
    from slt.config import make_config
    from slt.train import plan_phases

    extremes = [{}] + grid_variants(space)
    for name, parameter in space.searched.items():
        if parameter.type in ("choice",):
            extremes += [{name: value} for value in parameter.values]
        elif parameter.type == "int":
            extremes += [{name: parameter.high}]
    return max(sum(phase.epochs for phase in plan_phases(make_config(**{**base, **extra}))) for extra in extremes)


def latest_sweep(storage: Path, prefix: str) -> Path | None:
    candidates = sorted(p for p in storage.glob(f"{prefix}-*") if (p / SWEEP_FILE).is_file())
    return candidates[-1] if candidates else None


def close_lost_trials(client, experiment: str, parent_id: str, trial_ids: set) -> None:
    """Child runs still RUNNING after the sweep belong to trials a killed driver started after Tune's
    last snapshot; the resumed sweep does not know them. Close them (nothing is deleted), saying why."""
    from mlflow.entities import RunTag

    running = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                                              "attributes.status = 'RUNNING'", max_results=10000)
    for run in running:
        if run.data.tags.get("trial_id") in trial_ids:
            continue
        client.log_batch(run.info.run_id, tags=[
            RunTag("status", "lost"), RunTag("full_budget", "false"), RunTag("early_stopped", "false"),
            RunTag("reason", "the driver was killed before Tune recorded this trial; the resumed sweep ran "
                             "another in its place")])
        client.set_terminated(run.info.run_id, "KILLED")


def run_sweep(space: SearchSpace, info: dict, options: SweepOptions):
    """Validate the environment, then run (or resume) the sweep; returns Tune's ResultGrid."""
    import json

    started = time.perf_counter()
    base = resolved_base(space)
    check_data(base)
    tracking_uri = options.tracking_uri or default_tracking_uri()
    client = check_reachable(tracking_uri)
    storage = Path(options.storage or "ray_results").expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    prefix = f"{space.name}-{info['profile']}"
    if options.resume:
        sweep_dir = latest_sweep(storage, prefix)
        if sweep_dir is None:
            raise InputError("resume", f"no sweep {prefix}-* in {storage} to resume; run without --resume")
        record = json.loads((sweep_dir / SWEEP_FILE).read_text())
        tracking_uri = options.tracking_uri or record["tracking_uri"]
        client = check_reachable(tracking_uri)
    else:
        sweep_dir = storage / f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        record = None

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep a local Ray on loopback (DESIGN §7)
    # Tune snapshots its experiment state at most every 10 s by default; trials started after the
    # last snapshot are unknown to a resumed sweep. Once a second keeps that window small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    import ray
    from ray import tune

    from trainables import train_ticket

    experiment = experiment_id(client, space.name)
    if record is None:
        parent = client.create_run(experiment, run_name=sweep_dir.name, tags={
            "sweep": sweep_dir.name, "search_space": space.name, "search_space_file": info["file"],
            "search_space_sha256": info["sha256"], "profile": info["profile"], "code_version": code_version(),
            "overrides": " ".join(info["overrides"]), "storage": str(sweep_dir), "algorithm": space.search.algorithm,
            "sampler": space.search.sampler if space.search.algorithm == "optuna" else "",
            "objectives": ",".join(f"{o.metric}:{o.mode}" for o in space.objectives),
            "scheduler": space.scheduler.type})
        parent_id = parent.info.run_id
        client.log_param(parent_id, "num_samples", space.num_samples)
        sweep_dir.mkdir(parents=True)
        record = {"parent_run_id": parent_id, "experiment_id": experiment, "tracking_uri": tracking_uri,
                  "space": info, "name": sweep_dir.name}
        write_json(sweep_dir / SWEEP_FILE, record)
    else:
        parent_id = record["parent_run_id"]
        client.update_run(parent_id, status="RUNNING")

    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, log_to_driver=options.verbose > 0)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=options.verbose > 0)  # inside `ray job submit`: join that cluster
        else:
            ray.init(include_dashboard=False, log_to_driver=options.verbose > 0)

    tags = {"sweep": sweep_dir.name, "profile": info["profile"], "search_space": space.name,
            "search_space_file": info["file"], "search_space_sha256": info["sha256"], "code_version": code_version()}
    # One study file per tracking store: beside a SQLite MLflow database, else at the storage root
    # (/ray_results/optuna.db in docker-compose, where optuna-dashboard opens it); a study per sweep.
    optuna_folder = Path(tracking_uri.removeprefix("sqlite:///")).parent if tracking_uri.startswith("sqlite:///") \
        else storage
    optuna_db = f"sqlite:///{optuna_folder / 'optuna.db'}"
    callbacks = [MlflowSweepCallback(tracking_uri, experiment, parent_id, tags),
                 OptunaStudyExport(optuna_db, sweep_dir.name, space)]
    trainable = tune.with_resources(train_ticket, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    trial_path = str(sweep_dir / "tune")
    if options.resume and tune.Tuner.can_restore(trial_path):
        tuner = tune.Tuner.restore(trial_path, trainable=trainable, resume_errored=True)
    else:
        max_epochs = max_budget(space, base)
        single = None if space.multi_objective else space.objectives[0]
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space, base, trial_path),
            tune_config=tune.TuneConfig(
                metric=single.metric if single else None, mode=single.mode if single else None,
                num_samples=space.num_samples, search_alg=make_searcher(space),
                scheduler=make_scheduler(space, max_epochs), reuse_actors=options.reuse_actors),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(sweep_dir), callbacks=callbacks, verbose=options.verbose,
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    fit_started = time.perf_counter()
    results = tuner.fit()
    fit_seconds = time.perf_counter() - fit_started
    close_lost_trials(client, experiment, parent_id, {r.metrics.get("trial_id") for r in results})
    errors = sum(1 for r in results if r.error)
    client.log_metric(parent_id, "trials", len(results))
    client.log_metric(parent_id, "failed_trials", errors)
    client.log_metric(parent_id, "wall_time_s", time.perf_counter() - started)
    client.set_terminated(parent_id, "FINISHED")
    return results, {**record, "sweep_dir": str(sweep_dir), "tracking_uri": tracking_uri, "optuna_storage": optuna_db,
                     "fit_seconds": fit_seconds}
