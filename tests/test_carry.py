"""sweep.carry: which checkpoints a packed sweep leaves out, the round trip, and what it refuses."""

import json
import tarfile

import pytest
from mlflow.tracking import MlflowClient

import runrecord
from slt.errors import InputError
from sweep.carry import MANIFEST, dropped_checkpoints, main, pack, unpack


def checkpoint(trial, index, epoch, final=False):
    folder = trial / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    (folder / runrecord.TRIAL_STATE_FILE).write_bytes(bytes([index]) * 100)
    (folder / runrecord.TRIAL_PROGRESS_FILE).write_text(json.dumps({"epoch": epoch}))
    if final:
        (folder / runrecord.METRICS_FILE).write_text("{}")
    return folder


def note(sweep, trial_id, newest):
    """The trial's note of its newest checkpoint, as trainables.ticket writes it."""
    (sweep / "progress").mkdir(parents=True, exist_ok=True)
    (sweep / "progress" / f"{trial_id}.json").write_text(json.dumps({"checkpoint": str(newest)}))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A real SQLite MLflow store with one experiment (artifacts inside the store's folder), a parent run and
    two child runs: trial t0 FINISHED, trial t1 KILLED (interrupted)."""
    folder = tmp_path_factory.mktemp("project") / "mlruns"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("s", artifact_location=str(folder / "1"))
    parent = client.create_run(experiment).info.run_id
    for trial, status in (("t0", "FINISHED"), ("t1", "KILLED")):
        child = client.create_run(experiment, tags={runrecord.PARENT_TAG: parent, runrecord.TRIAL_TAG: trial})
        client.set_terminated(child.info.run_id, status)
    (folder / "1" / "run" / "artifacts").mkdir(parents=True)
    (folder / "1" / "run" / "artifacts" / "metrics.json").write_text('{"val_accuracy": 0.5}')
    return folder, uri, experiment, parent


def make_sweep(root, tracking, ended=1.0):
    """A stopped sweep's folder: trial t0 finished (2 checkpoints), trial t1 interrupted after epoch 5 (2)."""
    _, uri, experiment, parent = tracking
    sweep = root / "ray_results" / "s-cpu-1"
    (sweep / "tune").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"tracking_uri": uri, "experiment_id": experiment,
                                                  "parent_run_id": parent,
                                                  "sittings": [{"started": 0.0, "ended": ended}]}))
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
    # from that checkpoint, so it stays
    # (b's run is FINISHED but its newest checkpoint is not final: it stays too)
    assert dropped_checkpoints(sweep, finished={"a", "b"}) == {a[0], a[1]}
    (sweep / "progress" / "a.json").unlink()  # a trial found without its note keeps its checkpoints
    assert dropped_checkpoints(sweep, finished={"a", "b"}) == set()


def test_pack_then_unpack_puts_back_every_file_a_resume_reads(tracking, capsys):
    folder, uri, experiment, _ = tracking
    root = folder.parent
    sweep = make_sweep(root, tracking)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    archive = root / "carried" / "s.tar.xz"
    assert main(["pack", str(archive), str(sweep)]) == 0
    assert "1 sweep(s) and mlruns/" in capsys.readouterr().out
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
    assert manifest == {"root": str(root), "sweeps": ["ray_results/s-cpu-1"], "tracking": "mlruns", "files": 11,
                        "dropped_checkpoints": 2}

    for path in (root / "ray_results", folder):  # a new checkout: neither folder is there
        for file in sorted(path.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
    assert unpack(archive)["sweeps"] == ["ray_results/s-cpu-1"]
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and "carried" not in p.parts}
    kept = {k: v for k, v in before.items() if k.as_posix() in names}
    assert after == kept and len(after) == 11
    assert MlflowClient(uri).get_experiment(experiment).name == "s"  # the store opens where it was

    with pytest.raises(InputError, match="11 of its files exist already") as err:  # nothing overwritten
        unpack(archive)
    assert str(root / "mlruns") in str(err.value)
    assert main(["unpack", str(archive)]) == 2
    assert capsys.readouterr().err.startswith("sweep.carry: error: archive: 11 of its files exist already")


def test_pack_refuses_a_running_sweep_an_existing_archive_and_a_tracking_server(tracking, tmp_path):
    running = make_sweep(tmp_path / "a", tracking, ended=None)
    with pytest.raises(InputError, match="s-cpu-1 is running"):
        pack(tmp_path / "x.tar.xz", [running])
    stopped = make_sweep(tmp_path / "b", tracking)
    (tmp_path / "old.tar.xz").write_text("recorded")
    with pytest.raises(InputError, match="already exists"):
        pack(tmp_path / "old.tar.xz", [stopped])
    assert (tmp_path / "old.tar.xz").read_text() == "recorded"
    with pytest.raises(InputError, match="allowed: a file name ending in .tar.xz"):
        pack(tmp_path / "x.zip", [stopped])
    (stopped / "sweep.json").write_text(json.dumps({"tracking_uri": "http://127.0.0.1:5000", "sittings": []}))
    with pytest.raises(InputError, match="only a sweep recorded to a local SQLite MLflow database"):
        pack(tmp_path / "x.tar.xz", [stopped])
    with pytest.raises(InputError, match="no readable sweep.json"):
        pack(tmp_path / "x.tar.xz", [tmp_path])
    assert not (tmp_path / "x.tar.xz").exists()


def test_unpack_refuses_a_file_it_did_not_write(tmp_path):
    (tmp_path / "x.tar.xz").write_bytes(b"not an archive")
    with pytest.raises(InputError, match="cannot read"):
        unpack(tmp_path / "x.tar.xz")
