"""Decay search efficiency: trials the seeded GP search needs to find the best λ of a fine grid.

The λ -> accuracy response is real: `--record` trains the decay-rate sweep's demo configuration as
it was when recorded (spiking multi-prize ticket, VGG-9 width 0.25 on bundled digits at 16x16, 3 epochs,
float32; the demo now trains 25 epochs at precision auto) at every λ of a
fine grid (0.05, 0.07, ..., 0.95: 46 points) and several seeds, and writes validation and test
accuracy to bench/data/decay_response_digits.csv (rows already there are kept; an interrupted
recording goes on). Without `--record` the benchmark replays that recording: the product's own GP
sampler and seed points (sweep.engine, decay_rate space) propose λ in batches of the sweep's
parallel trials, each proposal is snapped to the grid and answered with the recorded seed-mean
validation accuracy (what the sweep's searcher reads), and we count the trials until it proposes the
grid's best λ, over several sampler seeds.

Usage: python -m bench.decay_search [--record] [--searches 10]
"""

import argparse
import statistics
from pathlib import Path

from bench.recording import append_rows, read_rows

RESPONSE_FILE = Path(__file__).parent / "data" / "decay_response_digits.csv"
GRID = [round(0.05 + 0.02 * i, 2) for i in range(46)]  # 0.05 ... 0.95, the same bounds as decay_rate.yaml
FIELDS = ["decay", "seed", "val_accuracy", "test_accuracy", "seconds"]
SIGNAL = "val_accuracy"  # the searcher's signal; test accuracy is recorded beside it, never replayed


def record(seeds: int, path: Path = RESPONSE_FILE) -> None:
    """Train the recorded configuration at every (λ, seed) not yet in `path`, appending one row per run."""
    import time

    import torch

    from slt.config import make_config
    from slt.data import load_dataset
    from slt.train import TrainingRun
    from sweep.space import load_space

    torch.set_num_threads(1)  # one sweep trial's share of the machine (resources.cpu = 1)
    # the configuration the recording was made with: the demo profile as it was then (3 epochs, float32)
    space, _ = load_space("decay_rate", "demo", ["base.epochs=3", "base.precision=fp32"])
    base = dict(space.base)
    data = load_dataset(base["dataset"], base.get("data_dir"), frames=base["T"], image_size=base.get("image_size"))
    done = {(float(r["decay"]), int(r["seed"])) for r in read_rows(path)}
    for seed in range(seeds):
        for decay in GRID:
            if (decay, seed) in done:
                continue
            started = time.perf_counter()
            run = TrainingRun(make_config(**base, decay=decay, seed=seed), data)
            for _ in range(run.total_epochs):
                epoch = run.run_epoch()
            append_rows(path, FIELDS, [{"decay": decay, "seed": seed, "val_accuracy": round(epoch["val_accuracy"], 6),
                                        "test_accuracy": round(epoch["test_accuracy"], 6),
                                        "seconds": round(time.perf_counter() - started, 2)}])
            print(f"λ={decay:.2f} seed {seed}: validation accuracy {epoch['val_accuracy']:.4f}, "
                  f"test {epoch['test_accuracy']:.4f}", flush=True)


def mean_response(path: Path = RESPONSE_FILE) -> tuple[dict[float, float], dict[float, float], int]:
    """Seed-mean and standard error of validation accuracy per grid λ, and the number of seeds per point."""
    by_decay: dict[float, list[float]] = {}
    for row in read_rows(path):
        if SIGNAL not in row:
            raise SystemExit(f"{path} was recorded before the validation split (no {SIGNAL} column); move it "
                             "aside and run: python -m bench.decay_search --record")
        by_decay.setdefault(float(row["decay"]), []).append(float(row[SIGNAL]))
    missing = [d for d in GRID if d not in by_decay]
    if missing:
        raise SystemExit(f"{path}: no recording for λ={missing[0]} (run: python -m bench.decay_search --record)")
    seeds = min(len(v) for v in by_decay.values())
    mean = {d: statistics.fmean(by_decay[d]) for d in GRID}
    sem = {d: statistics.stdev(by_decay[d]) / len(by_decay[d]) ** 0.5 if len(by_decay[d]) > 1 else 0.0 for d in GRID}
    return mean, sem, seeds


