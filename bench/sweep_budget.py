"""Sweep utilisation and ASHA vs full budget, from two real sweeps of the same grid.

Both sweeps run bench/sweep_budget.yaml (12 λ of the decay-rate demo's spiking ticket on digits,
10 epochs, 2 trials in parallel with 1 CPU each) in a scratch folder: once with every trial running
its full budget, once under ASHA (grace 1 epoch, reduction factor 3). Printed side by side:
utilisation = Σ trial compute (Tune's time_total_s) / (wall x parallel trials), with the wall of
Tune's fit alone and with Ray start-up included; epochs spent; the full-budget trial each sweep
found best on validation, its λ and its test accuracy. `--threads` instead runs the full-budget sweep as
2 trials x 1 thread and as 1 trial x 2 threads and compares their walls.
Usage: python -m bench.sweep_budget [--set KEY=VALUE ...] [--threads]
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

from runrecord import ACCURACY, VAL_ACCURACY, run_fields

SPACE_FILE = Path(__file__).with_name("sweep_budget.yaml")


def run_measured(space, info, scratch: Path, reuse_actors: bool = True) -> dict:
    """Run one sweep in `scratch`; its results plus wall times and utilisation."""
    from sweep.engine import SweepOptions, run_sweep

    started = time.perf_counter()
    results, record = run_sweep(space, info, SweepOptions(
        tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}", storage=str(scratch / "results"), verbose=0,
        reuse_actors=reuse_actors))
    wall = time.perf_counter() - started
    finals = [r.metrics for r in results if r.metrics]
    compute = sum(m.get("time_total_s", 0.0) for m in finals)
    slots = space.max_concurrent
    return {"finals": finals, "trials": len(finals), "wall": wall, "fit": record["fit_seconds"],
            "compute": compute, "utilisation": compute / (record["fit_seconds"] * slots),
            "utilisation_with_start": compute / (wall * slots),
            "epochs": sum(m.get("training_iteration", 0) for m in finals)}


def best_full_budget(finals: list[dict], budget: int) -> tuple[float, float]:
    """(test accuracy, λ) of the trial with the best validation accuracy among those that ran all
    `budget` epochs."""
    full = [m for m in finals if m.get("training_iteration") == budget]
    best = max(full, key=lambda m: m[VAL_ACCURACY])
    return best[ACCURACY], run_fields(best["config"])["decay"]


def compare_threads(overrides: list[str]) -> None:
    """The same full-budget sweep with the machine's 2 cores as 2 parallel trials of 1 thread each and as 1 trial
    of 2 threads (Ray gives a trial's process as many torch threads as its resources.cpu)."""
    import ray

    from sweep.space import load_space

    shapes = {"2 trials x 1 thread": ["max_concurrent=2", "resources.cpu=1"],
              "1 trial x 2 threads": ["max_concurrent=1", "resources.cpu=2"]}
    measured, threads = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, shape) in enumerate(shapes.items()):
            space, info = load_space(str(SPACE_FILE), "demo", [*overrides, *shape])
            measured[name], threads[name] = run_measured(space, info, Path(scratch) / str(index)), space.resources.cpu
            ray.shutdown()
    print(f"# {SPACE_FILE.name} {' '.join(overrides)}: {measured[name]['trials']} trials x {space.base['epochs']} "
          "epochs, full budget, on 2 cores")
    for name, sweep in measured.items():
        print(f"{name:<20} wall {sweep['wall']:6.1f} s (Tune fit {sweep['fit']:6.1f} s), trial compute "
              f"{sweep['compute']:6.1f} s, core utilisation = compute x threads / (fit wall x 2) = "
              f"{sweep['compute'] * threads[name] / (sweep['fit'] * 2):.2f}")
    one, two = measured["2 trials x 1 thread"], measured["1 trial x 2 threads"]
    print(f"wall: 1 trial x 2 threads / 2 trials x 1 thread = {two['wall'] / one['wall']:.2f}   (above 1: "
          f"parallel trials finish the sweep sooner)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a field of bench/sweep_budget.yaml, e.g. --set base.epochs=2")
    parser.add_argument("--no-reuse-actors", action="store_true",
                        help="start a fresh worker process per trial (the engine's behaviour before reuse)")
    parser.add_argument("--threads", action="store_true",
                        help="instead: the full-budget sweep as 2 trials x 1 CPU and as 1 trial x 2 CPUs (threads)")
    args = parser.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    import ray

    from sweep.space import load_space

    if args.threads:
        return compare_threads(args.overrides)

    full_space, info = load_space(str(SPACE_FILE), "demo", args.overrides)
    asha_space, asha_info = load_space(str(SPACE_FILE), "demo", [*args.overrides, "scheduler.type=asha"])
    budget = full_space.base["epochs"]
    with tempfile.TemporaryDirectory() as scratch:
        full = run_measured(full_space, info, Path(scratch) / "full", not args.no_reuse_actors)
        ray.shutdown()  # the second sweep starts its own Ray, as a user's would
        asha = run_measured(asha_space, asha_info, Path(scratch) / "asha", not args.no_reuse_actors)
        ray.shutdown()

    slots, trials = full_space.max_concurrent, full["trials"]
    print(f"# {SPACE_FILE.name} {' '.join(args.overrides)}: {trials} trials x {budget} epochs, {slots} in parallel, "
          f"{full_space.resources.cpu:g} CPU each, worker processes "
          f"{'started per trial' if args.no_reuse_actors else 'reused'}")
    for name, sweep in (("full budget", full), ("ASHA", asha)):
        print(f"{name:<12} wall {sweep['wall']:6.1f} s (Tune fit {sweep['fit']:6.1f} s), trial compute "
              f"{sweep['compute']:6.1f} s (mean {sweep['compute'] / sweep['trials']:.1f} s per trial)")
    print(f"utilisation (full budget) = compute / (fit wall x {slots}) = {full['utilisation']:.2f}   "
          f"with Ray start-up: {full['utilisation_with_start']:.2f}   (goal >= 0.9 for trials >= 30 s)")
    print(f"utilisation (ASHA)        = {asha['utilisation']:.2f}   with Ray start-up: "
          f"{asha['utilisation_with_start']:.2f}")
    full_best, full_decay = best_full_budget(full["finals"], budget)
    asha_best, asha_decay = best_full_budget(asha["finals"], budget)
    print(f"epochs spent: ASHA {asha['epochs']} / full {full['epochs']} = {asha['epochs'] / full['epochs']:.2f}   "
          f"wall: ASHA / full = {asha['wall'] / full['wall']:.2f}")
    print(f"test accuracy of the trial best on validation: ASHA {100 * asha_best:.1f}% (λ={asha_decay:g}) / "
          f"full {100 * full_best:.1f}% (λ={full_decay:g}) = {asha_best / full_best:.3f}")


if __name__ == "__main__":
    main()
