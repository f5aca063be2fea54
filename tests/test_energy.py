import json

import pytest
import torch
from torch import nn

from app.cli import main
from slt.energy import count_macs, measure_energy
from slt.methods import METHODS
from slt.models import build_model
from slt.models.encoding import decode, encode
from slt.models.neurons import LIF
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


def test_effective_operations_skip_zero_inputs_and_zero_weights_by_hand():
    model = ForcedSpikes()
    with torch.no_grad():
        model.fc1.weight.fill_(0.5)
        model.fc2.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))  # one non-zero weight per input
    report = measure_energy(model, torch.tensor([[1.0, 0.0, 2.0, 3.0]]), spiking=True, T=T)
    first, second = report["layers"]
    # fc1: 3 non-zero pixels x 3 outputs = 9 MACs (of 12); fc2: t0 spikes on inputs 0, 2 -> 1 + 1, t1 on input 2
    # -> 1: 3 accumulates, where the paper convention charges 0.5 x 2 x 6 = 6 SOPs
    assert (first["effective_ops"], first["effective_kind"]) == (9, "MAC")
    assert (second["effective_ops"], second["effective_kind"], second["sops"]) == (3, "AC", 6)
    assert second["energy_pj_effective"] == pytest.approx(0.9 * 3)
    assert (report["effective_macs"], report["effective_acs"]) == (9, 3)
    assert report["energy_mj_effective"] == pytest.approx((4.6 * 9 + 0.9 * 3) * 1e-9)
    assert report["energy_mj"] == pytest.approx((4.6 * 12 + 0.9 * 6) * 1e-9)  # the paper's figure, unchanged


HUNDRED = {"add_pj": 1.0, "mul_pj": 10.0, "sram_pj_per_bit": 0.0, "sram_pj_base": 100.0, "weight_bits": 32,
           "potential_bits": 32, "activation_bits": 32, "spike_bits": 1}  # every memory access costs 100 pJ


def test_memory_aware_energy_and_break_even_rate_by_hand():
    model = ForcedSpikes()
    with torch.no_grad():
        model.fc2.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))  # 3 synaptic events (see above)
    report = measure_energy(model, torch.randn(1, 4), spiking=True, T=T, table=HUNDRED)
    first, second = report["layers"]
    # fc1, formal on pixels: 12 multiply-adds (11 pJ each); 12 weight reads, 4 input reads, 3 output writes
    assert (first["memory_aware_ops_pj"], first["memory_aware_memory_pj"]) == (132, 1900)
    # fc2, on spikes: 3 events x (an add; a weight read, a potential read and write) + 3 spikes x (written, read)
    assert second["memory_aware_ops_pj"] == 3 * 1
    assert second["memory_aware_memory_pj"] == 3 * 300 + 3 * 200
    assert second["memory_aware_pj_rate"] == 3 + 1500 and report["neurons"] == []  # the toy has no LIF module
    assert report["energy_mj_memory_aware"] == pytest.approx((2032 + 1503) * 1e-9)
    # the equal-architecture ANN: fc1 as before, fc2 formal once: 66 + 6 weight + 3 input reads + 2 writes
    assert report["energy_mj_memory_aware_ann"] == pytest.approx((2032 + 66 + 1100) * 1e-9)
    # E_SNN(s) = 2032 + 1503 s pJ with every input spike rate scaled by s; equal to 3198 at s = 1166 / 1503,
    # a mean input spike rate of 0.5 s
    assert report["break_even_spike_rate"] == pytest.approx(0.5 * 1166 / 1503)


