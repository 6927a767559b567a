"""The shipped long-tail recipes of experiments.toml: they validate, and they say what the papers say."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.schema.validate import from_dict
from mdtui.cli import app
from mdtui.registry.plan import engine_config, load_plan, select_experiments
from mdtui.registry.rules import PAPER_METRICS
from mdtui.runs.prepare import dependency_order

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "experiments.toml"
RECIPE_GROUPS = {
    "Long-tail methods · CIFAR-10-LT (ρ=100)": ("cifar10", "lt10"),
    "Long-tail methods · CIFAR-100-LT (ρ=100)": ("cifar100", "lt100"),
}
METHODS = ("ce", "crt", "lws", "taunorm", "mixup", "cutmix", "mislas-s1", "mislas")


@pytest.fixture(scope="module")
def plan():
    return load_plan(SHIPPED, env={})


def test_mdtui_validate_accepts_the_shipped_file(monkeypatch):
    monkeypatch.delenv("MDTUI_DATA_ROOT", raising=False)
    result = CliRunner().invoke(app, ["validate", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok ")


@pytest.mark.parametrize("group", list(RECIPE_GROUPS))
def test_every_recipe_group_validates_and_gives_engine_configs(plan, group):
    dataset, prefix = RECIPE_GROUPS[group]
    exps = select_experiments(plan, [group])
    assert [e.name for e in exps] == [f"{prefix}-{m}" for m in METHODS]
    for exp in exps:
        for seed in exp.seeds:
            init = "/ckpt/best.pt" if exp.upstream else None
            cfg = from_dict(engine_config(plan, exp, run_id="r", seed=seed, init_checkpoint=init))
            assert cfg.model.name == "resnet32" and cfg.data.name == dataset
            assert cfg.data.imbalance_ratio == 100
        assert "recipe" in exp.tags
    # one `mdtui queue add GROUP`: every upstream is in the group and runs before its dependants
    names = [e.name for e in exps]
    assert all(e.upstream in names for e in exps if e.upstream)
    ordered = [e.name for e in dependency_order(plan, exps)]
    for exp in exps:
        if exp.upstream:
            assert ordered.index(exp.upstream) < ordered.index(exp.name)


@pytest.mark.parametrize("group", list(RECIPE_GROUPS))
def test_recipes_carry_the_papers_hyper_parameters_and_numbers(plan, group):
    _, prefix = RECIPE_GROUPS[group]
    exps = {e.name.removeprefix(prefix + "-"): e for e in select_experiments(plan, [group])}
    ce, crt, lws, tau = exps["ce"], exps["crt"], exps["lws"], exps["taunorm"]
    assert ce.baseline and plan.baseline_of(exps["mislas"]) is ce
    assert len(ce.seeds) >= 3  # enough for `mdtui report` to tell a Δ from seed noise
    # the LDAM-DRW / BagofTricks CE recipe
    assert ce.config["epochs"] == 200 and ce.config["optim"]["weight_decay"] == 2e-4
    assert ce.config["schedule"]["milestones"] == [160, 180] and ce.config["schedule"]["factor"] == 0.01
    # cRT and LWS: stage 2 on the CE checkpoint, classifier only, class-balanced data
    for two in (crt, lws):
        assert two.upstream == ce.name and two.config["epochs"] == 30
        assert two.config["sampler"]["name"] == "balanced_iid"
    assert crt.config["decouple"]["train"] == "classifier" and crt.config["decouple"]["reset_classifier"]
    assert lws.config["decouple"]["train"] == "lws" and not lws.config["decouple"]["reset_classifier"]
    # τ-norm: no training, one epoch per τ
    assert tau.upstream == ce.name and tau.config["epochs"] == len(tau.config["tau_norm"]["taus"])
    # MiSLAS: mixup stage 1, then label-aware smoothing + LWS from it
    s1, s2 = exps["mislas-s1"], exps["mislas"]
    assert s1.config["mix"]["method"] == "mixup" and s1.config["schedule"]["factor"] == 0.1
    assert s2.upstream == s1.name and s2.config["mix"]["method"] == "none"
    assert s2.config["loss"]["name"] == "label_aware_smoothing" and s2.config["epochs"] == 10
    assert s2.config["decouple"]["train"] == "classifier+lws"
    assert exps["cutmix"].config["mix"]["method"] == "cutmix"
    # every method but CutMix names its paper's figure, and the description repeats it
    for method, exp in exps.items():
        if method == "cutmix":
            assert not exp.paper and "no verified published figure" in exp.description
            continue
        assert set(exp.paper) <= {*PAPER_METRICS, "source"} and exp.paper["source"]
        assert f"{exp.paper['acc1']:g}" in exp.description, (exp.name, exp.description)


def test_the_papers_figures(plan):
    paper = {e.name: e.paper.get("acc1") for e in plan.experiments.values() if e.paper}
    # MiSLAS README; BagofTricks-LT trick gallery (100 - error)
    assert paper["lt10-mislas"] == 82.5 and paper["lt100-mislas"] == 47.0
    assert paper["lt10-crt"] == pytest.approx(100 - 25.01) and paper["lt100-crt"] == pytest.approx(
        100 - 59.74
    )
    assert paper["lt10-taunorm"] == pytest.approx(100 - 27.30)
