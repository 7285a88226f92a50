"""The ``python`` blocks of docs/structure.md, dst.md, npn.md, data-and-models.md, architecture.md,
lpss.md and plots.md run as written: each is read from its page at test time and executed in a scope
holding only the names the page says are the reader's (a model, a few real MNIST batches, a criterion,
``epochs``, ...), and each test checks what the block claims to do."""

from __future__ import annotations

import ast
import re
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

import integration_setups as S
from doc_blocks import DOCS, python_blocks
from neuroplastic.methods.dst import RigL
from neuroplastic.metrics import count_parameters, count_weights
from neuroplastic.models.lenet import LeNet5Caffe
from neuroplastic.structure import trace_unit_groups
from shared_data import CIFAR_SUBSET, SHARED, needs_data
from test_readme import mnist_loop_scope
from test_structure_compact import close_units

#: how many python blocks each page has; all of them are run below
BLOCKS = {"structure.md": 1, "dst.md": 1, "npn.md": 1, "data-and-models.md": 3, "architecture.md": 1,
          "lpss.md": 2, "plots.md": 1}


def run(page: str, code: str, scope: dict[str, Any]) -> dict[str, Any]:
    """Execute ``code`` (a block of docs/``page``) in ``scope``; returns the scope."""
    exec(compile(code, str(DOCS / page), "exec"), scope)
    return scope


#: pages whose python blocks other test files run (README.md: test_readme; integrations.md: the integration
#: tests; npn-physical.md: test_npn_physical_shrink)
ELSEWHERE = {"README.md": 3, "integrations.md": 6, "npn-physical.md": 1}


def test_every_python_block_of_the_docs_is_run():
    """A python block added to the README or any docs page fails here until a test runs it."""
    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    found = {page.name: n for page in pages
             if (n := len(re.findall(r"^```python$", page.read_text(encoding="utf-8"), flags=re.M)))}
    assert found == {**BLOCKS, **ELSEWHERE}
    assert {page: len(python_blocks(DOCS / page)) for page in BLOCKS} == BLOCKS


def test_structure_block_compacts_reloads_and_grows_exactly(tmp_path, monkeypatch):
    """docs/structure.md: the compacted model computes what the model with closed units computes, with
    fewer weights; the reloaded file is the compacted model; grow adds 4 conv2 units without changing the
    outputs, keeps the Adam state of the old units, and the new units learn through their outgoing weights."""
    monkeypatch.chdir(tmp_path)  # the block writes small.pt
    data = S.mnist()
    x, y = data.val_x[:16].view(-1, 1, 28, 28), data.val_y[:16]
    torch.manual_seed(0)
    model = LeNet5Caffe(conv1=8, conv2=8, fc1=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # Adam state on every weight, for grow to carry over
    open_mask = {}
    for group in trace_unit_groups(model, x):
        if group.prunable:  # conv1, conv2, fc1: close every other unit
            open_mask[group.name] = torch.arange(group.size) % 2 == 0
            close_units(model, group, torch.nonzero(~open_mask[group.name]).flatten())
    assert sorted(open_mask) == ["conv1", "conv2", "fc1"]
    with torch.no_grad():
        before = model.eval()(x)
    dense_weights = count_weights(model)
    exp_avg = opt.state[model.conv2.weight]["exp_avg"].clone()

    scope = run("structure.md", python_blocks(DOCS / "structure.md")[0],
                {"model": model, "x": x, "open_mask": open_mask, "ModelClass": LeNet5Caffe, "opt": opt})

    small, small2 = scope["small"], scope["small2"]
    assert type(small) is LeNet5Caffe
    assert (small.conv1.out_channels, small.conv2.out_channels, small.fc1.out_features) == (4, 4, 8)
    assert count_weights(small) < dense_weights
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), before, rtol=0, atol=1e-6)
        assert torch.equal(small2.eval()(x), small(x))
    assert set(torch.load("small.pt", weights_only=True)) >= {"format", "shapes", "state_dict"}
    # grow(model, "conv2", 4, ...): wider in place, same function, optimizer state kept
    assert model.conv2.out_channels == 12 and model.fc1.in_features == 12 * 16
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
    state = opt.state[model.conv2.weight]["exp_avg"]
    assert torch.equal(state[:8], exp_avg) and not state[8:].any()
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in model.parameters()]
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # "opt.step() still works": the new units' fc1 columns (zero so far) learn
    assert model.fc1.weight[:, 8 * 16:].abs().sum() > 0


