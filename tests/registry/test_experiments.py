"""experiments.toml -> Plan: every error class with its line and key, sweeps, extends, from, settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.schema.validate import from_dict
from mdtui.registry.plan import (
    ExperimentsError,
    engine_config,
    find_experiment,
    knobs,
    load_plan,
    select_experiments,
)

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
[defaults]
epochs = 2
model = "resnet32"
data = { name = "digits", imbalance_ratio = 10 }
"""


def write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(head + textwrap.dedent(body), encoding="utf-8")
    return path


def plan_of(tmp_path, body, head=HEAD, env=None):
    return load_plan(write(tmp_path, body, head), env=env or {})


def issues_of(tmp_path, body, head=HEAD):
    with pytest.raises(ExperimentsError) as info:
        load_plan(write(tmp_path, body, head), env={})
    return info.value.issues


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # issues then name the file as "experiments.toml"
    monkeypatch.delenv("MDTUI_DATA_ROOT", raising=False)


# --------------------------------------------------------------------------- errors, each located


def test_unknown_key_names_file_line_experiment_key_and_suggestion(tmp_path):
    body = """
    [experiment.r32-refl]
    loss = { name = "refl", treshold = 0.4 }
    """
    path = write(tmp_path, body)
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    line = line_of(path, "treshold")
    assert info.value.format() == (
        f'experiments.toml:{line}: experiment "r32-refl", key loss.treshold: '
        'unknown key "treshold" (did you mean "threshold"?)'
    )
    (issue,) = info.value.issues
    assert (issue.line, issue.experiment, issue.key) == (line, "r32-refl", "loss.treshold")


def test_toml_syntax_error_shows_line_and_column(tmp_path):
    path = write(tmp_path, "[experiment.a]\nepochs = = 3\n")
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    (issue,) = info.value.issues
    assert issue.line == line_of(path, "epochs = =") and issue.column == 10
    assert info.value.format().startswith(f"experiments.toml:{issue.line}:10: TOML syntax error")


def test_duplicate_table_is_a_syntax_error_with_its_line(tmp_path):
    path = write(tmp_path, "[experiment.a]\nepochs = 1\n[experiment.a]\nepochs = 2\n")
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    assert info.value.issues[0].line == 7 and "syntax" in info.value.issues[0].message


def test_wrong_type_is_located_on_its_key(tmp_path):
    body = """
    [experiment.a]
    group = "g"
    [experiment.a.optim]
    name = "sgd"
    lr = "fast"
    """
    (issue,) = issues_of(tmp_path, body)
    assert issue.key == "optim.lr" and "expected a number" in issue.message
    assert issue.line == line_of(tmp_path / "experiments.toml", 'lr = "fast"')


def test_kernels_on_several_processes_is_refused_where_the_ranks_come_from(tmp_path):
    """Per-class kernel fine-tuning runs in one process: refused by validation, not at the run's start."""
    body = """
    [experiment.by_gpus]
    gpus = 2
    kernels = { layers = ["20..29"] }
    [experiment.by_processes]
    distributed = { processes = 2 }
    kernels = { layers = ["20..29"] }
    [experiment.by_nodes]
    nodes = 2
    distributed = { processes = 1 }
    kernels = { layers = ["20..29"] }
    [experiment.one_process_on_two_gpus]
    gpus = 2
    distributed = { processes = 1 }
    kernels = { layers = ["20..29"] }
    """
    found = {i.experiment: i for i in issues_of(tmp_path, body)}
    assert set(found) == {"by_gpus", "by_processes", "by_nodes"}  # one process on two GPUs is fine
    path = tmp_path / "experiments.toml"
    assert found["by_gpus"].key == "kernels" and "gets 2 GPU(s) on 1 node(s)" in found["by_gpus"].message
    assert found["by_gpus"].line == line_of(path, "kernels = ")
    assert found["by_processes"].key == "distributed.processes"
    assert "set distributed.processes = 1" in found["by_processes"].message
    assert "on 2 node(s)" in found["by_nodes"].message
    assert all("runs in one process" in i.message for i in found.values())


