"""ResNeXt-50 (32x4d) with the CIFAR stem (reference-spec.md §2.1), reference module names (conv1,
conv2..conv5, split_transforms, shortcut, fc).

Its first 1x1 conv is *grouped* (groups = 32), as in the reference; standard ResNeXt's is dense.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.common import MODELS, AddressableModel

CARDINALITY = 32
GROUP_DEPTH = 4
BASE_WIDTH = 64


class ResNeXtBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        width = CARDINALITY * int(GROUP_DEPTH * channels / BASE_WIDTH)  # 32*4*out/64
        self.split_transforms = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, groups=CARDINALITY, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=CARDINALITY, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels * self.expansion, 1, bias=False),
            nn.BatchNorm2d(channels * self.expansion),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * self.expansion),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.split_transforms(x) + self.shortcut(x))


class ResNeXt50(AddressableModel):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        depths = (3, 4, 6, 3)
        width = 64
        for stage, (channels, stride, depth) in enumerate(
            zip((64, 128, 256, 512), (1, 2, 2, 2), depths, strict=True), start=2
        ):
            blocks = []
            for j in range(depth):
                blocks.append(ResNeXtBottleneck(width, channels, stride if j == 0 else 1))
                width = channels * ResNeXtBottleneck.expansion
            setattr(self, f"conv{stage}", nn.Sequential(*blocks))
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        # reference-spec.md §2.2: 0..47 = conv{2..5}[j].split_transforms[{0,3,6}]; the reference's -1 is
        # commented out; we define -1 = the last conv for uniformity.
        convs = [
            f"conv{stage}.{j}.split_transforms.{i}"
            for stage, depth in zip((2, 3, 4, 5), depths, strict=True)
            for j in range(depth)
            for i in (0, 3, 6)
        ]
        self.reference_layers = dict(enumerate(convs)) | {-1: convs[-1]}
        self.kernel_layers = convs
        self.last_conv = convs[-1]
        self.head = "fc"
        self.min_input_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        return self.fc(torch.flatten(self.avg(x), 1))


@MODELS.register("resnext50")
def build_resnext50(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return ResNeXt50(in_channels, num_classes)
