"""VGG-9 (DESIGN §3.2): 2,263,498 parameters at width 1 for 10 classes on 32x32 RGB."""

import torch
from torch import nn

from slt.models.encoding import decode, encode
from slt.models.neurons import Units

# (channels | "M" for a pool) of the convolutional part; then FC 256 -> FC 256 -> classes.
VGG9_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, "M")
VGG9_HIDDEN = 256


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGG9(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, *, units: Units, width: float = 1.0,
                 pool: str = "max"):
        super().__init__()
        self.T = units.T
        Pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        first = scaled(VGG9_LAYOUT[0], width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, first, 3, padding=1, bias=False), nn.BatchNorm2d(first))
        layers: list[nn.Module] = [units()]
        channels, size = first, image_size
        for spec in VGG9_LAYOUT[1:]:
            if spec == "M":
                layers.append(Pool(2))
                size //= 2
            else:
                out = scaled(spec, width)
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           units()]
                channels = out
        self.features = nn.Sequential(*layers)
        hidden = scaled(VGG9_HIDDEN, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden), units(),
            nn.Linear(hidden, hidden), units(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode(self.classifier(self.features(encode(self.stem, x, self.T))), self.T)
