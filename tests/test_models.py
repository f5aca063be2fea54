import pytest
import torch
from spikingjelly.activation_based import functional

from slt.energy import count_macs
from slt.errors import InputError
from slt.models import build_model, count_parameters
from slt.models.encoding import encode
from slt.models.neurons import LIF, tau_from_decay


@pytest.mark.parametrize("spiking", [False, True])
@pytest.mark.parametrize("name,classes,expected", [
    ("vgg9", 10, 2_263_498), ("resnet19", 10, 12_630_858),
    ("vgg9", 100, 2_286_628), ("resnet19", 100, 12_653_988),
])
def test_exact_parameter_counts(name, classes, expected, spiking):
    model = build_model(name, num_classes=classes, in_channels=3, image_size=32, spiking=spiking, T=4)
    assert count_parameters(model) == expected


def test_vgg9_macs_match_hand_arithmetic():
    model = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=False)
    macs = count_macs(model, torch.zeros(2, 3, 32, 32))
    assert macs["stem.0"] == 3 * 9 * 64 * 32 * 32
    assert macs["features.1"] == 64 * 9 * 64 * 32 * 32
    assert macs["classifier.1"] == 4096 * 256
    assert sum(macs.values()) == 153_881_088


def run_lif(decay, currents):
    lif = LIF(T=len(currents), decay=decay)
    x = torch.tensor(currents, dtype=torch.float32).view(len(currents), 1)  # [T*B, 1] with B = 1
    out = lif(x).view(-1).tolist()
    functional.reset_net(lif)
    return out


def test_lif_matches_hand_computation():
    # λ = 0.5, I = 0.6: U = 0.6, 0.9, 1.05 -> spike, reset to 0, then the same again.
    assert run_lif(0.5, [0.6] * 6) == [0, 0, 1, 0, 0, 1]
    # λ = 0.8, I = .5 .5 0 .5: U = 0.5, 0.9, 0.72, 1.076 -> one spike at t = 4 ...
    assert run_lif(0.8, [0.5, 0.5, 0.0, 0.5]) == [0, 0, 0, 1]
    # ... while λ = 0.5 leaks too fast: U = 0.5, 0.75, 0.375, 0.6875.
    assert run_lif(0.5, [0.5, 0.5, 0.0, 0.5]) == [0, 0, 0, 0]


def test_lif_membrane_follows_decay_without_input_scaling():
    lif = LIF(T=4, decay=0.25)
    lif.node.store_v_seq = True
    lif(torch.full((4, 1), 0.3))
    # U[t] = 0.25 U[t-1] + 0.3: 0.3, 0.375, 0.39375, 0.3984375
    assert lif.node.v_seq.view(-1).tolist() == pytest.approx([0.3, 0.375, 0.39375, 0.3984375])


def test_lif_surrogate_gradient_flows():
    lif = LIF(T=3, decay=0.5)
    x = torch.full((3, 4), 0.9, requires_grad=True)
    lif(x).sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_decay_outside_open_interval_refused(decay):
    with pytest.raises(InputError, match="decay"):
        tau_from_decay(decay)


def test_tau_mapping():
    assert tau_from_decay(0.5) == 2.0
    assert tau_from_decay(0.75) == 4.0
    assert isinstance(tau_from_decay(0.25), float)


def test_direct_encoding_repeats_one_current_per_step():
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    folded = encode(stem, x, T=3)
    assert folded.shape == (6, 4, 8, 8)
    for t in range(3):
        torch.testing.assert_close(folded[2 * t:2 * t + 2], stem(x))


def test_event_input_runs_every_frame_and_ann_integrates_frames():
    snn = build_model("vgg9", num_classes=11, in_channels=2, image_size=32, spiking=True, T=3, width=0.125)
    ann = build_model("vgg9", num_classes=11, in_channels=2, image_size=32, spiking=False, width=0.125)
    events = torch.rand(3, 2, 2, 32, 32)
    assert snn(events).shape == (2, 11)
    assert ann(events).shape == (2, 11)
    with pytest.raises(ValueError, match="frames"):
        snn(torch.rand(5, 2, 2, 32, 32))


def test_width_multiplier_and_input_shape():
    model = build_model("resnet19", num_classes=10, in_channels=1, image_size=16, spiking=True, T=2, width=0.25)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 10)
    assert model.stem[0].out_channels == 16


def test_unknown_model_and_bad_T_refused():
    with pytest.raises(InputError, match="model: unknown model 'vgg11'; allowed: vgg9, resnet19"):
        build_model("vgg11", num_classes=10, in_channels=3, image_size=32, spiking=True)
    with pytest.raises(InputError, match="^T: "):
        build_model("vgg9", num_classes=10, in_channels=3, image_size=32, spiking=True, T=0)