@pytest.mark.parametrize(
    ("line", "key", "valid"),
    [
        ('model = "resnet322"', "model.name", "resnet32"),
        ('loss = "refll"', "loss.name", "refl"),
        ('data = { name = "cifar11" }', "data.name", "cifar10"),
    ],
)
def test_unknown_names_list_the_valid_ones(tmp_path, line, key, valid):
    (issue,) = issues_of(tmp_path, f"[experiment.a]\n{line}\n")
    assert issue.key == key and f'did you mean "{valid}"' in issue.message and "valid:" in issue.message
    assert issue.line == line_of(tmp_path / "experiments.toml", line)


def test_manager_key_typo_suggests_the_manager_key(tmp_path):
    (issue,) = issues_of(tmp_path, "[experiment.a]\nbasline = true\n")
    assert issue.key == "basline" and 'did you mean "baseline"' in issue.message


def test_wrong_manager_types(tmp_path):
    body = """
    [experiment.a]
    baseline = "yes"
    seeds = [1, 1]
    gpus = 0
    tags = "x"
    """
    keys = {i.key for i in issues_of(tmp_path, body)}
    assert keys == {"baseline", "seeds", "gpus", "tags"}


def test_all_errors_are_collected_in_line_order(tmp_path):
    body = """
    [experiment.a]
    epochs = "two"
    [experiment.b]
    model = "nope"
    [experiment.c]
    extends = "zzz"
    """
    issues = issues_of(tmp_path, body)
    assert [i.experiment for i in issues] == ["a", "b", "c"]
    assert [i.line for i in issues] == sorted(i.line for i in issues)


def test_mistake_in_defaults_is_reported_once_at_its_line(tmp_path):
    head = HEAD + "optim = { lr = 0.1, momentun = 0.9 }\n"
    issues = issues_of(tmp_path, "[experiment.a]\n[experiment.b]\n", head=head)
    assert len(issues) == 1 and issues[0].line == 5 and issues[0].key == "optim.momentun"


def test_inherited_mistake_points_at_the_parent_line(tmp_path):
    body = """
    [experiment.parent]
    loss = { name = "fl", gama = 2 }
    [experiment.child]
    extends = "parent"
    """
    issues = issues_of(tmp_path, body)
    assert len(issues) == 1 and issues[0].line == line_of(tmp_path / "experiments.toml", "gama")


def test_extends_cycle_is_named(tmp_path):
    body = """
    [experiment.a]
    extends = "c"
    [experiment.b]
    extends = "a"
    [experiment.c]
    extends = "b"
    """
    (issue,) = issues_of(tmp_path, body)
    assert issue.key == "extends" and "extends cycle: a -> c -> b -> a" in issue.message
    assert issue.line == line_of(tmp_path / "experiments.toml", 'extends = "c"')


def test_extends_missing_lists_closest(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.base-ce]\n[experiment.x]\nextends = "base-c"\n')
    assert "closest: base-ce" in issue.message and issue.line == line_of(
        tmp_path / "experiments.toml", "extends"
    )


def test_from_missing_lists_closest(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.base-ce]\n[experiment.x]\nfrom = "bse-ce"\n')
    assert issue.key == "from" and "closest: base-ce" in issue.message
    assert issue.line == line_of(tmp_path / "experiments.toml", "from =")


def test_from_cycle_is_named(tmp_path):
    body = """
    [experiment.a]
    from = "b"
    [experiment.b]
    from = "a"
    """
    (issue,) = issues_of(tmp_path, body)
    assert "from cycle: a -> b -> a" in issue.message


def test_from_self_is_a_cycle(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.a]\nfrom = "a"\n')
    assert "from cycle: a -> a" in issue.message


def test_from_a_sweep_table_must_name_a_point(tmp_path):
    body = """
    [experiment.s]
    loss = { name = "refl" }
    sweep = { "loss.threshold" = [0.5, 0.4] }
    [experiment.t]
    from = "s"
    """
    (issue,) = issues_of(tmp_path, body)
    assert "sweep of 2" in issue.message and "s[loss.threshold=0.4]" in issue.message


def test_combine_with_must_exist(tmp_path):
    body = """
    [experiment.md]
    doctor = { mask = { combine_with = "mdd-x" } }
    """
    (issue,) = issues_of(tmp_path, body)
    assert issue.key == "doctor.mask.combine_with" and issue.line == 7


