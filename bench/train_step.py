"""Training-step throughput in float32 and bf16 of VGG-9 (SNN at T=4, ANN, tickets slt and mpslt) and of the
dense spiking transformer (spikformer-tiny at --transformer-depth): SNN vs ANN, ticket vs dense SNN, bf16 vs
fp32 steps, data share, the achieved FLOP/s of the SNN and ANN steps against this machine's float32 and bf16
matmul peaks measured in the same rounds, and the fused LIF against spikingjelly's.

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

from bench import parity  # noqa: E402
from slt.config import make_config  # noqa: E402
from slt.data import load_dataset  # noqa: E402
from slt.data.pipeline import iterate_batches  # noqa: E402
from slt.energy import count_macs  # noqa: E402
from slt.train import TrainingRun  # noqa: E402


TRANSFORMER = "spikformer"  # the key of spikformer-tiny's dense SNN runs


def time_steps(run: TrainingRun, batches: int) -> tuple[float, float]:
    """Seconds per image of (whole training step, data pipeline part) over `batches` steps, in the run's
    precision (bf16: the forward under autocast, as slt.train runs it)."""
    run.model.train()
    step_total = data_total = 0.0
    images = 0
    source = iterate_batches(run.train_split, run.cfg.batch_size, shuffle=True, generator=run.generator)
    for _, (raw, labels) in zip(range(batches), source):
        start = time.perf_counter()
        inputs = run.pipeline(raw, augment=True, generator=run.generator)
        data_done = time.perf_counter()
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.dtype == torch.bfloat16):
            logits = run.model(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        functional.reset_net(run.model)
        end = time.perf_counter()
        step_total += end - start
        data_total += data_done - start
        images += len(labels)
    return step_total / images, data_total / images


def matmul_seconds(n: int, dtype: torch.dtype = torch.float32) -> float:
    """Best of 10 timings of one n x n matmul in `dtype`, after one untimed call (oneDNN sets its AMX kernels
    up on the first bf16 call: without it the bf16 peak reads low)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def lif_seconds(backend: str, shape: tuple[int, ...]) -> float:
    """Best of 5 timings of one LIF forward + backward on a [T*B, ...] current (T = shape[0] // batch)."""
    from slt.models.neurons import LIF

    lif = LIF(T=4, decay=0.5, backend=backend)
    x = torch.randn(*shape).mul_(1.5).requires_grad_()
    upstream = torch.randn(*shape)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        (lif(x) * upstream).sum().backward()
        functional.reset_net(lif)
        best = min(best, time.perf_counter() - start)
        x.grad = None
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
    parser.add_argument("--transformer-depth", type=int, default=2, help="blocks of the spikformer-tiny measured")
    parser.add_argument("--transformer-embed-dim", type=int, default=None, help="its token width D (default: the preset's)")
    parser.add_argument("--transformer-heads", type=int, default=None, help="its heads (default: the preset's)")
    parser.add_argument("--transformer-image-size", type=int, default=None,
                        help="its input size (e.g. 16: CIFAR resized per batch, 16 tokens; default: the dataset's)")
    parser.add_argument("--batches", type=int, default=8, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the square matmul giving the peak")
    args = parser.parse_args(argv)

    dataset_name = "cifar10" if args.data_dir else "digits"
    # twice the images the steps use: the validation split takes its share and the steps still find full batches
    data = load_dataset(dataset_name, args.data_dir, subset=2 * args.batch_size * args.batches)
    common = dict(model="vgg9", dataset=dataset_name, data_dir=args.data_dir, width=args.width,
                  batch_size=args.batch_size, T=args.T, neuron_backend="fused")  # auto would skip compiling: too short
    runs = {(method, precision): TrainingRun(make_config(**common, method=method, p=args.p, precision=precision), data)
            for precision in ("fp32", "bf16") for method in ("snn", "ann", "slt", "mpslt")}
    for precision in ("fp32", "bf16"):  # the dense spiking transformer (its width is embed_dim, not --width)
        runs[TRANSFORMER, precision] = TrainingRun(make_config(
            **{**common, "width": 1.0, "model": "spikformer-tiny"}, method="snn", depth=args.transformer_depth,
            embed_dim=args.transformer_embed_dim, heads=args.transformer_heads,
            image_size=args.transformer_image_size, precision=precision), data)
    lif_shape = (args.T * args.batch_size, max(1, int(64 * args.width)), 32, 32)  # VGG-9's first LIF layer
    for run in runs.values():  # warm-up: allocator, first-call overheads, the fused LIF's compilation
        time_steps(run, 2)
    samples = {key: [] for key in runs}
    peaks = {torch.float32: [], torch.bfloat16: []}
    lif = {"spikingjelly": [], "fused": []}
    for _ in range(args.rounds):
        for key, run in runs.items():
            samples[key].append(time_steps(run, args.batches))
        for dtype in peaks:
            peaks[dtype].append(matmul_seconds(args.matmul_n, dtype))
        for backend in lif:
            lif[backend].append(lif_seconds(backend, lif_shape))
    report(args, runs, samples, peaks, lif, lif_shape)
    print()
    parity.report()  # accuracy parity of bf16 with float32: recorded by `python -m bench.parity --record`


def report(args, runs, samples, peaks, lif, lif_shape) -> None:
    step = {k: statistics.median(s[0] for s in samples[k]) for k in runs}
    data_share = {k: statistics.median(s[1] / s[0] for s in samples[k]) for k in runs}
    print(f"# VGG-9 width {args.width}, batch {args.batch_size}, T={args.T}, torch threads {torch.get_num_threads()}, "
          f"median of {args.rounds} interleaved rounds; LIF: fused (compiled) unless said")
    for (method, precision) in runs:
        print(f"{method} {precision}: {1 / step[method, precision]:8.1f} images/s   data pipeline "
              f"{100 * data_share[method, precision]:.1f}% of step time")
    for precision in ("fp32", "bf16"):
        ips = {m: 1 / step[m, precision] for m in ("snn", "ann")}
        print(f"[{precision}] SNN images/s / (ANN images/s / T) = {ips['snn'] / (ips['ann'] / args.T):.2f}   "
              f"(1.0: an SNN step costs exactly T ANN steps; below 1: more)")
        for ticket in ("slt", "mpslt"):
            print(f"[{precision}] {ticket + ' step / dense snn step':<28} = "
                  f"{step[ticket, precision] / step['snn', precision]:.2f}   (goal <= 1.0)")
    for method in ("snn", "ann", "slt", "mpslt", TRANSFORMER):
        print(f"{method} bf16 step speed / fp32 step speed = {step[method, 'fp32'] / step[method, 'bf16']:.2f}")
    model = runs[TRANSFORMER, "bf16"].model
    print(f"[bf16] {TRANSFORMER} (depth {len(model.blocks)}, D {model.classifier[0].in_features}, "
          f"{model.num_tokens} tokens) images/s / VGG-9 snn images/s = "
          f"{step['snn', 'bf16'] / step[TRANSFORMER, 'bf16']:.2f}")
    flops = 2 * args.matmul_n ** 3
    peak = {dtype: flops / statistics.median(times) for dtype, times in peaks.items()}
    print(f"matmul peak ({args.matmul_n}x{args.matmul_n}): float32 {peak[torch.float32] / 1e9:.1f}, bfloat16 "
          f"{peak[torch.bfloat16] / 1e9:.1f} GFLOP/s (bf16 / fp32 = {peak[torch.bfloat16] / peak[torch.float32]:.2f})")
    for method in ("snn", "ann"):
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            achieved = training_flops(runs[method, precision]) / step[method, precision]
            print(f"{method} step achieved / matmul peak [{precision}] = {achieved / 1e9:.1f} / "
                  f"{peak[dtype] / 1e9:.1f} GFLOP/s = {achieved / peak[dtype]:.2f}")
    fused, reference = statistics.median(lif["fused"]), statistics.median(lif["spikingjelly"])
    print(f"LIF forward+backward on {list(lif_shape)}: spikingjelly {1e3 * reference:.1f} ms, fused {1e3 * fused:.1f} ms"
          f" -> fused LIF speed / spikingjelly = {reference / fused:.2f}")


if __name__ == "__main__":
    main()
