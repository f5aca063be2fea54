import json

import pytest
import torch
from torch import nn

from app.cli import main
from slt.energy import count_macs, measure_energy
from slt.methods import METHODS
from slt.models import build_model
from slt.models.encoding import decode, encode
from slt.tickets import make_ticket

T = 2
# Spikes entering fc2 for one image: 3 ones in 2 steps x 3 neurons -> firing rate 0.5.
SPIKES = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])


class ForcedSpikes(nn.Module):
    """A toy SNN: fc1 on real inputs (once per image), a fixed spike pattern, fc2 on the spikes."""

    T = T

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        self.fc1(x)
        return decode(self.fc2(SPIKES), T)


class EventForcedSpikes(ForcedSpikes):
    """The same toy on event frames [T, B, 2, 2, 2]: a 1x1 conv stem (3 out) runs on each of the T frames."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Conv2d(2, 3, kernel_size=1)

    def forward(self, x):
        encode(self.fc1, x, T)
        return decode(self.fc2(SPIKES), T)


def test_macs_of_small_layers_match_hand_arithmetic():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, groups=4, padding=1),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    macs = count_macs(model, torch.zeros(2, 3, 8, 8))
    assert macs == {"0": 3 * 9 * 8 * 4 * 4, "1": 2 * 9 * 8 * 4 * 4, "3": 128 * 5}


def test_sops_and_energy_of_a_forced_spike_pattern():
    report = measure_energy(ForcedSpikes(), torch.randn(1, 4), spiking=True, T=T)
    first, second = report["layers"]
    assert (first["macs"], second["macs"]) == (12, 6)
    assert first["passes"] == 1  # static input: direct encoding runs the first layer once per image
    assert first["firing_rate"] is None and second["firing_rate"] == 0.5 and second["binary_input"]
    assert second["sops"] == 0.5 * T * 6
    # paper convention: 4.6 pJ x 12 MACs (first layer, once) + 0.9 pJ x 6 SOPs
    assert report["energy_mj"] == pytest.approx((4.6 * 12 + 0.9 * 6) * 1e-9)
    assert report["energy_mj_sparse"] == pytest.approx(report["energy_mj"])
    # spikingjelly's op_counter counts the same here: 12 MACs and 3 spikes x 2 outputs = 6 SynOps
    assert report["opcounter_macs"] == 12 and report["opcounter_synops"] == 6
    assert report["opcounter_relative_difference"] == pytest.approx(0.0, abs=1e-12)


def test_event_input_charges_the_first_layer_once_per_frame():
    report = measure_energy(EventForcedSpikes(), torch.randn(T, 1, 2, 2, 2), spiking=True, T=T)
    first, second = report["layers"]
    # 1x1 conv: 2 in-channels x 3 out-channels x 2x2 positions = 24 MACs per frame, run on T = 2 frames
    assert (first["macs"], first["passes"], first["sops"]) == (24, 2, 0.0)
    assert first["energy_pj"] == pytest.approx(4.6 * 24 * 2)  # 220.8 pJ (110.4 if counted once)
    assert second["passes"] == 2 and second["energy_pj"] == pytest.approx(0.9 * 0.5 * 2 * 6)  # 5.4 pJ
    assert report["energy_mj"] == pytest.approx(226.2e-9)
    # op_counter: the conv on real-valued frames is 24 x 2 = 48 MACs; fc2 on spikes 6 SynOps
    assert report["opcounter_macs"] == 48 and report["opcounter_synops"] == 6
    assert report["opcounter_relative_difference"] == pytest.approx(0.0, abs=1e-12)


def test_sparsity_aware_energy_scales_each_layer_by_its_kept_fraction():
    model = make_ticket(ForcedSpikes(), "biprop", 0.5, only="fc2")
    report = measure_energy(model, torch.randn(1, 4), spiking=True, T=T)
    assert [r["kept_fraction"] for r in report["layers"]] == [1.0, 0.5]
    assert report["energy_mj"] == pytest.approx((4.6 * 12 + 0.9 * 6) * 1e-9)
    assert report["energy_mj_sparse"] == pytest.approx((4.6 * 12 + 0.9 * 6 * 0.5) * 1e-9)


def test_ann_energy_is_all_macs_and_matches_opcounter():
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=False)
    report = measure_energy(model, torch.randn(2, 3, 32, 32), spiking=False, T=1)
    assert report["macs"] == 153_881_088
    assert report["energy_mj"] == pytest.approx(4.6 * 153_881_088 * 1e-9)
    assert report["opcounter_relative_difference"] == pytest.approx(0.0, abs=1e-12)


def test_spiking_vgg_within_documented_padding_tolerance_of_opcounter():
    torch.manual_seed(0)
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True, T=4, width=0.25)
    report = measure_energy(model, torch.randn(4, 3, 32, 32) * 3, spiking=True, T=4)
    assert report["layers"][0]["passes"] == 1
    assert report["opcounter_macs"] == report["layers"][0]["macs"]  # first conv counted once by both
    assert -0.15 < report["opcounter_relative_difference"] <= 0.0  # zero padding: exact count is lower


def dvs_frames(T: int, batch: int) -> torch.Tensor:
    """Event frames [T, B, 2, 32, 32] of event counts 0..2 (2 somewhere for sure, so they are non-binary)."""
    frames = torch.randint(0, 3, (T, batch, 2, 32, 32), generator=torch.Generator().manual_seed(0)).float()
    frames[0, 0, 0, 0, 0] = 2.0
    return frames


def test_spiking_vgg_on_event_input_counts_the_first_conv_T_times_like_opcounter():
    torch.manual_seed(0)
    model = build_model("vgg9", num_classes=10, in_channels=2, image_size=32, spiking=True, T=4, width=0.25)
    report = measure_energy(model, dvs_frames(4, 2), spiking=True, T=4)
    first = report["layers"][0]
    assert (first["macs"], first["passes"]) == (294_912, 4)  # 2 x 3x3 x 16 x 32x32 per frame, 4 frames
    assert first["energy_pj"] == pytest.approx(4.6 * 294_912 * 4)
    # op_counter counts a conv as MACs only when its input is non-binary (0/1 input goes to SynOpCounter as
    # spikes x valid kernel positions): counts of 2 make the frames non-binary, so it counts the dense 4 x 294,912
    # MACs of the first conv; every later layer gets binary spikes (max pooling), so this is the whole MAC total
    assert report["opcounter_macs"] == 1_179_648 == first["macs"] * first["passes"]
    assert -0.15 < report["opcounter_relative_difference"] <= 0.0  # zero padding: exact count is lower


def test_ann_twin_integrates_event_frames_so_its_first_conv_counts_once():
    model = build_model("vgg9", num_classes=10, in_channels=2, image_size=32, spiking=False, width=0.25)
    report = measure_energy(model, dvs_frames(4, 2), spiking=False, T=1)
    # encode() with T = 1 sums the 4 frames into one image: one pass of every layer, op_counter agrees
    assert [r["passes"] for r in report["layers"]] == [1] * len(report["layers"])
    assert report["energy_mj"] == pytest.approx(4.6 * report["macs"] * 1e-9)
    assert report["opcounter_relative_difference"] == pytest.approx(0.0, abs=1e-12)


def test_energy_constants_are_parameters():
    model = nn.Sequential(nn.Linear(4, 3))
    report = measure_energy(model, torch.randn(1, 4), spiking=False, T=1, e_mac_pj=1.0)
    assert report["energy_mj"] == pytest.approx(12e-9)


SIZE = {"vgg9": ["--width", "0.125"], "resnet19": ["--width", "0.125"],
        "spikformer-tiny": ["--depth", "1", "--embed-dim", "16", "--heads", "2"]}
MODEL_METHODS = [(model, method) for model in ("vgg9", "resnet19") for method in METHODS
                 if not METHODS[method].transformer_only] + \
                [("spikformer-tiny", method) for method in ("ann", "snn", "pepsp-lt", "pepsp-slt", "multisp-lt",
                                                            "multisp-slt")]


@pytest.mark.parametrize("model,method", MODEL_METHODS)
def test_slt_energy_cli_for_every_model_and_method(capsys, model, method):
    assert main(["energy", "--model", model, "--method", method, "--dataset", "digits", "--image-size", "16",
                 *SIZE[model], "--T", "2", "--batch", "8", "--subset", "16"]) == 0
    totals = json.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("energy_mj", "energy_mj_sparse", "energy_mj_opcounter", "macs", "sops", "mean_input_spike_rate"):
        assert key in totals
    assert totals["energy_mj"] > 0 and totals["macs"] > 0
    if METHODS[method].spiking:
        assert 0 <= totals["mean_input_spike_rate"] <= 1 and totals["T"] == 2
    else:
        assert totals["mean_input_spike_rate"] is None
        assert totals["energy_mj"] == pytest.approx(totals["energy_mj_ann_twin"])
    if METHODS[method].ticket and not METHODS[method].scope:
        assert totals["energy_mj_sparse"] == pytest.approx(totals["energy_mj"] * 0.5, rel=0.02)
    elif METHODS[method].ticket:  # only the ConvPEP is sparse (p = 0.5)
        assert totals["energy_mj_sparse"] < totals["energy_mj"]


def test_per_layer_table(capsys):
    assert main(["energy", "--model", "vgg9", "--method", "ann", "--dataset", "cifar10", "--per-layer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[0] == "layer" and lines[1].startswith("stem.0\t1769472\t")
