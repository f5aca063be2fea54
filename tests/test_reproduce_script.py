"""scripts/reproduce_cpu.sh: continues each sweep with --resume, starts it afresh only when the engine
says there is none of that space to continue, and stops on any other error (a fake interpreter)."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_cpu.sh"
FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$BEHAVIOUR" in
  none-yet) [[ "$*" == *--resume* ]] && { echo "sweep: error: resume: no sweep x to resume; run without --resume" >&2
                                         exit 2; }; exit 0;;
  resumes) exit 0;;
  bad-input) echo "sweep: error: data_dir: /nowhere does not exist" >&2; exit 2;;
  interrupted) exit 130;;
esac
"""


@pytest.mark.parametrize("behaviour,code,calls", [
    ("none-yet", 0, ["timestep --resume", "timestep", "decay_grid --resume", "decay_grid"]),
    ("resumes", 0, ["timestep --resume", "decay_grid --resume"]),
    ("bad-input", 2, ["timestep --resume"]),  # not a resume error: no fresh sweep, the script stops
    ("interrupted", 130, ["timestep --resume"]),  # Ctrl-C: the next sweep does not start
])
def test_each_sweep_is_continued_and_only_started_afresh_when_there_is_none(tmp_path, behaviour, code, calls):
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls"
    done = subprocess.run(["bash", str(SCRIPT), "timestep", "decay_grid"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": str(fake), "CALLS": str(log), "BEHAVIOUR": behaviour})
    assert done.returncode == code, done.stderr
    made = [line.replace("sweep/", "").replace(".py", "").replace(" --profile cpu --quiet --reports docs/reproduction",
                                                                    "") for line in log.read_text().splitlines()]
    assert made == calls
    if behaviour == "bad-input":
        assert "sweep: error: data_dir: /nowhere does not exist" in done.stderr  # passed through as it came
