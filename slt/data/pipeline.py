"""Batches of a split held on the device, and batched augmentation: no per-image Python, no workers."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from slt.data.base import DatasetInfo, Split


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 inputs, labels) batches; shuffled with `generator` when `shuffle`."""
    n = len(split)
    device = split.labels.device
    order = torch.randperm(n, generator=generator, device=device) if shuffle else torch.arange(n, device=device)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield split.inputs[index], split.labels[index]


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop of every sample after zero padding by `pad`; x is [B, ..., H, W], offsets per sample."""
    batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad))
    middle = [1] * (x.dim() - 3)
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator, device=x.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=x.device)).view(batch, *middle, height, 1)
    padded = padded.gather(-2, rows.expand(*x.shape[:-2], height, width + 2 * pad))
    cols = (offsets[1, :, None] + torch.arange(width, device=x.device)).view(batch, *middle, 1, width)
    return padded.gather(-1, cols.expand(*x.shape))


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Horizontal flip of a random half of the samples; x is [B, ..., H, W]."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


class BatchPipeline:
    """uint8 batch on the device -> float model input.

    Static images [B, C, H, W]: scale to [0, 1], (train) random crop with 4-pixel padding and
    horizontal flip where the dataset allows it, resized to `image_size` when given (area: a 2x2 mean
    from 32 to 16), normalise per channel.
    Event frames [B, T, 2, H, W]: event counts as floats, (train) the same crop/flip, resized to
    `image_size` when given, returned time-first [T, B, 2, H, W].
    """

    def __init__(self, info: DatasetInfo, device: torch.device | str, *, image_size: int | None = None,
                 crop_pad: int = 4):
        self.info = info
        self.crop_pad = crop_pad
        self.image_size = image_size
        channels = len(info.mean)
        self.mean = torch.tensor(info.mean, device=device).view(1, channels, 1, 1)
        self.std = torch.tensor(info.std, device=device).view(1, channels, 1, 1)

    def __call__(self, x: torch.Tensor, *, augment: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float()
        if not self.info.is_event:
            x = x / 255.0
        if augment:
            x = random_crop(x, self.crop_pad, generator)
            if self.info.flip:
                x = random_flip(x, generator)
        if self.image_size is not None and self.image_size != x.shape[-1]:
            x = F.interpolate(x.flatten(0, -4), size=(self.image_size, self.image_size), mode="area").unflatten(
                0, x.shape[:-3])
        if not self.info.is_event:
            return (x - self.mean) / self.std
        return x.transpose(0, 1)
