"""Acceptance runs on the real CIFAR-10 subset (slow: about a minute each on 2 cores)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def slt_train(out, cifar10_dir, method, seed=0):
    subprocess.run([sys.executable, "-m", "app.cli", "train", "--model", "vgg9", "--method", method,
                    "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--subset", "2000", "--epochs", "2",
                    "--width", "0.25", "--seed", str(seed), "--out", str(out), "--quiet"], check=True)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["snn", "ann"])
def test_vgg9_on_cifar10_subset_beats_chance_and_is_reproducible(tmp_path, cifar10_dir, method):
    first = slt_train(tmp_path / "a", cifar10_dir, method)
    assert (first["train_size"], first["val_size"], first["test_size"]) == (1800, 200, 1000)
    assert first["test_accuracy"] >= 0.18 and first["val_accuracy"] >= 0.18  # chance is 0.10
    second = slt_train(tmp_path / "b", cifar10_dir, method)
    for key in ("val_accuracy", "test_accuracy", "test_loss", "train_accuracy", "firing_rates"):
        assert first[key] == second[key], key


@pytest.mark.parametrize("method", ["lt", "slt", "mplt", "mpslt"])
def test_vgg9_tickets_on_cifar10_subset_beat_chance_at_exact_sparsity(tmp_path, cifar10_dir, method):
    out = tmp_path / method
    subprocess.run([sys.executable, "-m", "app.cli", "train", "--model", "vgg9", "--method", method, "--p", "0.5",
                    "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--subset", "2000", "--epochs", "3",
                    "--width", "0.25", "--out", str(out), "--quiet"], check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.15  # chance is 0.10
    assert all(layer["pruned_fraction"] == pytest.approx(0.5, abs=1e-3)
               for layer in metrics["sparsity"]["layers"].values())
    assert metrics["energy"]["energy_mj_sparse"] < metrics["energy"]["energy_mj"]
