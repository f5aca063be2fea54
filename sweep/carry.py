"""Carry stopped sweeps to another checkout or machine, for their --resume there.

A sweep's state is its storage folder (ray_results/<sweep>/: sweep.json, Tune's experiment state, the
trials' folders and checkpoints) and its MLflow store (the SQLite database, Optuna's database beside
it, the experiments' artifact folders in the database's folder). `pack` writes both into one .tar.xz.
It leaves out the checkpoints of finished trials (their results are in MLflow; a resume never reads
them) and keeps every checkpoint of the unfinished ones. `unpack` puts everything back at the absolute
paths it was packed from (sweep.json and Tune's state name them, so the checkout must be at the same
path), refusing to overwrite anything there, and prints the command that continues each sweep (e.g.
`python sweep/pruning_ratio.py --profile cpu --resume`) as if it had never moved.

    python -m sweep.carry pack ARCHIVE.tar.xz ray_results/<sweep> [ray_results/<sweep> ...]
    python -m sweep.carry unpack ARCHIVE.tar.xz [--root CHECKOUT]
"""

import argparse
import io
import json
import lzma
import os
import shlex
import sqlite3
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import runrecord
from slt.errors import InputError
from sweep.engine import PROGRESS_DIR, SWEEP_FILE
from sweep.tracking import child_runs

MANIFEST = "carry.json"  # the archive's first member: where it was packed from and what it holds
CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders in a trial's folder


def dropped_checkpoints(sweep_dir: Path, finished: set[str]) -> set[Path]:
    """The checkpoint folders a resume never reads: those of a trial whose run is recorded FINISHED
    (`finished`: trial ids) and whose newest checkpoint holds its final record (metrics.json). A trial is
    found from its note in the sweep's progress folder (its id -> its newest checkpoint). Every other trial
    keeps all of its own: Tune restores a trial from the checkpoint its snapshot names (which may be older
    than the newest), and fails the trial if that one is gone."""
    done_trials = set()
    for note in (sweep_dir / PROGRESS_DIR).glob("*.json"):
        try:
            noted = Path(json.loads(note.read_text())["checkpoint"])
        except (OSError, ValueError, KeyError):
            continue
        if note.stem in finished:
            done_trials.add(noted.parent)
    dropped = set()
    for trial in done_trials:
        checkpoints = sorted(trial.glob(f"{CHECKPOINT_PREFIX}*/"), key=runrecord.checkpoint_epochs)
        if checkpoints and (checkpoints[-1] / runrecord.METRICS_FILE).is_file():
            dropped.update(checkpoints)
    return dropped


