"""The model zoo: every registered architecture builds, runs forward/backward and addresses its layers."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from engine.models import (
    MODELS,
    LayerKeyError,
    ModelBuildError,
    NormedLinear,
    build_model,
    conv_layers,
    describe_layers,
    reference_layers,
    resolve_layer,
)
from engine.models.alexnet import alexnet_feature_size
from engine.schema.config import MODEL_NAMES, ModelConfig

# The smallest input each architecture accepts (the resnets work down to 1 px; 8 keeps BN honest).
SMALLEST = {"vgg16": 32, "alexnet": 15, "alexnetv2": 63, "alexnetv3": 9}
# Too slow for a backward on 2 CPU cores in the unit suite; their forward is still checked.
FORWARD_ONLY = {"resnet152"}


def build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name), 3, 5, image_size=SMALLEST.get(name, 8), **kwargs)


@functools.cache
def built(name: str) -> nn.Module:
    """One shared instance per architecture (building the 100M-parameter ones costs seconds)."""
    return build(name)


def test_registry_names_equal_config_catalogue() -> None:
    assert sorted(MODELS.names()) == sorted(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_at_smallest_size(name: str) -> None:
    model = built(name)
    model.zero_grad(set_to_none=True)
    size = SMALLEST.get(name, 8)
    assert model.min_input_size <= size
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 5)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 4]))
    assert torch.isfinite(loss)
    if name in FORWARD_ONLY:
        return
    loss.backward()
    head_weight = model.get_submodule(model.head).weight
    assert head_weight.grad is not None and torch.isfinite(head_weight.grad).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_named_layers_resolve(name: str) -> None:
    model = built(name)
    head = model.get_submodule(model.head)
    assert isinstance(head, nn.Linear) and head.out_features == 5
    assert head is [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    keys = reference_layers(model)
    assert keys, "every model defines at least its -1 key"
    for key, path in keys.items():
        assert resolve_layer(model, str(key)) == (path, model.get_submodule(path))
    path, module = resolve_layer(model, "last_conv")
    assert isinstance(module, nn.Conv2d)
    assert conv_layers(model) and all(
        isinstance(model.get_submodule(p), nn.Conv2d) for p in conv_layers(model)
    )
    if model.penultimate_fc is None:
        with pytest.raises(LayerKeyError, match="last_conv"):
            resolve_layer(model, "penultimate_fc")
    else:
        assert isinstance(resolve_layer(model, "penultimate_fc")[1], nn.Linear)


@pytest.mark.parametrize("name", ["resnet32", "alexnetv3"])
def test_normed_head_replaces_final_linear(name: str) -> None:
    model = build(name, normed_head=True)
    head = model.get_submodule(model.head)
    assert isinstance(head, NormedLinear) and head.out_features == 5
    logits = model.eval()(torch.randn(2, 3, SMALLEST.get(name, 8), SMALLEST.get(name, 8)))
    assert logits.abs().max() <= 1.0 + 1e-5  # cosine logits


def test_resnet32_size_and_reference_keys() -> None:
    model = built("resnet32")
    assert abs(sum(p.numel() for p in model.parameters()) - 0.46e6) < 0.01e6
    keys = reference_layers(model)
    assert sorted(keys) == list(range(-1, 30))
    assert keys[0] == "layer1.0.conv1" and keys[9] == "layer1.4.conv2" and keys[29] == "layer3.4.conv2"
    assert keys[-1] == "layer3.4.conv2"
    assert conv_layers(model) == [keys[i] for i in range(30)]
    assert resolve_layer(model, "layer3[4].conv2")[0] == "layer3.4.conv2"
    assert resolve_layer(model, "last_conv")[0] == "layer3.4.conv2"


def test_resnet32_option_a_shortcut_is_parameter_free() -> None:
    model = built("resnet32")
    block = model.layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # identity, subsampled, zero-padded 8 each side
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@pytest.mark.parametrize(
    ("name", "key", "path"),
    [
        ("resnet50", "-1", "conv5_x.2.residual_function.6"),
        ("resnet50", "1", "conv2_x.0.residual_function.0"),
        ("resnet18", "16", "conv5_x.1.residual_function.3"),
        ("vgg16", "-2", "features.40"),
        ("vgg16", "-1", "classifier.3"),
        ("alexnet", "-1", "classifier.4"),
        ("alexnetv2", "4", "features.10"),
        ("senet34", "-1", "stage4.2.excitation.2"),
        ("resnext50", "47", "conv5.2.split_transforms.6"),
        ("wideresnet28_10", "-1", "layer3.3.conv2"),
    ],
)
def test_reference_keys_match_spec_table(name: str, key: str, path: str) -> None:
    assert resolve_layer(built(name), key)[0] == path


def test_resnext_first_pointwise_conv_is_grouped() -> None:
    conv = built("resnext50").get_submodule("conv2.0.split_transforms.0")
    assert conv.kernel_size == (1, 1) and conv.groups == 32


def test_alexnet_classifier_follows_image_size() -> None:
    # the reference's two hard-wired sizes: 224 px -> 14x14 (FORK), 32 px -> 2x2 (OFFICIAL)
    assert alexnet_feature_size(224) == 14 and alexnet_feature_size(32) == 2
    small = build_model(ModelConfig(name="alexnet"), 3, 10, image_size=32)
    assert small.classifier[1].in_features == 256 * 2 * 2
    with pytest.raises(ValueError, match="built for 32 px"):
        small(torch.randn(1, 3, 64, 64))


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ModelBuildError, match='unknown model "resnet23".*valid: .*resnet32'):
        build_model(ModelConfig(name="resnet23"), 3, 10)
    with pytest.raises(ModelBuildError, match="at least 63 px"):
        build_model(ModelConfig(name="alexnetv2"), 3, 10, image_size=32)
    model = built("resnet32")
    with pytest.raises(LayerKeyError, match="no reference layer key 30.*-1, 0..29"):
        resolve_layer(model, "30")
    with pytest.raises(LayerKeyError, match="did you mean 'layer3.4.conv2'"):
        resolve_layer(model, "layer3.4.conv3")


def test_describe_layers_lists_leaves_with_shapes() -> None:
    model = build("resnet32").train()
    rows = {path: (kind, shape) for path, kind, shape in describe_layers(model, (3, 32, 32))}
    assert rows["conv1"] == ("Conv2d", (16, 32, 32))
    assert rows["layer3.4.conv2"] == ("Conv2d", (64, 8, 8))
    assert rows["linear"] == ("Linear", (5,))
    assert model.training  # mode restored


def test_layers_command_lists_paths_shapes_and_every_name(capsys) -> None:
    from engine.__main__ import layers_main

    assert layers_main(["resnet32", "--input-size", "32"]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.startswith("layer3.4.conv2 "))
    assert "64x8x8" in line and "[29, -1, last_conv]" in line
    assert layers_main(["vgg16", "--json"]) == 0
    doc = __import__("json").loads(capsys.readouterr().out)
    fc = next(d for d in doc if d["path"] == "classifier.3")
    assert fc["keys"] == ["-1", "penultimate_fc"] and fc["shape"] == [4096]
    assert layers_main(["resnet33"]) == 2
