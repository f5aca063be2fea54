"""Pareto search efficiency: hypervolume of the full-budget front against epochs spent, MO-ASHA vs full budget.

The (p, T, λ) -> (validation accuracy, energy per image) response is real and recorded per epoch:
`--record` trains the Pareto sweep's demo configuration (spiking multi-prize ticket, VGG-9 width 0.25 on
bundled digits at 16x16, 16 epochs, one core per run) at every point of a grid (p and λ in 0.1, 0.3, ...,
0.9; T in 1, 2, 4, 6: 100 configurations, training seed 0) and writes each epoch's validation and test
accuracy and energy per image (`energy_mj`, the paper's convention, measured after that epoch on the
first 256 validation images, as a trial does) to bench/data/pareto_response_digits.csv (rows already
there are kept; an interrupted recording goes on).

Without `--record` the benchmark replays that recording as a sweep would run it, with the product's
own pieces: the pareto space's NSGA-II sampler (sweep.engine.make_sampler), 2 trials in parallel, and
for MO-ASHA the product's rung rule (sweep.mo_asha) with the space's grace period and reduction
factor. Each proposal is snapped to the grid and answered epoch by epoch from the recording; a
search ends when it has spent `--budget` epochs. Three searches, each over `--searches` sampler seeds:

- full budget: NSGA-II, every trial trains all its epochs (the sweep without a scheduler);
- MO-ASHA: NSGA-II, trials stopped at rungs; a stopped trial is told to the sampler as PRUNED;
- random: random (p, T, λ) at full budget.

The figure is the hypervolume (moocore) of the front of full-budget trials only, with reference point
(validation accuracy 0, the recording's largest energy per image x 1.1), after each number of epochs
spent. The goal: MO-ASHA reaches >= 0.95 of the full-budget search's final hypervolume with <= 50 % of
its epochs.

Usage: python -m bench.pareto_search [--record] [--searches 20] [--set scheduler.grace_period=2]
"""

import argparse
import math
import statistics
from pathlib import Path

from bench.recording import append_rows, read_rows

RESPONSE_FILE = Path(__file__).parent / "data" / "pareto_response_digits.csv"
P_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
T_GRID = (1, 2, 4, 6)
DECAY_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
EPOCHS = 16  # the pareto demo profile's
FIELDS = ["p", "T", "decay", "seed", "epoch", "val_accuracy", "test_accuracy", "energy_mj", "seconds"]


def grid() -> list[tuple[float, int, float]]:
    return [(p, T, decay) for p in P_GRID for T in T_GRID for decay in DECAY_GRID]


def _record_one(point: tuple[float, int, float]) -> list[dict]:
    """Train one grid point for the recorded epochs; a row per epoch (runs in a worker process)."""
    import time

    import torch

    from slt.config import make_config
    from slt.train import TrainingRun
    from sweep.space import load_space

    torch.set_num_threads(1)  # one sweep trial's share of the machine (resources.cpu = 1)
    space, _ = load_space("pareto", "demo", [f"base.epochs={EPOCHS}"])
    p, T, decay = point
    run = TrainingRun(make_config(**space.base, p=p, T=T, decay=decay, seed=0))
    rows, started = [], time.perf_counter()
    while not run.done:
        epoch = run.run_epoch()
        energy = run.energy(batch=space.energy_batch)
        rows.append({"p": p, "T": T, "decay": decay, "seed": 0, "epoch": epoch["epoch"],
                     "val_accuracy": round(epoch["val_accuracy"], 6), "test_accuracy": round(epoch["test_accuracy"], 6),
                     "energy_mj": f"{energy['energy_mj']:.6g}", "seconds": round(time.perf_counter() - started, 2)})
    return rows


def record(path: Path = RESPONSE_FILE, processes: int = 2) -> None:
    """Train every grid point not yet in `path` (`processes` at once), appending its epochs as it finishes."""
    from multiprocessing import get_context

    done = {(float(r["p"]), int(r["T"]), float(r["decay"])) for r in read_rows(path) if int(r["epoch"]) == EPOCHS}
    todo = [point for point in grid() if point not in done]
    print(f"recording {len(todo)} of {len(grid())} grid points ({processes} at once)", flush=True)
    with get_context("spawn").Pool(processes) as pool:
        for count, rows in enumerate(pool.imap_unordered(_record_one, todo), 1):
            append_rows(path, FIELDS, rows)
            last = rows[-1]
            print(f"[{count}/{len(todo)}] p={last['p']} T={last['T']} λ={last['decay']}: validation "
                  f"{last['val_accuracy']:.3f}, {last['energy_mj']} mJ, {last['seconds']} s", flush=True)


