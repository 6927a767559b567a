"""engine.schema.config: the strict schema shared by the engine and experiments.toml validation."""

from __future__ import annotations

import json

import pytest

from engine.schema.config import (
    DATASET_PARAMS,
    DOCTOR_PRESETS,
    LOSS_PARAMS,
    MODEL_NAMES,
    OPTIM_PARAMS,
    SAMPLER_PARAMS,
    SCHEDULE_PARAMS,
    EngineConfig,
    field_paths,
    is_leaky,
    to_dict,
)
from engine.schema.validate import ConfigError, from_dict, suggest


def issues(data: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    out: dict[str, str] = {}
    for issue in info.value.issues:
        out.setdefault(issue.key, issue.message)  # the first (most specific) message per key
    return out


def test_empty_dict_gives_defaults():
    cfg = from_dict({})
    assert cfg == EngineConfig() and cfg.doctor is None and cfg.kernels is None


def test_bare_names_mean_name_tables():
    cfg = from_dict(
        {"model": "vgg16", "loss": "fl", "data": "cifar10", "optim": "adam", "schedule": "constant"}
    )
    assert (cfg.model.name, cfg.loss.name, cfg.data.name, cfg.optim.name, cfg.schedule.name) == (
        "vgg16",
        "fl",
        "cifar10",
        "adam",
        "constant",
    )


def test_unknown_keys_with_suggestions_at_every_level():
    got = issues({"epoch": 3, "loss": {"name": "refl", "treshold": 0.4}, "doctor": {"mask": {"phy": "abs"}}})
    assert got["epoch"] == 'unknown key "epoch" (did you mean "epochs"?)'
    assert 'did you mean "threshold"' in got["loss.treshold"]
    assert 'did you mean "phi"' in got["doctor.mask.phy"]


def test_parameter_of_another_name_is_an_error():
    got = issues({"loss": {"name": "ce", "gamma": 2.0}})
    assert got == {"loss.gamma": '"gamma" is not a parameter of loss "ce" (it takes: label_smoothing)'}


@pytest.mark.parametrize(
    ("data", "key", "needle"),
    [
        ({"model": "resnet322"}, "model.name", 'did you mean "resnet32"'),
        ({"loss": "refll"}, "loss.name", "valid: ce, fl, efl"),
        ({"data": {"name": "cifar-10"}}, "data.name", 'did you mean "cifar10"'),
        ({"sampler": "class_awar"}, "sampler.name", 'did you mean "class_aware"'),
        ({"schedule": "warmup"}, "schedule.name", "valid: warmup_step"),
    ],
)
def test_unknown_names_list_valid_ones(data, key, needle):
    assert needle in issues(data)[key]


@pytest.mark.parametrize(
    ("data", "key", "needle"),
    [
        ({"epochs": "ten"}, "epochs", "expected an integer"),
        ({"epochs": True}, "epochs", "expected an integer"),
        ({"optim": {"lr": "0.1"}}, "optim.lr", "expected a number"),
        ({"channels_last": 1}, "channels_last", "expected true or false"),
        ({"precision": "bf61"}, "precision", "is not one of 'auto', 'bf16'"),
        (
            {"schedule": {"name": "warmup_step", "milestones": "160"}},
            "schedule.milestones[0]",
            "expected an integer",
        ),
        ({"loss": 3}, "loss", "expected a table"),
        ({"doctor": {"sift": 5}}, "doctor.sift", "expected a table"),
    ],
)
def test_wrong_types(data, key, needle):
    assert needle in issues(data)[key]


def test_integer_floats_are_accepted_for_ints():
    assert from_dict({"epochs": 3.0}).epochs == 3


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
        ({"data": {"imbalance_ratio": 0.5}}, "data.imbalance_ratio"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"loss": {"name": "refl", "threshold": 0.0}}, "loss.threshold"),
    ],
)
def test_semantic_checks(data, key):
    assert key in issues(data)


def test_test_split_sifting_needs_explicit_permission_and_is_leaky():
    got = issues({"doctor": {"sift": {"split": "test"}}})
    assert "allow_test_split" in got["doctor.sift.split"]
    cfg = from_dict({"kernels": {"allow_test_split": True, "sift": {"split": "test"}}})
    assert is_leaky(cfg) and not is_leaky(from_dict({"kernels": {}}))


def test_all_issues_collected():
    err = issues({"epochs": "x", "model": "nope", "loss": {"name": "fl", "gama": 1}})
    assert set(err) >= {"epochs", "model.name", "loss.gama"}


