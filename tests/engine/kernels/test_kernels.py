"""Kernel pipeline: layer/class selection, pattern masks, per-class sub-batches, freeze semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.doctor.diagnose import DiagnosisError
from engine.kernels.finetune import frozen_rows, split_by_class
from engine.kernels.patterns import expand_layer_keys, pattern_masks, select_classes, union_masks
from tests.engine.doctor_helpers import FakeBatch, fake_context, one_thread

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

REFERENCE = {k: f"conv{k}" for k in range(30)}


def test_layer_selection_lists_ranges_and_all() -> None:
    assert expand_layer_keys(("all",), REFERENCE, "k") == [str(k) for k in range(30)]
    assert expand_layer_keys(("20..29",), REFERENCE, "k") == [str(k) for k in range(20, 30)]
    assert expand_layer_keys(("3", "1..2", "3", "layer1.0.conv1"), REFERENCE, "k") == [
        "3",
        "1",
        "2",
        "layer1.0.conv1",
    ]
    assert expand_layer_keys(("all",), {-1: "x", -2: "y"}, "k", ["a", "b"]) == ["a", "b"]
    with pytest.raises(DiagnosisError, match="backwards"):
        expand_layer_keys(("5..3",), REFERENCE, "kernels.layers")
    with pytest.raises(DiagnosisError, match=r"\[30, 31\]"):
        expand_layer_keys(("28..31",), REFERENCE, "kernels.layers")


def test_class_selection_all_list_and_tail() -> None:
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert select_classes(10, (), 0, counts) == list(range(10))
    assert select_classes(10, (9, 5, 7), 0, counts) == [5, 7, 9]
    assert select_classes(10, (), 1, counts) == [9]
    assert select_classes(10, (), 3, counts) == [7, 8, 9]
    assert select_classes(4, (), 2, [10, 5, 5, 5]) == [2, 3]  # ties go to the higher index
    with pytest.raises(DiagnosisError, match="out of range"):
        select_classes(10, (10,), 0, counts)


def test_pattern_masks_strictly_above_layer_mean_and_union() -> None:
    u = {"l": torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [0.0, 0.0, 9.0]])}
    masks = pattern_masks(u)
    assert masks["l"].tolist() == [[False, False, True], [False, False, False], [False, False, True]]
    masks["l"][1, 0] = True
    assert union_masks(masks, [0, 1])["l"].tolist() == [True, False, True]


def test_frozen_rows_input_era_leaves_extra_kernels_free() -> None:
    keep = torch.tensor([True, False, True, False])
    assert frozen_rows(keep, 4).tolist() == [1, 3]
    assert frozen_rows(keep, 8).tolist() == [1, 3]  # kernels 4..7 are never masked (reference-spec.md §9.7)


def test_per_class_sub_batches_ascending_and_complete() -> None:
    labels = torch.tensor([2, 0, 2, 1, 0])
    batch = FakeBatch(
        torch.arange(5.0).view(5, 1), labels, torch.tensor([10, 11, 12, 13, 14]), torch.zeros(5, 1)
    )
    parts = split_by_class(batch)
    assert [p.labels.tolist() for p in parts] == [[0, 0], [1], [2, 2]]
    assert [p.index.tolist() for p in parts] == [[11, 14], [13], [10, 12]]
    assert [p.images.flatten().tolist() for p in parts] == [[1.0, 4.0], [3.0], [0.0, 2.0]]
    assert all(p.masks.shape[0] == len(p.labels) for p in parts)


def _resnet_run(tmp_path, kernels: dict, run: str):
    from engine.kernels import build_kernels
    from engine.models import build_model
    from engine.schema.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet32"), 3, 3)
    x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # small maps keep it fast
    y = torch.arange(24) % 3
    config = {
        "model": "resnet32",
        "data": {"name": "synthetic", "num_classes": 3},
        "kernels": {"sift": {"per_class": 4, "mode": "low", "batch_size": 12}, **kernels},
    }
    ctx = fake_context(tmp_path, model, config, x, y, num_classes=3, batch_size=12, run=run)
    plugin = build_kernels(ctx.cfg)
    plugin.setup(ctx)
    return model, plugin, ctx


def _train(model, plugin, batches, steps_per_batch: list[int]) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    model.train()
    for _ in range(2):  # two epochs
        for batch in batches:
            parts = plugin.sub_batches(batch) or [batch]
            steps_per_batch.append(len(parts))
            for part in parts:
                optimizer.zero_grad()
                F.cross_entropy(model(part.images), part.labels).backward()
                plugin.before_step(model, optimizer, part)
                optimizer.step()
                plugin.after_step(model, optimizer, part)


@pytest.mark.parametrize("semantics", ["freeze", "repo_zero_grad"])
def test_masked_kernels_bit_identical_only_under_freeze(tmp_path, semantics: str) -> None:
    kernels = {"layers": ["20..29"], "freeze_layers": ["0..1"], "semantics": semantics}
    model, plugin, ctx = _resnet_run(tmp_path, kernels, semantics)
    dictionaries = json.loads(
        (tmp_path / semantics / "artifacts" / "kernels" / "kernel_dict.json").read_text()
    )
    union = dictionaries["union"]
    path = "layer3.4.conv2"
    weight = model.get_submodule(path).weight
    outside = [k for k in range(weight.shape[0]) if k not in union[path]]
    assert outside and union[path]
    before = weight.detach().clone()
    frozen_before = model.get_submodule("layer1.0.conv1").weight.detach().clone()
    free_before = model.get_submodule("layer2.0.conv1").weight.detach().clone()  # key 10: not selected
    steps: list[int] = []
    _train(model, plugin, ctx.batches["train"], steps)
    assert steps == [3, 3, 3, 3]  # one step per class present in each batch
    after = weight.detach()
    assert not torch.equal(after[union[path]], before[union[path]])
    assert not torch.equal(model.get_submodule("layer2.0.conv1").weight, free_before)
    if semantics == "freeze":
        assert torch.equal(after[outside], before[outside])
        assert torch.equal(model.get_submodule("layer1.0.conv1").weight, frozen_before)
    else:  # only .grad is zeroed: weight decay and momentum still move them (reference-spec.md §9.8)
        assert not torch.equal(after[outside], before[outside])
        assert not torch.equal(model.get_submodule("layer1.0.conv1").weight, frozen_before)


def test_union_mode_reverse_moves_only_the_complement(tmp_path) -> None:
    kernels = {"layers": ["29"], "tail_classes": 1, "mode": "union", "reverse": True}
    model, plugin, ctx = _resnet_run(tmp_path, kernels, "rev")
    assert plugin.classes == [2]  # equal counts: the highest index is the "last tail class"
    dictionaries = json.loads((tmp_path / "rev" / "artifacts" / "kernels" / "kernel_dict.json").read_text())
    selected = dictionaries["union"]["layer3.4.conv2"]
    weight = model.layer3[4].conv2.weight
    before = weight.detach().clone()
    steps: list[int] = []
    _train(model, plugin, ctx.batches["train"], steps)
    assert steps == [1, 1, 1, 1]
    assert torch.equal(weight[selected], before[selected])
    others = [k for k in range(64) if k not in selected]
    assert not torch.equal(weight[others], before[others])
    kinds = {f["kind"] for t, f in ctx.events if t == "artifact"}
    assert {"kernel_mask", "kernel_energy", "kernel_dict", "image_list", "plot"} <= kinds


def test_kernel_diagnosis_cached_and_input_gradients(tmp_path) -> None:
    _resnet_run(tmp_path, {"layers": ["10"], "grad_wrt": "input"}, "a")
    _, _, ctx2 = _resnet_run(tmp_path, {"layers": ["10"], "grad_wrt": "input", "reverse": True}, "b")
    assert ctx2.loader_calls == 0
    with np.load(tmp_path / "a" / "artifacts" / "kernels" / "kernel_mask.npz") as data:
        assert data["layer2.0.conv1"].shape == (3, 16)  # input channels of the first stage-2 conv


@pytest.mark.slow
def test_kernel_run_end_to_end_through_the_engine(tmp_path) -> None:
    from engine.sinks import ListSink
    from engine.train import run
    from tests.engine.engine_helpers import tiny_config

    assert run(tiny_config(epochs=1), tmp_path / "base", ListSink()) == "completed"
    upstream = str(tmp_path / "base" / "checkpoints" / "best.pt")
    kernels = {
        "layers": ["20..29"],
        "sift": {"per_class": 4, "batch_size": 16, "split": "test"},
        "allow_test_split": True,
    }
    sink = ListSink()
    cfg = tiny_config(epochs=1, init_checkpoint=upstream, optim={"lr": 1e-3}, kernels=kernels)
    assert run(cfg, tmp_path / "kt", sink) == "completed", sink.events[-1]
    assert sink.events[-1]["summary"]["leaky"] is True
    arts = sink.of_type("artifact")
    assert {"kernel_mask", "kernel_dict", "image_list"} <= {a["kind"] for a in arts}
    assert all(
        a["summary"]["leaky"] is True
        for a in arts
        if a["kind"].startswith("kernel") or a["kind"] == "image_list"
    )
    assert len(sink.of_type("epoch")) == 1


def test_per_class_steps_take_their_class_plan_from_the_split(tmp_path) -> None:
    """Each sub-batch's class comes from the host-side split, not from reading its device labels."""
    kernels = {"layers": ["29"], "classes": [0, 2], "freeze_layers": ["0"]}
    _, plugin, ctx = _resnet_run(tmp_path, kernels, "plans")
    labels = torch.tensor([2, 0, 2, 1, 0])
    batch = FakeBatch(torch.zeros(5, 3, 8, 8), labels, torch.arange(5), None)
    parts = plugin.sub_batches(batch)
    assert [p.labels.tolist() for p in parts] == [[0, 0], [1], [2, 2]]
    frozen_only = plugin.frozen_plan
    assert [plugin._plan_for(p) for p in parts] == [
        plugin.plans[0] + frozen_only,
        frozen_only,  # class 1 is not selected: only the frozen layers stay put
        plugin.plans[2] + frozen_only,
    ]
