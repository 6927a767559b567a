"""The ``paper`` experiment key: the published figures shown beside the measured ones."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mdtui.registry.plan import ExperimentsError, load_plan

HEAD = """\
[defaults]
epochs = 2
model = "resnet32"
data = { name = "digits", imbalance_ratio = 10 }
"""


def load(tmp_path: Path, body: str):
    path = tmp_path / "experiments.toml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return load_plan(path, env={})


def issues(tmp_path: Path, body: str):
    with pytest.raises(ExperimentsError) as info:
        load(tmp_path, body)
    return info.value.issues


def test_paper_figures_are_read_and_not_inherited_through_extends(tmp_path):
    plan = load(
        tmp_path,
        """
        [experiment.mislas-s1]
        group = "g"
        baseline = true
        paper = { acc1 = 72.8, source = "MiSLAS README, CIFAR-10-LT ρ=100, stage 1" }
        sweep = { epochs = [2, 3] }
        [experiment.cutmix]
        extends = "mislas-s1"
        epochs = 3
        [experiment.mislas-s2]
        extends = "mislas-s1"
        from = "mislas-s1[epochs=2]"
        paper = { acc1 = 82.5, many = 90, source = "MiSLAS README" }
        """,
    )
    exps = plan.experiments
    stage1 = {"acc1": 72.8, "source": "MiSLAS README, CIFAR-10-LT ρ=100, stage 1"}
    assert exps["mislas-s1[epochs=2]"].paper == exps["mislas-s1[epochs=3]"].paper == stage1  # sweep points
    # a variant is another method: the parent's figure beside its result would be a false claim
    assert exps["cutmix"].paper == {}
    assert exps["mislas-s2"].paper == {"acc1": 82.5, "many": 90, "source": "MiSLAS README"}
    assert "paper" not in exps["mislas-s2"].config  # a manager key: the engine never sees it


@pytest.mark.parametrize(
    "value,message",
    [
        ("82.5", "expected a table of the paper's figures"),
        ('{ acc_1 = 82.5, source = "x" }', 'unknown figure "acc_1" (did you mean "acc1"?)'),
        ("{ acc1 = 182.5 }", "acc1 = 182.5: expected a percentage between 0 and 100"),
        ('{ acc1 = "82.5" }', "expected a percentage"),
        ("{ acc1 = true }", "expected a percentage"),
        ('{ source = "MiSLAS" }', "names no figure"),
        ('{ acc1 = 82.5, source = "" }', "expected the text naming where the figures come from"),
    ],
)
def test_bad_paper_values_are_located_errors(tmp_path, value, message):
    (issue,) = issues(tmp_path, f"[experiment.a]\npaper = {value}\n")
    assert issue.key == "paper" and issue.experiment == "a" and issue.line == 6
    assert message in issue.message


def test_paper_cannot_go_in_defaults(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(HEAD + "paper = { acc1 = 70.0 }\n[experiment.a]\n", encoding="utf-8")
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    assert "cannot be set in [defaults]" in info.value.issues[0].message
