"""sweep.carry: which checkpoints a packed sweep leaves out, the round trip, and what it refuses."""

import io
import json
import sqlite3
import tarfile

import pytest
from mlflow.tracking import MlflowClient

import runrecord
from slt.errors import InputError
from sweep.carry import CHECKPOINT_PREFIX, MANIFEST, dropped_checkpoints, main, pack, resume_command, unpack
from sweep.engine import PROGRESS_DIR


def checkpoint(trial, index, epoch, final=False):
    folder = trial / f"{CHECKPOINT_PREFIX}{index:06d}"
    folder.mkdir(parents=True)
    (folder / runrecord.TRIAL_STATE_FILE).write_bytes(bytes([index]) * 100)
    (folder / runrecord.TRIAL_PROGRESS_FILE).write_text(json.dumps({"epoch": epoch}))
    if final:
        (folder / runrecord.METRICS_FILE).write_text("{}")
    return folder


def note(sweep, trial_id, newest):
    """The trial's note of its newest checkpoint, as trainables.ticket writes it."""
    (sweep / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    (sweep / PROGRESS_DIR / f"{trial_id}.json").write_text(json.dumps({"checkpoint": str(newest)}))


def make_store(folder, artifacts=None):
    """A real SQLite MLflow store with one experiment (artifacts in `artifacts`, by default inside the store's
    folder), a parent run and two child runs: trial t0 FINISHED, trial t1 KILLED (interrupted)."""
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    artifacts = artifacts or folder / "1"
    experiment = client.create_experiment("s", artifact_location=str(artifacts))
    parent = client.create_run(experiment).info.run_id
    for trial, status in (("t0", "FINISHED"), ("t1", "KILLED")):
        child = client.create_run(experiment, tags={runrecord.PARENT_TAG: parent, runrecord.TRIAL_TAG: trial})
        client.set_terminated(child.info.run_id, status)
    (artifacts / "run" / "artifacts").mkdir(parents=True)
    (artifacts / "run" / "artifacts" / "metrics.json").write_text('{"val_accuracy": 0.5}')
    (folder / "notes.txt").write_text("not MLflow's")  # not packed: only the store's own files are
    return uri, experiment, parent


@pytest.fixture
def tracking(tmp_path):
    return make_store(tmp_path / "project" / "mlruns")


def make_sweep(root, tracking, sittings=((0.0, 1.0),)):
    """A stopped sweep's folder: trial t0 finished (2 checkpoints), trial t1 interrupted after epoch 5 (2)."""
    uri, experiment, parent = tracking
    sweep = root / "ray_results" / "s-cpu-1"
    (sweep / "tune").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({
        "tracking_uri": uri, "experiment_id": experiment, "parent_run_id": parent,
        "space": {"file": str(root / "spaces" / "s.yaml"), "sha256": "0" * 16, "profile": "cpu",
                  "overrides": ["base.epochs=3"]},
        "sittings": [{"started": started, "ended": ended} for started, ended in sittings]}))
    (sweep / "tune" / "experiment_state.json").write_text("{}")
    done, running = sweep / "tune" / "trial_0", sweep / "tune" / "trial_1"
    checkpoint(done, 2, 9)
    note(sweep, "t0", checkpoint(done, 3, 10, final=True))
    checkpoint(running, 3, 4)
    note(sweep, "t1", checkpoint(running, 4, 5))
    (running / "result.json").write_text("{}\n")
    return sweep


def test_a_finished_trial_keeps_no_checkpoint_and_any_other_all_of_its_own(tmp_path):
    sweep = tmp_path / "s"
    a = [checkpoint(sweep / "tune" / "a", 0, 1), checkpoint(sweep / "tune" / "a", 1, 2, final=True)]
    b = [checkpoint(sweep / "tune" / "b", 9, 3), checkpoint(sweep / "tune" / "b", 10, 4)]  # 000009 < 000010
    c = [checkpoint(sweep / "tune" / "c", 0, 7)]
    d = [checkpoint(sweep / "tune" / "d", 0, 1), checkpoint(sweep / "tune" / "d", 1, 2, final=True)]
    for trial, checkpoints in zip("abcd", (a, b, c, d)):
        note(sweep, trial, checkpoints[-1])
    # d ran its last epoch, but its run was not closed FINISHED: a resume reports its final result again
    # from that checkpoint, so it stays (b's run is FINISHED but its newest checkpoint is not final: it stays)
    assert dropped_checkpoints(sweep, finished={"a", "b"}) == {a[0], a[1]}
    (sweep / PROGRESS_DIR / "a.json").unlink()  # a trial found without its note keeps its checkpoints
    assert dropped_checkpoints(sweep, finished={"a", "b"}) == set()


