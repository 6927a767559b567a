"""CIFAR-style ResNet-18/34/50/152 (reference-spec.md §2.1): 3x3 stride-1 stem, no max-pool.

Module names follow the reference (conv1, conv2_x..conv5_x, residual_function, shortcut, fc) so the
integer keys of reference-spec.md §2.2 point at the same layers.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.common import MODELS, AddressableModel


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        # indices 0 and 3 are the convs (reference-spec.md §2.1)
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.shortcut = _projection(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual_function(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        # indices 0, 3, 6 are the convs; the 3x3 carries the stride (reference-spec.md §2.1)
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels * self.expansion, 1, bias=False),
            nn.BatchNorm2d(channels * self.expansion),
        )
        self.shortcut = _projection(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual_function(x) + self.shortcut(x))


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN when the shape changes; an empty Sequential (identity) otherwise."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class CifarResNet(AddressableModel):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        width = 64
        for stage, (channels, stride, depth) in enumerate(
            zip((64, 128, 256, 512), (1, 2, 2, 2), depths, strict=True), start=2
        ):
            blocks = []
            for j in range(depth):
                blocks.append(block(width, channels, stride if j == 0 else 1))
                width = channels * block.expansion
            setattr(self, f"conv{stage}_x", nn.Sequential(*blocks))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

        conv_indices = (0, 3) if block is BasicBlock else (0, 3, 6)
        residual_convs = [
            f"conv{stage}_x.{j}.residual_function.{i}"
            for stage, depth in zip((2, 3, 4, 5), depths, strict=True)
            for j in range(depth)
            for i in conv_indices
        ]
        self.last_conv = residual_convs[-1]
        self.head = "fc"
        self.min_input_size = 1
        self.kernel_layers = residual_convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(x))))
        return self.fc(torch.flatten(self.avg_pool(x), 1))


def _with_reference_keys(model: CifarResNet, numbered: int) -> CifarResNet:
    """reference-spec.md §2.2: resnet18 numbers its 16 residual convs 1..16; resnet50 numbers 1..47, the
    48th (last) being its -1; resnet34/152 have only -1 = the last conv."""
    paths = model.kernel_layers[:numbered]
    model.reference_layers = {i: p for i, p in enumerate(paths, start=1)} | {-1: model.last_conv}
    return model


@MODELS.register("resnet18")
def build_resnet18(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    # The reference's resnet18 dictionary has only 1..16; -1 is added for uniformity (last conv).
    return _with_reference_keys(CifarResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes), 16)


@MODELS.register("resnet34")
def build_resnet34(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return _with_reference_keys(CifarResNet(BasicBlock, (3, 4, 6, 3), in_channels, num_classes), 0)


@MODELS.register("resnet50")
def build_resnet50(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return _with_reference_keys(CifarResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes), 47)


@MODELS.register("resnet152")
def build_resnet152(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return _with_reference_keys(CifarResNet(Bottleneck, (3, 8, 36, 3), in_channels, num_classes), 0)