def snap(value: float) -> float:
    return min(GRID, key=lambda d: abs(d - value))


def gp_proposals(response: dict[float, float], sampler_seed: int, budget: int) -> list[float]:
    """Run the sweep's GP search (sampler, seed points, batch size) on the recorded response for
    `budget` trials; the grid λ of every proposal, in order."""
    import optuna

    from sweep.engine import make_sampler, seed_points
    from sweep.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = load_space("decay_rate", "demo", [f"search.seed={sampler_seed}"])
    bounds = space.searched["decay"]
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space))
    for point in seed_points(space):
        study.enqueue_trial(point)
    distribution = {"decay": optuna.distributions.FloatDistribution(bounds.low, bounds.high)}
    proposed: list[float] = []
    while len(proposed) < budget:
        batch = [study.ask(distribution) for _ in range(min(space.max_concurrent, budget - len(proposed)))]
        for trial in batch:  # Tune runs max_concurrent trials at once; results arrive after the batch is out
            decay = snap(trial.params["decay"])
            proposed.append(decay)
            study.tell(trial, response[decay])
    return proposed


def first_hit(proposed: list[float], targets: set[float]) -> int | None:
    """1-based index of the first proposal in `targets`; None if none is."""
    return next((i + 1 for i, decay in enumerate(proposed) if decay in targets), None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="(re)record the missing λ -> accuracy runs first")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per λ when recording")
    parser.add_argument("--searches", type=int, default=20, help="GP sampler seeds to replay")
    args = parser.parse_args(argv)
    if args.record:
        record(args.seeds)

    mean, sem, seeds = mean_response()
    best = max(GRID, key=mean.get)
    # Grid points the recording cannot tell apart from the best (within one standard error of both).
    tied = {d for d in GRID if mean[best] - mean[d] <= sem[best] + sem[d]}
    runs = [gp_proposals(mean, sampler_seed, budget=len(GRID)) for sampler_seed in range(args.searches)]
    exact = [first_hit(proposed, {best}) for proposed in runs]
    near = [first_hit(proposed, tied) for proposed in runs]

    def describe(found: list[int | None]) -> str:
        # A search that never proposes it within the grid's count counts as needing more than the grid.
        ranked = sorted(n if n is not None else len(GRID) + 1 for n in found)
        median = statistics.median(ranked)
        shown = f"{median:.0f}" if median <= len(GRID) else f"> {len(GRID)}"
        return (f"found in {sum(n is not None for n in found)}/{len(found)} searches; median {shown} trials, "
                f"ratio to grid {min(median, len(GRID) + 1) / len(GRID):.2f}")

    print(f"# decay_rate demo response recorded on a {len(GRID)}-point λ grid x {seeds} seeds "
          f"({RESPONSE_FILE.name}); GP replayed with {args.searches} sampler seeds")
    curve = "  ".join(f"{d:.2f}:{100 * mean[d]:.1f}" for d in GRID[::5])
    print(f"response (every 5th λ: validation accuracy %): {curve}")
    print(f"grid best λ = {best:.2f} ({100 * mean[best]:.1f}%); {len(tied)} grid points within one standard error: "
          f"{', '.join(f'{d:.2f}' for d in sorted(tied))}")
    print(f"GP trials to propose the grid's best λ       : {describe(exact)}  (grid: {len(GRID)} trials)")
    print(f"GP trials to propose a λ tied with the best  : {describe(near)}  (goal <= 1/3 of the grid)")


if __name__ == "__main__":
    main()