def test_sweep_key_that_does_not_exist(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.a]\nsweep = { "optim.lrr" = [0.1] }\n')
    assert issue.key == "sweep.optim.lrr" and 'did you mean "optim.lr"' in issue.message and issue.line == 6


def test_sweep_of_seed_points_to_seeds(tmp_path):
    (issue,) = issues_of(tmp_path, "[experiment.a]\nsweep = { seed = [1, 2] }\n")
    assert "seeds" in issue.message


def test_sweep_limit(tmp_path):
    head = "[settings]\nsweep_limit = 3\n" + HEAD
    (issue,) = issues_of(tmp_path, '[experiment.a]\nsweep = { "optim.lr" = [1, 2], epochs = [1, 2] }\n', head)
    assert "expands to 4" in issue.message and "sweep_limit = 3" in issue.message


def test_sweep_value_error_points_at_sweep_line(tmp_path):
    path = write(tmp_path, '[experiment.a]\nloss = "refl"\nsweep = { "loss.threshold" = [0.5, 2.0] }\n')
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    (issue,) = info.value.issues
    assert issue.experiment == "a[loss.threshold=2.0]" and issue.line == line_of(path, "sweep")


def test_expanded_name_collision(tmp_path):
    (issue,) = issues_of(tmp_path, "[experiment.a]\nsweep = { epochs = [1, 1] }\n")
    assert "already defined" in issue.message


@pytest.mark.parametrize("name", ['"a/b"', '"a\\\\b"', '".hidden"', '"up..x"', '"tab\\tname"', '"x[y=1]"'])
def test_unsafe_names_are_rejected(tmp_path, name):
    (issue,) = issues_of(tmp_path, f"[experiment.{name}]\n")
    assert "invalid experiment name" in issue.message and issue.line == 5


def test_reserved_engine_keys(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.a]\ninit_checkpoint = "x.pt"\n')
    assert issue.key == "init_checkpoint" and "from =" in issue.message


def test_two_baselines_in_a_group(tmp_path):
    body = """
    [experiment.a]
    group = "g"
    baseline = true
    [experiment.b]
    group = "g"
    baseline = true
    """
    (issue,) = issues_of(tmp_path, body)
    assert issue.experiment == "b" and 'already has baseline "a"' in issue.message and issue.line == 11


def test_leaky_sift_needs_allow_test_split(tmp_path):
    (issue,) = issues_of(tmp_path, '[experiment.k]\nkernels = { sift = { split = "test" } }\n')
    assert issue.key == "kernels.sift.split" and "allow_test_split" in issue.message


def test_settings_errors(tmp_path):
    head = "[settings]\nmax_devise = 2\nmax_utilization = 150\n" + HEAD
    issues = issues_of(tmp_path, "[experiment.a]\n", head)
    assert [(i.line, i.key) for i in issues] == [(2, "settings.max_devise"), (3, "settings.max_utilization")]
    assert 'did you mean "max_devices"' in issues[0].message


def test_missing_file(tmp_path):
    with pytest.raises(ExperimentsError) as info:
        load_plan(tmp_path / "nope.toml")
    assert "file not found" in info.value.format()


# --------------------------------------------------------------------------- building the plan


def test_settings_parsed_and_paths_relative_to_the_file(tmp_path):
    head = (
        '[settings]\nruns_dir = "out/runs"\ndata_root = "data"\nexclude_devices = [3, "5"]\n'
        "max_devices = 2\nstop_grace_seconds = 5\n" + HEAD
    )
    plan = plan_of(tmp_path, "[experiment.a]\n", head)
    s = plan.settings
    assert s.runs_dir == tmp_path / "out/runs" and s.results_log == tmp_path / "RESULTS.md"
    assert s.data_root == tmp_path / "data" and s.exclude_devices == ("3", "5")
    assert (s.max_devices, s.stop_grace_seconds, s.sweep_limit) == (2, 5.0, 256)