def test_dst_block_keeps_rigl_at_the_stated_density(capsys):
    """docs/dst.md: RigL on real MNIST keeps the overall density the block states and every layer's
    count of active weights, masked weights stay exact zeros, and one drop-and-grow moved connections;
    every epoch prints the metrics the comment names."""
    code = python_blocks(DOCS / "dst.md", "Use in your own loop")[0]
    density = float(re.search(r"density=([\d.]+)", code).group(1))
    data = S.mnist()
    model = S.net()
    optimizer = S.optimizers_for("rigl", model)[0]
    loader = S.loader(data.train_x, data.train_y)
    # 25 epochs of 8 steps: RigL's first update (step 100, the default update_every) falls before 3/4 of
    # the run, where the drop fraction reaches 0
    epochs = 25
    scope = run("dst.md", code, {"model": model, "optimizer": optimizer, "epochs": epochs, "loader": loader,
                                 "criterion": nn.CrossEntropyLoss()})

    rigl = scope["rigl"]
    engine = rigl.engine
    numel = sum(engine.numel().values())
    assert abs(engine.density() - density) <= 1 / numel
    start = RigL(S.net(), None, density=density, epochs=epochs, steps_per_epoch=len(loader))  # same seed
    assert engine.nnz() == start.engine.nnz()  # per layer
    assert any(not torch.equal(engine.masks[n], start.engine.masks[n]) for n in engine.masks)
    for name, mask in engine.masks.items():
        assert not engine.weight(name)[~mask].any(), name
    updates = [e for e in rigl.end_epoch() if e["event"] == "drop_and_grow"]
    assert [e["moved"] > 0 for e in updates] == [True]  # at step 100
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == epochs
    named = re.search(r"print\(rigl\.metrics\(\)\)\s*#\s*(.*)", code).group(1)  # density, layer_density, ...
    for key in (k.strip() for k in named.split(",")):
        assert any(re.fullmatch(key.replace("*", ".*"), k) for k in printed[-1]), key
    assert printed[-1]["exploration_rate"] > printed[-1]["density"]  # connections were regrown elsewhere
    assert printed[-1]["flops_sparse_inference"] < printed[-1]["flops_dense"]


def test_npn_block_prunes_mnist_and_prints_the_documented_keys(capsys):
    """docs/npn.md: on 4,000 real MNIST images (10 epochs) the loop closes hidden units of a 784-100-10
    MLP, asks ``validation_loss`` once per epoch, and prints the architecture dict with the keys of the
    comment, in order."""
    code = python_blocks(DOCS / "npn.md")[0]
    scope = mnist_loop_scope()
    evaluate, calls = scope["evaluate"], []

    def validation_loss(model: nn.Module) -> float:
        calls.append(model)
        return evaluate(model)

    scope = run("npn.md", code, {**scope, "validation_loss": validation_loss})
    printed = ast.literal_eval(capsys.readouterr().out.splitlines()[-1])
    comment = re.search(r"print\(npn\.architecture\(\)\)\s*#(.*)", code).group(1)
    assert list(printed) == re.findall(r'"(\w+)"', comment)
    assert printed == scope["npn"].architecture()
    assert printed["layers"] == ["fc1:out"] and printed["arch"][0] < 100
    assert printed["params"] < printed["params_dense"] == 784 * 100 + 100 * 10
    assert calls == [scope["model"]] * scope["epochs"]


@needs_data
def test_data_block_loads_the_splits_its_comment_shows(monkeypatch):
    """docs/data-and-models.md, "Data sets": with ``data_dir=None`` the data comes from
    ``$NEUROPLASTIC_DATA``; the splits are the sizes the comment shows (10% of the 60,000 training images
    for validation); the training loader shuffles and normalises, the evaluation loaders keep the order."""
    monkeypatch.setenv("NEUROPLASTIC_DATA", str(SHARED))
    code = python_blocks(DOCS / "data-and-models.md", "Data sets")[0]
    scope = run("data-and-models.md", code, {})

    data = scope["data"]
    assert repr(data) == re.search(r"^# (DataSplits\(.*\))$", code, flags=re.M).group(1)
    assert len(data.train_y) + len(data.val_y) == 60_000 and len(data.val_y) == 6_000
    x, y = next(iter(scope["train"]))
    assert x.shape == (128, 1, 28, 28) and abs(float(x.mean())) < 0.5 < float(x.std())  # normalised
    assert not torch.equal(y, data.train_y[:128])  # shuffled
    assert torch.equal(torch.cat([y for _, y in scope["val"]]), data.val_y)
    assert torch.equal(torch.cat([y for _, y in scope["test"]]), data.test_y)


