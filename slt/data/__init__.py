"""Dataset readers -> whole splits as uint8 tensors; batched augmentation lives in slt.data.pipeline."""

from pathlib import Path

from slt.data.base import Dataset, DatasetInfo, Split
from slt.errors import InputError

DATASETS = ("digits", "cifar10", "cifar100", "dvs128-gesture", "cifar10-dvs")
DIGITS_SPLIT_SEED = 0  # the digits train/test split is fixed, whatever the run's seed


def load_dataset(name: str, data_dir: str | Path | None = None, *, frames: int = 4, image_size: int | None = None,
                 label_kind: str = "fine", subset: int | None = None) -> Dataset:
    """Read a dataset's splits; `subset` keeps the first N examples of each split, stratified by class.

    frames: event frames per sample (= the SNN's T) for the DVS datasets.
    image_size: the upsampled size of digits (default 32); ignored by the other readers.
    """
    if name not in DATASETS:
        raise InputError("dataset", f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "digits":
        from slt.data.digits import load_digits

        dataset = load_digits(image_size=image_size or 32, seed=DIGITS_SPLIT_SEED)
    else:
        if data_dir is None:
            raise InputError("data_dir", f"dataset {name!r} needs --data-dir pointing at its original files")
        if not Path(data_dir).is_dir():
            raise InputError("data_dir", f"{data_dir} is not a directory; point it at the {name} files")
        if name == "cifar10":
            from slt.data.cifar import load_cifar10

            dataset = load_cifar10(data_dir)
        elif name == "cifar100":
            from slt.data.cifar import load_cifar100

            dataset = load_cifar100(data_dir, label_kind=label_kind)
        elif name == "dvs128-gesture":
            from slt.data.dvs import load_dvs128_gesture

            dataset = load_dvs128_gesture(data_dir, frames)
        else:
            from slt.data.dvs import load_cifar10_dvs

            dataset = load_cifar10_dvs(data_dir, frames)
    if subset is not None:
        from slt.data.subset import stratified_head

        classes = dataset.info.num_classes
        dataset = Dataset(dataset.info, stratified_head(dataset.train, subset, classes),
                          stratified_head(dataset.test, subset, classes))
    return dataset


__all__ = ["DATASETS", "Dataset", "DatasetInfo", "Split", "load_dataset"]


# (in_channels, image_size, num_classes) of each dataset as its reader returns it; lets model-info
# describe a model without reading data. tests/test_cli.py checks it against the readers.
DATASET_SHAPES = {
    "digits": (1, 32, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "dvs128-gesture": (2, 128, 11),
    "cifar10-dvs": (2, 128, 10),
}
