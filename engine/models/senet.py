"""SE-ResNet-34 for CIFAR (reference-spec.md §2.1), with the reference's module names (pre, stage1..4,
residual, excitation, linear) so the integer keys of reference-spec.md §2.2 point at the same layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.common import MODELS, AddressableModel, conv_paths


class SEBasicBlock(nn.Module):
    """ReLU(residual * excitation(residual) + shortcut); the residual ends in a ReLU (reference-spec.md §2.1)."""

    def __init__(self, in_channels: int, channels: int, stride: int, reduction: int = 16) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride), nn.BatchNorm2d(channels)
            )
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excitation = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual(x)
        scale = self.excitation(torch.flatten(self.squeeze(residual), 1))
        return F.relu(residual * scale[:, :, None, None] + self.shortcut(x))


class SENet34(AddressableModel):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        width = 64
        for stage, (channels, stride, depth) in enumerate(
            zip((64, 128, 256, 512), (1, 2, 2, 2), (3, 4, 6, 3), strict=True), start=1
        ):
            blocks = []
            for j in range(depth):
                blocks.append(SEBasicBlock(width, channels, stride if j == 0 else 1))
                width = channels
            setattr(self, f"stage{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        # reference-spec.md §2.2: -2 the last 3x3 conv, -1 the last SE expansion FC (32 -> 512)
        self.reference_layers = {-2: "stage4.2.residual.3", -1: "stage4.2.excitation.2"}
        self.kernel_layers = conv_paths(self, exclude=("pre", "shortcut"))
        self.last_conv = "stage4.2.residual.3"
        # No hidden FC before the head: the SE FCs gate channels, so "penultimate_fc" names nothing
        # here (the reference's FC target is still reachable as key -1).
        self.head = "linear"
        self.min_input_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.pre(x)))))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@MODELS.register("senet34")
def build_senet34(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return SENet34(in_channels, num_classes)
