"""The shipped recipes that carry a paper's figure run what that paper's code runs."""

from __future__ import annotations

from pathlib import Path

from mdtui.registry.plan import load_plan

SHIPPED = Path(__file__).resolve().parents[2] / "experiments.toml"


def test_crt_and_lws_recipes_re_estimate_bn_as_kang_et_al() -> None:
    """Kang et al.'s classifier-balancing calls model.train() on the frozen backbone in stage 2, so
    BatchNorm statistics follow the class-balanced stream: the engine's bn = "shift"."""
    plan = load_plan(SHIPPED, env={})
    decoupled = {
        name: exp.config["decouple"]
        for name, exp in plan.experiments.items()
        if isinstance(exp.config.get("decouple"), dict)
        and exp.config["decouple"].get("train") in ("classifier", "lws")
    }
    assert {"lt10-crt", "lt10-lws", "lt100-crt", "lt100-lws"} <= set(decoupled)
    assert {name: block["bn"] for name, block in decoupled.items()} == dict.fromkeys(decoupled, "shift")
