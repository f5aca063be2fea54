import json
import pickle
import warnings

import pytest

from app.cli import main
from slt.config import DATASETS, MODELS
from slt.data import READERS, read_dataset
from slt.models import MODELS as BUILDERS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model,params", [("vgg9", 2_263_498), ("resnet19", 12_630_858)])
def test_model_info_reports_exact_params(capsys, model, params):
    code, out, _ = run_cli(capsys, "model-info", "--model", model)
    info = json.loads(out)
    assert code == 0 and info["params"] == params and info["macs"] > 0


def test_dataset_shapes_table_matches_readers(cifar10_dir):
    for name, directory in [("digits", None), ("cifar10", cifar10_dir)]:
        info = read_dataset(name, directory, subset=10).info
        reader = READERS[name]
        assert (reader.in_channels, reader.image_size, reader.num_classes) == (info.in_channels, info.image_size,
                                                                              info.num_classes)


def test_registries_hold_exactly_the_run_config_names():
    assert tuple(READERS) == DATASETS and tuple(BUILDERS) == MODELS


def test_train_writes_metrics_and_checkpoint(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--dataset", "digits", "--image-size", "16", "--subset", "100",
                              "--width", "0.125", "--T", "2", "--epochs", "1", "--out", str(out), "--quiet")
    assert code == 0 and "test accuracy" in stdout and str(out) in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["method"] == "snn" and len(metrics["history"]) == 1
    assert metrics["test_size"] == 100 and metrics["firing_rates"]
    assert (metrics["train_size"], metrics["val_size"]) == (90, 10)  # 10 % of the training split held out
    assert "validation accuracy" in stdout
    assert (out / "checkpoint.pt").is_file()


def test_slt_and_mpslt_record_validation_and_test_per_epoch_and_differ(capsys, tmp_path):
    """The same model, seed and epoch as a plain and as a multi-prize ticket: different tickets, so
    different losses; every epoch of metrics.json holds validation and test accuracy."""
    records = {}
    for method in ("slt", "mpslt"):
        out = tmp_path / method
        # all the digits (25 steps of 64): fewer steps leave a tiny SNN silent at its output (logits 0, loss ln 10)
        code, _, _ = run_cli(capsys, "train", "--method", method, "--dataset", "digits", "--image-size", "16",
                             "--width", "0.25", "--T", "4", "--epochs", "1", "--seed", "0", "--out", str(out),
                             "--quiet")
        assert code == 0
        records[method] = json.loads((out / "metrics.json").read_text())
    for record in records.values():
        assert len(record["history"]) == 1
        for entry in record["history"]:
            assert 0 <= entry["val_accuracy"] <= 1 and 0 <= entry["test_accuracy"] <= 1
            assert entry["val_loss"] > 0 and entry["test_loss"] > 0
        assert record["val_accuracy"] == record["history"][-1]["val_accuracy"]
    assert abs(records["slt"]["test_loss"] - records["mpslt"]["test_loss"]) > 1e-4


def write_malicious_cifar(directory, marker):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    directory.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (directory / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2))


@pytest.mark.parametrize("argv,field", [
    (["--model", "vgg11"], "model"),
    (["--method", "magic"], "method"),
    (["--dataset", "mnist"], "dataset"),
    (["--T", "0"], "T"),
    (["--decay", "1.0"], "decay"),
    (["--decay", "0"], "decay"),
    (["--epochs", "zero"], "epochs"),
    (["--dataset", "cifar10"], "data_dir"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "data_dir"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, argv, field):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", *argv, "--out", str(out), "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"slt: error: {field}: ")
    assert not out.exists()


def test_empty_data_dir_is_refused(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"),
                           "--out", str(tmp_path / "run"))
    assert code == 2 and err.startswith("slt: error: data_dir: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_malicious_pickle_is_refused_and_not_executed(capsys, tmp_path):
    marker = tmp_path / "pwned"
    write_malicious_cifar(tmp_path / "cifar-10-batches-py", marker)
    code, _, err = run_cli(capsys, "train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar-10-batches-py"),
                           "--out", str(tmp_path / "run"))
    assert code == 2 and "data_dir" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_malicious_checkpoint_is_refused_in_one_line_without_a_warning(capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(pickle.dumps({"model": Evil()}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(capsys, "eval", "--checkpoint", str(tmp_path / "run"))
    assert code == 2 and err.startswith("slt: error: checkpoint: ") and err.count("\n") == 1
    assert not marker.exists()
    assert [str(w.message) for w in caught] == []  # torch's pickle-protocol warning is not the user's concern


def test_existing_run_is_never_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    code, _, err = run_cli(capsys, "train", "--out", str(out))
    assert code == 2 and err.startswith("slt: error: out: ")
    assert (out / "metrics.json").read_text() == "{}"


def test_cifar_at_image_size_16_trains_the_model_model_info_describes(capsys, cifar10_dir):
    import torch

    from slt.config import make_config
    from slt.data.pipeline import iterate_batches
    from slt.train import TrainingRun

    dims = dict(model="spikformer-tiny", depth=1, embed_dim=32, heads=2)
    run = TrainingRun(make_config(**dims, method="snn", dataset="cifar10", data_dir=str(cifar10_dir), subset=100,
                                  image_size=16, T=2, batch_size=20))
    raw, _ = next(iterate_batches(run.train_split, 20, shuffle=False))
    inputs = run.pipeline(raw, augment=True, generator=torch.Generator().manual_seed(0))
    assert raw.shape[1:] == (3, 32, 32) and inputs.shape == (20, 3, 16, 16)  # stored at 32, trained at 16
    assert run.model.num_tokens == 16 and run.model(inputs).shape == (20, 10)  # 4x4 tokens, not 8x8
    assert run.data_description()["name"] == "cifar10 subset 100 16px"
    code, out, _ = run_cli(capsys, "model-info", "--dataset", "cifar10", "--image-size", "16", "--model",
                           "spikformer-tiny", "--depth", "1", "--embed-dim", "32", "--heads", "2")
    assert code == 0 and json.loads(out)["input"] == [3, 16, 16]
