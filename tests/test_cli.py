import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import neuroplastic.recipes.runner as runner
from neuroplastic.cli import COMMANDS, main
from neuroplastic.recipes import shipped_recipes
from shared_data import SHARED, needs_data

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_recipes_lists_every_shipped_recipe_with_its_description(capsys):
    code, out, _ = _main(capsys, "recipes")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(shipped_recipes()) >= 9
    for name in ("npn-mnist-lenet5-sparse", "npn-mnist-lenet5-expand", "npn-cifar10-resnet56-sparse",
                 "npn-cifar10-resnet56-expand", "npn-cifar100-resnet56-sparse", "npn-cifar100-resnet56-expand",
                 "npn-moons-sparse", "npn-moons-expand", "npn-moons-vat-sparse", "npn-moons-vat-expand",
                 "dense-mnist-lenet5"):
        line = next(s for s in lines if s.split()[0] == name)
        assert len(line.split(None, 1)[1]) > 20  # a description follows the name
    code, out, _ = _main(capsys, "recipes", "npn-mnist-lenet5-sparse")
    assert code == 0 and "name: npn-mnist-lenet5-sparse" in out and "stages:" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "npn-mnist-lenet5-sparse", "data.batchsize=3"], r"unknown key(s) ['batchsize'] in data; valid keys"),
    (["run", "npn-mnist-lenet5-sparse", "data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
    (["run", "npn-mnist-lenet5-sparse", "method.k=-1"], "k must be > 0, got -1"),
    (["run", "npn-mnist-lenet5-sparse", "method.gates={nope: out}"], "nope"),
    (["run", "npn-mnist-lenet5-sparse", "model.name=torch.nn:Identity", "method.gates=null"],
     "model cannot be gated"),
    (["run", "no-such-recipe"], "no recipe 'no-such-recipe'"),
    (["run", "npn-mnist-lenet5-sparse", "epochs"], "key=value"),
    (["run", "dense-mnist-lenet5", "--device", "tpu"], "device must be 'cpu' or 'cuda"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, monkeypatch, argv, message):
    # MNIST-shaped stand-in data: the method's own checks run after the data is loaded
    splits = SimpleNamespace(num_classes=10, input_shape=(1, 28, 28))
    monkeypatch.setattr(runner, "load_data", lambda recipe, data_dir, device: (splits, {"train": [None] * 4}))
    code, out, err = _main(capsys, *argv, "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("neuroplastic run: error: ") and message in err
    assert not (tmp_path / "run").exists()


def test_recipe_may_be_left_out_only_when_resuming(capsys, tmp_path):
    code, _, err = _main(capsys, "run", "--out", str(tmp_path / "run"))
    assert code == 2 and "RECIPE is required" in err
    code, _, err = _main(capsys, "run", "--resume", "--out", str(tmp_path / "run"))
    assert code == 2 and "recipe.yaml" in err  # no run there to resume


def test_missing_or_unknown_data_set_exits_2(capsys, tmp_path):
    # the CIFAR-10 subset is never downloaded, so this fails at once, without the network
    code, _, err = _main(capsys, "run", "npn-cifar10-resnet56-sparse", "data.name=cifar10-subset",
                         "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path))
    # the data layer's message is one message over several lines (it lists the missing files)
    assert code == 2 and err.startswith("neuroplastic run: error: ") and "data_batch_1" in err
    assert "Traceback" not in err
    code, _, err = _main(capsys, "run", "dense-mnist-lenet5", "data.name=svhn", "--out", str(tmp_path / "run"))
    assert code == 2 and "unknown data set 'svhn'" in err
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_is_left_untouched(capsys, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("[]")
    (run / "recipe.yaml").write_text("name: x\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.setattr(runner, "load_data", lambda *a: pytest.fail("data must not be loaded"))
    for extra in ([], ["--resume"]):
        code, _, err = _main(capsys, "run", "dense-mnist-lenet5", "--out", str(run), *extra)
        assert code == 2 and "finished run" in err
    assert before == {p.name: p.read_bytes() for p in run.iterdir()}


def test_plot_without_the_plots_module_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "neuroplastic.plots.cli", None)  # import of it now fails
    code, _, err = _main(capsys, "plot", "some/run")
    assert code == 2 and "neuroplastic.plots.cli is not part of this build" in err


def test_plot_hands_every_argument_to_the_plots_module(capsys, monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "neuroplastic.plots.cli", SimpleNamespace(main=lambda a: seen.append(a) or 3))
    assert _main(capsys, "plot", "runs/x", "--what", "arch")[0] == 3
    assert _main(capsys, "plot", "--help")[0] == 3
    assert seen == [["runs/x", "--what", "arch"], ["--help"]]


def test_dispatcher_table_and_no_command(capsys):
    assert [c.name for c in COMMANDS][:3] == ["run", "recipes", "plot"]
    code, _, err = _main(capsys)
    assert code == 2 and "COMMAND" in err
    for argv in (["frobnicate"], ["recipes", "--bogus"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_console_entry_point_exit_code_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "neuroplastic.cli", "run", "dense-mnist-lenet5", "seed=-3",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "seed must be >= 0, got -3" in proc.stderr


# -- only bad input is exit 2: a bug in a builder keeps its traceback --------------------------------------
BUGGY_MODELS = '''
from torch import nn


def type_bug(num_classes: int = 2, in_features: int = 100, hidden: tuple = (80,)):
    return nn.Linear(in_features, num_classes)[0]  # a bug: a Linear is not subscriptable (TypeError)


def value_bug(num_classes: int = 2, in_features: int = 100, hidden: tuple = (80,)):
    width = int("eighty")  # a bug that raises ValueError
    return nn.Linear(in_features, width)
'''


@pytest.mark.parametrize(("factory", "error"), [("type_bug", TypeError), ("value_bug", ValueError)])
def test_a_bug_in_a_builder_is_not_reported_as_bad_input(capsys, tmp_path, monkeypatch, factory, error):
    (tmp_path / "buggy_models.py").write_text(BUGGY_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(error):  # out of main: the console script prints its traceback, exit code 1
        main(["run", "npn-moons-sparse", f"model.name=buggy_models:{factory}", "--out", str(tmp_path / "run")])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_in_a_builder_exits_1_with_a_traceback(tmp_path):
    (tmp_path / "buggy_models.py").write_text(BUGGY_MODELS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "neuroplastic.cli", "run", "npn-moons-sparse",
                           "model.name=buggy_models:type_bug", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "object is not subscriptable" in proc.stderr


# -- the newcomer's order of arguments, and resuming without repeating --data-dir -----------------------------
def _capture_execute(monkeypatch):
    """Replace execute by a recorder: the CLI's parsing is tested without training."""
    import neuroplastic.recipes as recipes

    seen = []

    def fake_execute(prep, progress=True):
        seen.append(prep)
        raise KeyboardInterrupt  # ends the command right after the run was prepared

    monkeypatch.setattr(recipes, "execute", fake_execute)
    return seen


def test_overrides_may_follow_options(capsys, tmp_path, monkeypatch):
    seen = _capture_execute(monkeypatch)
    code, _, err = _main(capsys, "run", "npn-moons-sparse", "--out", str(tmp_path / "run"), "epochs_scale=0.005",
                         "--no-progress", "seed=3", "--data-dir", str(tmp_path))
    assert code == 130 and len(seen) == 1
    assert seen[0].recipe["epochs"] == 10 and seen[0].recipe["seed"] == 3


@needs_data
def test_resume_uses_the_data_dir_the_run_was_started_with(capsys, tmp_path, monkeypatch):
    import neuroplastic.recipes as recipes

    real_execute = recipes.execute

    def interrupted(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "execute", lambda prep, progress=True: real_execute(
        prep, progress=progress, callbacks=(interrupted,), plots=False))
    run = tmp_path / "run"
    code, _, err = _main(capsys, "run", "npn-moons-vat-sparse", "epochs_scale=0.0025", "--out", str(run),
                         "--data-dir", str(SHARED), "--no-progress")
    assert code == 130
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("interrupted; continue with: neuroplastic run npn-moons-vat-sparse epochs_scale=0.0025 ")
    assert f"--data-dir {SHARED.resolve()}" in hint and hint.endswith("--resume")
    assert json.loads((run / "run.json").read_text()) == {"data_dir": str(SHARED.resolve())}
    monkeypatch.setattr(recipes, "execute", real_execute)
    monkeypatch.setenv("NEUROPLASTIC_DATA", str(tmp_path / "elsewhere"))  # the default would find no data
    code, _, err = _main(capsys, "run", "--resume", "--out", str(run), "--no-progress")
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())[0]["epochs"] == 5
    assert len((run / "history.jsonl").read_text().splitlines()) == 5
