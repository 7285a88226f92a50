"""Every row of docs/bad-inputs.md, one case each: the bad input, what it gets, how the message starts.

A case runs the command line in this process (``main([...])``: its exit code and the first stderr line
that says ``error:``) or calls the API (the exception's type and message). Paths in messages are written
as ``RUN_DIR``, ``DATA_DIR`` and ``RECIPE`` (the test's temporary folders). The table in the docs is
these cases, in this order: :func:`test_the_table_in_the_docs_is_these_cases` compares them, and
``python tests/test_bad_inputs.py`` prints the table for pasting after a change.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from neuroplastic.cli import main
from neuroplastic.data import TensorLoader, load_dataset, split_indices
from shared_data import CIFAR_SUBSET, SHARED, VAT, needs_data

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
MOONS = "npn-moons-sparse"  # generated data: a recipe's own checks run without any data file


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    kind: str  # CLI, recipe, data, model, API
    what: str  # the bad input, as the table shows it
    gets: str  # "exit 2" or the exception type
    message: str  # how the message starts (paths as RUN_DIR, DATA_DIR, RECIPE)
    act: Callable[[SimpleNamespace], tuple[str, str]]  # does it: returns (gets, message)
    data: bool = False  # needs the real data in shared/data


# -- how a case is done ------------------------------------------------------------------------------------
def cli(*argv: str, setup: Callable[[SimpleNamespace], None] | None = None, out: bool = True):
    """Run ``neuroplastic ARGV`` (``run`` gets ``--out RUN_DIR``); return ("exit N", its error line)."""

    def act(ctx: SimpleNamespace) -> tuple[str, str]:
        if setup is not None:
            setup(ctx)
        args = [a.replace("RUN_DIR", str(ctx.run)).replace("DATA_DIR", str(ctx.data)).replace("RECIPE", str(ctx.recipe))
                for a in argv]
        if out and args[0] == "run" and "--out" not in args:
            args += ["--out", str(ctx.run)]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as stop:  # argparse's own usage errors
                code = stop.code
        lines = err.getvalue().splitlines()
        return f"exit {code}", next((s for s in lines if ": error: " in s), lines[0] if lines else "")

    return act


def api(call: Callable[[SimpleNamespace], object]):
    """Call the API; return (exception type, message)."""

    def act(ctx: SimpleNamespace) -> tuple[str, str]:
        try:
            call(ctx)
        except Exception as err:  # noqa: BLE001 - the case says which type it expects
            return type(err).__name__, str(err)
        return "no error", ""

    return act


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


X, Y = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3


class Branchy(nn.Module):
    """A model whose forward branches on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h * 2 if h.sum() > 0 else h)


# -- setups ------------------------------------------------------------------------------------------------
def started_run(ctx: SimpleNamespace) -> None:
    from neuroplastic.recipes import resolve

    ctx.run.mkdir()
    (ctx.run / "recipe.yaml").write_text(yaml.safe_dump(resolve(MOONS)))


def finished_run(ctx: SimpleNamespace) -> None:
    started_run(ctx)
    (ctx.run / "results.json").write_text("[]")


def recipe_file(text: str):
    return lambda ctx: ctx.recipe.write_text(text)


def no_network(ctx: SimpleNamespace) -> None:
    from neuroplastic.data import download

    def offline(url, dest, timeout=0.0):
        raise OSError("no network in this test")

    ctx.monkeypatch.setattr(download, "download_url", offline)


