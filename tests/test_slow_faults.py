"""Faults a long sweep must survive, injected for real (slow): the driver killed (SIGKILL) at several
moments, Ctrl-C (SIGINT to the driver's process group, as a terminal sends it), the tracking server
stopped for ~20 s, and a Ray worker node lost in the middle of a trial. Every process is stopped by PID;
servers bind to 127.0.0.1 (the two Ray nodes to 127.0.0.2, see test_slow_launch) on free ports."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from contextlib import suppress
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from launch_support import VENV_BIN, Processes, free_port, http_status, ray_env, ray_worker_argv, wait_until
from test_slow_launch import procs, ray_json, scratch, start_ray_head  # noqa: F401 (procs, scratch: fixtures)
from test_slow_sweep import children, sweep_cmd, wait_for

pytestmark = pytest.mark.slow


def start(tmp_path, *extra, **popen) -> subprocess.Popen:
    """The demo sweep's driver in a process group of its own (its Ray processes join that group)."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(sweep_cmd(tmp_path, "decay_rate", *extra), cwd=tmp_path, start_new_session=True,
                            text=True, **popen)


def kill(driver: subprocess.Popen) -> None:
    """kill -9 of the driver and, by process group, of the Ray processes it started."""
    with suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)


def running_with_epochs(tmp_path, at_least: int) -> list:
    return [k for k in children(tmp_path)[2]
            if k.info.status == "RUNNING" and k.data.metrics.get("epoch", 0) >= at_least]


def check_complete(client, parents, kids, trials: int, epochs: int) -> None:
    """One FINISHED parent; `trials` FINISHED children with distinct trial ids (besides runs closed as
    lost), none RUNNING, every epoch logged exactly once."""
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "reason" not in parents[0].data.tags  # a stop's reason is cleared by the resume that completed it
    assert not [k for k in kids if k.info.status == "RUNNING"]
    kept = [k for k in kids if k.data.tags.get("status") != "lost"]
    assert all(k.info.status == "KILLED" for k in kids if k not in kept)
    ids = [k.data.tags["trial_id"] for k in kept]
    assert len(ids) == len(set(ids)) == trials and all(k.info.status == "FINISHED" for k in kept)
    for kid in kept:
        assert sorted(m.step for m in client.get_metric_history(kid.info.run_id, "epoch")) == list(range(1, epochs + 1))


# --------------------------------------------------------------------------- kill -9 at any moment

