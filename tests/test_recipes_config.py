import logging

import pytest

from neuroplastic.recipes.config import (
    RecipeError,
    apply_overrides,
    is_epoch_key,
    parse_override,
    parse_value,
    scale_epochs,
    validate,
)


def _recipe(**top):
    base = {
        "name": "t", "description": "a test recipe", "epochs": 10,
        "data": {"name": "mnist", "val_size": 100, "batch_size": 32},
        "model": {"name": "lenet5_caffe"},
        "method": {"name": "dense"},
        "optim": {"weights": {"name": "adam", "lr": 0.001}},
    }
    base.update(top)
    return base


@pytest.mark.parametrize(("text", "value"), [
    ("5", 5), ("0.1", 0.1), ("1e-3", 0.001), ("true", True), ("adam", "adam"), ("[1, 2]", [1, 2]),
    ("{a: 1}", {"a": 1}), ("null", None),
])
def test_parse_value_reads_yaml_scalars(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_parse_override_and_its_errors():
    assert parse_override("method.k=5") == (["method", "k"], 5)
    assert parse_override("epochs_scale=0.1") == (["epochs_scale"], 0.1)
    for bad in ("method.k", "a..b=1", "=3", "method.=2"):
        with pytest.raises(RecipeError, match="key=value"):
            parse_override(bad)


def test_apply_overrides_sets_nested_keys_without_touching_the_input():
    r = _recipe()
    out = apply_overrides(r, ["data.batch_size=64", "data.augment.flip=true", "optim.weights.lr=0.01"])
    assert out["data"]["batch_size"] == 64 and out["data"]["augment"] == {"flip": True}
    assert out["optim"]["weights"]["lr"] == 0.01
    assert r["data"]["batch_size"] == 32 and "augment" not in r["data"]
    with pytest.raises(RecipeError, match="epochs is a value"):
        apply_overrides(r, ["epochs.x=1"])


def test_validate_fills_defaults():
    out = validate(_recipe())
    assert out["seed"] == 0 and out["selection"] == "best_val" and out["epochs_scale"] == 1.0
    assert out["data"]["augment"] == {"crop_padding": 0, "padding_mode": "zeros", "flip": False, "cutout": 0}
    assert out["data"]["normalize"] is True and out["model"]["kwargs"] == {} and out["optim"]["gates"] is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["epoch=3"], r"unknown key\(s\) \['epoch'\] in the recipe; valid keys: \[.*'epochs'.*\]"),
    (["data.batchsize=3"], r"unknown key\(s\) \['batchsize'\] in data; valid keys: \[.*'batch_size'.*\]"),
    (["data.augment.mirror=true"], r"in data.augment; valid keys: \['crop_padding', 'cutout', 'flip', 'padding"),
    (["data.batch_size=0"], r"data.batch_size must be >= 1, got 0"),
    (["epochs=-1"], r"epochs must be >= 1"),
    (["epochs=2.5"], r"epochs must be int, got 2.5"),
    (["epochs=true"], r"epochs must be int, got True"),
    (["epochs_scale=0"], r"epochs_scale must be > 0"),
    (["selection=test"], r"selection must be one of \['best_val', 'last'\], got 'test'"),
    (["data.augment.padding_mode=edge"], r"padding_mode must be one of"),
    (["select_from_epoch=10"], r"select_from_epoch must be < epochs"),
    (["data.name=null"], r"data.name must be str, got None"),
    (["optim.weights=null"], r"optim.weights is required"),
    (["model=3"], r"model must be a section"),
])
def test_validate_errors_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(RecipeError, match=message):
        validate(apply_overrides(_recipe(), overrides))


def test_missing_section_is_reported_as_such():
    r = _recipe()
    del r["data"]
    with pytest.raises(RecipeError, match="section data is required"):
        validate(r)


def test_method_options_are_checked_against_the_method():
    keys = {"npn": {"k", "mode"}, "any": None}.get
    ok = validate(apply_overrides(_recipe(), ["method.name=npn", "method.k=7"]), method_keys=keys)
    assert ok["method"] == {"name": "npn", "k": 7}
    validate(apply_overrides(_recipe(), ["method.name=any", "method.whatever=1"]), method_keys=keys)
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['kk'\] in method .*valid keys: \['k', 'mode', 'name'\]"):
        validate(apply_overrides(_recipe(), ["method.name=npn", "method.kk=7"]), method_keys=keys)