def read_response(path: Path = RESPONSE_FILE) -> tuple[dict, dict]:
    """Per grid point: [(validation accuracy, energy_mj)] by epoch, and each epoch's seconds."""
    values: dict = {}
    seconds: dict = {}
    for row in read_rows(path):
        point = (float(row["p"]), int(row["T"]), float(row["decay"]))
        epoch = int(row["epoch"])
        values.setdefault(point, {})[epoch] = (float(row["val_accuracy"]), float(row["energy_mj"]))
        seconds.setdefault(point, {})[epoch] = float(row["seconds"])
    missing = [point for point in grid() if len(values.get(point, {})) < EPOCHS]
    if missing:
        raise SystemExit(f"{path}: grid point p={missing[0][0]} T={missing[0][1]} λ={missing[0][2]} is not recorded "
                         f"for {EPOCHS} epochs (run: python -m bench.pareto_search --record)")
    response = {point: [by_epoch[e] for e in range(1, EPOCHS + 1)] for point, by_epoch in values.items()}
    durations = {point: [by_epoch[1]] + [by_epoch[e] - by_epoch[e - 1] for e in range(2, EPOCHS + 1)]
                 for point, by_epoch in seconds.items()}
    return response, durations


def snap(params: dict) -> tuple[float, int, float]:
    nearest = lambda grid_values, value: min(grid_values, key=lambda g: abs(g - value))  # noqa: E731
    return nearest(P_GRID, params["p"]), int(params["T"]), nearest(DECAY_GRID, params["decay"])


def search(response: dict, durations: dict, kind: str, sampler_seed: int, budget: int,
           overrides: tuple[str, ...] = ()) -> list[tuple[int, tuple]]:
    """Replay one search on the recording until it has spent `budget` epochs; returns, per epoch spent in
    order, (epochs spent, the objective values of a trial that just finished its full budget, or None).

    kind: "full" (the space's NSGA-II at full budget), "mo_asha" (the same with the product's MO-ASHA
    rule; stopped trials told PRUNED) or "random" (uniform (p, T, λ) at full budget). Trials run
    `max_concurrent` at once, each epoch taking its recorded time."""
    import heapq
    import random

    import optuna
    from ray.tune.schedulers import TrialScheduler

    from sweep.engine import make_sampler
    from sweep.mo_asha import MultiObjectiveASHA
    from sweep.space import load_space
    from sweep.study import distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = load_space("pareto", "demo", [f"search.seed={sampler_seed}", f"base.epochs={EPOCHS}", *overrides])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space))
    space_distributions = distributions(space)
    rung_rule = (MultiObjectiveASHA([(o.metric, o.mode) for o in space.objectives], max_t=EPOCHS,
                                    grace_period=space.scheduler.grace_period,
                                    reduction_factor=space.scheduler.reduction_factor)
                 if kind == "mo_asha" else None)
    draw = random.Random(sampler_seed)
    running: list = []  # (time its current epoch ends, trial number, optuna trial, grid point, epoch)
    clock, spent, started, events = 0.0, 0, 0, []

    def start() -> None:
        nonlocal started
        if kind == "random":
            trial, point = None, (draw.choice(P_GRID), draw.choice(T_GRID), draw.choice(DECAY_GRID))
        else:
            trial = study.ask(space_distributions)
            point = snap(trial.params)
        heapq.heappush(running, (clock + durations[point][0], started, trial, point, 1))
        started += 1

    for _ in range(space.max_concurrent):
        start()
    while running and spent < budget:
        clock, number, trial, point, epoch = heapq.heappop(running)
        spent += 1
        accuracy, energy = response[point][epoch - 1]
        if epoch == EPOCHS:
            if trial is not None:
                study.tell(trial, [accuracy, energy])
            events.append((spent, (accuracy, energy)))
            start()
        elif rung_rule is not None and rung_rule.decide(str(number), epoch, [accuracy, energy]) == TrialScheduler.STOP:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            events.append((spent, None))
            start()
        else:
            events.append((spent, None))
            heapq.heappush(running, (clock + durations[point][epoch], number, trial, point, epoch + 1))
    return events