def test_env_data_root_wins_over_settings(tmp_path):
    head = '[settings]\ndata_root = "data"\n' + HEAD
    plan = plan_of(
        tmp_path,
        '[experiment.a]\n[experiment.b]\ndata = { root = "/explicit" }\n',
        head,
        env={"MDTUI_DATA_ROOT": "/env/root"},
    )
    assert plan.settings.data_root == Path("/env/root")
    cfg = engine_config(plan, plan.experiments["a"], run_id="r1", seed=7)
    assert cfg["data"]["root"] == "/env/root" and cfg["run_id"] == "r1" and cfg["seed"] == 7
    # the experiment's own data.root wins over both
    assert engine_config(plan, plan.experiments["b"], run_id="r", seed=0)["data"]["root"] == "/explicit"


def test_engine_config_is_accepted_by_the_engine(tmp_path):
    plan = plan_of(tmp_path, '[experiment.a]\nloss = { name = "refl", threshold = 0.4 }\n')
    cfg = engine_config(plan, plan.experiments["a"], run_id="r", seed=1, init_checkpoint="/x/best.pt")
    parsed = from_dict(cfg)
    assert (
        parsed.loss.threshold == 0.4 and parsed.init_checkpoint == "/x/best.pt" and parsed.experiment == "a"
    )


def test_defaults_deep_merge_and_renamed_block_restarts(tmp_path):
    head = (
        HEAD
        + 'optim = { name = "sgd", lr = 0.1, momentum = 0.8 }\nloss = { name = "refl", threshold = 0.3 }\n'
    )
    body = """
    [experiment.a]
    optim = { lr = 0.01 }
    [experiment.b]
    loss = "ce"
    """
    plan = plan_of(tmp_path, body, head)
    a, b = plan.experiments["a"].config, plan.experiments["b"].config
    assert (a["optim"]["lr"], a["optim"]["momentum"], a["loss"]["threshold"]) == (0.01, 0.8, 0.3)
    assert b["loss"] == {"name": "ce", "label_smoothing": 0.0}  # no threshold inherited into CE


def test_extends_chain_inherits_but_not_baseline_sweep_description(tmp_path):
    body = """
    [experiment.a]
    group = "G"
    baseline = true
    description = "root"
    tags = ["t"]
    epochs = 5
    optim = { lr = 0.5 }
    batch_size = 8
    sweep = { batch_size = [8, 16] }
    [experiment.b]
    extends = "a"
    from = "a[batch_size=8]"
    optim = { momentum = 0.5 }
    [experiment.c]
    extends = "b"
    epochs = 7
    """
    plan = plan_of(tmp_path, body)
    c = plan.experiments["c"]
    assert (c.group, c.baseline, c.description, c.tags, c.upstream) == (
        "G",
        False,
        "",
        ("t",),
        "a[batch_size=8]",
    )
    assert (c.config["epochs"], c.config["optim"]["lr"], c.config["optim"]["momentum"]) == (7, 0.5, 0.5)
    assert plan.tables["c"] == ("c",) and plan.tables["a"] == ("a[batch_size=8]", "a[batch_size=16]")


def test_sweep_expansion_names_order_and_points(tmp_path):
    body = """
    [experiment.s]
    loss = { name = "refl" }
    sweep = { "loss.threshold" = [0.4, 1e-5], "optim.nesterov" = [true, false], "doctor.layers" = [["last_conv", "layer3.4.conv2"]] }
    """
    plan = plan_of(tmp_path, body)
    assert list(plan.experiments) == [
        "s[loss.threshold=0.4,optim.nesterov=true,doctor.layers=[last_conv,layer3.4.conv2]]",
        "s[loss.threshold=0.4,optim.nesterov=false,doctor.layers=[last_conv,layer3.4.conv2]]",
        "s[loss.threshold=1e-05,optim.nesterov=true,doctor.layers=[last_conv,layer3.4.conv2]]",
        "s[loss.threshold=1e-05,optim.nesterov=false,doctor.layers=[last_conv,layer3.4.conv2]]",
    ]
    last = list(plan.experiments.values())[-1]
    assert last.sweep_point == {
        "loss.threshold": 1e-05,
        "optim.nesterov": False,
        "doctor.layers": ["last_conv", "layer3.4.conv2"],
    }
    assert last.config["loss"]["threshold"] == 1e-05 and last.group == "s" and last.table == "s"


