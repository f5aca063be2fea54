"""Carry stopped sweeps to another checkout or machine, for their --resume there.

A sweep's state is its storage folder (ray_results/<sweep>/: sweep.json, Tune's experiment state, the
trials' folders and checkpoints) and its tracking folder (the folder of its SQLite MLflow database:
mlflow.db, optuna.db, the runs' artifacts). `pack` writes both into one .tar.xz, leaving out the
checkpoints of finished trials (their results are in MLflow; a resume never reads them) and keeping
every checkpoint of the unfinished ones. `unpack` puts them back at the paths they were packed from
(sweep.json and Tune's state name them), refusing to overwrite anything there. Then `python sweep/<space>.py
--profile P --resume` continues each sweep as if it had never moved.

    python -m sweep.carry pack ARCHIVE.tar.xz ray_results/<sweep> [ray_results/<sweep> ...]
    python -m sweep.carry unpack ARCHIVE.tar.xz
"""

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import runrecord
from slt.errors import InputError
from sweep.engine import PROGRESS_DIR, SWEEP_FILE

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
        return json.loads((sweep_dir / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        raise InputError("sweep", f"{sweep_dir} is not a sweep's storage folder (no readable {SWEEP_FILE})") from None


def finished_trials(record: dict) -> set[str]:
    """Ids of the sweep's trials whose runs are recorded FINISHED."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(record["tracking_uri"]).search_runs(
        [record["experiment_id"]], max_results=50000,
        filter_string=f"tags.`{runrecord.PARENT_TAG}` = '{record['parent_run_id']}' and attributes.status = 'FINISHED'")
    return {run.data.tags.get(runrecord.TRIAL_TAG) for run in runs}


def tracking_folder(record: dict, sweep_dir: Path) -> Path:
    """The folder of the sweep's SQLite MLflow database, which must hold its experiment's artifacts too."""
    from mlflow.tracking import MlflowClient

    database = runrecord.sqlite_path(record.get("tracking_uri", ""))
    if database is None:
        raise InputError("sweep", f"{sweep_dir} records to {record.get('tracking_uri')!r}; only a sweep recorded "
                                  "to a local SQLite MLflow database can be packed (a tracking server keeps its "
                                  "own records)")
    folder = database.resolve().parent
    artifacts = MlflowClient(record["tracking_uri"]).get_experiment(record["experiment_id"]).artifact_location
    artifacts = Path(artifacts.removeprefix("file://")).resolve()
    if not artifacts.is_relative_to(folder):
        raise InputError("sweep", f"{sweep_dir.name}'s artifacts are in {artifacts}, outside its tracking folder "
                                  f"{folder}; only a self-contained tracking folder can be packed")
    return folder


def pack(archive: Path, sweep_dirs: list[Path]) -> dict:
    """Write the sweeps' storage folders and their tracking folder into `archive` (a new .tar.xz); returns the
    manifest. Every sweep must be stopped (a running driver keeps writing) and share one tracking folder."""
    if not archive.name.endswith(".tar.xz"):
        raise InputError("archive", f"{archive.name}: allowed: a file name ending in .tar.xz")
    if archive.exists():
        raise InputError("archive", f"{archive} already exists; choose a new file (nothing recorded is overwritten)")
    archive = archive.resolve()
    partial = archive.with_name(archive.name + ".partial")
    if not sweep_dirs:
        raise InputError("sweep", "name at least one sweep folder (ray_results/<sweep>)")
    sweep_dirs = [Path(d).resolve() for d in sweep_dirs]
    folders, dropped = set(), set()
    for sweep_dir in sweep_dirs:
        record = _record(sweep_dir)
        if any(sitting.get("ended") is None for sitting in record.get("sittings", [])):
            raise InputError("sweep", f"{sweep_dir.name} is running (or its driver was killed): stop it with Ctrl-C, "
                                      "or --resume and then Ctrl-C it, before packing")
        folders.add(tracking_folder(record, sweep_dir))
        dropped |= dropped_checkpoints(sweep_dir, finished_trials(record))
    if len(folders) > 1:
        raise InputError("sweep", f"the sweeps record to {len(folders)} tracking folders; pack each folder's "
                                  "sweeps into an archive of their own")
    tracking = folders.pop()
    roots = [tracking, *sweep_dirs]
    root = Path(os.path.commonpath(roots))
    members = sorted({path for folder in roots for path in folder.rglob("*")  # a set: the folders may nest
                      if path.is_file() and not dropped.intersection(path.parents) and path != partial})
    manifest = {"root": str(root), "sweeps": [str(d.relative_to(root)) for d in sweep_dirs],
                "tracking": str(tracking.relative_to(root)), "files": len(members),
                "dropped_checkpoints": len(dropped)}
    archive.parent.mkdir(parents=True, exist_ok=True)
    _write(partial, manifest, members, root)
    partial.replace(archive)  # whole or not at all
    return manifest


def _write(path: Path, manifest: dict, members: list[Path], root: Path) -> None:
    with tarfile.open(path, "w:xz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for member in members:
            tar.add(member, arcname=str(member.relative_to(root)), recursive=False)


def unpack(archive: Path) -> dict:
    """Put an archive's sweeps and tracking folder back where they were packed from; returns the manifest.
    Refuses, before writing anything, if any of its files is already there."""
    try:
        tar = tarfile.open(archive, "r:xz")
    except (OSError, tarfile.TarError) as err:
        raise InputError("archive", f"cannot read {archive} ({type(err).__name__}); allowed: a .tar.xz that "
                                    "`python -m sweep.carry pack` wrote") from None
    with tar:
        try:
            manifest = json.load(tar.extractfile(MANIFEST))
        except (KeyError, ValueError):
            raise InputError("archive", f"{archive} has no {MANIFEST}; it was not written by sweep.carry pack") from None
        root = Path(manifest["root"])
        members = [m for m in tar.getmembers() if m.name != MANIFEST]
        present = [root / m.name for m in members if (root / m.name).exists()]
        if present:
            raise InputError("archive", f"{len(present)} of its files exist already (first: {present[0]}); move them "
                                        "away first (nothing recorded is overwritten)")
        root.mkdir(parents=True, exist_ok=True)
        tar.extractall(root, members=members, filter="data")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.carry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write stopped sweeps and their MLflow folder into a .tar.xz")
    packing.add_argument("archive", type=Path)
    packing.add_argument("sweeps", type=Path, nargs="+", metavar="SWEEP_DIR", help="ray_results/<sweep>")
    unpacking = commands.add_parser("unpack", help="put an archive's sweeps back where they were packed from")
    unpacking.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.archive, args.sweeps)
            print(f"packed {len(manifest['sweeps'])} sweep(s) and {manifest['tracking']}/ from {manifest['root']}: "
                  f"{manifest['files']} files ({manifest['dropped_checkpoints']} checkpoints a resume does not "
                  f"read left out), {args.archive.stat().st_size / 2**20:.1f} MiB -> {args.archive}")
        else:
            manifest = unpack(args.archive)
            print(f"unpacked into {manifest['root']}: {', '.join(manifest['sweeps'])} and {manifest['tracking']}/; "
                  "continue each with python sweep/<space>.py --profile <profile> --resume")
    except InputError as err:
        print(f"sweep.carry: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
