"""The `slt` command: model-info, train.

Bad input prints one line `slt: error: FIELD: PROBLEM` and exits 2 before anything is written.
"""

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from slt.config import ALLOWED, METHODS, TrainConfig, make_config
from slt.errors import InputError

HELP = {
    "model": "architecture",
    "method": "what to train: " + "; ".join(f"{m} = {d}" for m, (_, d) in METHODS.items()),
    "dataset": "dataset (digits is bundled; the others need --data-dir)",
    "data_dir": "directory with the dataset's original files",
    "label_kind": "CIFAR-100 labels",
    "image_size": "digits: upsampled size (default 32); event data: frames resized to this size",
    "subset": "keep the first N examples of each split, stratified by class",
    "T": "time steps of the SNN (ANN twins run 1)",
    "decay": "membrane decay λ of U[t] = λ·U[t-1] + I[t]",
    "width": "channel width multiplier",
    "seed": "seed of initialisation, shuffling and augmentation",
    "device": "where to train",
}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; values are validated by make_config, not argparse."""
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False,
                                default=None, help=f"turn off {name} (default on)")
            continue
        text = HELP.get(name, name.replace("_", " "))
        allowed = ALLOWED.get(name)
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper() if len(name) > 1 else name,
                            help=f"{text} [{allowed}; default {field.default}]" if allowed else
                            f"{text} [default {field.default}]")


def _config_from(args: argparse.Namespace) -> TrainConfig:
    given = {name: value for name, value in vars(args).items()
             if name in TrainConfig.model_fields and value is not None}
    return make_config(**given)


def _fresh_out_dir(out: str | None, cfg: TrainConfig) -> Path:
    """The run's output folder; refuses one that already holds a run, so nothing recorded is overwritten."""
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = f"runs/{stamp}-{cfg.model}-{cfg.method}-{cfg.dataset}-seed{cfg.seed}"
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError("out", f"{path} already exists and is not an empty folder; choose a new --out")
    return path


def cmd_model_info(args: argparse.Namespace) -> int:
    import torch

    from slt.data import DATASET_SHAPES
    from slt.energy import count_macs
    from slt.models import build_model, count_parameters

    cfg = make_config(model=args.model, width=args.width, T=args.T)
    if args.dataset not in DATASET_SHAPES:
        raise InputError("dataset", f"unknown dataset {args.dataset!r}; allowed: {ALLOWED['dataset']}")
    channels, size, classes = DATASET_SHAPES[args.dataset]
    size = args.image_size or size
    model = build_model(cfg.model, num_classes=classes, in_channels=channels, image_size=size, spiking=False,
                        width=cfg.width)
    macs = count_macs(model, torch.zeros(1, channels, size, size))
    print(json.dumps({"model": cfg.model, "dataset": args.dataset, "width": cfg.width, "input": [channels, size, size],
                      "classes": classes, "params": count_parameters(model), "macs": sum(macs.values()),
                      "macs_per_layer": macs}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from(args)
    out = _fresh_out_dir(args.out, cfg)

    import torch

    from slt.data import load_dataset
    from slt.energy import count_macs
    from slt.models import count_parameters
    from slt.train import TrainingRun, resolve_device

    resolve_device(cfg.device)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, frames=cfg.T, image_size=cfg.image_size,
                           label_kind=cfg.label_kind, subset=cfg.subset)
    run = TrainingRun(cfg, dataset, progress=not args.quiet)
    example = run.pipeline(run.test_split.inputs[:1], augment=False)
    macs = count_macs(run.model, example)
    started = time.perf_counter()
    for _ in range(cfg.epochs):
        m = run.run_epoch()
        if not args.quiet:
            print(f"epoch {m['epoch']}/{cfg.epochs}: train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f}"
                  f" | test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f} | {m['epoch_time_s']:.1f} s",
                  file=sys.stderr)
    wall = time.perf_counter() - started
    last = run.history[-1]
    metrics = {
        "config": cfg.model_dump(),
        "time_steps": cfg.time_steps,
        "params": count_parameters(run.model),
        "macs": sum(macs.values()),
        "train_size": len(run.train_split),
        "test_size": len(run.test_split),
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_accuracy": last["train_accuracy"],
        "mean_firing_rate": last["mean_firing_rate"],
        "firing_rates": last["firing_rates"],
        "wall_time_s": wall,
        "history": run.history,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(run.state_dict(), out / "checkpoint.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"{cfg.model} {cfg.method} on {cfg.dataset}: test accuracy {last['test_accuracy']:.4f} after "
          f"{cfg.epochs} epochs ({wall:.0f} s, {len(run.train_split)} training images) -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slt", description="Lottery tickets in spiking neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("model-info", help="parameters and MACs of a model, as one JSON object")
    info.add_argument("--model", default="vgg9", help=f"[{ALLOWED['model']}]")
    info.add_argument("--dataset", default="cifar10", help=f"input shape and classes of [{ALLOWED['dataset']}]")
    info.add_argument("--width", default=1.0, help="channel width multiplier")
    info.add_argument("--image-size", type=int, default=None, help="input size (default: the dataset's)")
    info.add_argument("--T", default=4, help="time steps (MACs are per time step)")
    info.set_defaults(func=cmd_model_info)

    train = sub.add_parser("train", help="train one model and write metrics.json and checkpoint.pt")
    _add_config_options(train)
    train.add_argument("--out", default=None, help="output folder (default runs/<time>-<model>-<method>-...)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"slt: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