def test_pack_then_unpack_puts_back_every_file_a_resume_reads(tracking, capsys):
    root = runrecord.sqlite_path(tracking[0]).parent.parent
    # an earlier sitting ended by kill -9 (never timed) does not stop a sweep stopped since from being packed
    sweep = make_sweep(root, tracking, sittings=((0.0, None), (5.0, 9.0)))
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    archive = root / "carried" / "s.tar.xz"
    assert main(["pack", str(archive), str(sweep)]) == 0
    assert "1 sweep(s) and mlruns/mlflow.db" in capsys.readouterr().out
    with tarfile.open(archive, "r:xz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))
    assert names[0] == MANIFEST
    assert sorted(names[1:]) == sorted([
        "mlruns/mlflow.db", "mlruns/1/run/artifacts/metrics.json", "ray_results/s-cpu-1/sweep.json",
        "ray_results/s-cpu-1/tune/experiment_state.json", "ray_results/s-cpu-1/tune/trial_1/result.json",
        "ray_results/s-cpu-1/progress/t0.json", "ray_results/s-cpu-1/progress/t1.json",
        "ray_results/s-cpu-1/tune/trial_1/checkpoint_000003/state.pt",
        "ray_results/s-cpu-1/tune/trial_1/checkpoint_000003/progress.json",
        "ray_results/s-cpu-1/tune/trial_1/checkpoint_000004/state.pt",
        "ray_results/s-cpu-1/tune/trial_1/checkpoint_000004/progress.json"])
    assert manifest == {"root": str(root), "sweeps": ["ray_results/s-cpu-1"], "tracking": "mlruns/mlflow.db",
                        "files": 11, "dropped_checkpoints": 2}

    for path in (root / "ray_results", root / "mlruns"):  # a new checkout: neither folder is there
        for file in sorted(path.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        path.rmdir()
    with pytest.raises(InputError, match=f"packed in {root}, not in {root / 'carried'}"):
        unpack(archive, expect_root=root / "carried")
    assert main(["unpack", str(archive), "--root", str(root)]) == 0
    assert capsys.readouterr().out.endswith(
        f"continue them in {root} with:\n"
        "  python sweep/pruning_ratio.py --space spaces/s.yaml --profile cpu --set base.epochs=3 --resume\n")
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and "carried" not in p.parts}
    kept = {k: v for k, v in before.items() if k.as_posix() in names and k.name != "mlflow.db"}
    assert {k: v for k, v in after.items() if k.name != "mlflow.db"} == kept and len(after) == 11
    client = MlflowClient(f"sqlite:///{root}/./mlruns/mlflow.db")  # a URI this process has not opened yet
    assert client.get_experiment(tracking[1]).name == "s"  # the store opens where it was, runs and all
    assert {r.data.tags.get(runrecord.TRIAL_TAG) for r in client.search_runs([tracking[1]])} == {"t0", "t1", None}

    with pytest.raises(InputError, match="11 of its files exist already") as err:  # nothing overwritten
        unpack(archive)
    assert str(root / "mlruns") in str(err.value)
    assert main(["unpack", str(archive)]) == 2
    assert capsys.readouterr().err.startswith("sweep.carry: error: archive: 11 of its files exist already")


def test_the_resume_command_of_an_unpacked_sweep_is_the_one_it_was_started_with(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "timestep.py").write_text("")

    def sweep(folder, file, profile="cpu", overrides=()):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "sweep.json").write_text(json.dumps(
            {"space": {"file": str(file), "profile": profile, "overrides": list(overrides)}}))
        return folder

    bundled = sweep("ray_results/timestep-cpu-1", tmp_path / "search_spaces" / "timestep.yaml")
    assert resume_command(tmp_path, bundled) == "python sweep/timestep.py --profile cpu --resume"
    # a file of its own, --set overrides (quoted for the shell) and another storage folder
    own = sweep("elsewhere/cal-cpu-1", tmp_path / "docs" / "cal.yaml", "demo", ["base.lr=0.1", "note=a b"])
    assert resume_command(tmp_path, own) == ("python sweep/pruning_ratio.py --space docs/cal.yaml --profile demo "
                                             "--set base.lr=0.1 --set 'note=a b' --storage elsewhere --resume")
    outside = sweep("ray_results/x-cpu-1", "/srv/spaces/timestep.yaml")  # not this checkout's bundled file
    assert resume_command(tmp_path, outside) == ("python sweep/pruning_ratio.py --space /srv/spaces/timestep.yaml "
                                                 "--profile cpu --resume")


