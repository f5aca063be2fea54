"""Spiking transformer, PEPSp and MultiSp (DESIGN §3.2, §3.4): small models, 16x16 inputs, fast."""

import json
import math

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from app.cli import main
from slt.config import make_config
from slt.energy import measure_energy
from slt.errors import InputError
from slt.models import build_model, count_parameters
from slt.models.neurons import LIF, Units
from slt.models import spikformer
from slt.models.spikformer import Block, MatMul, active_units
from slt.tickets import BinaryActivation, make_ticket, ticket_layers
from slt.tickets.patches import TopTokens, kept_tokens, start_patch_pruning, token_scores, top_token_index
from slt.train import TrainingRun, build_network, plan_phases

DIMS = dict(depth=2, embed_dim=16, heads=2)
RUN = dict(model="spikformer-tiny", dataset="digits", image_size=16, subset=200, T=2, batch_size=50, p=0.4, **DIMS)


def small(spiking=True, T=2, image_size=16, in_channels=3, **dims):
    torch.manual_seed(0)
    return build_model("spikformer-tiny", num_classes=10, in_channels=in_channels, image_size=image_size,
                       spiking=spiking, T=T, **{**DIMS, **dims})


def calibrate_bn(model, x):
    """Set every BN's running statistics to those of batch `x`, as training would approximately."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its exact statistics
    model.train()
    with torch.no_grad():
        model(x)
    functional.reset_net(model)
    return model.eval()


def block_inputs(model, x):
    """The tokens entering the first block when `model` runs on `x`."""
    seen = []
    handle = model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    functional.reset_net(model)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("spiking", [True, False])
@pytest.mark.parametrize("name,expected", [("spikformer-tiny", 5_903_074), ("spikformer-small", 23_521_978)])
def test_exact_parameter_counts(name, expected, spiking):
    model = build_model(name, num_classes=10, in_channels=3, image_size=32, spiking=spiking)
    assert count_parameters(model) == expected


def test_tiny_matches_spikingjelly_spikformer_parameter_count():
    from spikingjelly.activation_based.model.spikformer import Spikformer

    reference = Spikformer(T=1, in_channels=3, img_size_h=32, img_size_w=32, patch_size=4, num_classes=10,
                           embed_dims=192, num_heads=3, depths=12)
    assert sum(p.numel() for p in reference.parameters()) == 5_903_074


@pytest.mark.parametrize("name,params", [("spikformer-tiny", 5_903_074), ("spikformer-small", 23_521_978)])
def test_model_info_prints_parameter_counts(capsys, name, params):
    assert main(["model-info", "--model", name]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == params and info["classes"] == 10
    assert "blocks.11.attn.qk" in info["macs_per_layer"]


def test_tokens_for_static_and_event_inputs():
    assert small(image_size=32).num_tokens == 64  # patch 4: pooled after the last two stages
    events = small(image_size=128, in_channels=2, embed_dim=16)
    assert events.num_tokens == 64  # patch 16: pooled after all four
    assert events(torch.rand(2, 3, 2, 128, 128)).shape == (3, 10)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_token_count_after_pruning(q):
    model = small()
    start_patch_pruning(model, q)
    tokens = block_inputs(model, torch.randn(3, 3, 16, 16))
    assert tokens.shape == (2 * 3, math.ceil((1 - q) * 16 - 1e-9), 16) == (6, kept_tokens(16, q), 16)


def test_kept_count_is_exact_ceiling():
    assert [kept_tokens(64, q) for q in (0.0, 0.3, 0.5, 0.7)] == [64, 45, 32, 20]
    assert kept_tokens(10, 0.7) == 3  # (1 - 0.7)·10 is 3.0000000000000004 in floats
    with pytest.raises(ValueError, match="q"):
        kept_tokens(10, 1.0)


def test_kept_tokens_are_the_top_scoring_ones_per_sample_at_every_step():
    T, B, N, D = 3, 2, 8, 4
    torch.manual_seed(0)
    tokens = torch.rand(T * B, N, D)
    activity = torch.randint(0, 2 * D + 1, (T * B, N))
    kept = TopTokens(0.5, T)(tokens, activity)
    scores = token_scores(activity, T)
    for b in range(B):
        expected = top_token_index(scores[b:b + 1], 4)[0].tolist()
        assert expected == sorted(expected)
        for t in range(T):
            assert torch.equal(kept[t * B + b], tokens[t * B + b, expected])
        dropped = [n for n in range(N) if n not in expected]
        assert scores[b, expected].min() >= scores[b, dropped].max()


def _units(channels_by_step):
    """Unit outputs [T*B, D, H=1, W=N] from a list (per step) of lists (per channel) of per-token values."""
    return torch.tensor(channels_by_step, dtype=torch.float32).unsqueeze(2)


def test_spiking_token_score_counts_spikes_of_stage4_and_position_conv():
    # T = 2, B = 1, D = 2 channels, N = 3 tokens; f = stage-4 spikes, r = position-conv spikes
    f = _units([[[1, 0, 1], [1, 0, 0]], [[0, 0, 1], [0, 1, 1]]])
    r = _units([[[0, 1, 1], [0, 0, 1]], [[1, 0, 0], [0, 0, 1]]])
    assert active_units(f, r).tolist() == [[2, 1, 3], [1, 1, 3]]  # per time step
    assert token_scores(active_units(f, r), 2).tolist() == [[3, 2, 6]]


def test_sign_unit_token_score_counts_plus_ones_not_agreement():
    # T = 1, B = 1, D = 3 channels, N = 2 tokens; f and r are sign units in {-1, +1}
    f = _units([[[1, -1], [1, 1], [-1, -1]]])
    r = _units([[[-1, -1], [1, -1], [1, -1]]])
    assert token_scores(active_units(f, r), 1).tolist() == [[4, 1]]  # +1 units: 2 + 2 and 1 + 0
    assert (f + r).abs().sum((1, 2)).tolist() == [[2.0, 4.0]]  # the old L1 of rpe(f) + f: the order reversed
    one_channel = token_scores(active_units(_units([[[1]]]), _units([[[-1]]])), 1)
    assert one_channel.tolist() == [[1]]  # f = +1, rpe(f) = -1: one unit on (the old L1 of the sum gave 0)


def test_spiking_and_sign_scores_of_the_same_on_off_pattern_are_equal():
    T, B, D, H, W = 2, 3, 8, 4, 4
    generator = torch.Generator().manual_seed(0)
    f_on, r_on = (torch.randint(0, 2, (T * B, D, H, W), generator=generator).bool() for _ in range(2))
    spikes = token_scores(active_units(f_on.float(), r_on.float()), T)
    signs = token_scores(active_units(f_on.float() * 2 - 1, r_on.float() * 2 - 1), T)
    relu = token_scores(active_units(f_on * torch.rand(f_on.shape), r_on * torch.rand(r_on.shape)), T)
    assert torch.equal(spikes, signs) and torch.equal(spikes, relu)
    assert torch.equal(spikes, (f_on.sum(1) + r_on.sum(1)).flatten(1).unflatten(0, (T, B)).sum(0))


def test_ties_keep_the_lowest_token_index_deterministically():
    T, B, N = 2, 2, 6
    tokens = (torch.arange(N).repeat(T * B, 1) + 100 * torch.arange(T * B).unsqueeze(1)).unsqueeze(-1).float()
    activity = torch.tensor([[1, 2, 0, 0, 3, 1], [1, 1, 1, 1, 1, 1],  # t = 0: samples 0 and 1
                             [0, 1, 3, 0, 0, 1], [1, 1, 1, 1, 1, 1]])  # t = 1
    assert token_scores(activity, T).tolist() == [[1, 3, 3, 0, 3, 2], [2, 2, 2, 2, 2, 2]]
    selector = TopTokens(0.7, T)  # keeps ⌈0.3·6⌉ = 2 of 6
    for _ in range(3):
        kept = selector(tokens, activity)[..., 0]
        assert kept.tolist() == [[1, 2], [100, 101], [201, 202], [300, 301]]  # the 3-way tie drops token 4
    assert TopTokens(0.5, T)(tokens, activity)[..., 0].tolist() == [[1, 2, 4], [100, 101, 102], [201, 202, 204],
                                                                      [300, 301, 302]]
    equal = torch.ones(T * B, N, dtype=torch.long)
    assert TopTokens(0.5, T)(tokens, equal)[..., 0].tolist() == [[0, 1, 2], [100, 101, 102], [200, 201, 202],
                                                                   [300, 301, 302]]


def test_dense_and_stage1_models_do_not_count_activity(monkeypatch):
    def fail(*outputs):
        raise AssertionError("active_units ran without a token selector that wants it")

    monkeypatch.setattr(spikformer, "active_units", fail)
    model = small()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("method,unit", [("multisp-lt", BinaryActivation), ("multisp-slt", LIF)])
def test_real_multisp_model_keeps_the_most_active_tokens(digits, method, unit):
    cfg = make_config(**RUN, method=method, q=0.3)
    model = build_network(cfg, digits.info)
    assert isinstance(model.convpep.rpe[-1], unit) and isinstance(model.convpep.stages[-1][-1], unit)
    start_patch_pruning(model, cfg.q)
    model.eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        tokens, activity = model.convpep(x, activity=True)
    functional.reset_net(model)
    assert activity.shape == (model.T * 4, 16) and 0 <= activity.min() and activity.max() <= 2 * 16
    index = top_token_index(token_scores(activity, model.T), kept_tokens(16, 0.3))
    kept = block_inputs(model, x)
    assert kept.shape == (model.T * 4, 12, 16) and kept_tokens(16, 0.3) == math.ceil(0.7 * 16) == 12
    assert torch.equal(kept, tokens.gather(1, index.repeat(model.T, 1).unsqueeze(-1).expand(-1, -1, 16)))
    with torch.no_grad():
        assert model(x).shape == (4, 10)


@pytest.mark.parametrize("spiking", [True, False])
def test_q_zero_gives_the_same_output_as_no_pruning(spiking):
    model = small(spiking=spiking).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        unpruned = model(x)
        functional.reset_net(model)
        model.token_selector = TopTokens(0.0, model.T)
        pruned = model(x)
    assert torch.equal(unpruned, pruned)


@pytest.mark.parametrize("spiking", [True, False])
@pytest.mark.parametrize("tokens", [1, 5, 16, 23])
def test_blocks_accept_any_token_count(spiking, tokens):
    T = 2 if spiking else 1
    block = Block(16, 2, units=Units(spiking, T, 0.5))
    x = torch.rand(T * 3, tokens, 16)
    assert block(x).shape == x.shape


def test_ann_twin_uses_softmax_attention_and_relu_and_snn_uses_spikes():
    maps = {}

    def record(name):
        def hook(module, args, output):
            maps.setdefault(name, args[0].detach())
        return hook

    for spiking in (False, True):
        model = small(spiking=spiking)
        model.blocks[0].attn.av.register_forward_hook(record(spiking))
        with torch.no_grad():
            model(torch.randn(2, 3, 16, 16))
        functional.reset_net(model)
        units = {type(m) for m in model.modules()}
        if spiking:
            assert nn.ReLU not in units and LIF in units
        else:
            assert nn.ReLU in units and LIF not in units and model.T == 1
    torch.testing.assert_close(maps[False].sum(-1), torch.ones_like(maps[False].sum(-1)))  # softmax rows
    assert torch.equal(maps[True] / 0.125, (maps[True] / 0.125).round())  # spike counts x 0.125, no softmax


def test_pepsp_ticket_is_confined_to_convpep_with_ternary_weights():
    model = make_ticket(small(spiking=False), "biprop", 0.4, only="convpep", binary_activations=True)
    layers = ticket_layers(model)
    assert sorted(layers) == ["convpep.rpe.0", "convpep.stages.0.0", "convpep.stages.1.0", "convpep.stages.2.0",
                              "convpep.stem.0"]
    for layer in layers.values():
        weight = layer.effective_weight().detach()
        alpha = weight.abs().max().item()
        assert set(weight.unique().tolist()) == {-alpha, 0.0, alpha}
        assert int(layer.mask().sum()) == round(0.6 * weight.numel())
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):  # non-affine only inside the ticket
            assert m.weight.requires_grad == (not name.startswith("convpep.")), name
    binary = [name for name, m in model.named_modules() if isinstance(m, BinaryActivation)]
    assert binary and all(name.startswith("convpep.") for name in binary)
    assert any(isinstance(m, nn.ReLU) for m in model.blocks.modules())


def test_stage2_freezes_convpep_and_trains_the_blocks(digits):
    run = TrainingRun(make_config(**RUN, method="multisp-slt", epochs=2, patch_epochs=1, q=0.5), digits)
    run.run_epoch()
    convpep = {k: v.clone() for k, v in run.model.convpep.state_dict().items()}
    blocks = {k: v.clone() for k, v in run.model.blocks.state_dict().items()}
    metrics = run.run_epoch()
    assert metrics["phase"] == "multisp" and run.done
    for name, value in run.model.convpep.state_dict().items():  # scores, weights, BN statistics
        assert torch.equal(value, convpep[name]), name
    for name, parameter in run.model.convpep.named_parameters():
        assert parameter.grad is None and not parameter.requires_grad, name
    changed = [name for name, value in run.model.blocks.state_dict().items() if not torch.equal(value, blocks[name])]
    assert any(name.endswith("attn.q.0.weight") for name in changed)
    assert any(name.endswith("mlp.fc2.0.weight") for name in changed)
    assert block_inputs(run.model, run.pipeline(run.test_split.inputs[:4], augment=False)).shape[1] == 8


def test_multisp_records_both_stages_and_resumes_mid_stage2_bit_for_bit(digits):
    cfg = make_config(**RUN, method="multisp-lt", epochs=3, patch_epochs=2, q=0.3)  # 1 epoch of Stage 1, 2 of Stage 2
    straight = TrainingRun(cfg, digits)
    while not straight.done:
        straight.run_epoch()
    assert [h["phase"] for h in straight.history] == ["pepsp", "multisp", "multisp"]
    summary = straight.summary()
    assert summary["ticket_test_accuracy"] == straight.history[0]["test_accuracy"]
    assert (summary["q"], summary["tokens"], summary["tokens_kept"]) == (0.3, 16, 12)
    assert set(summary["sparsity"]["layers"]) == set(ticket_layers(straight.model))

    interrupted = TrainingRun(cfg, digits)
    interrupted.run_epoch(), interrupted.run_epoch()
    resumed = TrainingRun(cfg, digits)
    resumed.load_state_dict(interrupted.state_dict())
    assert resumed.phase == "multisp"
    resumed.run_epoch()
    assert resumed.history[-1]["test_accuracy"] == straight.history[-1]["test_accuracy"]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


@pytest.mark.parametrize("spiking", [True, False])
def test_energy_decreases_with_q(spiking):
    x = torch.randn(16, 3, 16, 16)
    reports = []
    for q in (0.0, 0.3, 0.5, 0.7):
        model = calibrate_bn(small(spiking=spiking, depth=1), x)
        start_patch_pruning(model, q)
        reports.append(measure_energy(model, x, spiking=spiking, T=model.T, opcounter=False))
    energies = [r["energy_mj"] for r in reports]
    assert energies == sorted(energies, reverse=True) and len(set(energies)) == 4
    for report, q in zip(reports, (0.0, 0.3, 0.5, 0.7)):
        rows = {row["layer"]: row for row in report["layers"]}
        L = kept_tokens(16, q)
        assert rows["blocks.0.attn.qk"]["macs"] == rows["blocks.0.attn.av"]["macs"] == L * L * 16
        assert rows["blocks.0.attn.q.0"]["macs"] == L * 16 * 16
        assert rows["convpep.rpe.0"]["macs"] == reports[0]["layers"][4]["macs"]  # ConvPEP keeps every token
        if spiking:
            assert rows["blocks.0.attn.qk"]["binary_input"] and rows["blocks.0.attn.av"]["binary_input"]
            assert rows["blocks.0.attn.qk"]["sops"] == pytest.approx(
                rows["blocks.0.attn.qk"]["firing_rate"] * 2 * L * L * 16)


def test_attention_sops_use_the_spike_operand_and_opcounter_still_runs():
    x = torch.randn(8, 3, 16, 16)
    model = calibrate_bn(small(depth=1), x)
    rates = {}

    def record(name, operand):
        def hook(module, args, output):
            rates.setdefault(name, args[operand].mean().item())
        return hook

    model.blocks[0].attn.qk.register_forward_hook(record("q", 0))
    model.blocks[0].attn.av.register_forward_hook(record("v", 1))
    report = measure_energy(model, x, spiking=True, T=2)
    rows = {row["layer"]: row for row in report["layers"]}
    assert rows["blocks.0.attn.qk"]["firing_rate"] == pytest.approx(rates["q"])
    assert rows["blocks.0.attn.av"]["firing_rate"] == pytest.approx(rates["v"])
    assert report["energy_mj_opcounter"] > 0 and math.isfinite(report["opcounter_relative_difference"])
    assert isinstance(model.blocks[0].attn.qk, MatMul)


@pytest.mark.parametrize("values,field", [
    (dict(model="spikformer-tiny", embed_dim=20), "embed_dim"),  # not a multiple of 8
    (dict(model="spikformer-tiny", embed_dim=64), "embed_dim"),  # not a multiple of tiny's 3 heads
    (dict(model="spikformer-small", embed_dim=64, heads=3), "embed_dim"),
    (dict(model="spikformer-tiny", embed_dim=64, heads=0), "heads"),
    (dict(model="spikformer-tiny", depth=0), "depth"),
    (dict(model="spikformer-tiny", width=0.5), "width"),
    (dict(model="vgg9", depth=2), "depth"),
    (dict(model="vgg9", method="pepsp-slt"), "method"),
    (dict(model="resnet19", method="multisp-lt"), "method"),
    (dict(model="spikformer-tiny", method="multisp-slt", q=1.0), "q"),
    (dict(model="spikformer-tiny", method="multisp-slt", patch_epochs=0), "patch_epochs"),
    (dict(model="spikformer-tiny", method="multisp-slt", epochs=2, patch_epochs=2), "epochs"),  # no Stage 1 left
    (dict(model="vgg9", method="slt", epochs=2, finetune_epochs=2), "epochs"),  # no search left
])
def test_bad_transformer_settings_are_one_line_errors(values, field):
    with pytest.raises(InputError) as err:
        make_config(**values)
    assert err.value.field == field and "\n" not in str(err.value)


def test_train_cli_runs_multisp_and_reports_tokens(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "spikformer-tiny", "--depth", "1", "--embed-dim", "16", "--heads", "2",
                 "--method", "multisp-slt", "--p", "0.4", "--q", "0.5", "--patch-epochs", "1", "--epochs", "2",
                 "--dataset", "digits", "--image-size", "16", "--subset", "100", "--T", "2", "--out", str(out),
                 "--quiet"]) == 0
    assert "q=0.5 (8 of 16 tokens)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["phase"] for h in metrics["history"]] == ["pepsp", "multisp"]
    assert metrics["tokens_kept"] == 8 and metrics["params"] == count_parameters(small(depth=1, in_channels=1))
    rows = {row["layer"]: row for row in metrics["energy_layers"]}
    assert rows["blocks.0.attn.qk"]["macs"] == 8 * 8 * 16


@pytest.mark.parametrize("method,extra,phases", [  # `epochs` (5) is every method's whole budget
    ("snn", {}, [("train", 5)]),
    ("pepsp-slt", {}, [("pepsp", 5)]),
    ("pepsp-slt", {"patch_epochs": 3}, [("pepsp", 5)]),  # patch_epochs applies to MultiSp only
    ("multisp-slt", {"patch_epochs": 3}, [("pepsp", 2), ("multisp", 3)]),
    ("multisp-lt", {"finetune_epochs": 1}, [("pepsp", 3), ("finetune", 1), ("multisp", 1)]),
])
def test_phase_plans(method, extra, phases):
    cfg = make_config(model="spikformer-tiny", method=method, epochs=5, **extra)
    assert [(phase.name, phase.epochs) for phase in plan_phases(cfg)] == phases
    assert sum(phase.epochs for phase in plan_phases(cfg)) == 5
