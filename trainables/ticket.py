"""One function trainable for every model, method and dataset (a Ray Tune trainable is a plain function).

The config is a TrainConfig's fields plus `checkpoint_every` (epochs), `energy_batch` (test images
the energy is measured on) and `trial_root` (the sweep's Tune folder, to find its own checkpoints). Each epoch reports accuracy, loss, energy (paper convention and
sparsity-aware), sparsity, mean firing rate, epoch time and `full_budget` (true on the last epoch).
A checkpoint holds the whole TrainingRun state (model with scores/masks, optimiser, schedule,
epoch, RNG), so a restarted trial continues bit for bit.
"""

import json
import tempfile
from pathlib import Path

import torch
from ray import tune

from slt.config import TrainConfig, make_config
from slt.train import TrainingRun

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"  # {"epoch": n} in every checkpoint, to pick the most advanced one
METRICS_FILE = "metrics.json"
ENERGY_TABLE_FILE = "energy_layers.json"
# Metric names reported to Tune and logged to MLflow, the same everywhere.
REPORTED_METRICS = ("accuracy", "loss", "train_accuracy", "train_loss", "energy_mj", "energy_mj_sparse",
                    "mean_firing_rate", "pruned_fraction", "epoch", "epoch_time_s", "full_budget")


def run_fields(config: dict) -> dict:
    """The run-config fields of a trial config; a grid `variant` (grid values and seed) is merged in."""
    merged = {**config, **config.get("variant", {})}
    return {k: merged[k] for k in TrainConfig.model_fields if k in merged}


def _train_config(config: dict) -> TrainConfig:
    return make_config(**run_fields(config))


def _save(run: TrainingRun, directory: Path, summary: dict | None, energy: dict) -> None:
    torch.save(run.state_dict(), directory / STATE_FILE)
    (directory / PROGRESS_FILE).write_text(json.dumps({"epoch": run.epoch}))
    if summary is not None:
        (directory / METRICS_FILE).write_text(json.dumps(summary, indent=2))
        (directory / ENERGY_TABLE_FILE).write_text(json.dumps(energy["layers"], indent=2))


def _epochs_in(directory: Path) -> int:
    try:
        return json.loads((directory / PROGRESS_FILE).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def latest_state_file(checkpoint: tune.Checkpoint | None, trial_root: str | None) -> Path | None:
    """The saved state with the most epochs: Tune's checkpoint, or a newer one in the trial's folder.

    Tune snapshots its experiment state only every few seconds, so after the driver is killed a
    restored trial can be handed an older checkpoint (or none) than the ones it already wrote. Every
    reported epoch's checkpoint is in the trial's folder under `trial_root` (the sweep's Tune folder,
    named after the trial id), so resume from the newest of them.
    """
    candidates = [Path(checkpoint.path)] if checkpoint is not None else []
    if trial_root:
        trial_id = tune.get_context().get_trial_id()
        candidates += [c for folder in Path(trial_root).glob(f"*_{trial_id}_*") for c in folder.glob("checkpoint_*")]
    candidates = [c for c in candidates if (c / STATE_FILE).is_file() and _epochs_in(c) >= 0]
    return max(candidates, key=_epochs_in) / STATE_FILE if candidates else None


def train_ticket(config: dict) -> None:
    every = int(config.get("checkpoint_every", 1))
    energy_batch = int(config.get("energy_batch", 256))
    run = TrainingRun(_train_config(config))
    state_file = latest_state_file(tune.get_checkpoint(), config.get("trial_root"))
    if state_file is not None:
        run.load_state_dict(torch.load(state_file, weights_only=True))
    if state_file is not None and run.done:  # the driver died before it saw the final result: report it again
        _report(run, run.history[-1], every, energy_batch)
    while not run.done:
        _report(run, run.run_epoch(), every, energy_batch)


def _report(run: TrainingRun, epoch: dict, every: int, energy_batch: int) -> None:
    """tune.report one epoch's metrics, with a checkpoint every `every` epochs and at the end."""
    final = run.done
    energy = run.energy(batch=energy_batch, opcounter=final)
    summary = run.summary()
    result = {
        "accuracy": epoch["test_accuracy"],
        "loss": epoch["test_loss"],
        "train_accuracy": epoch["train_accuracy"],
        "train_loss": epoch["train_loss"],
        "energy_mj": energy["energy_mj"],
        "energy_mj_sparse": energy["energy_mj_sparse"],
        "mean_firing_rate": epoch["mean_firing_rate"] or 0.0,
        "pruned_fraction": summary["sparsity"]["pruned_fraction"] if "sparsity" in summary else 0.0,
        "epoch": epoch["epoch"],
        "phase": epoch["phase"],
        "epoch_time_s": epoch["epoch_time_s"],
        "full_budget": final,
    }
    if not final and run.epoch % every:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory() as directory:
        if final:
            summary = {**summary, "energy": {k: v for k, v in energy.items() if k != "layers"},
                       "history": run.history, "config": run.cfg.model_dump()}
        _save(run, Path(directory), summary if final else None, energy)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
