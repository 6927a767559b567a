"""Pattern sift (reference-spec.md §6.4-§6.5): per-class kernel masks, dictionaries, class and layer selection."""

from __future__ import annotations

import re

import torch
from torch import nn

from engine.doctor.diagnose import DiagnosisError
from engine.doctor.masks import threshold_mask

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


def expand_layer_keys(
    spec: tuple[str, ...], reference: dict[int, str], where: str, all_convs: list[str] | None = None
) -> list[str]:
    """Layer keys in order, without repeats: "all", "a..b" (inclusive), integer keys or module paths.

    "all" and ranges run over the model's non-negative reference integer keys (resnet32: 0..29); for
    a model without such keys "all" means its kernel-pipeline conv list ``all_convs``.
    """
    numbered = sorted(k for k in reference if k >= 0)
    out: list[str] = []
    for i, entry in enumerate(spec):
        entry = str(entry).strip()
        if entry == "all":
            keys = [str(k) for k in numbered] if numbered else list(all_convs or [])
        elif match := _RANGE.match(entry):
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise DiagnosisError(f'{where}[{i}]: range "{entry}" runs backwards; write "{high}..{low}"')
            missing = [k for k in range(low, high + 1) if k not in reference]
            if missing:
                raise DiagnosisError(
                    f'{where}[{i}]: range "{entry}" names keys {missing} the model does not have '
                    f"(its keys: {numbered[0] if numbered else '-'}..{numbered[-1] if numbered else '-'})"
                )
            keys = [str(k) for k in range(low, high + 1)]
        else:
            keys = [entry]
        out.extend(k for k in keys if k not in out)
    return out


def select_classes(
    num_classes: int, classes: tuple[int, ...], tail_classes: int, train_counts: list[int]
) -> list[int]:
    """The classes whose dictionaries are used: a list, the k tail classes, or all.

    Tail classes are those with the fewest training images; ties go to the higher class index, so
    "the last tail class" of CIFAR-10-LT is class 9 as in the reference.
    """
    if classes:
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise DiagnosisError(f"kernels.classes: {bad} out of range 0..{num_classes - 1}")
        return sorted(set(classes))
    if tail_classes > 0:
        if tail_classes > num_classes:
            raise DiagnosisError(f"kernels.tail_classes: {tail_classes} > {num_classes} classes")
        by_rarity = sorted(range(num_classes), key=lambda c: (train_counts[c], -c))
        return sorted(by_rarity[:tail_classes])
    return list(range(num_classes))


def pattern_masks(energies: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """M[c, k] = u[c, k] > mean_k u[c, k] per layer (strictly greater, reference-spec.md §6.4)."""
    return {name: threshold_mask(u, "gt_mean") for name, u in energies.items()}


def class_dictionaries(masks: dict[str, torch.Tensor], classes: list[int]) -> dict[int, dict[str, list[int]]]:
    """Per class, layer -> sorted kernel indices (reference-spec.md §6.5)."""
    return {c: {name: m[c].nonzero().flatten().tolist() for name, m in masks.items()} for c in classes}


def union_masks(masks: dict[str, torch.Tensor], classes: list[int]) -> dict[str, torch.Tensor]:
    """Per layer, the kernels selected for any of ``classes`` (the reference's merged "789" dictionary)."""
    return {name: m[classes].any(dim=0) for name, m in masks.items()}


def check_conv(path: str, module: nn.Module, where: str) -> None:
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Conv2d) or weight is None:
        raise DiagnosisError(
            f"{where}: {path} is a {type(module).__name__}; kernel masks apply to conv layers only"
        )
