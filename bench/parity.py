"""Accuracy parity of bf16 and float32 training: the same configuration, the same seeds, both precisions.

`--record` trains the dense SNN VGG-9 (width 0.25, T = 4) on the whole CIFAR-10 subset (its training split
less the validation split) in fp32 and in bf16 for every seed, to a plateau (a cosine schedule to zero), and
appends each run's per-epoch validation and test accuracy to bench/data/parity_cifar10.csv (runs already
there are kept; an interrupted recording goes on with the next missing run). Without `--record` it reads
that file and prints, per precision, the final validation accuracy over the seeds, whether each run reached
a plateau (validation accuracy gained < 1 point over the last quarter of its epochs), and the mean paired
difference bf16 - fp32 with its standard error: bf16 is at parity when |difference| <= 2 standard errors.

Usage: python -m bench.parity --data-dir ../shared/data/cifar-10-batches-py [--record] [--seeds 3]
"""

import argparse
import math
import statistics
from pathlib import Path

from bench.recording import append_rows, read_rows

RESULTS = Path(__file__).parent / "data" / "parity_cifar10.csv"
FIELDS = ["precision", "seed", "epoch", "epochs", "val_accuracy", "test_accuracy", "seconds"]
CONFIG = dict(model="vgg9", method="snn", dataset="cifar10", width=0.25, T=4, epochs=16, batch_size=64)
PRECISIONS = ("fp32", "bf16")
PLATEAU_POINTS = 1.0  # validation accuracy gained over the last quarter of the epochs, in points


def record(data_dir: str, seeds: int, path: Path = RESULTS) -> None:
    """Train CONFIG in both precisions for seeds 0 .. seeds-1, skipping (precision, seed) runs already in `path`."""
    import time

    from slt.config import make_config
    from slt.data import load_dataset
    from slt.train import TrainingRun

    data = load_dataset("cifar10", data_dir)
    done = {(row["precision"], int(row["seed"])) for row in read_rows(path)}
    for seed in range(seeds):
        for precision in PRECISIONS:
            if (precision, seed) in done:
                continue
            started = time.perf_counter()
            run = TrainingRun(make_config(**CONFIG, data_dir=data_dir, precision=precision, seed=seed), data)
            rows = []
            for _ in range(run.total_epochs):
                epoch = run.run_epoch()
                rows.append({"precision": precision, "seed": seed, "epoch": epoch["epoch"], "epochs": run.total_epochs,
                             "val_accuracy": round(epoch["val_accuracy"], 6),
                             "test_accuracy": round(epoch["test_accuracy"], 6),
                             "seconds": round(time.perf_counter() - started, 1)})
                print(f"{precision} seed {seed} epoch {epoch['epoch']}/{run.total_epochs}: "
                      f"val {epoch['val_accuracy']:.4f} ({rows[-1]['seconds']} s)", flush=True)
            append_rows(path, FIELDS, rows)  # a whole run at once: a half-recorded run is never read


def parity(rows: list[dict]) -> dict:
    """Final validation accuracy per (precision, seed), plateau checks, and the paired bf16 - fp32 difference."""
    curves: dict[tuple[str, int], list[float]] = {}
    for row in sorted(rows, key=lambda r: int(r["epoch"])):
        curves.setdefault((row["precision"], int(row["seed"])), []).append(float(row["val_accuracy"]))
    final = {key: curve[-1] for key, curve in curves.items()}
    plateau = {key: 100 * (curve[-1] - curve[-1 - max(1, len(curve) // 4)]) < PLATEAU_POINTS
               for key, curve in curves.items()}
    seeds = sorted({seed for _, seed in final if all((p, seed) in final for p in PRECISIONS)})
    differences = [final["bf16", seed] - final["fp32", seed] for seed in seeds]
    result = {"final": final, "plateau": plateau, "seeds": seeds, "differences": differences}
    if len(differences) >= 2:
        mean = statistics.mean(differences)
        se = statistics.stdev(differences) / math.sqrt(len(differences))
        result.update(mean=mean, se=se, within=abs(mean) <= 2 * se)
    return result


def report(path: Path = RESULTS) -> None:
    rows = read_rows(path)
    if not rows:
        print(f"no parity runs recorded in {path}: record them with --record --data-dir CIFAR10_DIR")
        return
    result = parity(rows)
    epochs = rows[0]["epochs"]
    print(f"# bf16 vs fp32 parity: {CONFIG['model']} {CONFIG['method']} width {CONFIG['width']} T={CONFIG['T']}, "
          f"{epochs} epochs on the CIFAR-10 subset; final validation accuracy")
    for precision in PRECISIONS:
        values = [v for (p, _), v in sorted(result["final"].items()) if p == precision]
        plateaus = sum(result["plateau"][key] for key in result["final"] if key[0] == precision)
        spread = f" ± {statistics.stdev(values):.4f} (sd)" if len(values) > 1 else ""
        print(f"{precision}: {statistics.mean(values):.4f}{spread}, n={len(values)}; at a plateau "
              f"(< {PLATEAU_POINTS:g} point over the last quarter): {plateaus}/{len(values)}")
    if "mean" not in result:
        print(f"paired seeds: {len(result['seeds'])}; a verdict needs >= 2")
        return
    verdict = "within 2 standard errors: parity" if result["within"] else "outside 2 standard errors: NOT at parity"
    print(f"bf16 - fp32 validation accuracy = {100 * result['mean']:+.2f} ± {100 * result['se']:.2f} points "
          f"(mean ± standard error over n={len(result['seeds'])} paired seeds): {verdict}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 directory (needed with --record)")
    parser.add_argument("--record", action="store_true", help="train the runs missing from the recording first")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the recording (CSV)")
    args = parser.parse_args(argv)
    if args.record:
        if not args.data_dir:
            parser.error("--data-dir: --record trains on CIFAR-10; give the directory of cifar-10-batches-py")
        record(args.data_dir, args.seeds, args.results)
    report(args.results)


if __name__ == "__main__":
    main()
