"""Does a trial run slower in a worker process that already ran one (Tune's reuse_actors)?

In the long cpu sweeps, later spiking trials of a reused Ray worker took ~12 s per epoch against ~9 s for
the first one of the same configuration. This runs the same spiking trial (a TrainingRun, the fused LIF,
bf16, ending with the sweep's final energy measure) several times in one process: first in the main
thread, then again in the main thread, then in a new thread as Tune runs each trial of a reused worker,
and in a fresh process (the main thread of a new interpreter) before and after them. Printed: each run's median
epoch time after its first epoch (which compiles), and its ratio to the fresh process's.
Usage: python -m bench.worker_reuse [--data-dir CIFAR10_DIR] [--epochs 4] [--subset 1000]
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

from slt.config import make_config
from slt.train import TrainingRun


def trial_epoch_s(fields: dict) -> float:
    """Median seconds per epoch of one trial after its first epoch; like the trainable, it ends with the
    final energy measure (op counter included)."""
    run = TrainingRun(make_config(**fields))
    times = []
    while not run.done:
        started = time.perf_counter()
        run.run_epoch()
        times.append(time.perf_counter() - started)
    run.energy(batch=256, opcounter=True)
    return statistics.median(times[1:])


def in_new_thread(fields: dict) -> float:
    out = {}
    thread = threading.Thread(target=lambda: out.update(s=trial_epoch_s(fields)))
    thread.start()
    thread.join()
    return out["s"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 directory (default: bundled digits at 32x32)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (the first is not timed)")
    parser.add_argument("--subset", type=int, default=1000, help="training images per trial")
    parser.add_argument("--method", default="slt", help="a spiking method")
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs {args.epochs}: allowed: 2 or more (the first epoch, which compiles, is not timed)")
    fields = {"method": args.method, "model": "vgg9", "width": 0.25, "epochs": args.epochs, "subset": args.subset,
              "optimizer": "sgd", "lr": 0.1, "T": 4, "seed": 0, "neuron_backend": "fused",
              **({"dataset": "cifar10", "data_dir": args.data_dir} if args.data_dir else {"dataset": "digits"})}
    if args.fresh:
        print(json.dumps({"s": trial_epoch_s(fields)}))
        return
    child = [sys.executable, "-m", "bench.worker_reuse", "--fresh", *(argv if argv is not None else sys.argv[1:])]
    def fresh_s() -> float:
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.splitlines()[-1])["s"]

    before = fresh_s()  # a fresh process before and after the in-process trials: the machine's drift shows
    rows = [("fresh process (before)", before),
            ("first trial of a process, main thread", trial_epoch_s(fields)),
            ("second trial, same process, main thread", trial_epoch_s(fields)),
            ("third trial, same process, new thread (Tune's reused worker)", in_new_thread(fields)),
            ("fourth trial, same process, new thread", in_new_thread(fields))]
    rows.append(("fresh process (after)", fresh_s()))
    fresh = (before + rows[-1][1]) / 2
    print(f"{args.method} VGG-9 w0.25, {args.subset} images, median s/epoch after the first epoch "
          f"(ratio to the mean of the fresh processes):")
    for name, seconds in rows:
        print(f"  {name:<62} {seconds:7.2f} s  {seconds / fresh:5.2f}")


if __name__ == "__main__":
    main()