def test_sweep_string_values_are_quoted_when_not_simple(tmp_path):
    plan = plan_of(tmp_path, '[experiment.s]\nsweep = { loss = ["ce", "fl"], "data.augment" = ["none"] }\n')
    assert "s[loss=fl,data.augment=none]" in plan.experiments


def test_baseline_on_a_sweep_marks_the_matching_point(tmp_path):
    body = """
    [experiment.s]
    baseline = true
    loss = { name = "refl", threshold = 0.4 }
    sweep = { "loss.threshold" = [0.5, 0.4] }
    """
    plan = plan_of(tmp_path, body)
    assert [e.name for e in plan.group("s") if e.baseline] == ["s[loss.threshold=0.4]"]
    other = plan.experiments["s[loss.threshold=0.5]"]
    assert plan.baseline_of(other).name == "s[loss.threshold=0.4]"
    assert knobs(plan, other) == {"loss.threshold": 0.5}


def test_baseline_on_a_sweep_without_a_matching_point_is_an_error(tmp_path):
    body = '[experiment.s]\nbaseline = true\nloss = "refl"\nsweep = { "loss.threshold" = [0.5, 0.4] }\n'
    (issue,) = issues_of(tmp_path, body)
    assert issue.key == "baseline" and issue.line == 6


def test_seeds(tmp_path):
    head = HEAD + "seeds = [0, 1]\n"
    body = "[experiment.a]\n[experiment.b]\nseeds = [3, 4, 5]\n[experiment.c]\nseed = 9\n"
    plan = plan_of(tmp_path, body, head)
    assert [plan.experiments[n].seeds for n in "abc"] == [(0, 1), (3, 4, 5), (9,)]
    assert "seed" not in plan.experiments["a"].config
    (issue,) = issues_of(tmp_path, "[experiment.a]\nseed = 1\nseeds = [2]\n")
    assert "not both" in issue.message


def test_default_seed_and_gpus(tmp_path):
    plan = plan_of(tmp_path, "[experiment.a]\n[experiment.b]\ngpus = 2\n")
    assert plan.experiments["a"].seeds == (0,) and (
        plan.experiments["a"].gpus,
        plan.experiments["b"].gpus,
    ) == (1, 2)


def test_knobs_against_baseline(tmp_path):
    body = """
    [experiment.ce]
    group = "G"
    baseline = true
    loss = "ce"
    [experiment.refl]
    extends = "ce"
    loss = { name = "refl", threshold = 0.4 }
    sweep = { "optim.lr" = [0.01] }
    [experiment.md]
    extends = "ce"
    from = "ce"
    doctor = { weight = 1 }
    """
    plan = plan_of(tmp_path, body)
    assert knobs(plan, plan.experiments["ce"]) == {}
    refl = plan.experiments["refl[optim.lr=0.01]"]
    assert list(knobs(plan, refl).items()) == [
        ("optim.lr", 0.01),
        ("loss.name", "refl"),
        ("loss.threshold", 0.4),
    ]
    assert knobs(plan, plan.experiments["md"]) == {"from": "ce", "doctor.weight": 1}


def test_find_and_select(tmp_path):
    body = '[experiment.r32-ce]\ngroup = "G"\n[experiment.s]\ngroup = "G"\nsweep = { epochs = [1, 2] }\n'
    plan = plan_of(tmp_path, body)
    assert find_experiment(plan, "r32-ce").name == "r32-ce"
    with pytest.raises(LookupError, match="closest: r32-ce"):
        find_experiment(plan, "r32-c")
    with pytest.raises(LookupError, match="sweep of 2"):
        find_experiment(plan, "s")
    assert [e.name for e in select_experiments(plan, ["s"])] == ["s[epochs=1]", "s[epochs=2]"]
    assert len(select_experiments(plan, ["G"])) == 3


def test_lines_inside_subtables_and_dotted_keys(tmp_path):
    body = """
    [experiment.a]
    doctor.mask.phi = "abss"
    [experiment.b.loss]
    name = "fl"
    gama = 2
    """
    path = write(tmp_path, body)
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    by_key = {i.key: i.line for i in info.value.issues}
    assert by_key == {"doctor.mask.phi": line_of(path, "abss"), "loss.gama": line_of(path, "gama")}


