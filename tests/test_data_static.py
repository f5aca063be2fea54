"""Fast tests for the static-image readers (CIFAR, digits) and the stratified subset."""

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from slt.data.base import Split
from slt.data.cifar import load_cifar10, load_cifar100
from slt.data.digits import load_digits
from slt.data.subset import split_off, stratified_head
from slt.errors import InputError

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root: Path, n: int = 4, data=None, labels=None) -> Path:
    """A tiny cifar-10-batches-py directory in the real format; `data`/`labels` override batch 1."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {
            "batch_label": name,
            "labels": [(j + i) % 10 for j in range(n)],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        }
        if i == 0 and data is not None:
            batch["data"] = data
        if i == 0 and labels is not None:
            batch["labels"] = labels
        _dump(d / name, batch)
    _dump(d / "batches.meta", {"label_names": [f"c{k}" for k in range(10)]})
    return d


class _SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


# ---- restricted unpickler ----------------------------------------------------------------------


@pytest.mark.parametrize("evil", [_SystemCall, _ExecCall])
def test_malicious_pickle_refused_and_not_run(tmp_path, evil):
    marker = tmp_path / "pwned"
    d = _write_cifar10(tmp_path / "data")
    _dump(d / "data_batch_1", {"data": evil(marker), "labels": [0]})
    with pytest.raises(InputError) as e:
        load_cifar10(d)
    msg = str(e.value)
    assert e.value.field == "data_dir" and "\n" not in msg
    assert "data_batch_1" in msg and "refused" in msg and "numpy.ndarray" in msg
    assert ("system" in msg) or ("exec" in msg)
    assert not marker.exists()


def test_corrupt_pickle_is_input_error(tmp_path):
    d = _write_cifar10(tmp_path)
    (d / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match=r"^data_dir: .*test_batch"):
        load_cifar10(tmp_path)


# ---- real CIFAR-10 subset ----------------------------------------------------------------------


@pytest.mark.skipif(
    not SHARED_CIFAR10.is_dir(), reason=f"shared CIFAR-10 subset not found at {SHARED_CIFAR10}"
)
def test_shared_cifar10_subset():
    ds = load_cifar10(SHARED_CIFAR10)
    assert len(ds.train) == 5000 and len(ds.test) == 1000
    for split in (ds.train, ds.test):
        assert split.inputs.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.inputs.shape[1:] == (3, 32, 32)
        assert int(split.labels.min()) == 0 and int(split.labels.max()) == 9
    assert ds.info.name == "cifar10" and ds.info.num_classes == 10 and ds.info.flip and not ds.info.is_event
    with open(SHARED_CIFAR10 / "data_batch_1", "rb") as f:  # trusted file: plain pickle as reference
        raw = pickle.load(f, encoding="latin1")
    row = raw["data"][0]
    assert ds.train.inputs[0, :, 0, 0].tolist() == [row[0], row[1024], row[2048]]
    assert torch.equal(ds.train.inputs[0], torch.from_numpy(row.reshape(3, 32, 32)))
    assert ds.train.labels[:1000].tolist() == raw["labels"]
    # The parent directory works too.
    assert torch.equal(load_cifar10(SHARED_CIFAR10.parent).test.labels, ds.test.labels)


# ---- fake CIFAR-100 in the real format ---------------------------------------------------------


def _write_cifar100(root: Path, n: int = 6) -> tuple[Path, dict]:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    batches = {}
    for s, name in enumerate(["train", "test"]):
        data = np.arange(n * 3072, dtype=np.int64).reshape(n, 3072).astype(np.uint8)
        batch = {
            b"data": data,  # bytes keys, as Python 3 writes them
            "fine_labels": [(17 * j + s) % 100 for j in range(n)],
            "coarse_labels": [(3 * j + s) % 20 for j in range(n)],
        }
        batch["fine_labels"][-1] = 99
        batch["coarse_labels"][-1] = 19
        _dump(d / name, batch)
        batches[name] = batch
    _dump(d / "meta", {"fine_label_names": [], "coarse_label_names": []})
    return d, batches


def test_cifar100_fine_and_coarse(tmp_path):
    d, batches = _write_cifar100(tmp_path)
    fine = load_cifar100(tmp_path)  # parent directory
    coarse = load_cifar100(d, label_kind="coarse")  # the folder itself
    assert fine.info.num_classes == 100 and coarse.info.num_classes == 20
    assert fine.info.name == coarse.info.name == "cifar100"
    assert fine.train.labels.tolist() == batches["train"]["fine_labels"]
    assert fine.test.labels.tolist() == batches["test"]["fine_labels"]
    assert coarse.train.labels.tolist() == batches["train"]["coarse_labels"]
    assert coarse.test.labels.tolist() == batches["test"]["coarse_labels"]
    assert fine.train.inputs.shape == (6, 3, 32, 32) and fine.train.inputs.dtype == torch.uint8
    expected = torch.from_numpy(batches["train"][b"data"].reshape(6, 3, 32, 32))
    assert torch.equal(fine.train.inputs, expected)


def test_cifar100_bad_label_kind(tmp_path):
    with pytest.raises(InputError) as e:
        load_cifar100(tmp_path, label_kind="medium")
    assert e.value.field == "label_kind" and "fine" in str(e.value) and "coarse" in str(e.value)


# ---- bad directories ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"data": np.zeros((4, 3000), dtype=np.uint8)}, r"'data' must be a uint8 array of shape \[N, 3072\]"),
        ({"data": np.zeros((4, 3072), dtype=np.float32)}, r"'data' must be a uint8 array"),
        ({"labels": [0, 1, 2, 10]}, r"'labels' must lie in 0\.\.9"),
        ({"labels": [0, 1, -1, 2]}, r"'labels' must lie in 0\.\.9"),
        ({"labels": [0, 1, 2]}, r"'labels' must be a list of 4 ints"),
    ],
)
def test_bad_batch_contents(tmp_path, kwargs, expected):
    _write_cifar10(tmp_path, **kwargs)
    with pytest.raises(InputError, match=expected) as e:
        load_cifar10(tmp_path)
    assert e.value.field == "data_dir" and "\n" not in str(e.value) and "data_batch_1" in str(e.value)


def test_missing_file_and_dir(tmp_path):
    d = _write_cifar10(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(InputError, match=r"^data_dir: .*lacks data_batch_3; expected") as e:
        load_cifar10(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"^data_dir: .*nowhere is not a directory"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"^data_dir: .*lacks train, test"):
        load_cifar100(tmp_path)


# ---- digits ------------------------------------------------------------------------------------


def test_digits_shapes_and_info():
    ds = load_digits(image_size=16)
    assert len(ds.train) + len(ds.test) == 1797
    assert ds.train.inputs.shape[1:] == (1, 16, 16) and ds.train.inputs.dtype == torch.uint8
    assert ds.test.labels.dtype == torch.int64
    assert ds.info.name == "digits" and ds.info.in_channels == 1 and ds.info.image_size == 16
    assert ds.info.num_classes == 10 and not ds.info.flip and not ds.info.is_event
    assert int(ds.train.inputs.max()) == 255 and int(ds.train.inputs.min()) == 0
    assert 0 < ds.info.mean[0] < 1 and 0 < ds.info.std[0] < 1


def test_digits_deterministic_and_seeded():
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.labels, b.test.labels)
    assert a.info == b.info
    assert not torch.equal(a.test.inputs, c.test.inputs)


def test_digits_stratified():
    ds = load_digits(image_size=8, test_fraction=0.2)
    all_counts = torch.bincount(torch.cat([ds.train.labels, ds.test.labels]), minlength=10)
    test_counts = torch.bincount(ds.test.labels, minlength=10)
    for total, in_test in zip(all_counts.tolist(), test_counts.tolist()):
        assert in_test == round(total * 0.2)


@pytest.mark.parametrize("bad", [4, 7, 32.0, True, "32", 10_000])
def test_digits_bad_image_size(bad):
    with pytest.raises(InputError) as e:
        load_digits(image_size=bad)
    assert e.value.field == "image_size"


# ---- stratified_head ---------------------------------------------------------------------------


def _split(labels: list[int]) -> Split:
    n = len(labels)
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.tensor(labels, dtype=torch.int64))


def test_stratified_head_counts_and_order():
    # 3 classes; n=5 -> quotas 2, 2, 1.
    s = _split([0, 1, 0, 2, 0, 1, 2, 1, 0, 2])
    out = stratified_head(s, 5, 3)
    assert out.inputs.flatten().tolist() == [0, 1, 2, 3, 5]
    assert out.labels.tolist() == [0, 1, 0, 2, 1]
    assert torch.bincount(out.labels, minlength=3).tolist() == [2, 2, 1]


def test_stratified_head_fills_short_class():
    # Class 2 has one example but quota 2 (n=6, C=3): filled with the next unchosen row in file order.
    s = _split([0, 0, 0, 1, 1, 1, 2, 0, 1])
    out = stratified_head(s, 6, 3)
    assert len(out) == 6
    assert out.inputs.flatten().tolist() == [0, 1, 2, 3, 4, 6]
    assert torch.bincount(out.labels, minlength=3).tolist() == [3, 2, 1]


def test_stratified_head_limits():
    s = _split([0, 1, 2])
    assert stratified_head(s, 10, 3).labels.tolist() == [0, 1, 2]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match=r"^subset: "):
            stratified_head(s, bad, 3)


# ---- the validation split ------------------------------------------------------------------------------

def test_validation_split_is_stratified_seeded_disjoint_and_ordered():
    labels = [c for c in range(3) for _ in range(10)] + [3, 3] + [4]  # classes of 10, 10, 10, 2 and 1 rows
    rest, held = split_off(_split(labels), 0.2, 5, seed=0)
    assert torch.bincount(held.labels, minlength=5).tolist() == [2, 2, 2, 1, 0]  # round(0.2·n), ≥ 1 where n ≥ 2
    assert torch.bincount(rest.labels, minlength=5).tolist() == [8, 8, 8, 1, 1]
    rows, kept = held.inputs.flatten().tolist(), rest.inputs.flatten().tolist()
    assert sorted(rows + kept) == list(range(len(labels))) and not set(rows) & set(kept)  # a partition
    assert rows == sorted(rows) and kept == sorted(kept)  # original order inside each
    again, other = split_off(_split(labels), 0.2, 5, seed=0)[1], split_off(_split(labels), 0.2, 5, seed=1)[1]
    assert again.inputs.flatten().tolist() == rows and other.inputs.flatten().tolist() != rows
    with pytest.raises(InputError, match=r"^val_fraction: "):
        split_off(_split([0, 1, 2]), 0.1, 3, seed=0)  # one row per class: nothing can be held out


def test_every_dataset_gets_a_validation_split_carved_from_training():
    from slt.data import load_dataset, read_dataset

    read = read_dataset("cifar10", SHARED_CIFAR10)
    loaded = load_dataset("cifar10", SHARED_CIFAR10)  # default val_fraction 0.1 of each class
    counts = [508, 515, 478, 484, 527, 469, 497, 512, 518, 492]  # the subset's training images per class
    assert torch.bincount(read.train.labels, minlength=10).tolist() == counts
    assert torch.bincount(loaded.val.labels, minlength=10).tolist() == [51, 52, 48, 48, 53, 47, 50, 51, 52, 49]
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (4499, 501, 1000)
    assert torch.equal(loaded.test.labels, read.test.labels)
    assert torch.equal(torch.sort(torch.cat([loaded.train.labels, loaded.val.labels])).values,
                       torch.sort(read.train.labels).values)
    assert torch.equal(load_dataset("cifar10", SHARED_CIFAR10).val.inputs, loaded.val.inputs)  # fixed, seeded
    small = load_dataset("digits", image_size=8, subset=100, val_fraction=0.2)
    assert (len(small.train), len(small.val), len(small.test)) == (80, 20, 100)
    for bad in (0, 1, 1.5, True, "0.1"):
        with pytest.raises(InputError, match=r"^val_fraction: "):
            load_dataset("digits", image_size=8, val_fraction=bad)
