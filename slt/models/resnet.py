"""ResNet-19 (DESIGN §3.2, Kim et al.'s variant): 12,630,858 parameters at width 1, 10 classes."""

import torch
from torch import nn

from slt.models.encoding import decode, encode
from slt.models.neurons import Units
from slt.models.vgg import scaled

# (channels, blocks, stride of the first block) per stage.
RESNET19_STAGES = ((128, 3, 2), (256, 3, 2), (512, 2, 2))
RESNET19_STEM = 64
RESNET19_HIDDEN = 256


class BasicBlock(nn.Module):
    """conv-BN-unit-conv-BN plus shortcut (1x1 conv+BN when the shape changes), unit after the add."""

    def __init__(self, cin: int, cout: int, stride: int, units: Units):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.unit1 = units()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.unit2 = units()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.unit1(self.bn1(self.conv1(x)))))
        return self.unit2(out + self.shortcut(x))


class ResNet19(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, *, units: Units, width: float = 1.0):
        super().__init__()
        self.T = units.T
        stem = scaled(RESNET19_STEM, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        blocks: list[nn.Module] = [units()]
        channels = stem
        for out, count, stride in RESNET19_STAGES:
            out = scaled(out, width)
            for i in range(count):
                blocks.append(BasicBlock(channels, out, stride if i == 0 else 1, units))
                channels = out
        self.features = nn.Sequential(*blocks)
        hidden = scaled(RESNET19_HIDDEN, width)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(channels, hidden), units(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode(self.classifier(self.features(encode(self.stem, x, self.T))), self.T)
