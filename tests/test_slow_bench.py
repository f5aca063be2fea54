"""`python -m bench --quick` runs every benchmark end to end (tiny sizes) and prints every ratio."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runner_prints_every_ratio():
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("SNN images/s / (ANN images/s / T) =", "slt step / dense snn step", "mpslt step / dense snn step",
                 "data pipeline", "snn step achieved / matmul peak", "GP trials to propose the grid's best λ",
                 "GP trials to propose a λ tied with the best", "utilisation (full budget) =",
                 "epochs spent: ASHA", "best accuracy found: ASHA"):
        assert line in out, f"missing {line!r} in:\n{out}"
    # ASHA with grace 1 on a 2-epoch budget stops at least one of 3 trials after 1 epoch: fewer epochs.
    asha, full = map(int, re.search(r"epochs spent: ASHA (\d+) / full (\d+)", out).groups())
    assert asha < full == 6
