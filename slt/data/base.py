"""What every dataset reader returns: whole splits as tensors, plus the facts a model needs."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int  # height == width of the stored inputs
    is_event: bool  # event frames [N, T, 2, H, W] instead of images [N, C, H, W]
    mean: tuple[float, ...]  # per-channel normalisation of inputs scaled to [0, 1] (static data only)
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip keeps the label (not for digits or hand gestures)


@dataclass
class Split:
    """A whole split held as one tensor.

    inputs: static images uint8 [N, C, H, W]; event frames uint8 [N, T, 2, H, W]
            (per-pixel event counts, saturated at 255).
    labels: int64 [N].
    """

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "Split":
        return Split(self.inputs.to(device), self.labels.to(device))


@dataclass
class Dataset:
    """A dataset's splits. Readers give train and test; load_dataset carves `val` out of train."""

    info: DatasetInfo
    train: Split
    test: Split
    val: Split | None = None