def hypervolume_by_epoch(events: list, reference, budget: int) -> list[float]:
    """The hypervolume of the full-budget front after each epoch spent, 1..budget."""
    from dashboards.pareto import hypervolume

    curve, front, value = [], [], 0.0
    for _, finished in events:
        if finished is not None:
            front.append(finished)
            value = hypervolume(front, [True, False], reference)
        curve.append(value)
    return (curve + [value] * budget)[:budget]


def first_epoch_at(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, value in enumerate(curve) if value >= target), None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="(re)record the missing grid points first")
    parser.add_argument("--processes", type=int, default=2, help="training processes when recording")
    parser.add_argument("--searches", type=int, default=20, help="sampler seeds to replay")
    parser.add_argument("--trials", type=int, default=32, help="trials of the full-budget searches (the cpu profile's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the pareto space for the replay, e.g. scheduler.grace_period=4")
    args = parser.parse_args(argv)
    if args.record:
        record(processes=args.processes)

    from dashboards.pareto import hypervolume, reference_point
    from sweep.mo_asha import milestones
    from sweep.space import load_space

    response, durations = read_response()
    finals = [epochs[-1] for epochs in response.values()]
    reference = reference_point(finals, [True, False])
    budget = args.trials * EPOCHS
    space, _ = load_space("pareto", "demo", args.set)
    rungs = milestones(EPOCHS, space.scheduler.grace_period, space.scheduler.reduction_factor)
    runs = {kind: [search(response, durations, kind, seed, budget, tuple(args.set)) for seed in range(args.searches)]
            for kind in ("full", "mo_asha", "random")}
    curves = {kind: [hypervolume_by_epoch(events, reference, budget) for events in found] for kind, found in runs.items()}
    grid_front = hypervolume(finals, [True, False], reference)
    print(f"# pareto demo response recorded per epoch on a {len(grid())}-point (p, T, λ) grid, {EPOCHS} epochs "
          f"({RESPONSE_FILE.name}); {args.searches} sampler seeds; full budget = {args.trials} trials = {budget} epochs")
    print(f"# hypervolume (moocore) of the full-budget front, reference point: validation accuracy "
          f"{reference[0]:.3f}, energy {reference[1]:.4g} mJ (worst over the grid's final epochs + 10 % of the range); "
          f"MO-ASHA rungs at epochs {rungs}, η = {space.scheduler.reduction_factor:g}; the whole grid's front: "
          f"{grid_front:.4g}")
    final = [curve[-1] for curve in curves["full"]]
    for kind, label in (("full", "NSGA-II, full budget"), ("mo_asha", "NSGA-II + MO-ASHA"), ("random", "random, full budget")):
        at_half = [curve[budget // 2 - 1] / f for curve, f in zip(curves[kind], final)]
        at_end = [curve[-1] / f for curve, f in zip(curves[kind], final)]
        reach = [first_epoch_at(curve, 0.95 * f) for curve, f in zip(curves[kind], final)]
        ratios = sorted(r / budget if r is not None else math.inf for r in reach)
        full_trials = statistics.median(sum(f is not None for _, f in events) for events in runs[kind])
        of_grid = statistics.median(curve[-1] / grid_front for curve in curves[kind])
        print(f"{label:<22}: hypervolume / full-budget final at 50 % of the epochs: median {statistics.median(at_half):.3f} "
              f"(range {min(at_half):.3f}-{max(at_half):.3f}); at 100 %: {statistics.median(at_end):.3f}; "
              f"epochs to reach 0.95 of it / {budget}: median {statistics.median(ratios):.2f} "
              f"(reached in {sum(r is not None for r in reach)}/{len(reach)}); full-budget trials: median "
              f"{full_trials:g}; final / the grid's front: {of_grid:.3f}")
    asha_reach = sorted((first_epoch_at(c, 0.95 * f) or math.inf) / budget for c, f in zip(curves["mo_asha"], final))
    print(f"MO-ASHA epoch ratio to 0.95 of the full-budget search's final hypervolume: median "
          f"{statistics.median(asha_reach):.2f} (goal <= 0.50)")


if __name__ == "__main__":
    main()
