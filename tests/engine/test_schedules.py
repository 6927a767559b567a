"""Schedules: exact factors of reference-spec.md §4.3."""

from __future__ import annotations

import math

import pytest

from engine.schedules import lr_at, lr_factor
from engine.schema.validate import from_dict


def cfg(schedule: dict, lr: float = 0.1, epochs: int = 200):
    return from_dict({"epochs": epochs, "optim": {"lr": lr}, "schedule": schedule})


def test_warmup_step_head_factors():
    c = cfg({"name": "warmup_step", "warmup_epochs": 5, "milestones": [160, 180], "factor": 0.01})
    got = [lr_factor(e, c.schedule, 200) for e in (0, 1, 2, 3, 4, 5, 159, 160, 179, 180, 199)]
    assert got == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4, 1e-4])
    assert lr_at(0, c) == pytest.approx(0.02)
    assert lr_at(170, c) == pytest.approx(0.001)


def test_warmup_repo_e_over_4_starts_at_zero():
    c = cfg({"name": "warmup_step", "warmup": "repo_e_over_4", "warmup_epochs": 5})
    assert [lr_factor(e, c.schedule, 200) for e in range(6)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.0])


def test_warmup_zero_epochs_means_no_warmup():
    c = cfg({"name": "warmup_step", "warmup_epochs": 0, "milestones": [2]})
    assert [lr_factor(e, c.schedule, 10) for e in range(4)] == pytest.approx([1, 1, 0.01, 0.01])


def test_cosine_matches_closed_form_with_eta_min():
    c = cfg({"name": "cosine", "eta_min": 0.001}, lr=0.1, epochs=10)
    for e in range(10):
        expected = 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2
        assert lr_at(e, c) == pytest.approx(expected)
    assert lr_at(0, c) == pytest.approx(0.1)


def test_cosine_t_max_overrides_epochs():
    c = cfg({"name": "cosine", "t_max": 4}, lr=1.0, epochs=100)
    assert lr_at(2, c) == pytest.approx(0.5)
    assert lr_at(4, c) == pytest.approx(0.0)
    assert lr_at(50, c) == pytest.approx(0.0)


def test_step_constant_and_linear_ramp():
    step = cfg({"name": "step", "step_size": 30, "gamma": 0.1})
    assert [lr_at(e, step) for e in (0, 29, 30, 61)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert lr_at(123, cfg("constant")) == pytest.approx(0.1)
    ramp = cfg({"name": "linear_ramp", "ramp_epochs": 20}, lr=1e-4)
    assert [lr_at(e, ramp) for e in (0, 10, 20, 25)] == pytest.approx([0.0, 5e-5, 1e-4, 1e-4])