@needs_data
def test_throughput_script_reads_each_training_split(tmp_path, monkeypatch, capsys):
    """docs/data-and-models.md, the timing script: run from a clone beside the shared data folder (as its
    ``../shared/data`` says), it prints a rate for both data sets, plain and augmented, and its last pass
    read the whole CIFAR-10 subset training split the table above it names."""
    if not CIFAR_SUBSET.is_dir():
        pytest.skip(f"no CIFAR-10 subset at {CIFAR_SUBSET}")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED, target_is_directory=True)
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    page = DOCS / "data-and-models.md"
    code = python_blocks(page, "TensorLoader")[0]
    scope = run("data-and-models.md", code, {})

    lines = capsys.readouterr().out.splitlines()
    rows = [re.fullmatch(r"(\S+) +augment=(\w+) +([\d,]+) examples/s", line) for line in lines]
    assert all(rows), lines
    assert [(r.group(1), r.group(2)) for r in rows] == [("mnist", "False"), ("mnist", "True"),
                                                        ("cifar10-subset", "False"), ("cifar10-subset", "True")]
    assert all(int(r.group(3).replace(",", "")) > 0 for r in rows)
    n = scope["n"]
    assert n == len(scope["d"].train_y) and f"CIFAR-10 subset train ({n:,})" in page.read_text(encoding="utf-8")


def test_models_block_builds_what_each_comment_says(monkeypatch):
    """docs/data-and-models.md, "Models", statement by statement: ResNet-56 with a 100-way head (the
    table's 10-class count plus 90 more outputs of 64 weights and a bias), the 3-3-48-3 LeNet5, a ResNet-20
    that runs on 28x28 one-channel images, and the user's own factory (here a stand-in ``my_package``)
    called with the keyword arguments."""
    built = []

    def small_cnn(num_classes: int) -> nn.Module:
        built.append(nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes)))
        return built[-1]

    package, nets = types.ModuleType("my_package"), types.ModuleType("my_package.nets")
    package.__path__ = []  # a package, so that my_package.nets imports
    nets.small_cnn = small_cnn
    monkeypatch.setitem(sys.modules, "my_package", package)
    monkeypatch.setitem(sys.modules, "my_package.nets", nets)
    code = python_blocks(DOCS / "data-and-models.md", "Models")[0]
    scope: dict[str, Any] = {}
    models = []
    for statement in ast.parse(code).body:
        run("data-and-models.md", ast.unparse(statement), scope)
        if isinstance(statement, ast.Assign):
            models.append(scope["model"])

    resnet56, lenet, resnet20, user = models
    assert resnet56.fc.out_features == 100 and count_parameters(resnet56) == 855_770 + 90 * 65
    assert [lenet.conv1.out_channels, lenet.conv2.out_channels, lenet.fc1.in_features, lenet.fc1.out_features] \
        == [3, 3, 48, 3]
    assert resnet20.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert built == [user] and user[1].out_features == 10


SNAPSHOT_KEYS = {"npn": ["pi/fc1:out"], "npn_physical": ["pi/fc1:out"], "rigl": ["density/fc1", "density/fc2"],
                 "lpss": ["absw/fc1", "p/fc1"]}  # docs/architecture.md, "Snapshot keys"


@pytest.mark.parametrize("name", S.METHODS)
def test_architecture_loop_trains_exactly_as_fit(name, tmp_path):
    """docs/architecture.md, contract 1: the documented loop, driving each method family on real MNIST,
    ends with exactly the weights of ``train.fit`` on the same batches; its last epoch's events, metrics
    and snapshot are fit's (the history line, the events) and have the documented snapshot keys."""
    ref, history, events = S.plain_run(name, tmp_path)
    s = S.build(name)
    data = S.mnist()
    scope = run("architecture.md", python_blocks(DOCS / "architecture.md")[0],
                {"model": s.net, "method": s.method, "optimizers": s.optimizers, "schedules": s.schedules,
                 "optimizer": s.optimizers[0], "schedule": s.schedules[0], "epochs": S.EPOCHS,
                 "loader": S.loader(data.train_x, data.train_y), "val_loader": S.loader(data.val_x, data.val_y)})

    S.assert_same_weights(s.net, ref.net, atol=0)
    assert not torch.equal(s.net.fc2.bias, S.net().fc2.bias)  # it trained

    def plain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return S.same_records([{k: v for k, v in e.items() if k not in ("epoch", "step")} for e in records])

    assert plain(scope["events"]) == plain([e for e in events if e["epoch"] == S.EPOCHS - 1])
    record = S.same_records(scope["record"])
    assert record == S.same_records({k: history[-1][k] for k in record})
    assert sorted(scope["arrays"]) == SNAPSHOT_KEYS[name]


