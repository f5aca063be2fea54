"""The trainable's resume logic, with Tune's session API replaced by a fake (no Ray cluster)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import runrecord
import trainables.ticket as trainable
from conftest import TINY

CONFIG = {**TINY, "method": "slt", "p": 0.5, "epochs": 2, "checkpoint_every": 1, "energy_batch": 16}


class Killed(Exception):
    """The trial's process dies (the driver or the node went away)."""


class FakeTune:
    """tune.get_checkpoint / get_context / report / Checkpoint for one trial: a report with a
    checkpoint copies it to `storage` (Tune persists it) and makes it the one get_checkpoint returns."""

    Checkpoint = SimpleNamespace(from_directory=lambda path: SimpleNamespace(path=path))

    def __init__(self, storage: Path, handed: Path | None = None, die_at_epoch: int | None = None):
        self.storage, self.die_at_epoch = storage, die_at_epoch
        self.checkpoint = SimpleNamespace(path=str(handed)) if handed else None
        self.reports: list[dict] = []

    def get_checkpoint(self):
        return self.checkpoint

    def get_context(self):
        return SimpleNamespace(get_trial_id=lambda: "trial_0001")

    def report(self, metrics: dict, checkpoint=None):
        if metrics["epoch"] == self.die_at_epoch:
            raise Killed
        if checkpoint is not None:
            persisted = self.storage / f"checkpoint_{len(list(self.storage.glob('checkpoint_*'))):06d}"
            shutil.copytree(checkpoint.path, persisted)
            self.checkpoint = SimpleNamespace(path=str(persisted))
        self.reports.append(dict(metrics))


def run_trial(monkeypatch, tmp_path, energy_each_epoch: bool = True, **fake) -> FakeTune:
    tune = FakeTune(tmp_path / "storage", **fake)
    tune.storage.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(trainable, "tune", tune)
    trainable.train_ticket({**CONFIG, "progress_dir": str(tmp_path / "progress"), "energy_each_epoch": energy_each_epoch})
    return tune


def test_a_whole_trial_reports_every_epoch_and_ends_with_its_record(monkeypatch, tmp_path):
    tune = run_trial(monkeypatch, tmp_path)
    assert [(r["epoch"], r["full_budget"]) for r in tune.reports] == [(1, False), (2, True)]
    assert set(runrecord.EPOCH_METRICS) <= set(tune.reports[-1])
    assert tune.reports[-1]["pruned_fraction"] == pytest.approx(0.5, abs=0.01)
    record = json.loads((Path(tune.checkpoint.path) / runrecord.METRICS_FILE).read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["total_epochs"] == 2
    assert record["test_accuracy"] == tune.reports[-1]["test_accuracy"]
    # every result says what was trained on (the sweep logs it as the run's MLflow dataset input)
    data = [r[runrecord.DATA_KEY] for r in tune.reports]
    assert data[0] == data[1] and (data[0]["train"], data[0]["validation"]) == (record["train_size"], record["val_size"])
    assert data[0]["test"] == record["test_size"] and len(data[0]["digest"]) == 16


def test_energy_only_after_the_last_epoch_when_nothing_reads_it_before(monkeypatch, tmp_path):
    every = run_trial(monkeypatch, tmp_path / "every")
    last = run_trial(monkeypatch, tmp_path / "last", energy_each_epoch=False)
    assert ["energy_mj" in r for r in every.reports] == [True, True]
    assert ["energy_mj" in r for r in last.reports] == [False, True]
    assert last.reports[-1]["energy_mj"] == every.reports[-1]["energy_mj"] > 0  # the same final measurement
    assert last.reports[-1]["test_accuracy"] == every.reports[-1]["test_accuracy"]


def test_a_trial_handed_no_checkpoint_resumes_from_the_one_it_noted(monkeypatch, tmp_path):
    straight = run_trial(monkeypatch, tmp_path / "straight")
    with pytest.raises(Killed):
        run_trial(monkeypatch, tmp_path, die_at_epoch=2)  # epoch 1 persisted and noted, then killed
    resumed = run_trial(monkeypatch, tmp_path, handed=None)  # Tune's snapshot predates epoch 1
    assert [r["epoch"] for r in resumed.reports] == [2]
    keys = ("test_accuracy", "test_loss", "train_loss", "energy_mj")
    assert {k: resumed.reports[0][k] for k in keys} == {k: straight.reports[1][k] for k in keys}


def test_the_newer_of_handed_and_noted_checkpoints_wins(monkeypatch, tmp_path):
    first = run_trial(monkeypatch, tmp_path)  # both epochs persisted; the note names epoch 2's checkpoint
    epoch_one = sorted((tmp_path / "storage").glob("checkpoint_*"))[0]
    again = run_trial(monkeypatch, tmp_path, handed=epoch_one)
    # the noted final state wins over Tune's older one: nothing is trained, the final result is reported again
    assert [(r["epoch"], r["full_budget"]) for r in again.reports] == [(2, True)]
    assert again.reports[0]["test_accuracy"] == first.reports[-1]["test_accuracy"]
