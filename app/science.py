"""The science commands of `slt`: model-info, train, eval, energy (slt/ does the work, runrecord names it).

Bad input prints one line `slt: error: FIELD: PROBLEM` and exits 2 before anything is written.
"""

import argparse
import json
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import runrecord
from slt.config import TrainConfig, allowed, make_config
from slt.errors import InputError


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; values are validated by make_config, not argparse."""
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            on = not field.default
            parser.add_argument(("--" if on else "--no-") + name.replace("_", "-"), dest=name, default=None,
                                action="store_const", const=on, help=f"{field.description} [default {field.default}]")
            continue
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper() if len(name) > 1 else name,
                            help=f"{field.description} [{allowed(name)}; default {field.default}]")


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


def _model_without_data(cfg: TrainConfig):
    """The config's model built from the dataset's shapes alone, with one non-binary example input."""
    import torch

    from slt.data import READERS
    from slt.data.base import DatasetInfo
    from slt.train import build_network

    reader = READERS[cfg.dataset]
    channels, classes = reader.in_channels, reader.num_classes
    size = cfg.image_size or reader.image_size  # digits are upsampled to it, event frames resized to it
    info = DatasetInfo(cfg.dataset, classes, channels, size, False, (0.0,) * channels, (1.0,) * channels, False)
    torch.manual_seed(cfg.seed)
    example = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    return build_network(cfg, info), example


def cmd_model_info(args: argparse.Namespace) -> int:
    from slt.energy import count_macs
    from slt.models import count_parameters

    dims = {name: value for name in ("depth", "embed_dim", "heads") if (value := getattr(args, name)) is not None}
    cfg = make_config(model=args.model, dataset=args.dataset, width=args.width, image_size=args.image_size,
                      method="ann", **dims)
    model, example = _model_without_data(cfg)
    macs = count_macs(model, example)
    print(json.dumps({"model": cfg.model, "dataset": cfg.dataset, "width": cfg.width, "input": list(example.shape[1:]),
                      "classes": model.classifier[-1].out_features, "params": count_parameters(model),
                      "macs": sum(macs.values()), "macs_per_layer": macs}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from(args)
    out = _fresh_out_dir(args.out, cfg)

    import torch

    from slt.data import load_dataset
    from slt.train import TrainingRun, resolve_device

    resolve_device(cfg.device)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, frames=cfg.T, image_size=cfg.image_size,
                           label_kind=cfg.label_kind, subset=cfg.subset, val_fraction=cfg.val_fraction)
    run = TrainingRun(cfg, dataset, progress=not args.quiet)
    started = time.perf_counter()
    while not run.done:
        m = run.run_epoch()
        if not args.quiet:
            print(f"epoch {m['epoch']}/{run.total_epochs} ({m['phase']}): train loss {m['train_loss']:.4f} "
                  f"acc {m['train_accuracy']:.4f} | val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}"
                  f" | test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f}"
                  f" | {m['epoch_time_s']:.1f} s", file=sys.stderr)
    wall = time.perf_counter() - started
    metrics = runrecord.final_record(run, run.energy(), wall_time_s=wall)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(run.state_dict(), out / runrecord.CHECKPOINT_FILE)
    (out / runrecord.METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    ticket = f" at p={cfg.p} (pruned {metrics['sparsity']['pruned_fraction']:.4f})" if cfg.is_ticket else ""
    if cfg.method_info.patch_pruning:
        ticket += f", q={cfg.q} ({metrics['tokens_kept']} of {metrics['tokens']} tokens)"
    print(f"{cfg.model} {cfg.method}{ticket} on {cfg.dataset}: validation accuracy {metrics['val_accuracy']:.4f}, "
          f"test accuracy {metrics['test_accuracy']:.4f} after {run.total_epochs} epochs ({wall:.0f} s, "
          f"{len(run.train_split)} training / {len(run.val_split)} validation images) -> {out}")
    return 0


def load_checkpoint(directory: str) -> dict:
    """A run's checkpoint, loaded with weights_only=True (tensors and plain containers only)."""
    import torch

    path = Path(directory) / runrecord.CHECKPOINT_FILE
    if not path.is_file():
        raise InputError("checkpoint", f"{path} does not exist; pass the --out folder of an `slt train` run")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before it refuses the file
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or one holding objects outside weights_only's allow-list
        raise InputError("checkpoint", f"{path} is not a readable slt checkpoint ({type(err).__name__})") from None


def restore_run(directory: str, data_dir: str | None = None, device: str | None = None):
    """The TrainingRun saved in `directory`, optionally reading its data from elsewhere or on another device."""
    from slt.train import TrainingRun

    state = load_checkpoint(directory)
    overrides = {k: v for k, v in (("data_dir", data_dir), ("device", device)) if v is not None}
    run = TrainingRun(make_config(**{**state["config"], **overrides}))
    run.load_state_dict(state)
    return run


def cmd_eval(args: argparse.Namespace) -> int:
    from slt.train import evaluate

    run = restore_run(args.checkpoint, args.data_dir, args.device)
    cfg = run.cfg
    val = evaluate(run.model, run.val_split, run.pipeline, batch_size=cfg.batch_size, desc="val", dtype=run.dtype)
    result = evaluate(run.model, run.test_split, run.pipeline, batch_size=cfg.batch_size, dtype=run.dtype)
    report = {"checkpoint": args.checkpoint, "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset,
              "epoch": run.epoch, "val_accuracy": val["accuracy"], "val_loss": val["loss"],
              "test_accuracy": result["accuracy"], "test_loss": result["loss"],
              "mean_firing_rate": val["mean_firing_rate"]}
    if cfg.is_ticket:
        from slt.tickets import sparsity_report

        sparsity = sparsity_report(run.model)
        report.update(p=cfg.p, pruned_fraction=sparsity["pruned_fraction"], storage_ratio=sparsity["storage_ratio"])
    if cfg.method_info.patch_pruning:
        report["q"] = cfg.q
    print(json.dumps(report))
    return 0


