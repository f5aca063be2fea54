"""Sweep utilisation: Σ trial compute time / (sweep wall time x parallel trials), from one real sweep.

Runs a sweep script (default: the decay-rate demo) in a scratch folder and reads Tune's per-trial
`time_total_s` (the trainable's own running time) from the result. 1.0 means the parallel trial
slots were busy all the time; the rest is Ray start-up, actor start-up per trial, searcher and
logging overhead. Usage: python -m bench.sweep_utilisation [--script decay_rate] [--set KEY=VALUE ...]
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", default="decay_rate")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    from sweep.engine import SweepOptions, run_sweep
    from sweep.space import load_space

    space, info = load_space(args.space, args.profile, args.overrides)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        results, _ = run_sweep(space, info, SweepOptions(
            tracking_uri=f"sqlite:///{Path(scratch) / 'mlflow.db'}", storage=str(Path(scratch) / "results"),
            verbose=0))
        wall = time.perf_counter() - started
    compute = sum(r.metrics.get("time_total_s", 0.0) for r in results)
    trials = len(results)
    slots = space.max_concurrent
    print(f"# {args.space} --profile {args.profile} {' '.join(args.overrides)}: {trials} trials, "
          f"{slots} parallel, {space.resources.cpu} CPU each")
    print(f"sweep wall time (incl. Ray start)  = {wall:.1f} s")
    print(f"sum of trial compute time         = {compute:.1f} s  (mean {compute / trials:.1f} s per trial)")
    print(f"utilisation = compute / (wall x {slots}) = {compute / (wall * slots):.2f}  (goal >= 0.9 for trials >= 30 s)")


if __name__ == "__main__":
    main()