class LIFToy(nn.Module):
    """fc1 on pixels, its current fed T times to a LIF of 3 neurons, fc2 on the spikes."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.fc1, self.lif, self.fc2 = nn.Linear(4, 3), LIF(T, 0.5), nn.Linear(3, 2)

    def forward(self, x):
        return decode(self.fc2(self.lif(encode(self.fc1, x, self.T))), self.T)


def test_lif_neurons_are_charged_their_updates_each_step():
    report = measure_energy(LIFToy(T), torch.randn(5, 4), spiking=True, T=T, table=HUNDRED)
    (lif,) = report["neurons"]
    # 3 neurons x 2 steps per image: each a decay multiply-add and a threshold add (12 pJ), a potential read
    # and write (200 pJ)
    assert (lif["layer"], lif["neuron_steps"]) == ("lif", 6)
    assert (lif["memory_aware_ops_pj"], lif["memory_aware_memory_pj"]) == (6 * 12, 6 * 200)
    layers = sum(r["memory_aware_pj"] for r in report["layers"])
    assert report["energy_mj_memory_aware"] == pytest.approx((layers + 72 + 1200) * 1e-9)


def test_no_break_even_rate_where_even_a_silent_snn_costs_more_than_its_ann():
    table = {**HUNDRED, "mul_pj": 1000.0, "sram_pj_base": 1.0}  # multiplies cost a fortune
    # at T = 8 the 3 LIF neurons decay 24 times (24 multiplies) where the ANN's fc2 does 6 MACs: even silent,
    # the SNN costs more
    model = LIFToy(8)
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)  # a current of 4 + bias: every neuron spikes at every step
        model.fc1.bias.zero_()
    report = measure_energy(model, torch.ones(1, 4), spiking=True, T=8, table=table)
    assert report["layers"][1]["memory_aware_pj_rate"] > 0 and report["mean_input_spike_rate"] == 1.0
    assert report["break_even_spike_rate"] is None and report["energy_mj_memory_aware_ann"] > 0


def test_effective_operations_of_a_ticket_count_only_its_kept_weights():
    torch.manual_seed(0)
    model = make_ticket(ForcedSpikes(), "biprop", 0.5, only="fc2")
    kept = (model.fc2.effective_weight() != 0).float()  # 3 of the 6 weights
    report = measure_energy(model, torch.randn(1, 4), spiking=True, T=T)
    by_hand = float((SPIKES @ kept.T).sum())  # per time step: spikes x kept weights of their input column
    assert kept.sum() == 3 and report["layers"][1]["effective_ops"] == by_hand
    assert report["layers"][1]["energy_pj_effective"] == pytest.approx(0.9 * by_hand)


def test_effective_accumulates_of_a_dense_snn_equal_opcounters_synops():
    # op_counter counts a spike's accumulates exactly (valid kernel positions x outputs, zero weights not
    # skipped): with dense weights, which have no zero, that is our effective count of every spiking layer
    torch.manual_seed(0)
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True, T=4, width=0.25)
    report = measure_energy(model, torch.randn(4, 3, 32, 32) * 3, spiking=True, T=4)
    assert [r["effective_kind"] for r in report["layers"]] == ["MAC"] + ["AC"] * (len(report["layers"]) - 1)
    assert report["effective_acs"] == report["opcounter_synops"]
    assert report["effective_acs"] < report["sops"]  # zero padding: the convention's rate x T x MACs counts more
    assert report["layers"][0]["effective_ops"] < report["layers"][0]["macs"]  # padding positions skipped


def test_effective_macs_of_an_ann_skip_relu_zeros():
    torch.manual_seed(0)
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=False, width=0.25)
    report = measure_energy(model, torch.randn(2, 3, 32, 32), spiking=False, T=1)
    layers = report["layers"]
    assert all(r["effective_kind"] == "MAC" and 0 < r["effective_ops"] <= r["macs"] for r in layers)
    assert report["effective_acs"] == 0 and report["energy_mj_effective"] < 0.7 * report["energy_mj"]


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


def test_the_op_counter_runs_spikingjelly_lif_and_gives_the_model_its_fused_lif_back(monkeypatch):
    from slt.models import fused_lif
    from slt.models.neurons import set_neuron_backend

    torch.manual_seed(0)
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True, T=4, width=0.25)
    set_neuron_backend(model, "fused")
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    lifs[0].backend = "spikingjelly"  # each LIF's own backend comes back, mixed ones too
    calls = []
    monkeypatch.setattr(fused_lif, "_call", lambda name, *args: calls.append(name) or fused_lif._PLAIN[name](*args))
    inputs = torch.randn(4, 3, 32, 32) * 3
    report = measure_energy(model, inputs, spiking=True, T=4)
    # the layer probe's pass ran the fused LIF of the 7 fused layers; the op counter's pass none of it
    # (the fused LIF compiled inside its dispatch mode slowed every later step of the process ~2x)
    assert len(lifs) == 8 and calls == ["forward"] * 7
    assert [m.backend for m in lifs] == ["spikingjelly"] + ["fused"] * 7
    set_neuron_backend(model, "spikingjelly")  # the same counts as a model that only ever ran spikingjelly's
    reference = measure_energy(model, inputs, spiking=True, T=4)
    assert report["opcounter_synops"] == reference["opcounter_synops"] > 0
    assert report["opcounter_macs"] == reference["opcounter_macs"] and report["sops"] == reference["sops"]


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
    for key in ("energy_mj", "energy_mj_sparse", "energy_mj_effective", "energy_mj_memory_aware", "energy_mj_opcounter",
                "macs", "sops", "effective_acs", "effective_macs", "mean_input_spike_rate", "break_even_spike_rate"):
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