def test_doctor_presets_and_explicit_keys_win():
    fork = from_dict({"doctor": {"preset": "fork"}}).doctor
    assert (fork.psi, fork.noise_std, fork.init, fork.sift.per_class, fork.sift.transform) == (
        "abs",
        1.0,
        "from",
        100,
        "train",
    )
    assert (fork.mask.phi, fork.mask.threshold, fork.mask.grad_scaling) == ("abs", "mean", "repo")
    official = from_dict({"doctor": {"preset": "official", "mask": {"theta": 0.3}}}).doctor
    assert (official.init, official.mask.threshold, official.mask.theta, official.mask.phi) == (
        "scratch",
        "minmax",
        0.3,
        "relu",
    )
    custom = from_dict({"doctor": {"preset": "fork", "noise_std": 0.0, "sift": {"per_class": 7}}}).doctor
    assert (custom.noise_std, custom.sift.per_class, custom.sift.transform) == (0.0, 7, "train")
    assert set(DOCTOR_PRESETS) == {"official", "fork"}


def test_kernels_sift_defaults_differ_from_doctor():
    cfg = from_dict({"kernels": {"sift": {"split": "train"}}, "doctor": {}})
    assert (cfg.kernels.sift.per_class, cfg.kernels.sift.transform) == (20, "train")
    assert (cfg.doctor.sift.per_class, cfg.doctor.sift.transform) == (100, "test")


def test_integer_layer_keys_become_strings():
    cfg = from_dict(
        {"doctor": {"layers": [-1]}, "kernels": {"layers": [20, "21..29"], "freeze_layers": [0, 1]}}
    )
    assert (
        cfg.doctor.layers == ("-1",)
        and cfg.kernels.layers == ("20", "21..29")
        and cfg.kernels.freeze_layers == ("0", "1")
    )


ROUND_TRIP = [
    {},
    {
        "model": "resnet50",
        "data": {"name": "cifar10", "imbalance_ratio": 100},
        "loss": {"name": "refl", "threshold": 0.4},
    },
    {
        "data": {"name": "synthetic", "num_classes": 5},
        "sampler": {"name": "class_aware", "num_samples_cls": 8},
    },
    {
        "optim": {"name": "adamw", "betas": [0.9, 0.99]},
        "schedule": {"name": "warmup_step", "milestones": [1, 2]},
    },
    {"doctor": {"preset": "fork", "layers": ["last_conv", "penultimate_fc"], "mask": {"combine_with": "x"}}},
    {
        "kernels": {
            "tail_classes": 2,
            "layers": ["20..29"],
            "allow_test_split": True,
            "sift": {"split": "test"},
        }
    },
    *({"loss": name} for name in LOSS_PARAMS),
    *({"data": name} for name in DATASET_PARAMS),
    *({"schedule": name} for name in SCHEDULE_PARAMS),
]


@pytest.mark.parametrize("data", ROUND_TRIP)
def test_to_dict_round_trips_through_json(data):
    cfg = from_dict(data)
    plain = to_dict(cfg)
    again = from_dict(json.loads(json.dumps(plain)))
    assert again == cfg
    assert to_dict(again) == plain


def test_to_dict_keeps_only_parameters_of_the_chosen_name():
    plain = to_dict(from_dict({"loss": "ce", "optim": "sgd", "sampler": "random"}))
    assert plain["loss"] == {"name": "ce", "label_smoothing": 0.0}
    assert "betas" not in plain["optim"] and plain["sampler"] == {"name": "random"}


def test_field_paths():
    paths = field_paths()
    assert {
        "epochs",
        "loss.threshold",
        "optim.lr",
        "doctor.mask.phi",
        "kernels.sift.split",
        "data.imbalance_ratio",
    } <= paths
    assert "loss.treshold" not in paths and "doctor" in paths and "kernels.layers" in paths


def test_suggest():
    assert suggest("threshhold", ["threshold", "gamma"]) == ' (did you mean "threshold"?)'
    assert suggest("zzz", ["threshold"]) == ""


def test_catalogues_cover_every_name():
    assert "resnet32" in MODEL_NAMES and len(set(MODEL_NAMES)) == len(MODEL_NAMES)
    for catalogue in (DATASET_PARAMS, LOSS_PARAMS, SAMPLER_PARAMS, OPTIM_PARAMS, SCHEDULE_PARAMS):
        for params in catalogue.values():
            assert "name" not in params
