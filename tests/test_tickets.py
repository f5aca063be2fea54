import json
import math

import pytest
import torch
from torch import nn

from app.cli import main
from conftest import TINY
from slt.config import make_config
from slt.models import build_model, count_parameters
from slt.tickets import BinaryActivation, make_ticket, sparsity_report, ticket_layers
from slt.tickets.binary import BiRealSign
from slt.tickets.supermask import TicketConv2d, TicketLinear
from slt.train import TrainingRun, evaluate

def ticket_linear(kind, p, inputs=4, outputs=1):
    layer = make_ticket(nn.Sequential(nn.Linear(inputs, outputs, bias=False)), kind, p)[0]
    assert isinstance(layer, TicketLinear)
    return layer


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("kind", ["supermask", "biprop"])
def test_exact_kept_count_per_layer(kind, p):
    model = make_ticket(build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True, T=2,
                                    width=0.25), kind, p)
    report = sparsity_report(model)
    assert len(report["layers"]) == 9
    for name, layer in ticket_layers(model).items():
        n = layer.weight.numel()
        expected = max(1, round((1 - p) * n))
        assert int(layer.mask().sum()) == expected == report["layers"][name]["kept"], name
        assert int((layer.effective_weight() != 0).sum()) == expected


def test_kept_weights_are_the_top_scores():
    layer = ticket_linear("supermask", 0.5, inputs=6)
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.1, -0.9, 0.3, 0.05, -0.2, 0.7]]))
    assert layer.mask().tolist() == [[0, 1, 1, 0, 0, 1]]


@pytest.mark.parametrize("kind", ["supermask", "biprop"])
def test_straight_through_gradient_reaches_scores(kind):
    layer = ticket_linear(kind, 0.5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.5, 0.5, -0.5]]))
        layer.scores.copy_(torch.tensor([[0.4, -0.3, 0.1, -0.2]]))  # keeps inputs 0 and 1
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    layer(x).sum().backward()
    # dL/dw_eff = x; straight through the mask: dL/dm = x·w; through |s|: times sign(s).
    expected = x * layer.weight * torch.sign(layer.scores)
    torch.testing.assert_close(layer.scores.grad, expected)
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_biprop_alpha_is_mean_kept_magnitude_and_weights_are_ternary():
    torch.manual_seed(0)
    model = make_ticket(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 5)), "biprop", 0.6,
                        weight_init="kaiming_normal")
    for layer in ticket_layers(model).values():
        mask = layer.mask().bool()
        eff = layer.effective_weight().detach()
        alpha = eff.abs().max()
        assert set(eff.flatten().tolist()) == {-alpha.item(), 0.0, alpha.item()}
        assert alpha.item() == pytest.approx(layer.weight.abs()[mask].mean().item(), rel=1e-6)
        assert torch.equal(torch.sign(eff[mask]), torch.sign(layer.weight[mask]))


def test_signed_constant_init_and_frozen_weight_values():
    torch.manual_seed(0)
    conv = make_ticket(nn.Sequential(nn.Conv2d(4, 6, 3)), "supermask", 0.5, weight_init="signed_constant")[0]
    assert isinstance(conv, TicketConv2d)
    assert conv.weight.abs().unique().tolist() == pytest.approx([(2.0 / (4 * 9)) ** 0.5])


def test_bireal_gradient_shape():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.5], requires_grad=True)
    y = BiRealSign.apply(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 2.0, 1.5, 0.0, 0.0]


def test_search_changes_scores_not_weights_and_bn_affine_stays_fixed(digits):
    run = TrainingRun(make_config(**TINY, method="slt", p=0.7, epochs=1), digits)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.run_epoch()
    after = run.model.state_dict()
    for name, value in before.items():
        if name.endswith("scores"):
            assert not torch.equal(value, after[name]), name
        elif name.endswith(("weight", "bias")):
            assert torch.equal(value, after[name]), name
    assert {n for n, p in run.model.named_parameters() if p.requires_grad} == {
        n for n in before if n.endswith("scores")}


def test_mplt_uses_binary_activations_and_trains_only_scores(digits):
    run = TrainingRun(make_config(**TINY, method="mplt", p=0.5, epochs=1), digits)
    assert not any(isinstance(m, nn.ReLU) for m in run.model.modules())
    assert run.model.T == 1
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
             for m in run.model.modules() if isinstance(m, BinaryActivation)]
    run.model.eval()
    run.model(run.pipeline(run.test_split.inputs[:8], augment=False))
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 8 and all(set(o.unique().tolist()) == {-1.0, 1.0} for o in outputs)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    metrics = run.run_epoch()
    after = run.model.state_dict()
    assert math.isfinite(metrics["train_loss"])
    changed = {k for k in before if not torch.equal(before[k], after[k]) and not k.endswith("running_mean")
               and not k.endswith("running_var") and not k.endswith("num_batches_tracked")}
    assert changed == {k for k in before if k.endswith("scores")}


def test_finetune_freezes_mask_and_trains_kept_weights(digits):
    run = TrainingRun(make_config(**TINY, method="mpslt", p=0.5, epochs=2, finetune_epochs=1), digits)
    run.run_epoch()
    masks = {n: l.mask().clone() for n, l in ticket_layers(run.model).items()}
    ticket_weights = {n: l.effective_weight().detach().clone() for n, l in ticket_layers(run.model).items()}
    run.run_epoch()
    assert run.done and [h["phase"] for h in run.history] == ["search", "finetune"]
    for name, layer in ticket_layers(run.model).items():
        assert torch.equal(layer.mask(), masks[name]), name
        effective = layer.effective_weight().detach()
        assert torch.equal(effective[masks[name] == 0], torch.zeros_like(effective[masks[name] == 0]))
        assert not torch.equal(effective, ticket_weights[name]), name
    summary = run.summary()
    assert summary["ticket_test_accuracy"] == run.history[0]["test_accuracy"]
    assert summary["sparsity"]["pruned_fraction"] == pytest.approx(0.5, abs=1e-3)