def truncated(source: Path, relative: str, links: Path | None = None):
    """DATA_DIR/relative is the first half of ``source``; the other files of ``links`` are linked."""

    def setup(ctx: SimpleNamespace) -> None:
        target = ctx.data / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        for f in links.iterdir() if links is not None else ():
            if f.name != target.name:
                (target.parent / f.name).symlink_to(f)
        data = source.read_bytes()
        target.write_bytes(data[: len(data) // 2])

    return setup


def load_corrupted_mnist(ctx: SimpleNamespace) -> None:
    shutil.copytree(SHARED / "MNIST" / "raw", ctx.data / "MNIST" / "raw")
    target = ctx.data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    content = bytearray(target.read_bytes())
    content[100] ^= 0xFF
    target.write_bytes(bytes(content))
    load_dataset("mnist", data_dir=ctx.data, download=False)


# -- API calls ---------------------------------------------------------------------------------------------
def _npn(model=None, **kw):
    from neuroplastic.methods.npn import NPN

    return NPN(model if model is not None else mlp(), **{"k": 7, "lam": 0.01, "stages": None, **kw})


def _rigl(model=None, optimizer=None, steps=200, **kw):
    from neuroplastic.methods.dst import RigL

    model = model if model is not None else mlp()
    optimizer = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, RigL(model, optimizer, **{"density": 0.5, "epochs": 1, "steps_per_epoch": steps, **kw})


def rigl_step_before_backward(ctx):
    _, optimizer, rigl = _rigl()
    for _ in range(200):  # the first topology update comes within these steps
        optimizer.step()
        rigl.step()


def rigl_zero_grad_before_step(ctx):
    model, optimizer, rigl = _rigl()
    for _ in range(200):
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # too early: step() needs the gradients
        rigl.step()


def fit_with(ctx, loaders, **kw):
    from neuroplastic import CapacityMethod, fit

    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, CapacityMethod(model), [optimizer], [], loaders, epochs=1, run_dir=ctx.run, progress=False, **kw)


def physical_expand_without_optimizers(ctx):
    from neuroplastic.methods.npn_physical import PhysicalNPN

    npn = PhysicalNPN(mlp(), mode="expand", k=1, lam=0.01, stages=None, init_active=[2], example_input=X)
    npn.end_epoch(val_loss=1.0)
    npn.end_epoch(val_loss=0.5)


def save_then_load_into(template):
    def call(ctx):
        from neuroplastic.structure import load_compact, save_compact

        save_compact(mlp(), ctx.run.with_suffix(".pt"))
        load_compact(template, ctx.run.with_suffix(".pt"))

    return call


def pickled(obj, name: str = "evil"):
    def call(ctx):
        from neuroplastic.data.cifar import read_cifar_batch

        ctx.data.mkdir()
        with open(ctx.data / name, "wb") as f:
            pickle.dump(obj, f)
        read_cifar_batch(ctx.data / name)

    return call


def read_text_as_idx(ctx):
    from neuroplastic.data.idx import read_idx

    ctx.data.mkdir()
    (ctx.data / "x").write_text("not an IDX file")
    read_idx(ctx.data / "x")


def truncated_cifar_batch(ctx):
    from neuroplastic.data.cifar import read_cifar_batch

    truncated(CIFAR_SUBSET / "data_batch_1", "data_batch_1")(ctx)
    read_cifar_batch(ctx.data / "data_batch_1")


def compact_input_group(ctx):
    from neuroplastic.structure import compact

    compact(mlp(), {"input_1": torch.tensor([0, 1])}, X)


def fc1_group(consumer: str = "fc2"):
    """The fc1 -> ``consumer`` units of :class:`Branchy`, declared by hand (it cannot be traced)."""
    from neuroplastic.structure import UnitGroup, UnitRef

    return UnitGroup("fc1", 8, producers=[UnitRef("fc1", 0, "linear")], consumers=[UnitRef(consumer, 1, "linear")])


def compact_uncovered_gate(ctx):
    _npn(Branchy(), gates={"fc1": "in"}).compact(X, groups=[fc1_group()])


def compact_declared_group_off_the_model(ctx):
    from neuroplastic.structure import compact

    compact(Branchy(), {"fc1": [0, 1]}, X, groups=[fc1_group("fc9")])


def bert_groups_of_an_mlp(ctx):
    from neuroplastic.structure import bert_unit_groups

    bert_unit_groups(mlp())


ON_MOONS_LPSS = ["data.name=moons", "data.val_size=200", "model.name=mlp", "data.augment.crop_padding=0",
                 "data.augment.flip=false", "data.augment.cutout=0", "method.input_shape=[100]"]

CASES = [
    # -- command line --------------------------------------------------------------------------------------
    Case("CLI", "`neuroplastic frobnicate`", "exit 2",
         "neuroplastic: error: argument COMMAND: invalid choice: 'frobnicate'", cli("frobnicate")),
    Case("CLI", "`neuroplastic run` (no RECIPE, no --resume)", "exit 2",
         "neuroplastic run: error: RECIPE is required (it may be left out only with --resume --out DIR)", cli("run")),
    Case("CLI", "`neuroplastic run no-such-recipe`", "exit 2",
         "neuroplastic run: error: no recipe 'no-such-recipe': not a shipped recipe", cli("run", "no-such-recipe")),
    Case("CLI", f"`neuroplastic run {MOONS} epochs` (no `=`)", "exit 2",
         "neuroplastic run: error: an override must look like key=value or section.key=value, got 'epochs'",
         cli("run", MOONS, "epochs")),
    Case("CLI", f"`neuroplastic run {MOONS} --epochs 3` (not an option)", "exit 2",
         "neuroplastic run: error: unrecognized arguments: --epochs 3", cli("run", MOONS, "--epochs", "3")),
    Case("CLI", "`--device tpu`", "exit 2", "neuroplastic run: error: device must be 'cpu' or 'cuda[:N]', got 'tpu'",
         cli("run", MOONS, "--device", "tpu")),
    Case("CLI", "`--resume --out RUN_DIR`, RUN_DIR empty", "exit 2",
         "neuroplastic run: error: --resume: RUN_DIR holds no run to resume (recipe.yaml missing)",
         cli("run", MOONS, "--resume", setup=lambda ctx: ctx.run.mkdir())),
    Case("CLI", "`--out RUN_DIR` holding a finished run (with or without --resume)", "exit 2",
         "neuroplastic run: error: RUN_DIR holds a finished run (results.json); choose another --out",
         cli("run", MOONS, setup=finished_run)),
    Case("CLI", "`--out RUN_DIR` holding a started run, without --resume", "exit 2",
         "neuroplastic run: error: RUN_DIR holds a started run; continue it with --resume or choose another --out",
         cli("run", MOONS, setup=started_run)),
    Case("CLI", "`--resume` with an override the run was not started with (`method.k=5`)", "exit 2",
         "neuroplastic run: error: --resume: the recipe differs from the one RUN_DIR was started with at "
         "['method.k']", cli("run", MOONS, "method.k=5", "--resume", setup=started_run)),
    Case("CLI", "`--out RUN_DIR`, RUN_DIR a file", "exit 2",
         "neuroplastic run: error: --out RUN_DIR exists and is not a folder",
         cli("run", MOONS, setup=lambda ctx: ctx.run.write_text(""))),
    Case("CLI", "`neuroplastic recipes nope`", "exit 2", "neuroplastic recipes: error: no recipe 'nope'",
         cli("recipes", "nope")),
    Case("CLI", "`neuroplastic plot RUN_DIR`, RUN_DIR missing", "exit 2",
         "neuroplastic plot: error: run folder RUN_DIR does not exist (or is not a folder)", cli("plot", "RUN_DIR")),
    Case("CLI", "`neuroplastic demo --modes grow`", "exit 2",
         "neuroplastic demo: error: --modes may contain ['expand', 'sparse'], got 'grow'",
         cli("demo", "--modes", "grow", "--out", "RUN_DIR")),
    # -- recipe keys and values ----------------------------------------------------------------------------
    Case("recipe", "`data.batchsize=3` (unknown key)", "exit 2",
         "neuroplastic run: error: unknown key(s) ['batchsize'] in data; valid keys: ['augment', 'batch_size',",
         cli("run", MOONS, "data.batchsize=3")),
    Case("recipe", "`data.batch_size=0`", "exit 2", "neuroplastic run: error: data.batch_size must be >= 1, got 0",
         cli("run", MOONS, "data.batch_size=0")),
    Case("recipe", "`seed=-3`", "exit 2", "neuroplastic run: error: seed must be >= 0, got -3",
         cli("run", MOONS, "seed=-3")),
    Case("recipe", "`epochs=abc`", "exit 2", "neuroplastic run: error: epochs must be int, got 'abc'",
         cli("run", MOONS, "epochs=abc")),
    Case("recipe", "`epochs_scale=0`", "exit 2", "neuroplastic run: error: epochs_scale must be > 0, got 0",
         cli("run", MOONS, "epochs_scale=0")),
    Case("recipe", "`selection=test`", "exit 2",
         "neuroplastic run: error: selection must be one of ['best_val', 'last'], got 'test'",
         cli("run", MOONS, "selection=test")),
    Case("recipe", "`select_from_epoch=5000` (past the last epoch)", "exit 2",
         "neuroplastic run: error: select_from_epoch must be < epochs (2000), got 5000",
         cli("run", MOONS, "select_from_epoch=5000")),
    Case("recipe", "`model=lenet` (a value where a section belongs)", "exit 2",
         "neuroplastic run: error: model must be a section (a mapping), got 'lenet'", cli("run", MOONS, "model=lenet")),
    Case("recipe", "`model.name=nope`", "exit 2",
         "neuroplastic run: error: unknown model 'nope'; registered models: lenet300_100, lenet5_caffe, mlp,",
         cli("run", MOONS, "model.name=nope")),
    Case("recipe", "`model.kwargs.hidden=wide`", "exit 2",
         "neuroplastic run: error: model.kwargs.hidden: got 'wide' (str); allowed: a list of (an integer)",
         cli("run", MOONS, "model.kwargs.hidden=wide")),
    Case("recipe", "`model.kwargs.foo=1`", "exit 2",
         "neuroplastic run: error: model.kwargs: model 'mlp' takes no foo; its options: hidden, in_features, "
         "num_classes", cli("run", MOONS, "model.kwargs.foo=1")),
    Case("recipe", "`model.kwargs.in_features=50` (the data has 100 features)", "exit 2",
         "neuroplastic run: error: an input of shape (100,) (one example) does not run through MLP: mat1 and mat2 "
         "shapes cannot be multiplied", cli("run", MOONS, "model.kwargs.in_features=50")),
    Case("recipe", "`method.name=nope`", "exit 2", "neuroplastic run: error: unknown method 'nope'; known methods:",
         cli("run", MOONS, "method.name=nope")),
    Case("recipe", "`method.kk=3` (unknown option)", "exit 2",
         "neuroplastic run: error: unknown key(s) ['kk'] in method (method 'npn'); valid keys:",
         cli("run", MOONS, "method.kk=3")),
    Case("recipe", "`method.k=abc`", "exit 2", "neuroplastic run: error: method.k: got 'abc' (str); allowed: a number",
         cli("run", MOONS, "method.k=abc")),
    Case("recipe", "`method.stages=5`", "exit 2",
         "neuroplastic run: error: method.stages: got 5 (int); allowed: a list of (an integer) or None",
         cli("run", MOONS, "method.stages=5")),
    Case("recipe", "`method.k=-1`", "exit 2", "neuroplastic run: error: method 'npn': k must be > 0, got -1",
         cli("run", MOONS, "method.k=-1")),
    Case("recipe", "`method.mode=grow`", "exit 2",
         "neuroplastic run: error: method 'npn': mode must be one of ('sparse', 'expand'), got 'grow'",
         cli("run", MOONS, "method.mode=grow")),
    Case("recipe", "`method.stages=[1, 9999]` (past the run)", "exit 2",
         "neuroplastic run: error: method 'npn': method.stages [1, 9999] end after the run's 2000 epochs",
         cli("run", MOONS, "method.stages=[1, 9999]")),
    Case("recipe", "`method.gates={nope: out}`", "exit 2",
         "neuroplastic run: error: method 'npn': cannot gate 'nope': not a Linear/Conv2d of the model; gateable "
         "layers: ['fc1', 'fc2']", cli("run", MOONS, "method.gates={nope: out}")),
    Case("recipe", "`model.name=torch.nn:Identity method.gates=null` (nothing to gate)", "exit 2",
         "neuroplastic run: error: method 'npn': model cannot be gated: it has no nn.Linear or nn.Conv2d layer",
         cli("run", MOONS, "model.name=torch.nn:Identity", "method.gates=null")),
    Case("recipe", "`optim.weights.name=adagrad`", "exit 2",
         "neuroplastic run: error: optim.weights: optimizer name must be one of ('sgd', 'adam', 'adamw'), got "
         "'adagrad'", cli("run", MOONS, "optim.weights.name=adagrad")),
    Case("recipe", "`optim.weights.momentum=0.9` (Adam has none)", "exit 2",
         "neuroplastic run: error: optim.weights: unknown keys for optimizer 'adam': ['momentum']; allowed:",
         cli("run", MOONS, "optim.weights.momentum=0.9")),
    Case("recipe", "`optim.weights.schedule.name=warm`", "exit 2",
         "neuroplastic run: error: optim: schedule name must be one of ('constant', 'multistep', 'step', 'cosine', "
         "'piecewise'), got 'warm'", cli("run", MOONS, "optim.weights.schedule.name=warm")),
    Case("recipe", "`method={name: dense}` with `optim.gates` set", "exit 2",
         "neuroplastic run: error: optim.gates is only for gated methods; method 'dense' has no gate parameters",
         cli("run", MOONS, "method={name: dense}")),
    Case("recipe", "`lpss-fashion-s80` with `optim.weights={name: adam, lr: 0.1}`", "exit 2",
         "neuroplastic run: error: optim.weights: method 'lpss' needs an optimizer of type LpCGD, got Adam",
         cli("run", "lpss-fashion-s80", *ON_MOONS_LPSS, "optim.weights={name: adam, lr: 0.1}")),
    Case("recipe", "`data.name=svhn`", "exit 2",
         "neuroplastic run: error: unknown data set 'svhn'; allowed names: cifar10, cifar10-subset, cifar100,",
         cli("run", MOONS, "data.name=svhn")),
    Case("recipe", "`data.val_size=600` (moons has 500 training points)", "exit 2",
         "neuroplastic run: error: val_size for moons must give between 0 and 499 points, got 600",
         cli("run", MOONS, "data.val_size=600")),
    Case("recipe", "`data.augment.flip=true` on vectors (moons)", "exit 2",
         "neuroplastic run: error: crop, flip and cutout need NCHW images, got x of shape (500, 100)",
         cli("run", MOONS, "data.augment.flip=true")),
    Case("recipe", "a recipe file holding a list", "exit 2",
         "neuroplastic run: error: recipe RECIPE must be a mapping of keys to values, got list",
         cli("run", "RECIPE", setup=recipe_file("- 1\n- 2\n"))),
    Case("recipe", "a recipe file that is not YAML", "exit 2",
         "neuroplastic run: error: recipe RECIPE is not valid YAML:",
         cli("run", "RECIPE", setup=recipe_file("a: [1\n"))),
    # -- data files ------------------------------------------------------------------------------------------
    Case("data", "MNIST missing from `--data-dir DATA_DIR`, no network", "exit 2",
         "neuroplastic run: error: data set 'mnist': 4 file(s) missing and no mirror could be reached.",
         cli("run", "dense-mnist-lenet5", "--data-dir", "DATA_DIR", setup=no_network)),
    Case("data", "an MNIST file with one byte changed", "ChecksumError",
         "checksum mismatch for DATA_DIR/MNIST/raw/t10k-labels-idx1-ubyte.gz: expected MD5 "
         "ec29112dd5afa0611ce80d1b7f02629c, got", api(load_corrupted_mnist), data=True),
    Case("data", "`data.name=cifar10-subset`, `data_batch_1` cut in half", "exit 2",
         "neuroplastic run: error: checksum mismatch for DATA_DIR/cifar-10-subset/cifar-10-batches-py/data_batch_1: "
         "expected SHA256 598cbd028c52709c628dd393e3a764d880ab673c97078f659ee047aff405fa03, got",
         cli("run", "npn-cifar10-resnet56-sparse", "data.name=cifar10-subset", "--data-dir", "DATA_DIR",
             setup=truncated(CIFAR_SUBSET / "data_batch_1", "cifar-10-subset/cifar-10-batches-py/data_batch_1",
                             links=CIFAR_SUBSET)), data=True),
    Case("data", "`npn-moons-vat-sparse`, the moons file missing", "exit 2",
         "neuroplastic run: error: moons-vat: missing file syndata_1.pkl; put VAT's dataset/syndata_1.pkl at "
         "DATA_DIR/moons-vat/syndata_1.pkl", cli("run", "npn-moons-vat-sparse", "--data-dir", "DATA_DIR")),
    Case("data", "`npn-moons-vat-sparse`, the moons file cut in half", "exit 2",
         "neuroplastic run: error: checksum mismatch for DATA_DIR/moons-vat/syndata_1.pkl: expected SHA256 "
         "9a745e762fde13b5ac24a6b884dc06fba6708f6f1849a14c576b4f79b9e34f64, got",
         cli("run", "npn-moons-vat-sparse", "--data-dir", "DATA_DIR", setup=truncated(VAT, "moons-vat/syndata_1.pkl")),
         data=True),
    Case("data", "`read_cifar_batch` of a batch cut in half", "DataFileError",
         "DATA_DIR/data_batch_1 (1,563,243 bytes) cannot be read as a CIFAR batch: it is truncated, corrupt or not "
         "such a file", api(truncated_cifar_batch), data=True),
    Case("data", "`read_cifar_batch` of a pickle naming a class", "DataFileError",
         "DATA_DIR/evil cannot be read as a CIFAR batch: it refers to collections.OrderedDict, which is not allowed "
         "in a data file", api(pickled(collections.OrderedDict(data=1)))),
    Case("data", "`read_idx` of a text file", "DataFileError", "DATA_DIR/x is not an IDX file (bad magic number)",
         api(read_text_as_idx)),
    # -- models that cannot be gated or compacted -----------------------------------------------------------
    Case("model", "`NPN(nn.Sequential(nn.ReLU()))`", "ValueError",
         "model cannot be gated: it has no nn.Linear or nn.Conv2d layer",
         api(lambda ctx: _npn(nn.Sequential(nn.ReLU())))),
    Case("model", "`NPN(model, gates={'nope': 'out'})`", "ValueError",
         "cannot gate 'nope': not a Linear/Conv2d of the model; gateable layers: ['0', '2']",
         api(lambda ctx: _npn(gates={"nope": "out"}))),
    Case("model", "`NPN(model, gates={'0': 'sideways'})`", "ValueError",
         "gate side for '0' must be one of ('out', 'in'), optionally with ':<block size>' (e.g. 'in:64' gates "
         "blocks of 64 input features), got 'sideways'",
         api(lambda ctx: _npn(gates={"0": "sideways"}))),
    Case("model", "`npn.compact(x)` of a model whose forward branches on a tensor", "BadInput",
         "compact() needs a torch.fx trace to find the tensors to slice: torch.fx cannot trace Branchy: blocked in "
         "Branchy.forward at test_bad_inputs.py:", api(lambda ctx: _npn(Branchy(), gates={"fc1": "out"}).compact(X))),
    Case("model", "`NPN(model, gates='groups')` of a model whose forward branches on a tensor", "BadInput",
         "torch.fx cannot trace Branchy: blocked in Branchy.forward at test_bad_inputs.py:",
         api(lambda ctx: _npn(Branchy(), gates="groups", example_input=X))),
    Case("model", "`npn.compact(x)` with `x` of the wrong width", "BadInput",
         "example_input of shape (16, 5) does not run through Sequential: mat1 and mat2 shapes cannot be multiplied",
         api(lambda ctx: _npn().compact(X[:, :5]))),
    Case("model", "`compact(model, keep={'input_1': ...})` (the network input)", "ValueError",
         "group 'input_1' is not prunable: network input", api(compact_input_group)),
    Case("model", "`load_compact(template, path)` with another architecture", "ValueError",
         "template has no modules ['2']: it is not the architecture that was saved",
         api(save_then_load_into(lambda: nn.Sequential(nn.Linear(6, 8))))),
    Case("model", "`npn.compact(x, groups=...)` with a gate no declared group covers (an in-gate on fc1)",
         "BadInput", "gate site 'fc1:in' (6 units) is not covered by the declared groups: compact(x, groups=...) "
         "removes units gated by an out-gate on a group's producer or an in-gate on its consumer, one gate per unit "
         "of the group (in blocks of its repeat); the groups allow 'fc1': 'out', 'fc2': 'in'",
         api(compact_uncovered_gate)),
    Case("model", "`compact(model, keep, x, groups=...)` with a declared member that is not in the model",
         "BadInput", "group 'fc1': member 'fc9' (dim=1, kind='linear') is not a module of Branchy",
         api(compact_declared_group_off_the_model)),
    Case("model", "`bert_unit_groups(model)` of a model without BERT-style blocks", "BadInput",
         "bert_unit_groups found no BERT-style block in Sequential: it looks for Linear layers "
         "'<block>.intermediate.dense' -> '<block>.output.dense' (MLP units)", api(bert_groups_of_an_mlp)),
    # -- API misuse ------------------------------------------------------------------------------------------
    Case("API", "RigL: `step()` without `backward()` before it", "RuntimeError",
         "rigl grows by the gradient of '0', which has none: call step() after backward() and optimizer.step(), "
         "before the next zero_grad()", api(rigl_step_before_backward)),
    Case("API", "RigL: `zero_grad()` between `optimizer.step()` and `step()`", "RuntimeError",
         "rigl grows by the gradients of the masked layers, which are all zero at this update: was zero_grad() called "
         "before step()?", api(rigl_zero_grad_before_step)),
    Case("API", "RigL given another model's optimizer", "BadInput",
         "optimizer holds none of the weights of the masked layers ['0', '2']: build it from this model's parameters",
         api(lambda ctx: _rigl(optimizer=torch.optim.SGD(mlp().parameters(), lr=0.1)))),
    Case("API", "`RigL(..., density=1.5)`", "BadInput", "density must be a number in (0, 1], got 1.5",
         api(lambda ctx: _rigl(density=1.5))),
    Case("API", "NPN closure returning per-example losses (`sampling='batch'`)", "ValueError",
         "closure must return a scalar loss with sampling='batch', got shape (16,)",
         api(lambda ctx: _npn().backward(lambda: nn.functional.cross_entropy(mlp()(X), Y, reduction="none")))),
    Case("API", "NPN closure returning a float", "TypeError", "closure must return the loss as a tensor, got float",
         api(lambda ctx: _npn().backward(lambda: 0.5))),
    Case("API", "`npn.backward(loss)` (a tensor, not a closure)", "TypeError",
         "backward takes a closure that returns the loss, e.g. lambda: criterion(model(x), y); got a Tensor",
         api(lambda ctx: _npn().backward(torch.tensor(0.5)))),
    Case("API", "NPN expand: `end_epoch()` without `val_loss`", "ValueError",
         "NPN in expand mode needs end_epoch(val_loss=...) after each validation",
         api(lambda ctx: _npn(mode="expand", k=1, init_active=[2]).end_epoch())),
    Case("API", "PhysicalNPN growing without its optimizers", "RuntimeError",
         "PhysicalNPN must know the optimizers to grow the model: pass optimizers=... or call bind_optimizers(...)",
         api(physical_expand_without_optimizers)),
    Case("API", "`method.set_epoch(-1)`", "ValueError", "epoch must be an int >= 0, got -1",
         api(lambda ctx: _npn().set_epoch(-1))),
    Case("API", "`fit(..., selection='test')`", "BadInput",
         "selection must be one of ('best_val', 'last'), got 'test'",
         api(lambda ctx: fit_with(ctx, {"train": [(X, Y)], "val": [(X, Y)]}, selection="test"))),
    Case("API", "`fit` without a `val` loader", "ValueError", "loaders needs a 'val' entry, got ['train']",
         api(lambda ctx: fit_with(ctx, {"train": [(X, Y)]}))),
    Case("API", "`fit` with an empty training loader", "ValueError", "the training loader yielded no batches",
         api(lambda ctx: fit_with(ctx, {"train": [], "val": [(X, Y)]}))),
    Case("API", "`TensorLoader(x, y, batch_size=0)`", "BadInput", "batch_size must be a positive int, got 0",
         api(lambda ctx: TensorLoader(X, Y, 0))),
    Case("API", "`split_indices(100, val_size=1.0)`", "BadInput",
         "val_size as a fraction must be in [0, 1), got 1.0",
         api(lambda ctx: split_indices(100, 1.0, 0))),
]


def _case_id(case: Case) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{case.kind} {case.what}".lower()).strip("-")[:60]


def _params():
    return [pytest.param(c, id=_case_id(c), marks=[needs_data] if c.data else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case, tmp_path, monkeypatch):
    ctx = SimpleNamespace(run=tmp_path / "run", data=tmp_path / "data", recipe=tmp_path / "bad.yaml",
                          monkeypatch=monkeypatch)
    gets, message = case.act(ctx)
    for path, name in ((ctx.run, "RUN_DIR"), (ctx.data, "DATA_DIR"), (ctx.recipe, "RECIPE")):
        message = message.replace(str(path), name)
    assert (gets, message[: len(case.message)]) == (case.gets, case.message), message
    if gets.startswith("exit"):
        assert "Traceback" not in message


# -- the table in docs/bad-inputs.md -------------------------------------------------------------------------
HEADER = "| # | kind | bad input | gets | message starts with |\n|---|---|---|---|---|\n"


def table() -> str:
    """The markdown table of :data:`CASES`, as docs/bad-inputs.md holds it."""
    rows = [f"| {i} | {c.kind} | {c.what} | {c.gets} | `{c.message}` |" for i, c in enumerate(CASES, 1)]
    return HEADER + "\n".join(rows) + "\n"


def test_the_table_in_the_docs_is_these_cases():
    text = DOC.read_text(encoding="utf-8")
    start = text.index(HEADER)
    end = text.find("\n\n", start)
    in_docs = text[start:] if end < 0 else text[start:end + 1]
    assert in_docs == table(), "docs/bad-inputs.md and CASES differ: paste python tests/test_bad_inputs.py"
    assert len(CASES) >= 30 and len({c.what for c in CASES}) == len(CASES)


if __name__ == "__main__":
    print(table(), end="")