def test_the_database_is_copied_whole_while_another_sweep_holds_it_open(tracking, tmp_path):
    sweep = make_sweep(tmp_path / "b", tracking)
    database = runrecord.sqlite_path(tracking[0])
    writer = sqlite3.connect(database, isolation_level=None)  # a sweep mid-transaction on the shared store
    writer.execute("BEGIN")
    writer.execute("CREATE TABLE half_written (x)")  # ...whose write is not packed
    pack(tmp_path / "x.tar.xz", [sweep])
    writer.rollback()
    writer.close()
    with tarfile.open(tmp_path / "x.tar.xz", "r:xz") as tar:
        copy = tmp_path / "copy.db"
        copy.write_bytes(tar.extractfile(f"{database.relative_to(tmp_path)}").read())
        assert not any(n.endswith(("-journal", "-wal", "-shm")) for n in tar.getnames())
    tables = {row[0] for row in sqlite3.connect(copy).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "runs" in tables and "half_written" not in tables


def test_pack_refuses_a_running_sweep_an_existing_archive_and_a_store_it_cannot_carry(tracking, tmp_path):
    running = make_sweep(tmp_path / "a", tracking, sittings=((0.0, 1.0), (2.0, None)))
    with pytest.raises(InputError, match="s-cpu-1 is running"):
        pack(tmp_path / "x.tar.xz", [running])
    stopped = make_sweep(tmp_path / "b", tracking)
    (tmp_path / "old.tar.xz").write_text("recorded")
    with pytest.raises(InputError, match="already exists"):
        pack(tmp_path / "old.tar.xz", [stopped])
    assert (tmp_path / "old.tar.xz").read_text() == "recorded"
    with pytest.raises(InputError, match="allowed: a file name ending in .tar.xz"):
        pack(tmp_path / "x.zip", [stopped])
    other = make_sweep(tmp_path / "c", make_store(tmp_path / "c" / "mlruns"))
    with pytest.raises(InputError, match="the sweeps record to 2 MLflow databases"):
        pack(tmp_path / "x.tar.xz", [stopped, other])
    outside = make_sweep(tmp_path / "d", make_store(tmp_path / "d" / "mlruns", artifacts=tmp_path / "elsewhere"))
    with pytest.raises(InputError, match=r"artifacts are not in .*; allowed: artifacts in the database's folder"):
        pack(tmp_path / "x.tar.xz", [outside])
    record = json.loads((stopped / "sweep.json").read_text())
    (stopped / "sweep.json").write_text(json.dumps({**record, "tracking_uri": "http://127.0.0.1:5000"}))
    with pytest.raises(InputError, match="only sweeps recorded to a local SQLite MLflow database"):
        pack(tmp_path / "x.tar.xz", [stopped])
    (stopped / "sweep.json").write_text(json.dumps({**record, "parent_run_id": None}))
    with pytest.raises(InputError, match="has no parent_run_id"):
        pack(tmp_path / "x.tar.xz", [stopped])
    with pytest.raises(InputError, match="no readable sweep.json"):
        pack(tmp_path / "x.tar.xz", [tmp_path])
    assert not (tmp_path / "x.tar.xz").exists()


def tar_with(path, manifest, name="x", data=b"x"):
    with tarfile.open(path, "w:xz") as tar:
        for member, content in ([(MANIFEST, json.dumps(manifest).encode())] if manifest else []) + [(name, data)]:
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_unpack_refuses_what_pack_did_not_write_and_a_member_outside_its_root(tmp_path):
    (tmp_path / "junk.tar.xz").write_bytes(b"not an archive")
    with pytest.raises(InputError, match="cannot read .*junk.tar.xz .*allowed: a .tar.xz that"):
        unpack(tmp_path / "junk.tar.xz")
    tar_with(tmp_path / "bare.tar.xz", None)
    with pytest.raises(InputError, match=r"cannot read .*bare.tar.xz \(KeyError\)"):
        unpack(tmp_path / "bare.tar.xz")
    tar_with(tmp_path / "away.tar.xz", {"root": str(tmp_path / "nowhere"), "sweeps": [], "tracking": "m"})
    with pytest.raises(InputError, match="nowhere, which is not here"):
        unpack(tmp_path / "away.tar.xz")
    (tmp_path / "root").mkdir()
    tar_with(tmp_path / "escape.tar.xz", {"root": str(tmp_path / "root"), "sweeps": [], "tracking": "m"},
             name="../escaped")
    with pytest.raises(InputError, match=r"cannot read .*escape.tar.xz \(OutsideDestinationError\)"):
        unpack(tmp_path / "escape.tar.xz")
    assert not (tmp_path / "escaped").exists()
