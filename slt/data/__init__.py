"""Dataset readers -> whole splits as uint8 tensors; batched augmentation lives in slt.data.pipeline."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slt.data.base import Dataset, DatasetInfo, Split
from slt.errors import InputError

DIGITS_SPLIT_SEED = 0  # the digits train/test split is fixed, whatever the run's seed
# The validation split is fixed too: every trial of a sweep, whatever its seed, is scored on the same images.
VAL_SPLIT_SEED = 0


def _digits(data_dir, frames: int, image_size: int | None, label_kind: str) -> Dataset:
    from slt.data.digits import load_digits

    return load_digits(image_size=image_size or 32, seed=DIGITS_SPLIT_SEED)


def _cifar10(data_dir, frames: int, image_size: int | None, label_kind: str) -> Dataset:
    from slt.data.cifar import load_cifar10

    return load_cifar10(data_dir)


def _cifar100(data_dir, frames: int, image_size: int | None, label_kind: str) -> Dataset:
    from slt.data.cifar import load_cifar100

    return load_cifar100(data_dir, label_kind=label_kind)


def _dvs128_gesture(data_dir, frames: int, image_size: int | None, label_kind: str) -> Dataset:
    from slt.data.dvs import load_dvs128_gesture

    return load_dvs128_gesture(data_dir, frames)


def _cifar10_dvs(data_dir, frames: int, image_size: int | None, label_kind: str) -> Dataset:
    from slt.data.dvs import load_cifar10_dvs

    return load_cifar10_dvs(data_dir, frames)


@dataclass(frozen=True)
class Reader:
    """A registered dataset: its reader, and the shape its inputs have as read (lets model-info describe
    a model without reading data; tests/test_cli.py checks it against the readers)."""

    read: Callable[[Path | None, int, int | None, str], Dataset]  # (data_dir, frames, image_size, label_kind)
    in_channels: int
    image_size: int
    num_classes: int
    needs_dir: bool = True  # reads the original files from --data-dir


# Registered by name, like the models (slt.models.MODELS); the names are slt.config.DATASETS.
READERS = {
    "digits": Reader(_digits, 1, 32, 10, needs_dir=False),
    "cifar10": Reader(_cifar10, 3, 32, 10),
    "cifar100": Reader(_cifar100, 3, 32, 100),
    "dvs128-gesture": Reader(_dvs128_gesture, 2, 128, 11),
    "cifar10-dvs": Reader(_cifar10_dvs, 2, 128, 10),
}


def read_dataset(name: str, data_dir: str | Path | None = None, *, frames: int = 4, image_size: int | None = None,
                 label_kind: str = "fine", subset: int | None = None) -> Dataset:
    """A dataset's training and test splits as its reader gives them (no validation split yet).

    `subset` keeps the first N examples of each split, stratified by class.
    frames: event frames per sample (= the SNN's T) for the DVS datasets.
    image_size: the upsampled size of digits (default 32); the other readers keep their size (the batch
    pipeline, slt.data.pipeline, resizes their inputs to a run's image_size).
    """
    if name not in READERS:
        raise InputError("dataset", f"unknown dataset {name!r}; allowed: {', '.join(READERS)}")
    reader = READERS[name]
    if reader.needs_dir:
        if data_dir is None:
            raise InputError("data_dir", f"dataset {name!r} needs --data-dir pointing at its original files")
        if not Path(data_dir).is_dir():
            raise InputError("data_dir", f"{data_dir} is not a directory; point it at the {name} files")
    dataset = reader.read(data_dir, frames, image_size, label_kind)
    if subset is not None:
        from slt.data.subset import stratified_head

        classes = dataset.info.num_classes
        dataset = Dataset(dataset.info, stratified_head(dataset.train, subset, classes),
                          stratified_head(dataset.test, subset, classes))
    return dataset


def load_dataset(name: str, data_dir: str | Path | None = None, *, frames: int = 4, image_size: int | None = None,
                 label_kind: str = "fine", subset: int | None = None, val_fraction: float = 0.1) -> Dataset:
    """A dataset's train/validation/test splits: read_dataset, then `val_fraction` of the training
    examples (stratified by class, seeded with VAL_SPLIT_SEED, at least one per class) become the
    validation split, never trained on."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
        raise InputError("val_fraction", f"{val_fraction!r} is not allowed; allowed: a number in the open interval "
                                         "(0, 1) (fraction of the training split held out for validation)")
    from slt.data.subset import split_off

    dataset = read_dataset(name, data_dir, frames=frames, image_size=image_size, label_kind=label_kind, subset=subset)
    train, val = split_off(dataset.train, val_fraction, dataset.info.num_classes, VAL_SPLIT_SEED)
    return Dataset(dataset.info, train, dataset.test, val)


__all__ = ["READERS", "Dataset", "DatasetInfo", "Reader", "Split", "load_dataset", "read_dataset"]
