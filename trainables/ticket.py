"""One function trainable for every model, method and dataset (a Ray Tune trainable is a plain function).

The config is a TrainConfig's fields (a grid variant merged in: runrecord.run_fields) plus
`checkpoint_every` (epochs), `energy_batch` (validation images the energy is measured on),
`energy_each_epoch` (measure it after every epoch, or only after the last: sweep.space.SearchSpace says
which a sweep needs) and `progress_dir` (a folder of the sweep where each trial notes its newest
checkpoint). Each epoch reports runrecord.epoch_metrics: validation/test/train accuracy and loss, energy
per image (paper convention and sparsity-aware), pruned fraction, mean firing rate, epoch time and
`full_budget`. A checkpoint holds the whole TrainingRun state (model with scores and
masks, optimiser, schedule, epoch, RNG), so a restarted trial continues bit for bit; the last one
also holds the run's final record (metrics.json) and its per-layer energy table.
"""

import json
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from ray import tune

import runrecord
from slt.config import make_config
from slt.tickets import pruned_fraction
from slt.train import TrainingRun


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
    candidates = [c for c in candidates
                  if (c / runrecord.TRIAL_STATE_FILE).is_file() and runrecord.checkpoint_epochs(c) >= 0]
    return max(candidates, key=runrecord.checkpoint_epochs) / runrecord.TRIAL_STATE_FILE if candidates else None


@dataclass(frozen=True)
class Options:
    """The trainable's own keys of a trial config (beside the run config), with their defaults."""

    checkpoint_every: int = 1  # epochs
    energy_batch: int = 256
    energy_each_epoch: bool = True
    progress_dir: str | None = None

    @classmethod
    def of(cls, config: dict) -> "Options":
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


def train_ticket(config: dict) -> None:
    options = Options.of(config)
    run = TrainingRun(make_config(**runrecord.run_fields(config)))
    state_file = latest_state_file(options.progress_dir)
    if state_file is not None:
        run.load_state_dict(torch.load(state_file, weights_only=True))
    data = run.data_description()  # logged by the sweep as the run's MLflow dataset input
    if state_file is not None and run.done:  # the driver died before it saw the final result: report it again
        _report(run, run.history[-1], options, data)
    while not run.done:
        _report(run, run.run_epoch(), options, data)


def _report(run: TrainingRun, epoch: dict, options: Options, data: dict) -> None:
    """tune.report one epoch's metrics, with a checkpoint every `checkpoint_every` epochs and at the end."""
    measure = run.done or options.energy_each_epoch
    energy = run.energy(batch=options.energy_batch, opcounter=run.done) if measure else None
    result = {**runrecord.epoch_metrics(epoch, run.total_epochs, energy, pruned_fraction(run.model)),
              runrecord.DATA_KEY: data}
    if not run.done and run.epoch % options.checkpoint_every:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        torch.save(run.state_dict(), directory / runrecord.TRIAL_STATE_FILE)
        (directory / runrecord.TRIAL_PROGRESS_FILE).write_text(json.dumps({"epoch": run.epoch}))
        if run.done:
            record = runrecord.final_record(run, energy)
            (directory / runrecord.METRICS_FILE).write_text(json.dumps(record, indent=2))
            (directory / runrecord.ENERGY_TABLE_FILE).write_text(json.dumps(record["energy_layers"], indent=2))
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
    _note(options.progress_dir)
