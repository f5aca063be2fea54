"""scripts/reproduce_cpu.sh: continues each sweep with --resume, starts it afresh only when the engine
says there is none of that space to continue, and stops on any other error (a fake interpreter)."""

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_cpu.sh"
FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$BEHAVIOUR" in
  none-yet) [[ "$*" == *--resume* ]] && { echo "sweep: error: resume: no sweep x to resume; run without --resume" >&2
                                         exit 2; }; exit 0;;
  changed) [[ "$*" == *--resume* ]] && { echo "sweep: error: resume: the latest sweep x-cpu-1 was started from f.yaml \
(sha256 aa, --set []); this is f.yaml (sha256 bb, --set []): run without --resume for a new sweep" >&2; exit 2; }; exit 0;;
  resumes) exit 0;;
  bad-input) echo "sweep: error: data_dir: /nowhere does not exist" >&2; exit 2;;
  interrupted) exit 130;;
esac
"""


def run_script(tmp_path, behaviour, carried=(), tracking_db=False):
    """The script with the fake interpreter, `carried` archives and (or not) an MLflow store; the calls made."""
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "carried").mkdir(exist_ok=True)
    for name in carried:
        (tmp_path / "carried" / name).write_text("")
    if tracking_db:
        (tmp_path / "mlflow.db").write_text("")
    log = tmp_path / "calls"
    done = subprocess.run(["bash", str(SCRIPT), "timestep", "decay_grid"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": str(fake), "CALLS": str(log), "BEHAVIOUR": behaviour,
                               "CARRIED": str(tmp_path / "carried"), "TRACKING_DB": str(tmp_path / "mlflow.db"),
                               "RESULTS": str(tmp_path / "results")})
    made = [line.replace("sweep/", "").replace(".py", "").replace(" --profile cpu --quiet --reports docs/reproduction",
                                                                    "").replace(str(tmp_path), "TMP")
            for line in log.read_text().splitlines()]
    return done, made


@pytest.mark.parametrize("behaviour,code,calls", [
    ("none-yet", 0, ["timestep --resume", "timestep", "decay_grid --resume", "decay_grid"]),
    ("resumes", 0, ["timestep --resume", "decay_grid --resume"]),
    ("bad-input", 2, ["timestep --resume"]),  # not a resume error: no fresh sweep, the script stops
    ("interrupted", 130, ["timestep --resume"]),  # Ctrl-C: the next sweep does not start
])
def test_each_sweep_is_continued_and_only_started_afresh_when_there_is_none(tmp_path, behaviour, code, calls):
    done, made = run_script(tmp_path, behaviour)
    assert done.returncode == code, done.stderr
    assert made == calls
    if behaviour == "bad-input":
        assert "sweep: error: data_dir: /nowhere does not exist" in done.stderr  # passed through as it came


def test_the_script_says_why_a_sweep_is_started_afresh(tmp_path):
    done, made = run_script(tmp_path, "none-yet")
    assert "== timestep: no sweep of this space to continue; a new one" in done.stdout
    (tmp_path / "changed").mkdir()
    done, made = run_script(tmp_path / "changed", "changed")
    assert made == ["timestep --resume", "timestep", "decay_grid --resume", "decay_grid"]
    assert ("== timestep: its latest sweep cannot be continued (the error above says why: its profile in the "
            "search-space file, or the --set overrides, now differ); a new one") in done.stdout


def test_ctrl_c_reaches_the_sweep_and_its_last_words_are_shown(tmp_path):
    """Ctrl-C in a terminal signals the whole foreground process group: the script, the sweep and tee. The sweep
    stops gracefully and says how to continue; tee must outlive it, or those lines go into a closed pipe."""
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\n"
                    "trap 'sleep 0.3; echo \"sweep: stopping: continue with: x --resume\" >&2; exit 130' INT\n"
                    "echo running >> \"$CALLS\"\n"
                    "while true; do sleep 0.05; done\n")
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    script = subprocess.Popen(["bash", str(SCRIPT), "timestep", "decay_grid"], start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHON": str(fake), "CALLS": str(calls),
                                   "CARRIED": str(tmp_path / "none"), "TRACKING_DB": str(tmp_path / "mlflow.db")})
    try:
        deadline = time.monotonic() + 30
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls.exists(), "the fake sweep never started"
        time.sleep(0.2)
        os.killpg(script.pid, signal.SIGINT)
        out, err = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 130
    assert "sweep: stopping: continue with: x --resume" in err
    assert calls.read_text() == "running\n"  # decay_grid did not start


@pytest.mark.parametrize("tracking_db,calls", [
    (False, [f"-m sweep.carry unpack TMP/carried/reproduction-20261202.tar.xz --root {SCRIPT.parents[1]}",
             "timestep --resume",
             "decay_grid --resume"]),  # a new checkout: the newest archive first, then each sweep's --resume
    (True, ["timestep --resume", "decay_grid --resume"]),  # an MLflow store here: its sweeps go on, no unpack
])
def test_the_newest_carried_archive_is_unpacked_where_there_is_no_mlflow_store(tmp_path, tracking_db, calls):
    done, made = run_script(tmp_path, "resumes", carried=["reproduction-20261201.tar.xz",
                                                          "reproduction-20261202.tar.xz"], tracking_db=tracking_db)
    assert done.returncode == 0, done.stderr
    assert made == calls
    assert ("is not unpacked" in done.stdout) == tracking_db


def _sweep_record(results, name, parent, outcomes):
    import json

    (results / name).mkdir(parents=True, exist_ok=True)
    (results / name / "sweep.json").write_text(json.dumps(
        {"parent_run_id": parent, "name": name, "sittings": [{"outcome": o} for o in outcomes]}, indent=2))


def test_the_lambda_search_is_judged_on_the_grid_once_both_sweeps_have_finished(tmp_path):
    results = tmp_path / "results"
    _sweep_record(results, "decay_grid-cpu-20261207-010000", "9a0b", ["interrupted", "finished"])
    _sweep_record(results, "decay_rate-cpu-20261201-010000", "0001", ["finished"])  # an older search
    _sweep_record(results, "decay_rate-cpu-20261207-020000", "7c7d", ["finished", "interrupted"])
    done, made = run_script(tmp_path, "resumes")
    assert done.returncode == 0, done.stderr
    assert made == ["timestep --resume", "decay_grid --resume"]  # the latest search is not finished: no report
    _sweep_record(results, "decay_rate-cpu-20261207-020000", "7c7d", ["finished", "interrupted", "finished"])
    (tmp_path / "calls").unlink()
    done, made = run_script(tmp_path, "resumes")
    assert done.returncode == 0, done.stderr
    assert made[2:] == ["-m app.cli report --experiment decay_rate --parent-run 7c7d --against decay_grid:9a0b "
                        "--out docs/reproduction/decay_rate-cpu-20261207-020000-vs-grid"]
    assert "== the λ search (decay_rate-cpu-20261207-020000) judged on the grid" in done.stdout
