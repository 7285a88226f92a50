"""PhysicalNPN shrinking: closed units leave the model for real, and the run computes what the
simulated (full-size) NPN run computes, up to floating-point noise."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from doc_blocks import DOCS, python_blocks
from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN
from neuroplastic.models import get_model

LENET_GATES = {"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"}
# strong penalties and a fast gate optimizer: units close within a few steps
SPARSE = dict(mode="sparse", k=7.0, lam=[2e-3, 2e-5, 2e-5, 2e-3], gates=LENET_GATES, stages=(1, 4), seed=5)


def _optimizers(model: nn.Module) -> list[torch.optim.Optimizer]:
    weights = [p for n, p in model.named_parameters() if not n.endswith(".phi")]
    gates = [p for n, p in model.named_parameters() if n.endswith(".phi")]
    return [torch.optim.Adam(weights, lr=1e-3), torch.optim.Adam(gates, lr=0.2)]


def _epoch(method, model, optimizers, x, y, epoch: int, steps: int = 3) -> None:
    method.set_epoch(epoch)
    model.train()
    for _ in range(steps):
        for opt in optimizers:
            opt.zero_grad()
        method.backward(lambda: nn.functional.cross_entropy(model(x), y))
        for opt in optimizers:
            opt.step()
    method.end_epoch(val_loss=1.0)


@torch.no_grad()
def _eval(model, x):
    model.eval()
    return model(x)


def _pair(options, x, name="lenet5_caffe", **kwargs):
    torch.manual_seed(0)
    model = get_model(name, **kwargs)
    simulated = copy.deepcopy(model)
    physical = PhysicalNPN(model, example_input=x, **options)
    sim = NPN(simulated, **options)
    opt_p, opt_s = _optimizers(model), _optimizers(simulated)
    physical.bind_optimizers(opt_p)
    return (model, physical, opt_p), (simulated, sim, opt_s)


def test_sparse_run_shrinks_at_hardening_and_computes_what_the_simulated_run_computes():
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(10, (16,))
    (model, physical, opt_p), (simulated, sim, opt_s) = _pair(SPARSE, x)
    for epoch in range(6):
        _epoch(physical, model, opt_p, x, y, epoch)
        _epoch(sim, simulated, opt_s, x, y, epoch)
        if epoch < 4:  # pre-train and plastic: full size, bit for bit the same run
            assert physical.physical_widths() == [20, 50, 800, 500]
            assert torch.equal(_eval(model, x), _eval(simulated, x))
        else:
            assert torch.allclose(_eval(model, x), _eval(simulated, x), atol=1e-4, rtol=0)
        assert physical.architecture()["params"] == sim.architecture()["params"]
    open_c1, open_c2, _, open_fc = (int((s.gates.phi > 0).sum()) for s in sim.sites)
    assert 0 < open_c1 < 20 and 0 < open_c2 < 50 and 0 < open_fc < 500  # the test closes some units
    # the hardening stage trains the small network: closed units are gone from every coupled tensor
    assert model.conv1.out_channels == open_c1 and model.conv2.in_channels == open_c1
    assert model.conv2.out_channels <= open_c2 and model.fc1.in_features == 16 * model.conv2.out_channels
    assert model.fc1.out_features == open_fc == model.fc2.in_features
    assert physical.architecture()["params_physical"] < physical.architecture()["params_dense"] / 2
    # the optimizers hold exactly the model's (new) parameters, with state of the new shapes
    held = {id(p) for opt in opt_p for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}
    assert opt_p[0].state[model.conv1.weight]["exp_avg"].shape == model.conv1.weight.shape
    removed = [e for e in physical.events if e["event"] == "remove"]
    assert {e["group"] for e in removed} == {"conv1", "conv2", "fc1"} and all(e["epoch"] == 4 for e in removed)
    assert physical.end_epoch(val_loss=1.0) == []  # reported once, by the end_epoch of the shrinking epoch


def test_snapshots_stay_full_width_with_removed_units_at_zero():
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(10, (16,))
    (model, physical, opt_p), (simulated, sim, opt_s) = _pair(SPARSE, x)
    for epoch in range(5):
        _epoch(physical, model, opt_p, x, y, epoch)
        _epoch(sim, simulated, opt_s, x, y, epoch)
    snap_p, snap_s = physical.snapshot(), sim.snapshot()
    for key, full in snap_s.items():
        assert snap_p[key].shape == full.shape
        held = snap_p[key] != 0
        assert (snap_p[key][held] == full[held]).all()  # units held: the same probability, same place
        if key in ("pi/conv1:out", "pi/fc2:in"):  # no upstream closure: every open unit is held
            assert held[full >= 0.5].all()
        assert held.sum() < len(held)  # removed units read 0


def test_removal_during_the_plastic_stage_after_closed_epochs():
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(10, (16,))
    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    options = {**SPARSE, "stages": (1, 20)}
    p = PhysicalNPN(model, example_input=x, remove_after=2, remove_below=0.01, **options)
    opts = _optimizers(model)
    p.bind_optimizers(opts)
    counts = []
    for epoch in range(5):
        _epoch(p, model, opts, x, y, epoch)
        low = [int((p.keep_prob(s) < 0.01).sum()) for s in p.sites]
        counts.append((p.physical_widths(), low))
    # a unit leaves only after its second consecutive plastic epoch below the threshold
    first_low_epoch = next(i for i, (_, low) in enumerate(counts) if any(low))
    assert counts[first_low_epoch][0] == [20, 50, 800, 500]
    assert sum(counts[-1][0]) < 20 + 50 + 800 + 500
    assert all(e["why"].startswith("below 0.01 for 2") for e in p.events if e["event"] == "remove")
    for pg in p.groups:  # a group unit stays while, in every site, one of its site units was recently open
        for i, r in pg.sites:
            assert (p.sites[i].gates.closed_epochs.view(-1, r).min(1).values < 2).all()
    _epoch(p, model, opts, x, y, 5)  # training goes on at the new size


def test_group_gates_shrink_residual_streams():
    """gates='groups' on ResNet-20: a closed stream channel leaves every conv/BN that writes or reads it."""
    torch.manual_seed(3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=10)
    simulated = copy.deepcopy(model)
    options = dict(mode="sparse", k=7.0, lam=0.0, gates="groups", stages=(0, 1), seed=1)
    p = PhysicalNPN(model, example_input=x, **options)
    s = NPN(simulated, example_input=x, **options)
    assert all(v.startswith("physical") for v in p.physical_sites.values()), p.physical_sites
    with torch.no_grad():  # close units by hand: 3 channels of the first stream, 2 of a block's inner conv
        for method in (p, s):
            stream = method.sites[0]
            stream.gates.phi[[1, 4, 7]] = -1.0
            inner = next(site for site in method.sites if site.gates.phi.numel() == 32)
            inner.gates.phi[[0, 5]] = -1.0
    opt_p, opt_s = _optimizers(model), _optimizers(simulated)
    p.bind_optimizers(opt_p)
    for method, m, opts in ((p, model, opt_p), (s, simulated, opt_s)):
        _epoch(method, m, opts, x, y, 1, steps=2)  # epoch 1: hardening
    assert model.conv1.out_channels == 13 and model.layer1[0].conv2.out_channels == 13
    assert model.layer1[2].conv1.in_channels == 13 and model.layer2[0].conv1.in_channels == 13
    assert sum(p.physical_widths()) == sum(site.n for site in p.sites) - 5
    assert torch.allclose(_eval(model, x), _eval(simulated, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kill_in", ["plastic", "hardening"])
def test_resume_across_a_shrink_is_exact(tmp_path, kill_in):
    """Through the recipe runner: a run killed before or after the shrink and resumed ends exactly as an
    uninterrupted run; a physical run ends as the simulated run up to floating-point noise."""
    from neuroplastic.recipes.runner import execute, prepare

    base = ["epochs=20", "seed=2", "method.stages=[3, 12]", "method.lam=[0, 0.002]", "optim.gates.lr=0.1",
            "select_from_epoch=12"]
    physical = [*base, "method.name=npn_physical"]
    full = execute(prepare("npn-moons-sparse", physical, out=tmp_path / "a"), progress=False)
    prep = prepare("npn-moons-sparse", physical, out=tmp_path / "b")
    steps = {"n": 0}
    original_step = prep.method.step
    die_at = 4 * (8 if kill_in == "plastic" else 14) + 2  # 4 steps per epoch

    def step_then_die():
        original_step()
        steps["n"] += 1
        if steps["n"] == die_at:
            raise KeyboardInterrupt

    prep.method.step = step_then_die
    with pytest.raises(KeyboardInterrupt):
        execute(prep, progress=False)
    shrunk = prep.method.physical_widths()[1] < 80
    assert shrunk == (kill_in == "hardening")
    resumed = execute(prepare("npn-moons-sparse", physical, out=tmp_path / "b", resume=True), progress=False)
    logged = [json.loads(line) for line in (tmp_path / "b" / "events.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["event"], e["group"]) for e in logged] == [(12, "remove", "fc1")]
    drop = ("wall_seconds", "session_seconds")
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}
    simulated = execute(prepare("npn-moons-sparse", base, out=tmp_path / "c"), progress=False)
    assert simulated["params"] == full["params"] and simulated["arch"][1] == full["arch"][1] < 80
    assert full["test_accuracy"] == pytest.approx(simulated["test_accuracy"], abs=0.005)
    assert full["val_loss"] == pytest.approx(simulated["val_loss"], rel=1e-4)


def test_the_docs_snippet_runs_as_written():
    """docs/npn-physical.md's example builds the method and binds the optimizer; the loop it names shrinks."""
    scope: dict = {}
    exec(compile(python_blocks(DOCS / "npn-physical.md")[0], "npn-physical.md", "exec"), scope)
    npn, model, optimizer = scope["npn"], scope["model"], scope["optimizer"]
    assert npn.optimizers == [optimizer] and npn.physical_widths() == [20, 50, 800, 500]
    with torch.no_grad():
        model.conv2.npn_out.phi[:40] = -1.0  # 40 conv2 channels closed by hand
    npn.set_epoch(65)  # the hardening stage: they leave, and the optimizer follows
    assert model.conv2.out_channels == 10 and model.fc1.in_features == 160
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}


def test_remove_closed_false_keeps_the_full_width():
    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    npn = PhysicalNPN(model, example_input=torch.zeros(2, 1, 28, 28), remove_closed=False,
                      **SPARSE)
    npn.bind_optimizers([])
    with torch.no_grad():
        model.conv1.npn_out.phi[:5] = -1.0
    npn.set_epoch(4)
    assert npn.physical_widths() == [20, 50, 800, 500] and npn.architecture()["arch"][0] == 15