def test_finetune_resumes_bit_for_bit(digits):
    cfg = make_config(**TINY, method="slt", p=0.5, epochs=2, finetune_epochs=1)
    straight = TrainingRun(cfg, digits)
    straight.run_epoch(), straight.run_epoch()
    resumed = TrainingRun(cfg, digits)
    interrupted = TrainingRun(cfg, digits)
    interrupted.run_epoch()
    resumed.load_state_dict(interrupted.state_dict())
    resumed.run_epoch()
    assert resumed.history[-1]["test_accuracy"] == straight.history[-1]["test_accuracy"]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_global_threshold_keeps_exact_total():
    model = make_ticket(build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=False,
                                    width=0.25), "supermask", 0.8, global_threshold=True)
    model(torch.randn(2, 3, 32, 32))
    report = sparsity_report(model)
    total = report["ticket_weights"]
    kept = sum(layer["kept"] for layer in report["layers"].values())
    assert kept == round(0.2 * total)
    assert len({round(layer["pruned_fraction"], 3) for layer in report["layers"].values()}) > 1


def test_dense_first_and_last_stay_trained_layers():
    model = make_ticket(build_model("resnet19", num_classes=10, in_channels=3, image_size=32, spiking=True, T=2,
                                    width=0.125), "biprop", 0.5, dense_first=True, dense_last=True)
    assert type(model.stem[0]) is nn.Conv2d and model.stem[0].weight.requires_grad
    assert type(model.classifier[-1]) is nn.Linear and model.classifier[-1].weight.requires_grad
    assert isinstance(model.features[1].conv1, TicketConv2d)


def test_storage_accounting_by_hand():
    model = make_ticket(nn.Sequential(nn.Linear(10, 4, bias=False)), "biprop", 0.75)
    report = sparsity_report(model)
    # 40 weights: dense 40 float32; ticket 40 mask bits + 10 sign bits + one float32 alpha.
    assert report["storage_bytes_dense"] == 40 * 4
    assert report["storage_bytes_ticket"] == (40 + 10 + 32) // 8
    assert report["layers"]["0"]["distinct_magnitudes"] == 1


def test_ticket_parameter_count_is_the_architecture():
    dense = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True)
    ticket = make_ticket(build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True),
                         "supermask", 0.5)
    assert count_parameters(ticket) == count_parameters(dense) == 2_263_498


def test_reloaded_ticket_gives_identical_predictions(digits, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "mpslt", "--p", "0.6", "--dataset", "digits", "--image-size", "16",
                 "--subset", "200", "--width", "0.125", "--T", "2", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    trained = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert evaluated["pruned_fraction"] == trained["sparsity"]["pruned_fraction"]

    state = torch.load(out / "checkpoint.pt", weights_only=True)
    cfg = make_config(**state["config"])
    original, reloaded = TrainingRun(cfg, digits), TrainingRun(cfg, digits)
    original.load_state_dict(state)
    reloaded.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True))
    x = original.pipeline(original.test_split.inputs[:32], augment=False)
    original.model.eval(), reloaded.model.eval()
    assert torch.equal(original.model(x), reloaded.model(x))
    assert evaluate(reloaded.model, reloaded.test_split, reloaded.pipeline, batch_size=50)["accuracy"] == \
        trained["test_accuracy"]


@pytest.mark.parametrize("p", ["1.0", "-0.1", "1.5"])
def test_p_outside_range_refused(capsys, tmp_path, p):
    assert main(["train", "--method", "slt", "--p", p, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slt: error: p: ") and "[0, 1)" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_plain_and_multi_prize_tickets_differ_by_default(digits):
    """Kaiming-normal weights (the default) have many magnitudes, so sign(w)·α·mask is not w·mask."""
    slt_run = TrainingRun(make_config(**TINY, method="slt", p=0.5, epochs=1, seed=4), digits)
    mpslt_run = TrainingRun(make_config(**TINY, method="mpslt", p=0.5, epochs=1, seed=4), digits)
    for (name, plain), (_, prize) in zip(ticket_layers(slt_run.model).items(), ticket_layers(mpslt_run.model).items()):
        assert torch.equal(plain.weight, prize.weight) and torch.equal(plain.mask(), prize.mask()), name
        w_plain, w_prize = plain.effective_weight().detach(), prize.effective_weight().detach()
        assert (w_plain - w_prize).abs().max() > 0.1 * w_plain.abs().max(), name
        assert w_prize[prize.mask() > 0].abs().unique().numel() == 1 < w_plain[plain.mask() > 0].abs().unique().numel()
    assert slt_run.run_epoch()["train_loss"] != mpslt_run.run_epoch()["train_loss"]


def test_signed_constant_for_a_multi_prize_ticket_says_it_equals_the_plain_one(digits, caplog):
    with caplog.at_level("WARNING", logger="slt.train"):
        TrainingRun(make_config(**TINY, method="slt", weight_init="signed_constant"), digits)
        assert caplog.text == ""
        TrainingRun(make_config(**TINY, method="mpslt", weight_init="signed_constant"), digits)
    (line,) = caplog.text.strip().splitlines()
    assert "mpslt" in line and "equals the plain one" in line
