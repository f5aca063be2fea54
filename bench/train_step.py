"""Training-step throughput of VGG-9: SNN (T=4) vs ANN, ticket (slt, mpslt) vs dense SNN, data share,
and the achieved FLOP/s of the SNN and ANN steps against this machine's measured matmul peak.

Every method is measured side by side in one run, interleaved round by round, and reported as ratios
(absolute times on a shared machine are noise). Usage: python -m bench.train_step [--width 0.25] [--rounds 5]
"""

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

from slt.config import make_config  # noqa: E402
from slt.data import load_dataset  # noqa: E402
from slt.data.pipeline import iterate_batches  # noqa: E402
from slt.energy import count_macs  # noqa: E402
from slt.train import TrainingRun  # noqa: E402


def time_steps(run: TrainingRun, batches: int) -> tuple[float, float]:
    """Seconds per image of (whole training step, data pipeline part) over `batches` steps."""
    run.model.train()
    step_total = data_total = 0.0
    images = 0
    source = iterate_batches(run.train_split, run.cfg.batch_size, shuffle=True, generator=run.generator)
    for _, (raw, labels) in zip(range(batches), source):
        start = time.perf_counter()
        inputs = run.pipeline(raw, augment=True, generator=run.generator)
        data_done = time.perf_counter()
        loss = F.cross_entropy(run.model(inputs), labels)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        functional.reset_net(run.model)
        end = time.perf_counter()
        step_total += end - start
        data_total += data_done - start
        images += len(labels)
    return step_total / images, data_total / images


def matmul_seconds(n: int = 1024, repeats: int = 5) -> float:
    """Seconds per float32 n x n matmul, best of `repeats` (the machine's dense-compute peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def training_flops(run: TrainingRun) -> float:
    """Conv/linear FLOPs of one training step per image: 3 x forward (backward ~ 2 x forward), 2 FLOPs per
    MAC; the first layer sees pixels once per image (direct encoding), the others run T times in an SNN."""
    example, _ = next(iterate_batches(run.test_split, 2, shuffle=False))
    macs = list(count_macs(run.model, run.pipeline(example, augment=False)).values())
    steps = run.cfg.time_steps if run.cfg.spiking else 1
    return 3 * 2 * (macs[0] + steps * sum(macs[1:]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 directory (default: bundled digits at 32x32)")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--p", type=float, default=0.5, help="pruning ratio of the ticket methods")
    parser.add_argument("--batches", type=int, default=8, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--matmul-n", type=int, default=1024, help="size of the square matmul giving the peak")
    args = parser.parse_args(argv)

    dataset_name = "cifar10" if args.data_dir else "digits"
    # twice the images the steps use: the validation split takes its share and the steps still find full batches
    data = load_dataset(dataset_name, args.data_dir, subset=2 * args.batch_size * args.batches)
    common = dict(model="vgg9", dataset=dataset_name, data_dir=args.data_dir, width=args.width,
                  batch_size=args.batch_size, T=args.T)
    runs = {method: TrainingRun(make_config(**common, method=method, p=args.p), data)
            for method in ("snn", "ann", "slt", "mpslt")}
    for run in runs.values():  # warm-up: allocator, first-call overheads
        time_steps(run, 2)
    samples = {m: [] for m in runs}
    matmul = []
    for _ in range(args.rounds):
        for method, run in runs.items():
            samples[method].append(time_steps(run, args.batches))
        matmul.append(matmul_seconds(args.matmul_n))

    step = {m: statistics.median(s[0] for s in samples[m]) for m in runs}
    data_share = {m: statistics.median(s[1] / s[0] for s in samples[m]) for m in runs}
    print(f"# VGG-9 width {args.width}, {dataset_name} 32x32, batch {args.batch_size}, T={args.T}, "
          f"torch threads {torch.get_num_threads()}, median of {args.rounds} interleaved rounds")
    for m in runs:
        print(f"{m}: {1 / step[m]:8.1f} images/s   data pipeline {100 * data_share[m]:.1f}% of step time")
    ips = {m: 1 / step[m] for m in runs}
    print(f"SNN images/s / (ANN images/s / T) = {ips['snn'] / (ips['ann'] / args.T):.2f}   "
          f"(1.0: an SNN step costs exactly T ANN steps; below 1: more)")
    print(f"ANN images/s / SNN images/s      = {ips['ann'] / ips['snn']:.2f}")
    for ticket in ("slt", "mpslt"):
        print(f"{ticket + ' step / dense snn step':<32} = {step[ticket] / step['snn']:.2f}   (goal <= 1.10)")
    peak = 2 * args.matmul_n ** 3 / statistics.median(matmul)
    print(f"matmul peak ({args.matmul_n}x{args.matmul_n} float32)   = {peak / 1e9:.1f} GFLOP/s")
    for method in ("snn", "ann"):
        achieved = training_flops(runs[method]) / step[method]
        print(f"{method} step achieved / matmul peak  = {achieved / 1e9:.1f} / {peak / 1e9:.1f} GFLOP/s "
              f"= {achieved / peak:.2f}")

if __name__ == "__main__":
    main()