# --------------------------------------------------------------------------- the shipped file


def test_shipped_experiments_validate_with_demo_chain():
    plan = load_plan(ROOT / "experiments.toml", env={})
    demo = plan.group("demo")
    assert len(demo) >= 2 and all(e.config["data"]["name"] == "digits" for e in demo)
    assert plan.baseline_of(demo[0]) is not None
    names = {e.name for e in demo}
    doctor = [e for e in demo if e.config.get("doctor") and e.upstream in names]
    kernels = [e for e in demo if e.config.get("kernels") and e.upstream in names]
    assert doctor and kernels
    assert sum(e.config["epochs"] for e in demo) <= 40  # the whole demo runs in minutes on a CPU
    for family in (
        "ResNet32 + CIFAR-10-LT (ρ=100)",
        "ResNet32 + CIFAR-100-LT (ρ=100)",
        "Kernel fine-tuning (CIFAR-10-LT)",
        "ResNet50 + CIFAR-10",
        "VGG16 + STL-10",
        "AlexNet-v2 + CIFAR-10 (64 px)",
        "ResNeXt50 + ImageNet-LT",
    ):
        assert plan.group(family), family
    leaky = [e for e in plan.experiments.values() if (e.config.get("kernels") or {}).get("allow_test_split")]
    assert leaky and all("leaky" in e.tags for e in leaky)


def test_experiments_module_does_not_import_torch():
    code = "import sys, mdtui.registry.plan; sys.exit(1 if 'torch' in sys.modules or 'textual' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --------------------------------------------------------------------------- ranges the engine would enforce


@pytest.mark.parametrize(
    ("line", "key", "says"),
    [
        ('loss = { name = "refl", threshold = 1.0 }', "loss.threshold", "must be in (0, 1)"),
        ('loss = { name = "efl", gamma = 0.0 }', "loss.gamma", "greater than 0"),
        ('loss = { name = "ce", label_smoothing = 1.0 }', "loss.label_smoothing", "in [0, 1)"),
        ('loss = { name = "cb", beta = 1.0 }', "loss.beta", "in [0, 1)"),
        ('sampler = { name = "class_aware", num_samples_cls = 0 }', "sampler.num_samples_cls", "at least 1"),
        ('schedule = { name = "step", step_size = 0 }', "schedule.step_size", "at least 1"),
        ('optim = { name = "adam", betas = [0.9] }', "optim.betas", "exactly 2"),
        ('model = "vgg16"', "data.image_size", "at least 32 px"),
    ],
)
def test_engine_ranges_fail_validate_located(tmp_path, line, key, says):
    """What the engine would refuse at run time is refused by validate, at the line that wrote it."""
    path = write(
        tmp_path, f"\n[experiment.x]\n{line}\n", head=HEAD.replace('"digits"', '"digits", image_size = 16')
    )
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    issues = info.value.issues
    (issue,) = [i for i in issues if i.key == key]
    assert says in issue.message and issue.experiment == "x"
    written = "image_size" if key == "data.image_size" else line
    assert issue.line == line_of(path, written)


def test_one_parse_per_process_for_an_unchanged_file(tmp_path, monkeypatch):
    """The root callback and the verb both ask for the plan: the file is parsed and validated once."""
    import mdtui.registry.plan as plan_module

    path = write(tmp_path, '\n[experiment.x]\nloss = "ce"\n')
    calls = []
    real = plan_module.PlanBuilder.build
    monkeypatch.setattr(plan_module.PlanBuilder, "build", lambda self: calls.append(1) or real(self))
    first = load_plan(path, env={})
    assert load_plan(path, env={}) is first and len(calls) == 1
    path.write_text(path.read_text() + "\n[experiment.y]\n", encoding="utf-8")
    assert set(load_plan(path, env={}).experiments) == {"x", "y"} and len(calls) == 2
    assert load_plan(path, env={"MDTUI_DATA_ROOT": str(tmp_path)}) is not first  # another environment