def test_epoch_keys_are_defined_in_one_place():
    for key in ("epochs", "stages", "milestones", "knots", "step_size", "select_from_epoch", "final_prune_epoch",
                "rewind_epochs"):
        assert is_epoch_key(key)
    for key in ("batch_size", "lr", "k", "update_every", "epochs_scale", "seed"):
        assert not is_epoch_key(key)


def test_scale_epochs_by_hand():
    r = _recipe(epochs=500, select_from_epoch=350)
    r["method"] = {"name": "npn", "stages": [100, 350], "k": 7, "init_prune_epoch": 0}
    r["optim"]["weights"]["schedule"] = {"name": "multistep", "milestones": [400], "gamma": 0.1}
    r["optim"]["gates"] = {"name": "adam", "lr": 0.001, "schedule": {"name": "piecewise", "knots": [0.0, 2.5],
                                                                    "values": [1, 0]}}
    out = scale_epochs(r, 0.01)
    assert out["epochs"] == 5 and out["select_from_epoch"] == 4  # 3.5 rounds half up
    assert out["method"] == {"name": "npn", "stages": [1, 4], "k": 7, "init_prune_epoch": 0}
    assert out["optim"]["weights"]["schedule"]["milestones"] == [4]
    assert out["optim"]["gates"]["schedule"] == {"name": "piecewise", "knots": [0.0, 0.025], "values": [1, 0]}
    assert out["data"]["batch_size"] == 32 and out["optim"]["weights"]["lr"] == 0.001
    assert r["epochs"] == 500  # the input is not modified


def test_scale_epochs_keeps_boundaries_positive_and_strictly_increasing():
    r = _recipe(epochs=300)
    r["method"] = {"name": "npn", "stages": [1, 2]}
    out = scale_epochs(r, 0.1)
    assert out["epochs"] == 30 and out["method"]["stages"] == [1, 2]
    r["method"]["stages"] = [0, 20, 21, 22]
    assert scale_epochs(r, 0.1)["method"]["stages"] == [0, 2, 3, 4]
    r["epochs"], r["method"]["stages"] = 3, [1, 2]  # a one-epoch run: inner boundaries land on epoch 0
    assert scale_epochs(r, 0.1)["epochs"] == 1 and scale_epochs(r, 0.1)["method"]["stages"] == [0, 0]
    assert scale_epochs(_recipe(epochs=10), 2.5)["epochs"] == 25


def test_scale_epochs_keeps_inner_boundaries_inside_the_run():
    # ResNet56 recipe at 1/100: 220 -> 2 epochs; stages [20, 200] -> [1, 2] would leave no hardening epoch
    r = _recipe(epochs=220, select_from_epoch=200)
    r["method"] = {"name": "npn", "stages": [20, 200]}
    r["optim"]["weights"]["schedule"] = {"name": "multistep", "milestones": [60, 120, 180, 240]}
    out = scale_epochs(r, 0.02)  # 4.4 -> 4 epochs
    assert out["epochs"] == 4 and out["method"]["stages"] == [1, 3] and out["select_from_epoch"] == 3
    assert out["optim"]["weights"]["schedule"]["milestones"] == [1, 2, 3, 5]  # 240 lay outside the run
    validate(out)
    with pytest.raises(RecipeError, match="epochs_scale must be a number > 0"):
        scale_epochs(r, 0)
    r["method"]["stages"] = ["a"]
    with pytest.raises(RecipeError, match="'stages' must hold numbers"):
        scale_epochs(r, 0.5)


def test_a_scale_that_empties_a_stage_warns_and_names_it(caplog):
    r = _recipe(epochs=2000)
    r["method"] = {"name": "npn", "stages": [500, 1000]}
    with caplog.at_level(logging.WARNING, logger="neuroplastic.recipes.config"):
        assert scale_epochs(r, 0.01)["method"]["stages"] == [5, 10]
    assert not caplog.records  # every stage keeps epochs
    with caplog.at_level(logging.WARNING, logger="neuroplastic.recipes.config"):
        out = scale_epochs(r, 0.001)
    assert out["epochs"] == 2 and out["method"]["stages"] == [1, 1]
    (record,) = caplog.records
    assert record.getMessage() == (
        "warning: epochs_scale=0.001: method.stages [500, 1000] became [1, 1] in a run of 2 epochs, so the epochs "
        "from method.stages[0] to method.stages[1] (NPN's plastic stage) are gone; use a larger epochs_scale")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neuroplastic.recipes.config"):
        scale_epochs(r, 0.0005)  # one epoch: stages [0, 0], no pre-training and no plastic epoch
    assert ["pre-training stage" in m.getMessage() for m in caplog.records] == [True, False]
    assert "plastic stage" in caplog.records[1].getMessage()
