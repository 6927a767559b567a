"""ResNet-32 for 32 px inputs ("proper CIFAR ResNet", reference-spec.md §2.1), option-A shortcuts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.common import MODELS, AddressableModel


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad planes/4 channels on each side."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = OptionAShortcut(planes) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(AddressableModel):
    """3x3 stem (16 ch), three stages of 5 BasicBlocks (16/32/64, strides 1/2/2), GAP, Linear.

    PyTorch default init, as the reference (its Kaiming init is commented out, reference-spec.md §2.1).
    """

    def __init__(self, in_channels: int, num_classes: int, blocks: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, strides = (16, 32, 64), (1, 2, 2)
        in_planes = 16
        for stage, (planes, stride) in enumerate(zip(widths, strides, strict=True), start=1):
            layers = []
            for j in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

        # reference-spec.md §2.2: keys 0..29 are layer{1,2,3}[j].conv{1,2}, stem excluded. The reference's
        # HEAD has no -1 key; we define -1 = the last conv, its only key before 2022-02-22.
        convs = [f"layer{s}.{j}.conv{c}" for s in (1, 2, 3) for j in range(blocks) for c in (1, 2)]
        self.reference_layers = dict(enumerate(convs)) | {-1: convs[-1]}
        self.kernel_layers = convs
        self.last_conv = convs[-1]
        self.head = "linear"
        self.min_input_size = 1  # padded stride-2 convs and the option-A subsampling keep 1x1 at 1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@MODELS.register("resnet32")
def build_resnet32(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return ResNet32(in_channels, num_classes)
