"""Metrics: top-k, per-class, many/medium/few, confusion."""

from __future__ import annotations

import pytest
import torch

from engine.metrics import EvalAccumulator, shot_accuracy, shot_groups, topk_correct


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, (1, 2, 3)) == [1, 2, 3]


def test_shot_group_boundaries():
    groups = shot_groups([101, 100, 20, 19, 500, 1])
    assert groups == {"many": [0, 4], "medium": [1, 2], "few": [3, 5]}
    acc = shot_accuracy([100.0, 50.0, 0.0, 25.0, 80.0, None], [101, 100, 20, 19, 500, 1])
    assert acc["many"] == pytest.approx(90.0)
    assert acc["medium"] == pytest.approx(25.0)
    assert acc["few"] == pytest.approx(25.0)  # the class without samples is left out
    assert shot_accuracy([10.0], [5])["many"] is None


def test_accumulator_summary_in_percent():
    acc = EvalAccumulator(3, torch.device("cpu"))
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 1, 2])
    acc.update(logits[:2], labels[:2], torch.tensor(2.0))
    acc.update(logits[2:], labels[2:], torch.tensor(6.0))
    out = acc.result([200, 50, 5])
    assert out["acc1"] == pytest.approx(75.0)
    assert out["err1"] == pytest.approx(25.0)
    assert out["acc5"] == pytest.approx(100.0)
    assert out["loss"] == pytest.approx(2.0)
    assert out["per_class"] == pytest.approx([100.0, 50.0, 100.0])
    assert (out["many"], out["medium"], out["few"]) == pytest.approx((100.0, 50.0, 100.0))
    assert out["confusion"].tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
