"""Shared pieces of the model zoo: the registry, the cosine head and layer-path helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from engine.registry import Registry

# A builder takes (in_channels, num_classes, image_size) and returns an addressable model: an
# nn.Module carrying the attributes listed in `AddressableModel` (set in its __init__).
ModelBuilder = Callable[[int, int, "int | None"], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


class AddressableModel(nn.Module):
    """Base of every model in the zoo: names the layers other parts of the engine address.

    reference_layers: the reference's integer layer keys (reference-spec.md §2.2) -> dotted module path.
    last_conv / penultimate_fc: dotted paths (penultimate_fc is None where no hidden FC exists).
    head: the final Linear's path (replaced by a NormedLinear for LDAM).
    kernel_layers: the kernel pipeline's conv list (reference-spec.md §6.4), in key order.
    min_input_size: the smallest square input (pixels) the forward pass accepts.
    """

    reference_layers: dict[int, str]
    last_conv: str
    penultimate_fc: str | None
    head: str
    kernel_layers: list[str]
    min_input_size: int

    def __init__(self) -> None:
        super().__init__()
        self.reference_layers = {}
        self.penultimate_fc = None
        self.kernel_layers = []


class NormedLinear(nn.Module):
    """Cosine classifier of LDAM (Cao et al. 2019): logit_j = <x/|x|, w_j/|w_j|>, no bias.

    Each class vector starts at length 1, as in LDAM-DRW's ``resnet_cifar.py`` (uniform(-1, 1), then
    every class vector renormalised to unit length). The logits do not depend on the length, but SGD
    turns a vector in proportion to 1/|w|^2: the raw uniform(-1, 1) rows (length ~4.6 for 64
    features) made the head learn ~20x slower than the authors' (issue 21).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit-length class vectors in uniformly random directions of the [-1, 1] cube (cRT's fresh
        classifier on an LDAM model starts the same way)."""
        self.weight.uniform_(-1.0, 1.0)
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def conv_paths(model: nn.Module, *, exclude: Iterable[str] = ()) -> list[str]:
    """Dotted paths of every Conv2d in registration order, minus paths containing an excluded word."""
    words = tuple(exclude)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and not any(w in name.split(".") for w in words)
    ]


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a conv or pool (floor mode), as PyTorch computes it."""
    return (size + 2 * padding - kernel) // stride + 1