def test_kill9_at_any_moment_then_resume_completes_the_sweep_and_its_report(tmp_path):
    settings = ["--set", "num_samples=4", "--set", "base.epochs=2"]
    sweeps = tmp_path / "results"

    # 1. before the first trial: as soon as the sweep has its folder (its parent run may not exist yet)
    driver = start(tmp_path, *settings)
    wait_for(lambda: list(sweeps.glob("decay_rate-demo-*/sweep.json")), 120, "the sweep's folder")
    kill(driver)
    # 2. during the trials: a trial has logged an epoch
    driver = start(tmp_path, *settings, "--resume")
    wait_for(lambda: running_with_epochs(tmp_path, 1) or driver.poll() is not None, 300, "a trial's first epoch")
    kill(driver)
    # 3. while the report is written (or, on a fast machine, just after): its partial folder appears
    reports = tmp_path / "reports"
    driver = start(tmp_path, *settings, "--resume")
    wait_for(lambda: list(reports.glob(".decay_rate-demo-*.partial")) or driver.poll() is not None, 600,
             "the report being written")
    kill(driver)
    assert not [p for p in reports.glob("decay_rate-demo-*") if not (p / "index.html").is_file()]

    final = subprocess.run(sweep_cmd(tmp_path, "decay_rate", *settings, "--resume"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in final.stderr and "Warning" not in final.stderr, final.stderr[-3000:]
    client, parents, kids = children(tmp_path)
    check_complete(client, parents, kids, trials=4, epochs=2)
    (report,) = reports.glob("decay_rate-demo-*")
    assert {"index.html", "runs.csv", "pareto.csv"} <= {p.name for p in report.iterdir()}
    assert not list(reports.glob(".*.partial"))
    written = (report / "index.html").stat().st_mtime_ns

    # --resume of a finished sweep: nothing to do but say where everything is; the report is kept
    again = subprocess.run(sweep_cmd(tmp_path, "decay_rate", *settings, "--resume"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert "4 trials, 0 failed" in again.stdout and "(written before; kept as it is)" in again.stdout
    assert (report / "index.html").stat().st_mtime_ns == written
    assert len(children(tmp_path)[2]) == len(kids)


# ------------------------------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_stops_gracefully_prints_the_resume_command_and_resume_loses_nothing(tmp_path):
    settings = ["--set", "num_samples=3", "--set", "base.epochs=8"]
    driver = start(tmp_path, *settings, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: running_with_epochs(tmp_path, 2), 300, "a trial in its third epoch")
    os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    _, err = driver.communicate(timeout=180)
    assert driver.returncode == 130, err[-3000:]
    resume = [line for line in err.splitlines() if line.startswith("Continue with: ")]
    assert "Traceback" not in err and len(resume) == 1 and resume[0].endswith("--resume"), err[-3000:]
    client, parents, kids = children(tmp_path)
    assert parents[0].info.status == "KILLED" and "interrupted" in parents[0].data.tags["reason"]
    stopped = [k for k in kids if k.info.status != "FINISHED"]
    assert stopped and all(k.info.status == "KILLED" and k.data.tags["status"] == "interrupted" for k in stopped)

    # a second Ctrl-C: at once if Tune is still stopping, else during the shutdown; quiet either way
    # (which of the two it meets is a race; tests/test_space.py checks the handler's logic exactly)
    driver = start(tmp_path, *settings, "--resume", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: running_with_epochs(tmp_path, 3), 300, "a resumed trial's next epoch")
    os.killpg(driver.pid, signal.SIGINT)
    time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "stopped at once" in err or "Continue with: " in err
    with suppress(ProcessLookupError):  # what Ray left of that group
        os.killpg(driver.pid, signal.SIGKILL)

    resumed = subprocess.run(sweep_cmd(tmp_path, "decay_rate", *settings, "--resume"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, parents, kids = children(tmp_path)
    check_complete(client, parents, kids, trials=3, epochs=8)
    assert all("reason" not in k.data.tags for k in kids if k.data.tags.get("status") == "finished")
    # three drivers ran it: the first interrupted, the second stopped (gracefully, or at once: then untimed)
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("decay_rate-demo-*/sweep.json")]
    sittings = record["sittings"]
    assert [s["outcome"] for s in sittings][::2] == ["interrupted", "finished"] and len(sittings) == 3
    assert len(record["space"]["content_sha256"]) == 16  # what --resume compares (tests/test_space.py)
    assert sittings[1]["outcome"] == "interrupted" or sittings[1]["outcome"].startswith("stopped (KeyboardInterrupt")
    timed = [s["ended"] - s["started"] for s in sittings if s["ended"]]
    assert all(t > 0 for t in timed) and sittings[0]["ended"] <= sittings[1]["started"]
    parent = client.get_run(parents[0].info.run_id).data.metrics
    assert parent["sittings"] == 3 and parent["wall_time_s"] == pytest.approx(sum(timed))
    assert "over 3 sittings (2 resumes" in resumed.stdout


def test_a_stopped_sweep_packed_and_unpacked_on_a_bare_checkout_resumes_where_it_stopped(tmp_path, tmp_path_factory):
    settings = ["--set", "num_samples=3", "--set", "base.epochs=8"]
    driver = start(tmp_path, *settings)
    def finished_and_running():
        kids = children(tmp_path)[2]
        return [k for k in kids if k.info.status == "FINISHED"] and running_with_epochs(tmp_path, 2)
    wait_for(finished_and_running, 600, "a finished trial and one in its third epoch")
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=180) == 130
    with suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    client, _, kids = children(tmp_path)
    unfinished = {k.data.tags["trial_id"] for k in kids if k.info.status != "FINISHED"}
    steps_before = {k.data.tags["trial_id"]: len(client.get_metric_history(k.info.run_id, "epoch")) for k in kids}
    (sweep_dir,) = (tmp_path / "results").glob("decay_rate-demo-*")

    archive = tmp_path_factory.mktemp("carried") / "sweep.tar.xz"
    packed = subprocess.run([VENV_BIN / "python", "-m", "sweep.carry", "pack", archive, sweep_dir],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr[-3000:]
    trial_dirs = {note.stem: Path(json.loads(note.read_text())["checkpoint"]).parent.relative_to(tmp_path)
                  for note in (sweep_dir / "progress").glob("*.json")}  # trial id -> its folder
    on_disk = {p.relative_to(tmp_path).as_posix() for p in sweep_dir.rglob("checkpoint_*/state.pt")}
    with tarfile.open(archive, "r:xz") as tar:  # every checkpoint of the unfinished trials, none of the finished
        states = {n for n in tar.getnames() if n.endswith("/state.pt")}
    finished = {f"{folder.as_posix()}/" for t, folder in trial_dirs.items() if t not in unfinished}
    dropped = {n for n in on_disk if any(n.startswith(folder) for folder in finished)}
    assert dropped and states == on_disk - dropped and states  # some left out, every other one carried
    shutil.rmtree(tmp_path)  # the bare checkout: no ray_results, no MLflow store
    tmp_path.mkdir()
    unpacked = subprocess.run([VENV_BIN / "python", "-m", "sweep.carry", "unpack", archive],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert unpacked.returncode == 0 and "--resume" in unpacked.stdout, unpacked.stderr[-3000:]

    resumed = subprocess.run(sweep_cmd(tmp_path, "decay_rate", *settings, "--resume"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # a URI this process has not opened: MLflow keeps one engine per URI, and that one still reads the deleted file
    client, parents, kids = children(tmp_path, uri=f"sqlite:///{tmp_path}/./mlflow.db")
    check_complete(client, parents, kids, trials=3, epochs=8)  # the unfinished trials went on from their epochs
    # the finished ones did not run again (a trial not yet started at the Ctrl-C had no run then: it starts after)
    finished_before = set(steps_before) - unfinished
    assert finished_before and finished_before <= {kid.data.tags["trial_id"] for kid in kids}
    for kid in kids:
        if kid.data.tags["trial_id"] in finished_before:
            assert len(client.get_metric_history(kid.info.run_id, "epoch")) == steps_before[kid.data.tags["trial_id"]]
    assert "over 2 sittings (1 resume" in resumed.stdout


# ------------------------------------------------------------------------------ tracking server outage

def start_mlflow(procs: Processes, tmp_path: Path, port: int, name: str) -> subprocess.Popen:
    """`mlflow server` as DESIGN §7 runs it, on 127.0.0.1:`port`, over one SQLite file and artifact folder."""
    argv = [VENV_BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", tmp_path / "mlartifacts", "--host", "127.0.0.1", "--port", port,
            "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = procs.start(name, argv, env=env, cwd=tmp_path)
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, timeout=180, what="the MLflow server",
               interval=0.5, check=lambda: procs.check_running(server, name))
    return server


def test_a_tracking_server_outage_of_20_s_loses_no_record(tmp_path, procs):
    port = free_port()
    server = start_mlflow(procs, tmp_path, port, "mlflow")
    uri = f"http://127.0.0.1:{port}"
    settings = ["--set", "num_samples=2", "--set", "base.epochs=6", "--tracking-uri", uri]
    driver = subprocess.Popen(sweep_cmd(tmp_path, "decay_rate", *settings), cwd=tmp_path, start_new_session=True, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    client = MlflowClient(uri)

    def trial_logging():
        experiment = client.get_experiment_by_name("decay_rate")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return any(r.data.metrics.get("epoch", 0) >= 1 for r in runs)

    try:
        wait_for(trial_logging, 300, "a trial's first epoch in MLflow")
        procs.stop(server, signal.SIGKILL)  # the server goes away mid-sweep, by PID
        stopped = time.monotonic()
        time.sleep(20)
        start_mlflow(procs, tmp_path, port, "mlflow-again")
        back = time.monotonic()
        output, _ = driver.communicate(timeout=600)
        print(f"outage {back - stopped:.0f} s; the sweep ended {time.monotonic() - back:.0f} s after the server came back")
    finally:
        with suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output[-4000:]
    assert output.count("does not answer") == 1 and "answers again" in output, output[-4000:]
    experiment = client.get_experiment_by_name("decay_rate")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if r not in parents]
    check_complete(client, parents, kids, trials=2, epochs=6)
    for kid in kids:  # params, tags and artifacts made during the outage arrived too
        assert {"method", "decay", "seed"} <= set(kid.data.params) and kid.data.tags["full_budget"] == "true"
        assert {a.path for a in client.list_artifacts(kid.info.run_id)} == {"metrics.json", "energy_layers.json"}
        assert len(client.get_metric_history(kid.info.run_id, "val_accuracy")) == 6


# ------------------------------------------------------------------------------------ lost worker node

def test_a_lost_worker_node_restarts_its_trial_from_its_checkpoint_on_the_head(tmp_path, procs, scratch):
    """Head and worker node, 1 CPU each, two trials (one per node); the worker node's processes are
    stopped by PID in the middle of its trial: Tune restarts that trial from its last checkpoint on the
    head, in the same MLflow child run."""
    env = ray_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    node_ip = "127.0.0.2"  # loopback kept as given (see test_slow_launch's compose test)
    head_tmp, worker_tmp = scratch("slt-fh-"), scratch("slt-fw-")
    gcs, _ = start_ray_head(procs, head_tmp, env, node_ip=node_ip, cpus=1)
    procs.markers.append(str(worker_tmp))
    worker = procs.start("ray-worker", ray_worker_argv(worker_tmp, node_ip=node_ip, cpus=1,
                                                       gcs_address=f"{node_ip}:{gcs}"), env=env, cwd=worker_tmp)
    wait_until(lambda: len([n for n in ray_json(["list", "nodes", "--address", f"{node_ip}:{gcs}"], env)
                            if n["state"] == "ALIVE"]) == 2, timeout=180, what="two Ray nodes", interval=2,
               check=lambda: procs.check_running(worker, "ray-worker"))

    settings = ["--set", "num_samples=2", "--set", "base.epochs=12", "--address", f"{node_ip}:{gcs}"]
    driver = subprocess.Popen(sweep_cmd(tmp_path, "decay_rate", *settings), cwd=tmp_path, env=env, text=True,
                              start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(running_with_epochs(tmp_path, 2)) == 2, 300, "both trials in their third epoch")
        procs.stop(worker, signal.SIGKILL)  # the worker node's whole process tree, by PID
        output, _ = driver.communicate(timeout=600)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output[-4000:]
    assert "2 trials, 0 failed" in output
    client, parents, kids = children(tmp_path)
    check_complete(client, parents, kids, trials=2, epochs=12)
    (restarted,) = [k for k in kids if k.data.tags.get("restarts") == "1"]
    # it went on from its checkpoint: Tune's own log of the trial shows epoch 1 once, and a repeat after it
    trial_dir = next((tmp_path / "results").glob(f"decay_rate-demo-*/tune/*{restarted.data.tags['trial_id']}*"))
    epochs = [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]
    assert epochs.count(1) == 1 and epochs[-1] == 12 and len(epochs) >= 12, epochs

