"""VGG-16 with BatchNorm and an adaptive 7x7 pool (the FORK's vggv2, reference-spec.md §2.1): any input of
at least 32 px. Conv positions in `features`: 0, 3, 7, ..., 40; classifier Linears at 0, 3, 6."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.common import MODELS, AddressableModel, conv_paths

CFG_D: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16(AddressableModel):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CFG_D:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        # reference-spec.md §2.2 (vggv2): conv1_2, conv2_2, conv3_3, conv4_3, conv5_1, conv5_2; -2 conv5_3; -1 FC2
        picks = {0: 3, 1: 10, 2: 20, 3: 30, 4: 34, 5: 37, -2: 40}
        self.reference_layers = {k: f"features.{i}" for k, i in picks.items()} | {-1: "classifier.3"}
        self.kernel_layers = conv_paths(self)
        self.last_conv = "features.40"
        self.penultimate_fc = "classifier.3"
        self.head = "classifier.6"
        self.min_input_size = 32  # five 2x2 max-pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@MODELS.register("vgg16")
def build_vgg16(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return VGG16(in_channels, num_classes)
