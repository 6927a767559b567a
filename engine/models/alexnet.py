"""The three AlexNets of the reference (reference-spec.md §2.1), none with LRN.

* ``alexnet``: five 3x3 convs (the first stride 2) with 2x2 max-pools after convs 1, 2 and 5, and a
  classifier whose input is 256*h*w for the final map h x w. The reference hard-wires h = w = 14 (224 px,
  FORK) or 2 (32 px, OFFICIAL); here h, w are computed from ``image_size`` at build time with the
  conv/pool size formula (no dummy forward, no LazyLinear), so one definition covers both. Without an
  image size the FORK's 224 px is assumed, and a mismatched input fails with a message saying so.
* ``alexnetv2``: torchvision's AlexNet ("one weird trick"), adaptive 6x6 average pool, >= 63 px.
* ``alexnetv3``: a v2 variant for 32 px with an adaptive 6x6 *max* pool (named ``avgpool`` as in the
  reference).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.common import MODELS, AddressableModel, conv_out_size, conv_paths

FORK_IMAGE_SIZE = 224


def _classifier(in_features: int, num_classes: int) -> nn.Sequential:
    """Dropout-FC-ReLU-Dropout-FC-ReLU-FC: Linears at 1, 4, 6 (reference-spec.md §2.1)."""
    return nn.Sequential(
        nn.Dropout(),
        nn.Linear(in_features, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


def alexnet_feature_size(image_size: int) -> int:
    """Side of alexnet's last map: conv 3x3/2 pad 1, then three 2x2 max-pools (224 -> 14, 32 -> 2)."""
    side = conv_out_size(image_size, 3, 2, 1)
    for _ in range(3):
        side = conv_out_size(side, 2, 2)
    return side


class _AlexNetBase(AddressableModel):
    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Sequential

    def _name_layers(self) -> None:
        self.kernel_layers = conv_paths(self)
        self.last_conv = "features.10"
        self.penultimate_fc = "classifier.4"
        self.head = "classifier.6"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNet(_AlexNetBase):
    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 192, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.image_size = image_size
        self.feature_side = max(alexnet_feature_size(image_size), 1)
        self.avgpool = nn.Identity()  # the reference flattens the feature map directly
        self.classifier = _classifier(256 * self.feature_side**2, num_classes)
        self.reference_layers = {-2: "features.10", -1: "classifier.4"}
        self._name_layers()
        self.min_input_size = 15  # the smallest side that survives the stride-2 conv and three pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if features.shape[-2:] != (self.feature_side, self.feature_side):
            raise ValueError(
                f"alexnet was built for {self.image_size} px inputs (a {self.feature_side}x"
                f"{self.feature_side} feature map) but got {tuple(x.shape[-2:])}; build it with the "
                "data's image_size"
            )
        return self.classifier(torch.flatten(features, 1))


class AlexNetV2(_AlexNetBase):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = _classifier(256 * 6 * 6, num_classes)
        # reference-spec.md §2.2: 0..4 are the five convs; the reference's FC key -1 is commented out and its
        # README says to enable it for the FC variant, so it is defined here.
        self.reference_layers = {i: f"features.{p}" for i, p in enumerate((0, 3, 6, 8, 10))}
        self.reference_layers[-1] = "classifier.4"
        self._name_layers()
        self.min_input_size = 63


class AlexNetV3(_AlexNetBase):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveMaxPool2d(6)  # a max-pool despite the name, as in the reference
        self.classifier = _classifier(256 * 6 * 6, num_classes)
        self.reference_layers = {-2: "features.10", -1: "classifier.4"}
        self._name_layers()
        self.min_input_size = 9


@MODELS.register("alexnet")
def build_alexnet(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return AlexNet(in_channels, num_classes, image_size or FORK_IMAGE_SIZE)


@MODELS.register("alexnetv2")
def build_alexnetv2(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return AlexNetV2(in_channels, num_classes)


@MODELS.register("alexnetv3")
def build_alexnetv3(in_channels: int, num_classes: int, image_size: int | None = None) -> nn.Module:
    return AlexNetV3(in_channels, num_classes)
