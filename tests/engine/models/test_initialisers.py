"""Initial values the long-tail methods start from, against their authors' code (docs: methods table)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.decoupled import ScaledHead, tau_normalised
from engine.models import NormedLinear, build_model
from engine.schema.config import ModelConfig


def test_cosine_head_starts_with_unit_class_vectors() -> None:
    """LDAM-DRW's resnet_cifar.py renormalises every class vector to length 1 at init."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet32"), 3, 10, normed_head=True)
    head = model.get_submodule(model.head)
    assert isinstance(head, NormedLinear)
    norms = head.weight.norm(dim=1)
    assert norms.shape == (10,) and torch.allclose(norms, torch.ones(10), atol=1e-6)
    assert head.weight.abs().max() <= 1.0  # directions drawn in the [-1, 1] cube
    assert len({tuple(r) for r in head.weight.detach().round(decimals=4).tolist()}) == 10  # not all alike
    head.weight.data.mul_(7.0)
    head.reset_parameters()  # cRT's fresh classifier on an LDAM model starts the same way
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(10), atol=1e-6)


def test_unit_vectors_turn_at_the_authors_speed() -> None:
    """Same logits whatever the length, but one SGD step moves the cosine logits ~1/|w|^2 as far:
    the issue's measured 22x slower head came from rows of length ~4.6."""
    torch.manual_seed(1)
    features, labels = torch.randn(32, 64), torch.randint(0, 10, (32,))

    def logit_change(scale: float) -> float:
        head = NormedLinear(64, 10)
        head.weight.data.mul_(scale)
        before = head(features).detach()
        loss = F.cross_entropy(head(features) * 30.0, labels)  # LDAM's s = 30
        loss.backward()
        with torch.no_grad():
            head.weight -= 0.1 * head.weight.grad
        return (head(features) - before).abs().mean().item()

    unit, long = logit_change(1.0), logit_change(4.6)
    assert unit > 15 * long


def test_lws_scales_start_at_one_and_keep_the_logits() -> None:
    """Kang et al.'s LWS classifier: scales = ones(num_classes) over the frozen stage-1 head."""
    head = nn.Linear(8, 4)
    scaled = ScaledHead(head)
    assert torch.equal(scaled.scales.detach(), torch.ones(4))
    x = torch.randn(3, 8)
    assert torch.allclose(scaled(x), head(x))


def test_tau_norm_divides_each_class_vector_by_its_norm_to_the_tau() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(tau_normalised(weight, 0.0), weight)
    assert torch.allclose(tau_normalised(weight, 1.0).norm(dim=1), torch.ones(2))
    assert torch.allclose(tau_normalised(weight, 0.5)[0], weight[0] / 5.0**0.5)


def test_kaiming_normal_init_is_ldam_drw_s_and_default_is_pytorch_s() -> None:
    """LDAM-DRW / MiSLAS: kaiming_normal_ (fan_in, gain sqrt 2) on every Conv2d and Linear weight;
    "default": PyTorch's kaiming_uniform_(a=sqrt 5), std 1/sqrt(3 fan_in)."""
    torch.manual_seed(2)
    for init, std_of in (
        ("kaiming_normal", lambda fan: (2.0 / fan) ** 0.5),
        ("default", lambda fan: (1 / (3 * fan)) ** 0.5),
    ):
        model = build_model(ModelConfig(name="resnet32", init=init), 3, 100)
        conv = model.get_submodule("layer3.4.conv2")  # 64 x 64 x 3 x 3: fan_in 576
        assert abs(conv.weight.std().item() / std_of(576) - 1) < 0.05, init
        linear = model.get_submodule("linear")  # fan_in 64, 6400 weights
        assert abs(linear.weight.std().item() / std_of(64) - 1) < 0.05, init
    cosine = build_model(ModelConfig(name="resnet32", init="kaiming_normal"), 3, 10, normed_head=True)
    assert torch.allclose(cosine.get_submodule("linear").weight.norm(dim=1), torch.ones(10), atol=1e-6)
