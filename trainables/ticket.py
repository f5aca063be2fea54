"""One function trainable for every model, method and dataset (a Ray Tune trainable is a plain function).

The config is a TrainConfig's fields (a grid variant merged in: runrecord.run_fields) plus
`checkpoint_every` (epochs), `energy_batch` (test images the energy is measured on) and `progress_dir`
(a folder of the sweep where each trial notes its newest checkpoint). Each epoch reports
runrecord.epoch_metrics: test/train accuracy and loss, energy per image (paper convention and
sparsity-aware; an objective a Pareto search may read at any epoch), pruned fraction, mean firing rate,
epoch time and `full_budget`. A checkpoint holds the whole TrainingRun state (model with scores and
masks, optimiser, schedule, epoch, RNG), so a restarted trial continues bit for bit; the last one
also holds the run's final record (metrics.json) and its per-layer energy table.
"""

import json
import tempfile
from pathlib import Path

import torch
from ray import tune

import runrecord
from slt.config import make_config
from slt.tickets import pruned_fraction
from slt.train import TrainingRun

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"  # {"epoch": n} in every checkpoint, to pick the most advanced one


def _epochs_in(directory: Path) -> int:
    try:
        return json.loads((directory / PROGRESS_FILE).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def _noted(progress_dir: str | None) -> Path | None:
    """The checkpoint this trial last noted in the sweep's progress folder (None if it noted none)."""
    if not progress_dir:
        return None
    try:
        note = Path(progress_dir) / f"{tune.get_context().get_trial_id()}.json"
        return Path(json.loads(note.read_text())["checkpoint"])
    except (OSError, ValueError, KeyError):
        return None


def _note(progress_dir: str | None) -> None:
    """Note the checkpoint Tune just persisted (tune.get_checkpoint() is the latest reported one)."""
    checkpoint = tune.get_checkpoint()
    if not progress_dir or checkpoint is None:
        return
    folder = Path(progress_dir)
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{tune.get_context().get_trial_id()}.json"
    tmp = note.with_suffix(".tmp")
    tmp.write_text(json.dumps({"checkpoint": checkpoint.path}))
    tmp.replace(note)


def latest_state_file(progress_dir: str | None) -> Path | None:
    """The saved state with the most epochs: the checkpoint Tune hands this trial, or the newer one it noted.

    Tune snapshots its experiment state only every second, so a trial restored after the driver was
    killed can be handed an older checkpoint (or none) than the last one it reported; the note
    written after each report names that one.
    """
    given = tune.get_checkpoint()
    candidates = [Path(given.path)] if given is not None else []
    candidates += [noted] if (noted := _noted(progress_dir)) is not None else []
    candidates = [c for c in candidates if (c / STATE_FILE).is_file() and _epochs_in(c) >= 0]
    return max(candidates, key=_epochs_in) / STATE_FILE if candidates else None


def train_ticket(config: dict) -> None:
    every = int(config.get("checkpoint_every", 1))
    energy_batch = int(config.get("energy_batch", 256))
    progress_dir = config.get("progress_dir")
    run = TrainingRun(make_config(**runrecord.run_fields(config)))
    state_file = latest_state_file(progress_dir)
    if state_file is not None:
        run.load_state_dict(torch.load(state_file, weights_only=True))
    if state_file is not None and run.done:  # the driver died before it saw the final result: report it again
        _report(run, run.history[-1], every, energy_batch, progress_dir)
    while not run.done:
        _report(run, run.run_epoch(), every, energy_batch, progress_dir)


def _report(run: TrainingRun, epoch: dict, every: int, energy_batch: int, progress_dir: str | None) -> None:
    """tune.report one epoch's metrics, with a checkpoint every `every` epochs and at the end."""
    energy = run.energy(batch=energy_batch, opcounter=run.done)
    result = runrecord.epoch_metrics(epoch, run.total_epochs, energy, pruned_fraction(run.model))
    if not run.done and run.epoch % every:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        torch.save(run.state_dict(), directory / STATE_FILE)
        (directory / PROGRESS_FILE).write_text(json.dumps({"epoch": run.epoch}))
        if run.done:
            record = runrecord.final_record(run, energy)
            (directory / runrecord.METRICS_FILE).write_text(json.dumps(record, indent=2))
            (directory / runrecord.ENERGY_TABLE_FILE).write_text(json.dumps(record["energy_layers"], indent=2))
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
    _note(progress_dir)