ENERGY_TOTALS = ("energy_mj", "energy_mj_sparse", "energy_mj_effective", "energy_mj_memory_aware",
                 "energy_mj_memory_aware_ann", "break_even_spike_rate", "energy_mj_opcounter",
                 "opcounter_relative_difference", "macs", "sops", "effective_acs", "effective_macs",
                 "mean_input_spike_rate")


def _energy_of(args: argparse.Namespace, checkpoint: str | None) -> tuple[dict, "TrainConfig"]:
    """Energy per image of a saved run, or of a freshly initialised model described by the options."""
    from slt.energy import measure_energy
    from slt.train import TrainingRun

    from slt.energy_table import load_energy_table

    constants = {"e_mac_pj": args.e_mac, "e_ac_pj": args.e_ac}
    if checkpoint:
        run = restore_run(checkpoint, args.data_dir, args.device)
        table = load_energy_table(args.energy_table or run.cfg.energy_table)  # --energy-table, else the run's
        return run.energy(batch=args.batch, table=table, **constants), run.cfg
    cfg = _config_from(args)
    if not cfg.spiking:  # ANN energy depends only on the shapes: no data needed
        model, example = _model_without_data(cfg)
        table = load_energy_table(cfg.energy_table)
        return measure_energy(model, example, spiking=False, T=1, table=table, **constants), cfg
    run = TrainingRun(cfg)
    run.enter_phase(len(run.phases) - 1)  # the network as it ends up, e.g. with MultiSp's patch pruning
    return run.energy(batch=args.batch, **constants), cfg


def cmd_energy(args: argparse.Namespace) -> int:
    report, cfg = _energy_of(args, args.checkpoint)
    ann_mj = report["macs"] * report["e_mac_pj"] / 1e9
    totals = {"model": cfg.model, "method": cfg.method, "dataset": cfg.dataset, "T": report["T"],
              "trained": bool(args.checkpoint), **{k: report.get(k) for k in ENERGY_TOTALS},
              "energy_mj_ann_twin": ann_mj, "ratio_to_ann": report["energy_mj"] / ann_mj}
    if args.baseline:
        base, _ = _energy_of(args, args.baseline)
        totals.update(baseline=args.baseline, baseline_energy_mj=base["energy_mj"],
                      ratio_to_baseline=report["energy_mj"] / base["energy_mj"],
                      ratio_to_baseline_sparse=report["energy_mj_sparse"] / base["energy_mj_sparse"])
    if args.per_layer:
        columns = ("layer", "macs", "firing_rate", "sops", "kept_fraction", "energy_pj", "energy_pj_sparse",
                   "effective_ops", "effective_kind", "energy_pj_effective", "memory_aware_ops_pj",
                   "memory_aware_memory_pj", "memory_aware_pj")
        print("\t".join(columns))
        for table, names in ((report["layers"], columns),
                             (report["neurons"], ("layer", "neuron_steps", "memory_aware_ops_pj",
                                                  "memory_aware_memory_pj", "memory_aware_pj"))):
            if table and names is not columns:  # the LIF layers' own updates (memory-aware estimate)
                print("\t".join(names))
            for row in table:
                print("\t".join("-" if row[c] is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]))
                                for c in names))
    print(json.dumps(totals))
    return 0


def add_commands(sub) -> None:
    """Add model-info, train, energy and eval to the `slt` parser's subcommands."""
    info = sub.add_parser("model-info", help="parameters and MACs of a model, as one JSON object")
    info.add_argument("--model", default="vgg9", help=f"[{allowed('model')}]")
    info.add_argument("--dataset", default="cifar10", help=f"input shape and classes of [{allowed('dataset')}]")
    info.add_argument("--width", default=1.0, help="channel width multiplier")
    info.add_argument("--image-size", default=None, help="input size (default: the dataset's)")
    for name in ("depth", "embed_dim", "heads"):
        info.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                          help=TrainConfig.model_fields[name].description)
    info.set_defaults(func=cmd_model_info)

    train = sub.add_parser("train", help="train one model and write metrics.json and checkpoint.pt")
    _add_config_options(train)
    train.add_argument("--out", default=None, help="output folder (default runs/<time>-<model>-<method>-...)")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(func=cmd_train)

    energy = sub.add_parser("energy", help="energy per image (paper convention, sparsity-aware, op_counter check)")
    _add_config_options(energy)
    energy.add_argument("--checkpoint", default=None, help="a trained run's --out folder (default: a fresh model)")
    energy.add_argument("--baseline", default=None, help="another run's folder; prints the energy ratio to it")
    energy.add_argument("--batch", type=int, default=256, help="validation images the firing rates are measured on")
    energy.add_argument("--per-layer", action="store_true", help="also print the per-layer table (TSV)")
    energy.add_argument("--e-mac", type=float, default=4.6, help="pJ per multiply-accumulate (default 4.6)")
    energy.add_argument("--e-ac", type=float, default=0.9, help="pJ per accumulate / synaptic operation (default 0.9)")
    energy.set_defaults(func=cmd_energy)

    evaluation = sub.add_parser("eval", help="reload a saved run (dense or ticket) and evaluate it on its "
                                             "validation and test splits")
    evaluation.add_argument("--checkpoint", required=True, help="the --out folder of an `slt train` run")
    evaluation.add_argument("--data-dir", default=None, help="read the data from here instead of the recorded path")
    evaluation.add_argument("--device", default=None, help="[auto, cpu, cuda]")
    evaluation.set_defaults(func=cmd_eval)


