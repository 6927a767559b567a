"""The model zoo (reference-spec.md §2) and layer addressing (reference-spec.md §2.2).

Every model is registered by name in ``MODELS`` (the names of ``engine.schema.config.MODEL_NAMES``) and is an
``AddressableModel``: it names its reference integer layer keys, its last conv, its penultimate FC (or
None), its head and its kernel-pipeline conv list. A layer is addressed by

* a dotted module path ("layer3.4.conv2"; "layer3[4].conv2" is accepted too),
* "last_conv" or "penultimate_fc",
* a reference integer key as a string ("-1", "29") from the model's ``reference_layers``.

Models without a hidden FC (the ResNet family, ResNeXt, WRN) have no penultimate_fc: asking for it is an
error naming the valid choices, rather than a silent alias for the pooled features, because Model Doctor
on "the penultimate FC" means a hidden Linear's output (reference-spec.md §2.2). Their pooled features are
still addressable by path ("avgpool" etc.; see ``python -m engine layers MODEL``).
"""

from __future__ import annotations

import difflib
import re

import torch
from torch import nn

from engine.models import (  # noqa: F401  (imported to register the builders)
    alexnet,
    cifar_resnet,
    resnet32,
    resnext,
    senet,
    vgg,
    wideresnet,
)
from engine.models.common import MODELS, AddressableModel, NormedLinear
from engine.schema.config import ModelConfig

__all__ = [
    "MODELS",
    "LayerKeyError",
    "ModelBuildError",
    "NormedLinear",
    "build_model",
    "conv_layers",
    "describe_layers",
    "reference_layers",
    "resolve_layer",
]


class ModelBuildError(ValueError):
    """A model configuration that cannot be built (unknown name, bad sizes)."""


class LayerKeyError(ValueError):
    """A layer key that does not name a layer of the model; the message lists valid choices."""


def build_model(
    cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    *,
    normed_head: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """Build ``cfg.name``. ``image_size`` (square side, px) is needed only where the architecture
    hard-wires its classifier input (alexnet); others check it against their minimum input size."""
    try:
        builder = MODELS.get(cfg.name)
    except KeyError as exc:
        raise ModelBuildError(f"model.name: {exc.args[0]}") from None
    if in_channels < 1 or num_classes < 1:
        raise ModelBuildError(
            f"model: in_channels ({in_channels}) and num_classes ({num_classes}) must be at least 1"
        )
    model = builder(in_channels, num_classes, image_size)
    if image_size is not None and image_size < model.min_input_size:
        raise ModelBuildError(
            f"model {cfg.name} needs inputs of at least {model.min_input_size} px, got {image_size} px "
            "(data.image_size)"
        )
    apply_init(model, cfg.init)
    if normed_head:  # after apply_init: the cosine head keeps its unit rows, as in LDAM-DRW
        head = model.get_submodule(model.head)
        model.set_submodule(model.head, NormedLinear(head.in_features, head.out_features))
    return model


@torch.no_grad()
def apply_init(model: nn.Module, init: str) -> None:
    """``model.init``: "default" keeps PyTorch's initialisers; "kaiming_normal" draws every Conv2d and
    Linear weight from kaiming_normal_ (fan_in, gain sqrt(2)) and leaves biases and BatchNorm as
    PyTorch sets them -- the ``_weights_init`` of LDAM-DRW's and MiSLAS's CIFAR ResNets."""
    if init == "default":
        return
    if init != "kaiming_normal":
        raise ModelBuildError(f'model.init: {init!r} is not one of "default", "kaiming_normal"')
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)


def _addressable(model: nn.Module) -> AddressableModel:
    # torch.compile wraps the model; the addressing attributes live on the original module.
    inner = getattr(model, "_orig_mod", model)
    if not isinstance(inner, AddressableModel):
        raise TypeError(f"{type(inner).__name__} is not a model of engine.models")
    return inner


def reference_layers(model: nn.Module) -> dict[int, str]:
    """The reference's integer layer keys (reference-spec.md §2.2) -> dotted module path."""
    return dict(_addressable(model).reference_layers)


def conv_layers(model: nn.Module) -> list[str]:
    """The kernel pipeline's conv list (resnet32: the 30 non-stem convs in key order)."""
    return list(_addressable(model).kernel_layers)


def _key_ranges(keys: list[int]) -> str:
    """[-2, -1, 0, 1, 2, 5] -> "-2, -1, 0..2, 5" (negative keys are aliases, listed one by one)."""
    parts = [str(k) for k in keys if k < 0]
    run: list[int] = []
    for key in [k for k in keys if k >= 0] + [None]:
        if run and (key is None or key != run[-1] + 1):
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}")
            run = []
        if key is not None:
            run.append(key)
    return ", ".join(parts)


def _valid_choices(model: AddressableModel) -> str:
    keys = sorted(model.reference_layers)
    names = ["last_conv"] + (["penultimate_fc"] if model.penultimate_fc else [])
    key_text = f"reference keys {_key_ranges(keys)}; " if keys else ""
    return f"valid: {', '.join(names)}; {key_text}or a dotted module path (python -m engine layers MODEL)"


def resolve_layer(model: nn.Module, key: str) -> tuple[str, nn.Module]:
    """(dotted path, module) for a layer key; LayerKeyError listing valid choices otherwise."""
    inner = _addressable(model)
    name = type(inner).__name__
    key = str(key).strip()
    if key == "last_conv":
        path = inner.last_conv
    elif key == "penultimate_fc":
        if inner.penultimate_fc is None:
            raise LayerKeyError(
                f'{name} has no hidden fully-connected layer, so "penultimate_fc" names nothing; '
                + _valid_choices(inner)
            )
        path = inner.penultimate_fc
    elif re.fullmatch(r"[+-]?\d+", key):
        number = int(key)
        if number not in inner.reference_layers:
            raise LayerKeyError(f"{name} has no reference layer key {number}; " + _valid_choices(inner))
        path = inner.reference_layers[number]
    else:
        path = re.sub(r"\[(\d+)\]", r".\1", key)  # layer3[4].conv2 -> layer3.4.conv2
        modules = dict(inner.named_modules())
        if path not in modules or not path:
            close = difflib.get_close_matches(path, [m for m in modules if m], n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise LayerKeyError(f'{name} has no layer "{key}"{hint}; ' + _valid_choices(inner))
    return path, inner.get_submodule(path)


def describe_layers(
    model: nn.Module, input_shape: tuple[int, int, int]
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(path, type, per-sample output shape) of every leaf module, from one forward pass of a zero
    image of shape (C, H, W) in eval mode. Leaves the forward never calls get the shape ()."""
    inner = _addressable(model)
    leaves = [(n, m) for n, m in inner.named_modules() if n and not any(True for _ in m.children())]
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(path: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if path not in shapes and isinstance(output, torch.Tensor):
                shapes[path] = tuple(output.shape[1:])

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in leaves]
    was_training = inner.training
    param = next(inner.parameters())
    try:
        inner.eval()
        with torch.no_grad():
            inner(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        inner.train(was_training)
    return [(n, type(m).__name__, shapes.get(n, ())) for n, m in leaves]
