import pytest
import torch

from conftest import TINY
from slt.config import make_config
from slt.train import TrainingRun


def strip_timing(history):
    return [{k: v for k, v in h.items() if k not in ("epoch_time_s", "train_images_per_s")} for h in history]


@pytest.mark.parametrize("method", ["snn", "ann"])
def test_same_seed_gives_identical_metrics(digits, method):
    cfg = make_config(**TINY, method=method, epochs=1, seed=7)
    first, second = TrainingRun(cfg, digits), TrainingRun(cfg, digits)
    assert strip_timing([first.run_epoch()]) == strip_timing([second.run_epoch()])


def test_different_seed_gives_different_weights(digits):
    a = TrainingRun(make_config(**TINY, epochs=1, seed=1), digits)
    b = TrainingRun(make_config(**TINY, epochs=1, seed=2), digits)
    assert not torch.equal(a.model.stem[0].weight, b.model.stem[0].weight)


def test_resuming_from_state_dict_continues_bit_for_bit(digits):
    cfg = make_config(**TINY, epochs=2, seed=3)
    straight = TrainingRun(cfg, digits)
    straight.run_epoch()
    straight.run_epoch()

    interrupted = TrainingRun(cfg, digits)
    interrupted.run_epoch()
    state = interrupted.state_dict()
    resumed = TrainingRun(cfg, digits)
    resumed.load_state_dict(state)
    resumed.run_epoch()
    assert resumed.done and resumed.epoch == 2
    assert strip_timing(resumed.history) == strip_timing(straight.history)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_epoch_metrics_are_plain_numbers_with_spiking_firing_rates(digits):
    run = TrainingRun(make_config(**TINY, epochs=1), digits)
    metrics = run.run_epoch()
    assert set(metrics["firing_rates"]) == {"features.0", "features.3", "features.7", "features.10",
                                            "features.14", "features.17", "classifier.2", "classifier.4"}
    assert all(0.0 <= r <= 1.0 for r in metrics["firing_rates"].values()) and metrics["firing_rates"]["features.0"] > 0
    # the reported accuracies and losses are those of the model on the whole validation and test splits,
    # counted here by hand
    run.model.eval()
    for name, split in (("val", run.val_split), ("test", run.test_split)):
        with torch.no_grad():
            logits = torch.cat([run.model(run.pipeline(split.inputs[i:i + 50], augment=False))
                                for i in range(0, len(split), 50)])
        assert metrics[f"{name}_accuracy"] == int((logits.argmax(1) == split.labels).sum()) / len(split)
        assert metrics[f"{name}_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, split.labels)),
                                                        rel=1e-5)
    assert (len(run.train_split), len(run.val_split), len(run.test_split)) == (180, 20, 200)


def test_ann_twin_has_no_firing_rates_and_runs_one_step(digits):
    run = TrainingRun(make_config(**TINY, method="ann", epochs=1), digits)
    assert run.model.T == 1
    assert run.run_epoch()["firing_rates"] == {}


def test_nan_loss_is_reported(digits):
    run = TrainingRun(make_config(**TINY, epochs=1), digits)
    with torch.no_grad():
        run.model.classifier[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan"):
        run.run_epoch()


@pytest.mark.parametrize("precision,conv_dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_sets_the_matmul_dtype_and_keeps_state_float32(digits, precision, conv_dtype):
    """bf16: convolutions and linear layers compute in bfloat16 (autocast); the LIF membranes, BN
    statistics, parameters, loss and Adam's moments stay float32. fp32: everything float32."""
    from torch import nn

    from slt.models.neurons import LIF

    run = TrainingRun(make_config(**TINY, method="mpslt", epochs=1, precision=precision, neuron_backend="fused"),
                      digits)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, (inputs[0].dtype, output.dtype))
        return hook

    for name, module in run.model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, LIF)):
            module.register_forward_hook(record(name))
    metrics = run.run_epoch()
    assert run.summary()["precision"] == precision and 0 <= metrics["val_accuracy"] <= 1
    layers = {n: d for n, d in seen.items() if not isinstance(run.model.get_submodule(n), LIF)}
    units = {n: d for n, d in seen.items() if isinstance(run.model.get_submodule(n), LIF)}
    assert len(layers) == 9 and {out for _, out in layers.values()} == {conv_dtype}
    # the LIF reads the BN's current and writes its 0/1 spikes in the conv dtype (its membrane is float32:
    # tests/test_models.py finds its spikes bit-identical to spikingjelly's run on the float32 current)
    assert len(units) == 8 and set(units.values()) == {(conv_dtype, conv_dtype)}
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}
    assert {b.dtype for n, b in run.model.named_buffers() if "running" in n} == {torch.float32}
    moments = [s["exp_avg"] for s in run.optimizer.state.values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}
    assert isinstance(metrics["train_loss"], float)


def test_auto_neuron_backend_compiles_only_where_it_pays(digits):
    """auto on CPU: the fused LIF when the run's LIF work saves more than compiling costs, spikingjelly's for a
    run too short to win it back; the run says which it used."""
    from slt.models.neurons import LIF
    from slt.train import FUSED_COMPILE_S, FUSED_SAVES_S, resolve_neuron_backend

    short = TrainingRun(make_config(**TINY, epochs=1), digits)
    steps = short._neuron_steps()
    assert steps * FUSED_SAVES_S < FUSED_COMPILE_S and short.neuron_backend == "spikingjelly"
    assert {m.backend for m in short.model.modules() if isinstance(m, LIF)} == {"spikingjelly"}
    cfg = make_config(**TINY, epochs=1)
    enough = FUSED_COMPILE_S / FUSED_SAVES_S * 1.01
    assert resolve_neuron_backend(cfg, lambda: enough) == "fused"
    assert resolve_neuron_backend(cfg, lambda: enough / 1.02) == "spikingjelly"
    assert resolve_neuron_backend(make_config(**TINY, neuron_backend="fused"), lambda: 1.0) == "fused"
    assert short.run_epoch() and short.summary()["neuron_backend"] == "spikingjelly"
    assert TrainingRun(make_config(**TINY, method="ann"), digits).neuron_backend is None


def test_data_description_names_the_splits_and_their_content():
    from slt.config import make_config
    from slt.train import TrainingRun

    small = TrainingRun(make_config(dataset="digits", image_size=16, width=0.125, subset=100))
    described = small.data_description()
    assert {k: described[k] for k in ("name", "source", "train", "validation", "test")} == {
        "name": "digits subset 100 16px", "source": "sklearn.datasets.load_digits", "train": 90, "validation": 10,
        "test": 100}
    same = TrainingRun(make_config(dataset="digits", image_size=16, width=0.125, subset=100, seed=3))
    other = TrainingRun(make_config(dataset="digits", image_size=16, width=0.125, subset=120))
    # the digest follows the images and labels: the same for another seed (fixed splits), new for another subset
    assert same.data_description()["digest"] == described["digest"] != other.data_description()["digest"]