def test_lpss_block_trains_on_the_sphere_with_masks(capsys):
    """docs/lpss.md "Use": the loop on real MNIST with the WRN of the recipes keeps every constrained unit on
    its unit Lp sphere (p 1.2 for the first four block convolutions, 1.07 after), the weights the masks drop
    at exactly zero, one topology update at 20% of the run that thins the masks, and prints the metrics
    the comment names once per epoch."""
    from neuroplastic.lp.geometry import lp_norm
    from neuroplastic.models import get_model

    code = python_blocks(DOCS / "lpss.md", "Use")[0]
    data = S.mnist()
    torch.manual_seed(0)
    model = get_model("wrn_lpss", num_classes=10, in_channels=1)
    epochs = 3
    loader = S.loader(data.train_x.view(-1, 1, 28, 28), data.train_y)  # 8 steps an epoch: one update, at 4
    scope = run("lpss.md", code, {"model": model, "loader": loader, "criterion": nn.CrossEntropyLoss(),
                                  "epochs": epochs})
    opt = scope["opt"]
    printed = capsys.readouterr().out.splitlines()
    assert ast.literal_eval(printed[0]) == opt.layer_p
    assert list(opt.layer_p.values()) == [1.2] * 4 + [1.07] * 12
    modules = dict(model.named_modules())
    for name, p in opt.layer_p.items():
        weight = modules[name].weight
        rows = opt.dense_weight(weight).flatten(1)
        assert torch.allclose(lp_norm(rows, p), torch.ones(len(rows)), atol=1e-4), name
        mask = opt.mask_of(weight)
        assert torch.equal(weight.detach(), (opt.dense_weight(weight) * mask).to(weight.dtype)), name
    metrics = [ast.literal_eval(line) for line in printed[1:]]
    assert len(metrics) == epochs
    named = re.search(r"print\(lpss\.metrics\(\)\)\s*#\s*(.*)", code).group(1)  # density, hoyer, ...
    for key in (k.strip() for k in named.split(",") if k.strip() != "..."):
        assert key.split(" ")[0] in metrics[-1], key
    assert metrics[0]["density"] < 0.8 - 0.001  # from LpSS's init_density 0.8, the update at step 4 dropped


def test_lpss_tradeoff_block_draws_the_committed_runs(tmp_path, monkeypatch):
    """docs/lpss.md's figure code runs as written from a folder laid out like the repository (the run folders
    it names are the committed ones) and writes the figure where the page shows it."""
    from PIL import Image

    code = python_blocks(DOCS / "lpss.md", "Every sparsity, beside the reference README")[0]
    named = set(re.findall(r'"((?:s|static|dense)[\w-]*-50-[\w-]+)"', code))
    runs = tmp_path / "docs" / "runs"
    runs.mkdir(parents=True)
    for name in named:
        (runs / f"lpss-fashion-{name}").symlink_to(DOCS / "runs" / f"lpss-fashion-{name}")
    assert len(named) == 14
    monkeypatch.chdir(tmp_path)
    run("lpss.md", code, {})
    assert Image.open(runs / "lpss-fashion-50-tradeoff" / "tradeoff.png").size == (960, 540)


def test_plots_block_draws_each_picture(tmp_path, monkeypatch):
    """docs/plots.md: the functions of its block draw from run folders (an NPN run and two finished runs,
    made by test_plots' builders) the files the block names."""
    from PIL import Image

    from test_plots import _result_run, make_npn_run

    code = python_blocks(DOCS / "plots.md")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    make_npn_run(tmp_path / "runs").rename(tmp_path / "runs" / "npn-sparse")
    _result_run(tmp_path / "runs", "a", "recipe-a", 0.9, 100, 0.0)
    _result_run(tmp_path / "runs", "b", "recipe-b", 0.8, 50, 0.01)
    scope = run("plots.md", code, {})
    written, errors = scope["written"], scope["errors"]
    assert errors == [] and {p.name for p in written} == {"architecture.png", "neuron_map.gif"}
    for picture in re.findall(r'"([\w.]+\.(?:png|gif))"', code):
        assert Image.open(tmp_path / picture).size[0] > 0, picture
