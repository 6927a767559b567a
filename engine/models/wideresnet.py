"""Wide ResNet 28-10 (Zagoruyko & Komodakis) for CIFAR: pre-activation blocks, widths 160/320/640,
4 blocks per stage, strides 1/2/2; reference-spec.md §2.2 addresses its -1 as layer3[3].conv2 (640 ch, 8x8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.common import MODELS, AddressableModel, conv_paths


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv; a 1x1 projection of the pre-activated input when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.projects = stride != 1 or in_channels != channels
        self.shortcut: nn.Module = (
            nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False) if self.projects else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(activated if self.projects else x)


class WideResNet(AddressableModel):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 10) -> None:
        super().__init__()
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        width = 16
        for stage, (channels, stride) in enumerate(
            zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2), strict=True), start=1
        ):
            layers = []
            for j in range(blocks):
                layers.append(WideBasicBlock(width, channels, stride if j == 0 else 1))
                width = channels
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.last_conv = f"layer3.{blocks - 1}.conv2"
        self.reference_layers = {-1: self.last_conv}
        self.kernel_layers = conv_paths(self, exclude=("shortcut",))[1:]  # residual convs, stem excluded
        self.head = "fc"
        self.min_input_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@MODELS.register("wideresnet28_10")
def build_wideresnet28_10(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return WideResNet(in_channels, num_classes, depth=28, widen=10)
