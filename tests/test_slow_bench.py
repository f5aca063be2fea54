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
                 "data pipeline", "snn step achieved / matmul peak", "snn bf16 step speed / fp32 step speed",
                 "spikformer bf16 step speed / fp32 step speed", "bf16 - fp32 validation accuracy =",
                 "fused LIF speed / spikingjelly", "GP trials to propose the grid's best λ",
                 "GP trials to propose a λ tied with the best", "utilisation (full budget) =",
                 "NSGA-II + MO-ASHA     : hypervolume / full-budget final at 50 % of the epochs",
                 "MO-ASHA epoch ratio to 0.95 of the full-budget search's final hypervolume",
                 "epochs spent: ASHA", "test accuracy of the trial best on validation: ASHA",
                 "second trial, same process, main thread", "fresh process (after)"):
        assert line in out, f"missing {line!r} in:\n{out}"
    # ASHA (grace 1, 2-epoch budget) never spends more than the full budget; whether it stops one of these 3
    # trials depends on the order their first epochs arrive in (asynchronous), so that is tested in
    # test_slow_sweep.py on trials with clear losers, not here.
    asha, full = map(int, re.search(r"epochs spent: ASHA (\d+) / full (\d+)", out).groups())
    assert 3 <= asha <= full == 6