def _record(sweep_dir: Path) -> dict:
    try:
        record = json.loads((sweep_dir / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        raise InputError("sweep", f"{sweep_dir} is not a sweep's storage folder (no readable {SWEEP_FILE})") from None
    missing = [key for key in ("tracking_uri", "experiment_id", "parent_run_id") if not record.get(key)]
    if missing:
        raise InputError("sweep", f"{sweep_dir / SWEEP_FILE} has no {', '.join(missing)}: its parent run was never "
                                  "opened; run it with --resume once before packing")
    if record.get("sittings") and record["sittings"][-1].get("ended") is None:
        raise InputError("sweep", f"{sweep_dir.name} is running (or its driver was killed): stop it with Ctrl-C, "
                                  "or --resume and then Ctrl-C it, before packing")
    return record


def _local_path(uri: str) -> Path | None:
    """The folder of a local artifact location (file:// URI or plain path), else None."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(uri)).resolve() if urlparse(uri).scheme in ("", "file") else None


def tracking_store(records: list[dict]) -> tuple[Path, list[Path]]:
    """The sweeps' one SQLite MLflow database and the artifact folders beside it: every experiment's whose
    folder is in the database's folder (the sweeps' own must be)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    databases = {runrecord.sqlite_path(r["tracking_uri"]) for r in records}
    if None in databases:
        raise InputError("sweep", "only sweeps recorded to a local SQLite MLflow database can be packed (a tracking "
                                  "server keeps its own records)")
    if len(databases) > 1:
        raise InputError("sweep", f"the sweeps record to {len(databases)} MLflow databases; pack each database's "
                                  "sweeps into an archive of their own")
    database = databases.pop().resolve()
    try:
        experiments = MlflowClient(records[0]["tracking_uri"]).search_experiments(view_type=ViewType.ALL)
    except MlflowException as err:
        raise InputError("sweep", f"cannot read the MLflow database {database} ({err.error_code})") from None
    folders = {e.experiment_id: _local_path(e.artifact_location) for e in experiments}
    for record in records:
        own = folders.get(record["experiment_id"])
        if own is None or not own.is_relative_to(database.parent):
            raise InputError("sweep", f"experiment {record['experiment_id']}'s artifacts are not in {database.parent}; "
                                      "allowed: artifacts in the database's folder (the default)")
    return database, sorted(f for f in folders.values() if f and f.is_relative_to(database.parent) and f.is_dir())


def finished_trials(record: dict) -> set[str]:
    """Ids of the sweep's trials whose runs are recorded FINISHED."""
    from mlflow.tracking import MlflowClient

    runs = child_runs(MlflowClient(record["tracking_uri"]), record["experiment_id"], record["parent_run_id"], "FINISHED")
    return {run.data.tags.get(runrecord.TRIAL_TAG) for run in runs}


def pack(archive: Path, sweep_dirs: list[Path]) -> dict:
    """Write the sweeps' storage folders, their MLflow database (and Optuna's beside it, each copied whole by
    SQLite's backup, so a sweep writing to it meanwhile cannot tear it) and its artifact folders into
    `archive` (a new .tar.xz); returns the manifest. Every named sweep must be stopped."""
    if not archive.name.endswith(".tar.xz"):
        raise InputError("archive", f"{archive.name}: allowed: a file name ending in .tar.xz")
    if archive.exists():
        raise InputError("archive", f"{archive} already exists; choose a new file (nothing recorded is overwritten)")
    if not sweep_dirs:
        raise InputError("sweep", "name at least one sweep folder (ray_results/<sweep>)")
    sweep_dirs = [Path(d).resolve() for d in sweep_dirs]
    records = [_record(d) for d in sweep_dirs]
    database, artifacts = tracking_store(records)
    databases = [database] + [path for path in [runrecord.sqlite_path(runrecord.optuna_storage(
        records[0]["tracking_uri"], Path("ray_results")))] if path.is_file()]
    dropped = set().union(*(dropped_checkpoints(d, finished_trials(r)) for d, r in zip(sweep_dirs, records)))
    root = Path(os.path.commonpath([database.parent, *sweep_dirs]))
    files = sorted({path for folder in (*sweep_dirs, *artifacts) for path in folder.rglob("*")
                    if path.is_file() and not dropped.intersection(path.parents)})
    manifest = {"root": str(root), "sweeps": [str(d.relative_to(root)) for d in sweep_dirs],
                "tracking": str(database.relative_to(root)), "files": len(files) + len(databases),
                "dropped_checkpoints": len(dropped)}
    archive = archive.resolve()
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    _write(partial, manifest, root, files, databases)
    partial.replace(archive)  # whole or not at all
    return manifest


def _write(path: Path, manifest: dict, root: Path, files: list[Path], databases: list[Path]) -> None:
    with tarfile.open(path, "w:xz") as tar, tempfile.TemporaryDirectory() as scratch:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for database in databases:
            copy = Path(scratch) / database.name
            with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
                source.backup(target)
            tar.add(copy, arcname=str(database.relative_to(root)), recursive=False)
        for file in files:
            tar.add(file, arcname=str(file.relative_to(root)), recursive=False)


def unpack(archive: Path, expect_root: Path | None = None) -> dict:
    """Put an archive's sweeps and MLflow store back where they were packed from (sweep.json and Tune's state
    name those paths); returns the manifest. Refuses, before writing anything, an archive packed elsewhere
    than `expect_root` (when given) or than any folder here, and one with any file already there."""
    not_ours = "allowed: a .tar.xz that `python -m sweep.carry pack` wrote"
    try:
        with tarfile.open(archive, "r:xz") as tar:
            manifest = json.load(tar.extractfile(MANIFEST))
            root = Path(manifest["root"])
            members = [m for m in tar.getmembers() if m.name != MANIFEST]
            if expect_root is not None and root != Path(expect_root).resolve():
                raise InputError("archive", f"it was packed in {root}, not in {Path(expect_root).resolve()}; allowed: "
                                            "unpacking in a checkout at the path it was packed in")
            if not root.is_dir():
                raise InputError("archive", f"it was packed in {root}, which is not here; allowed: unpacking on a "
                                            "machine with a checkout at that path")
            present = [root / m.name for m in members if (root / m.name).exists()]
            if present:
                raise InputError("archive", f"{len(present)} of its files exist already (first: {present[0]}); "
                                            "allowed: unpacking where none is (nothing recorded is overwritten)")
            tar.extractall(root, members=members, filter="data")
    except InputError:
        raise
    except (tarfile.TarError, EOFError, lzma.LZMAError, KeyError, TypeError, ValueError) as err:
        raise InputError("archive", f"cannot read {archive} ({type(err).__name__}); {not_ours}") from None
    except OSError as err:
        raise InputError("archive", f"cannot unpack {archive} ({err.strerror or type(err).__name__}: "
                                    f"{err.filename}); {not_ours}, into a folder this user can write") from None
    return manifest


def resume_command(root: Path, sweep: str) -> str:
    """The command, run in `root`, that continues an unpacked sweep as its sweep.json says it was started."""
    sweep_dir = root / sweep
    space = json.loads((sweep_dir / SWEEP_FILE).read_text())["space"]
    file = Path(space["file"])
    if file == root / "search_spaces" / file.name and (root / "sweep" / f"{file.stem}.py").is_file():
        args = ["python", f"sweep/{file.stem}.py"]
    else:  # every sweep script runs any space given with --space; pruning_ratio's is the one the calibrations used
        shown = file.relative_to(root) if file.is_relative_to(root) else file
        args = ["python", "sweep/pruning_ratio.py", "--space", str(shown)]
    args += ["--profile", space["profile"]]
    args += [item for override in space.get("overrides", []) for item in ("--set", override)]
    if sweep_dir.parent != root / "ray_results":
        args += ["--storage", str(sweep_dir.parent.relative_to(root))]
    return shlex.join(args + ["--resume"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.carry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write stopped sweeps and their MLflow store into a .tar.xz")
    packing.add_argument("archive", type=Path)
    packing.add_argument("sweeps", type=Path, nargs="+", metavar="SWEEP_DIR", help="ray_results/<sweep>")
    unpacking = commands.add_parser("unpack", help="put an archive's sweeps back where they were packed from")
    unpacking.add_argument("archive", type=Path)
    unpacking.add_argument("--root", type=Path, default=None,
                           help="refuse unless the archive was packed in this folder (a checkout's root)")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.archive, args.sweeps)
            print(f"packed {len(manifest['sweeps'])} sweep(s) and {manifest['tracking']} from {manifest['root']}: "
                  f"{manifest['files']} files ({manifest['dropped_checkpoints']} checkpoints a resume does not "
                  f"read left out), {args.archive.stat().st_size / 2**20:.1f} MiB -> {args.archive}")
        else:
            manifest = unpack(args.archive, args.root)
            root = Path(manifest["root"])
            commands = "\n".join(f"  {resume_command(root, sweep)}" for sweep in manifest["sweeps"])
            print(f"unpacked into {root}: {', '.join(manifest['sweeps'])} and {manifest['tracking']}; "
                  f"continue them in {root} with:\n{commands}")
    except InputError as err:
        print(f"sweep.carry: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
