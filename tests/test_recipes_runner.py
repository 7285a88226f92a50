import json
import os
from types import SimpleNamespace

import pytest
import torch
import yaml

import neuroplastic.recipes.runner as runner
from neuroplastic.metrics import count_flops
from neuroplastic.recipes import RecipeError, execute, prepare, resolve, shipped_recipes
from neuroplastic.recipes.registry import METHODS, method_class, method_option_keys
from train_fakes import FakeSplits

RESULT_FIELDS = {"recipe", "mode", "seed", "epochs", "test_accuracy", "params", "params_dense", "arch",
                 "wall_seconds", "dataset", "model", "method", "flops", "flops_dense", "val_accuracy",
                 "selected_epoch"}


@pytest.fixture
def fake_data(monkeypatch):
    """Replace the real data sets by 120 blobs shaped as 1x4x4 images (3 classes)."""

    def load_data(recipe, data_dir, device):
        splits = FakeSplits(seed=recipe["seed"])
        return splits, splits.loaders(recipe["data"]["batch_size"], recipe["seed"])

    monkeypatch.setattr(runner, "load_data", load_data)


def _write(tmp_path, method, epochs=3, **extra):
    recipe = {"name": "tiny", "description": "a tiny recipe", "seed": 3, "epochs": epochs,
              "data": {"name": "fake", "val_size": 20, "batch_size": 16},
              "model": {"name": "train_fakes:tiny_net"}, "method": method,
              "optim": {"weights": {"name": "adam", "lr": 0.01}}, **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


NPN_TINY = {"name": "npn", "mode": "sparse", "k": 7, "lam": 0.001, "stages": [1, 2], "gates": {"1": "out"}}


def test_dense_run_writes_the_run_folder(tmp_path, fake_data):
    out = tmp_path / "run"
    result = execute(prepare(_write(tmp_path, {"name": "dense"}), ["epochs_scale=2"], out=out), progress=False)
    assert RESULT_FIELDS <= set(result)
    assert result["epochs"] == 6 and result["mode"] == "dense" and result["dataset"] == "fake"
    assert result["params"] == result["params_dense"] == 16 * 8 + 8 * 3
    assert result["flops"] == result["flops_dense"] == 2 * (16 * 8 + 8 * 3)
    assert json.loads((out / "results.json").read_text()) == [result]
    assert (out / "recipe.yaml").read_text().startswith(f"# resolved from: {tmp_path / 'tiny.yaml'} epochs_scale=2")
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["epochs"] == 6 and saved["epochs_scale"] == 1.0  # the scale is applied exactly once
    assert len((out / "history.jsonl").read_text().splitlines()) == 6
    assert (out / "events.jsonl").exists() and (out / "checkpoint.pt").exists()


def test_npn_run_counts_live_params_and_flops(tmp_path, fake_data):
    out = tmp_path / "run"
    result = execute(prepare(_write(tmp_path, NPN_TINY), out=out), progress=False)
    open_hidden = result["arch"][0]
    assert result["mode"] == "sparse" and len(result["arch"]) == 1
    # hidden unit j of Linear(16, 8) lives with its 16 inputs and its 3 outputs
    assert result["params"] == open_hidden * (16 + 3)
    assert result["flops"] == 2 * open_hidden * (16 + 3)
    assert result["flops_dense"] == 2 * (16 * 8 + 8 * 3)
    history = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    assert [h["stage"] for h in history] == [1, 2, 3] and [h["k"] for h in history] == [5000, 7, 5000]
    assert result["selected_epoch"] >= 0 and sorted(p.name for p in (out / "snapshots").iterdir())[-1] == \
        "epoch_00002.npz"


def test_resume_through_the_runner_matches_an_uninterrupted_run(tmp_path, fake_data):
    recipe = _write(tmp_path, NPN_TINY, epochs=3)
    full = execute(prepare(recipe, out=tmp_path / "a"), progress=False)
    prep = prepare(recipe, out=tmp_path / "b")
    steps = {"n": 0}
    original_step = prep.method.step

    def step_then_die():
        original_step()
        steps["n"] += 1
        if steps["n"] == 6:  # inside epoch 1 (4 steps per epoch)
            raise KeyboardInterrupt

    prep.method.step = step_then_die
    with pytest.raises(KeyboardInterrupt):
        execute(prep, progress=False)
    with pytest.raises(RecipeError, match="started run; continue it with --resume"):
        prepare(recipe, out=tmp_path / "b")
    with pytest.raises(RecipeError, match=r"differs from the one .* at \['method.k'\]"):
        prepare(recipe, ["method.k=5"], out=tmp_path / "b", resume=True)
    # the run folder's resolved recipe.yaml resumes the run as well as the original recipe does
    resumed = execute(prepare(tmp_path / "b" / "recipe.yaml", out=tmp_path / "b", resume=True), progress=False)
    drop = ("wall_seconds", "session_seconds")
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}
    strip = [{k: v for k, v in json.loads(s).items() if k != "seconds"}
             for s in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert strip == [{k: v for k, v in json.loads(s).items() if k != "seconds"}
                     for s in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]


def test_results_say_what_the_run_ran_on(tmp_path, fake_data):
    """results.json's environment names the software and the machine of the run (CPU here: no GPU fields)."""
    import platform

    import neuroplastic

    recipe = _write(tmp_path, {"name": "dense"}, epochs=1)
    execute(prepare(recipe, out=tmp_path / "run"), progress=False)
    env = json.loads((tmp_path / "run" / "results.json").read_text())[0]["environment"]
    assert env == {"python": platform.python_version(), "torch": torch.__version__,
                   "neuroplastic": neuroplastic.__version__, "cpu": env["cpu"], "cpu_count": os.cpu_count(),
                   "threads": torch.get_num_threads()}
    assert env["cpu"]


def test_environment_of_a_cuda_run_names_the_gpu_and_its_float_modes(monkeypatch):
    from neuroplastic.environment import describe_environment

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Test GPU {torch.device(device).index}")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    env = describe_environment("cuda:1")
    assert env["gpu"] == "Test GPU 1" and env["tf32_convolutions"] is False
    assert env["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32 and env["cuda"] == torch.version.cuda
    assert "gpu" not in describe_environment("cpu")


def test_finished_run_is_never_overwritten(tmp_path, fake_data):
    recipe = _write(tmp_path, {"name": "dense"}, epochs=1)
    out = tmp_path / "run"
    execute(prepare(recipe, out=out), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for resume in (False, True):
        with pytest.raises(RecipeError, match="holds a finished run"):
            prepare(recipe, out=out, resume=resume)
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RecipeError, match="no run to resume"):
        prepare(recipe, out=tmp_path / "empty", resume=True)


def test_bad_inputs_are_recipe_errors(tmp_path, fake_data):
    with pytest.raises(RecipeError, match="unknown method 'nope'"):
        prepare(_write(tmp_path, {"name": "nope"}), out=tmp_path / "r")
    with pytest.raises(RecipeError, match=r"\['k'\] in method \(method 'dense'\); valid keys: \['name'\]"):
        prepare(_write(tmp_path, {"name": "dense", "k": 1}), out=tmp_path / "r")
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['kk'\] in method"):
        prepare(_write(tmp_path, NPN_TINY), ["method.kk=3"], out=tmp_path / "r")
    with pytest.raises(RecipeError, match="optim.gates is only for gated methods"):
        prepare(_write(tmp_path, {"name": "dense"}), ["optim.gates.name=adam", "optim.gates.lr=0.1"],
                out=tmp_path / "r")
    with pytest.raises(RecipeError, match="optim.weights: unknown keys for optimizer 'adam'"):
        prepare(_write(tmp_path, {"name": "dense"}), ["optim.weights.momentum=0.9"], out=tmp_path / "r")
    with pytest.raises(RecipeError, match="schedule name must be one of"):
        prepare(_write(tmp_path, {"name": "dense"}), ["optim.weights.schedule.name=warm"], out=tmp_path / "r")
    with pytest.raises(RecipeError, match="no recipe 'missing'"):
        prepare("missing", out=tmp_path / "r")
    with pytest.raises(ValueError, match="stages"):  # the method's own check, before the folder is touched
        prepare(_write(tmp_path, NPN_TINY), ["method.stages=[1, 9]"], out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_registry_names_every_method_and_reports_missing_modules():
    assert set(METHODS) >= {"dense", "npn", "static", "set", "rigl", "gmp", "granet", "lpss", "hard_concrete"}
    assert method_option_keys("dense") == set()
    assert {"k", "mode", "lam", "stages"} <= method_option_keys("npn")
    with pytest.raises(RecipeError, match=r"'no_such_pkg.mod:M' is not available: module 'no_such_pkg' not found"):
        method_class("no_such_pkg.mod:M")
    with pytest.raises(RecipeError, match="is not a CapacityMethod subclass"):
        method_class("torch.nn:Linear")
    for name, path in METHODS.items():  # every registry path resolves to its class
        assert method_class(name).__name__ == path.rpartition(":")[2]


def test_registry_entry_whose_module_or_class_is_missing_is_named(monkeypatch):
    monkeypatch.setitem(METHODS, "rigl", "neuroplastic.methods.no_such_module:RigL")
    with pytest.raises(RecipeError, match=r"method 'rigl' \(neuroplastic.methods.no_such_module:RigL\) is not "
                                          r"available: module 'neuroplastic.methods.no_such_module' not found"):
        method_class("rigl")
    monkeypatch.setitem(METHODS, "rigl", "neuroplastic.methods.dst:NoSuchClass")
    with pytest.raises(RecipeError, match=r"method 'rigl' \(neuroplastic.methods.dst:NoSuchClass\) is not "
                                          r"available: neuroplastic.methods.dst has no 'NoSuchClass'"):
        method_class("rigl")


def _shipped_params():
    return [pytest.param(name, id=name) for name in shipped_recipes()]


@pytest.mark.parametrize("name", _shipped_params())
def test_every_shipped_recipe_constructs(name):
    """Model, method, optimizers and schedules of each shipped recipe build (the data is not read)."""
    from neuroplastic.data import DATASETS

    recipe = resolve(name, ["epochs_scale=0.1"])
    assert recipe["description"] and recipe["name"] == name
    method_class(recipe["method"]["name"])  # every shipped recipe names a method of this build
    # shapes of the data sets without reading them (the moons points are 100-D vectors; ImageNet is a folder)
    imagenet = SimpleNamespace(num_classes=1000, input_shape=(3, 224, 224))
    spec = DATASETS.get(recipe["data"]["name"], imagenet if recipe["data"]["name"] == "imagenet"
                        else SimpleNamespace(num_classes=2, input_shape=(100,)))
    torch.manual_seed(0)
    model = runner.build_model(recipe, spec)
    dense_flops = count_flops(model, spec.input_shape)
    example = torch.zeros((2, *spec.input_shape))  # as prepare() passes it
    method, optimizers, schedules = runner.build_training(recipe, model, steps_per_epoch=5, example_input=example)
    assert len(optimizers) == len(schedules) == (2 if recipe["optim"]["gates"] else 1)
    arch = method.architecture()
    assert 0 < arch["params"] <= arch["params_dense"]
    assert 0 < method.live_flops(spec.input_shape) <= dense_flops
    n_params = sum(len(g["params"]) for o in optimizers for g in o.param_groups)
    assert n_params == len(list(model.parameters()))  # every parameter is trained by exactly one optimizer


def test_npn_lenet_recipes_start_from_the_paper_architectures():
    from neuroplastic.data import DATASETS

    spec = DATASETS["mnist"]
    archs = {}
    for mode in ("sparse", "expand"):
        recipe = resolve(f"npn-mnist-lenet5-{mode}")
        model = runner.build_model(recipe, spec)
        method, _, _ = runner.build_training(recipe, model, steps_per_epoch=5)
        archs[mode] = method.architecture()
    assert archs["sparse"]["arch"] == [20, 50, 800, 500] and archs["sparse"]["params"] == 430500
    # 3-3-48-3: 25*3 + 25*3*3 + 48*3 + 3*10 = 474 weights (the paper's Table I)
    assert archs["expand"]["arch"] == [3, 3, 48, 3] and archs["expand"]["params"] == 474


def test_compact_weights_keep_the_network_inputs_that_params_leave_out(tmp_path, fake_data):
    """docs/architecture.md (Contract 3): ``params`` counts the weights between open units, the network's
    open input features included; the compacted model cannot drop input features (the data still has
    them), so ``compact_weights`` counts every input column of the kept hidden units."""
    method = {**NPN_TINY, "gates": {"1": "in", "3": "in"}, "stages": [2, 3]}  # one plastic epoch
    prep = prepare(_write(tmp_path, method, epochs=3), out=tmp_path / "run")
    with torch.no_grad():  # close 11 of the 16 input features and 3 of the 8 hidden units
        prep.method.sites[0].gates.phi[5:] = -5.0
        prep.method.sites[1].gates.phi[:3] = -5.0
    result = execute(prep, progress=False, plots=False)
    assert result["arch"] == [5, 5]
    assert result["params"] == 5 * 5 + 5 * 3  # open inputs x open hidden units + hidden units x classes
    assert result["compact_weights"] == 16 * 5 + 5 * 3  # all 16 input columns stay in the compacted model
    first = torch.load(tmp_path / "run" / "compact.pt", weights_only=True)["state_dict"]["1.weight"]
    assert first.shape == (5, 16) and not first[:, 5:].any() and first[:, :5].all()  # closed inputs: zeros
