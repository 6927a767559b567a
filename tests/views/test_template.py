"""The experiments.toml template offered in an empty folder loads, and holds the runnable demo group."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdtui.registry.plan import load_plan
from mdtui.views.template import write_template


def test_the_template_is_a_valid_plan_with_the_demo_group(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    write_template(path)
    plan = load_plan(path)
    assert [e.name for e in plan.group("demo")] == ["demo-ce", "demo-refl", "demo-md", "demo-kernels"]
    with pytest.raises(FileExistsError):  # a file written meanwhile is never overwritten
        write_template(path)
