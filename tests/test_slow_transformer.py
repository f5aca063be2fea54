"""Acceptance runs of the narrow spiking transformer on the real CIFAR-10 subset (slow: minutes on 2 cores)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

NARROW = ["--model", "spikformer-tiny", "--depth", "2", "--embed-dim", "64", "--heads", "2", "--T", "4"]


def slt_train(out, cifar10_dir, *options):
    subprocess.run([sys.executable, "-m", "app.cli", "train", *NARROW, *options, "--dataset", "cifar10",
                    "--data-dir", str(cifar10_dir), "--subset", "2000", "--seed", "0", "--out", str(out), "--quiet"],
                   check=True)
    return json.loads((out / "metrics.json").read_text())


def test_multisp_lt_trains_both_stages_above_chance(tmp_path, cifar10_dir):
    metrics = slt_train(tmp_path / "multisp-lt", cifar10_dir, "--method", "multisp-lt", "--p", "0.4", "--q", "0.3",
                        "--epochs", "3", "--patch-epochs", "1")  # 3 epochs in all: 2 of Stage 1, 1 of Stage 2
    assert [h["phase"] for h in metrics["history"]] == ["pepsp", "pepsp", "multisp"]
    assert metrics["ticket_test_accuracy"] >= 0.18 and metrics["test_accuracy"] >= 0.18  # chance is 0.10
    assert (metrics["tokens"], metrics["tokens_kept"]) == (64, 45)
    layers = metrics["sparsity"]["layers"]
    assert len(layers) == 5 and all(layer["kept"] == round(0.6 * layer["weights"]) for layer in layers.values())


def test_pepsp_slt_trains_above_chance(tmp_path, cifar10_dir):
    metrics = slt_train(tmp_path / "pepsp-slt", cifar10_dir, "--method", "pepsp-slt", "--p", "0.4", "--epochs", "2")
    assert metrics["test_accuracy"] >= 0.18  # chance is 0.10
    assert 0 < metrics["mean_firing_rate"] < 1
    assert metrics["energy"]["energy_mj_sparse"] < metrics["energy"]["energy_mj"]