# ---- the fused LIF against spikingjelly's ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("decay,threshold", [(0.5, 1.0), (0.8, 0.5)])
def test_fused_lif_equals_spikingjelly_in_spikes_and_gradients(dtype, decay, threshold):
    """Random currents (a conv's output, float32 or bf16 under autocast): the same spikes, bit for bit,
    and the same BPTT gradients through the ATan surrogate and the detached hard reset."""
    generator = torch.Generator().manual_seed(3)
    current = (1.5 * torch.randn(4 * 6, 5, 7, 7, generator=generator)).to(dtype)
    # the gradient a bf16 conv sends back is bf16 (spikingjelly's float32 spikes get it via autocast's cast)
    upstream = torch.randn(4 * 6, 5, 7, 7, generator=generator).to(dtype)
    spikes, grads = {}, {}
    for backend in ("spikingjelly", "fused"):
        x = current.clone().requires_grad_()
        lif = LIF(T=4, decay=decay, threshold=threshold, backend=backend)
        out = lif(x)
        (out * upstream).sum().backward()
        functional.reset_net(lif)
        spikes[backend], grads[backend] = out, x.grad
    # spikingjelly is given the current in float32; the fused LIF reads bf16 itself and writes bf16 spikes
    assert spikes["fused"].dtype == dtype and spikes["spikingjelly"].dtype == torch.float32
    assert 0.05 < spikes["fused"].float().mean() < 0.6
    assert torch.equal(spikes["fused"].float(), spikes["spikingjelly"])
    assert grads["fused"].dtype == dtype and grads["fused"].abs().sum() > 0
    torch.testing.assert_close(grads["fused"], grads["spikingjelly"], rtol=1e-6, atol=1e-7)


def test_fused_lif_matches_hand_computation_and_is_the_cpu_default():
    lif = LIF(T=6, decay=0.5, backend="fused")
    assert lif(torch.full((6, 1), 0.6)).view(-1).tolist() == [0, 0, 1, 0, 0, 1]
    from slt.config import make_config
    from slt.train import resolve_neuron_backend

    assert resolve_neuron_backend(make_config(device="cpu")) == "fused"
    assert resolve_neuron_backend(make_config(device="cpu", neuron_backend="spikingjelly")) == "spikingjelly"
    model = build_model("vgg9", num_classes=10, in_channels=1, image_size=16, spiking=True, T=2, width=0.125,
                        neuron_backend="fused")
    assert {m.backend for m in model.modules() if isinstance(m, LIF)} == {"fused"}
    with pytest.raises(InputError, match="^neuron_backend: "):
        LIF(T=2, decay=0.5, backend="cupy-typo")


def test_fused_lif_keeps_a_channels_last_layout_and_the_same_numbers():
    """A channels-last current (what a channels-last conv gives) is run in memory order: the spikes come
    back channels-last, equal to spikingjelly's on the same values, and so do the gradients."""
    current = 1.5 * torch.randn(4 * 3, 5, 6, 7, generator=torch.Generator().manual_seed(5))
    last = current.contiguous(memory_format=torch.channels_last).requires_grad_()
    plain = current.clone().requires_grad_()
    fused, reference = LIF(T=4, decay=0.7, backend="fused"), LIF(T=4, decay=0.7, backend="spikingjelly")
    spikes, expected = fused(last), reference(plain)
    upstream = torch.randn_like(expected)
    (spikes * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert not spikes.is_contiguous() and spikes.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(spikes, expected) and torch.equal(last.grad, plain.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_firing_rate_counts_are_exact_for_spikes_in_any_dtype_and_layout(dtype):
    """FiringRates sums rows in the tensor's own dtype before float64: for 0/1 spikes that is exact in bf16
    too, with a tail that is not a whole row and a channels-last layout."""
    from slt.firing import ROW, _ones_and_count

    spikes = (torch.rand(3, 5, 11, 13, generator=torch.Generator().manual_seed(2)) < 0.7).to(dtype)
    assert spikes.numel() % ROW != 0
    expected = int(spikes.float().sum().item())
    for layout in (spikes, spikes.contiguous(memory_format=torch.channels_last)):
        ones, count = _ones_and_count(layout).tolist()
        assert (ones, count) == (expected, spikes.numel())
    big = torch.ones(4 * 256, 64, 8, 8, dtype=dtype)  # 2**22 ones: a plain bf16 sum would round the total
    assert _ones_and_count(big)[0].item() == big.numel()


def test_fused_lif_runs_uncompiled_when_it_cannot_be_compiled(monkeypatch, caplog):
    """No C++ compiler (simulated): one warning, then the same code runs uncompiled with the same spikes."""
    from slt.models import fused_lif

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found\nlong traceback")
        return compiled

    monkeypatch.setattr(fused_lif, "_compiled", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    current = 1.5 * torch.randn(4 * 2, 3, 5, generator=torch.Generator().manual_seed(1))
    x = current.clone().requires_grad_()
    spikes = LIF(T=4, decay=0.5, backend="fused")(x)
    spikes.sum().backward()
    reference = LIF(T=4, decay=0.5, backend="spikingjelly")(current)
    assert torch.equal(spikes, reference) and x.grad.abs().sum() > 0
    warnings = [r.getMessage() for r in caplog.records if "could not be compiled" in r.getMessage()]
    assert warnings == ["slt: warning: the fused LIF could not be compiled (RuntimeError: no C++ compiler found); "
                        "running it uncompiled"]


def test_fused_lif_lifts_dynamo_recompile_limit_in_every_thread():
    """Ray runs each trial of a reused worker in a new thread, and dynamo's config is per thread: the fused LIF
    must raise the recompile limit in the thread that calls it (else after 8 variants it runs uncompiled)."""
    import threading

    import torch._dynamo.config as dynamo_config

    from slt.models.fused_lif import RECOMPILE_LIMIT

    seen = []

    def trial():
        LIF(T=2, decay=0.5, backend="fused")(torch.randn(2 * 3, 4))
        seen.append(dynamo_config.recompile_limit)

    for _ in range(2):
        thread = threading.Thread(target=trial)
        thread.start()
        thread.join()
    assert seen == [RECOMPILE_LIMIT, RECOMPILE_LIMIT] and RECOMPILE_LIMIT > 8
