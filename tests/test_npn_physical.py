"""PhysicalNPN: a physically-sized expand run computes what the simulated (pre-allocated) one does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN
from neuroplastic.models import get_model

LENET_GATES = {"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"}  # the paper's a-b-c-d placement
LENET = dict(mode="expand", k=1.0, gates=LENET_GATES, init_active=[3, 3, 48, 3], stages=(0, 50), fill=0.5)
MOONS = dict(mode="expand", k=1.0, gates={"fc1": "in", "fc2": "in"}, init_active=[3, 3], stages=(0, 50),
             fill=0.5)


def _pair(name: str, options: dict, x: torch.Tensor, **kwargs):
    """(physical model, PhysicalNPN, simulated model, NPN) built from the same seed."""
    torch.manual_seed(0)
    model = get_model(name, **kwargs)
    simulated = copy.deepcopy(model)
    return model, PhysicalNPN(model, example_input=x, **options), simulated, NPN(simulated, **options)


@torch.no_grad()
def _embed(physical: nn.Module, simulated: nn.Module) -> None:
    """Copy every physical tensor into the leading slots of the simulated one (the rest hibernates).

    Leading slots are the right ones everywhere: units are kept as a prefix, and flattening is
    channel-major, so the first c channels of conv2 are the first 16*c inputs of fc1."""
    target = simulated.state_dict()
    for key, value in physical.state_dict().items():
        if key.endswith((".origin", ".closed_epochs")):  # PhysicalNPN's own buffers
            continue
        target[key][tuple(slice(0, n) for n in value.shape)].copy_(value)


def _lenet_input():
    torch.manual_seed(1)
    return torch.randn(6, 1, 28, 28), torch.randint(10, (6,))


def _train(model, method, opt, x, y, steps: int) -> None:
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        method.backward(lambda: nn.functional.cross_entropy(model(x), y))
        opt.step()


def _eval(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_construction_is_the_simulated_network_cut_to_allocated_plus_reserve():
    x, _ = _lenet_input()
    phys, p, sim, s = _pair("lenet5_caffe", LENET, x)
    assert torch.allclose(_eval(phys, x), _eval(sim, x), atol=1e-6, rtol=0)
    a, b = p.architecture(), s.architecture()
    for key in ("layers", "arch", "params", "params_dense"):
        assert a[key] == b[key]
    assert a["arch"] == [3, 3, 48, 3] and a["physical_arch"] == [5, 5, 80, 5]
    # 5x1x25 + 5x5x25 + 5x80 + 10x5 weights held; the full 20-50-800-500 net has 430,500
    assert a["params_physical"] == 125 + 625 + 400 + 50 and a["params_dense"] == 430500
    assert [tuple(phys.conv2.weight.shape), tuple(phys.fc1.weight.shape)] == [(5, 5, 5, 5), (5, 80)]
    assert all(v.startswith("physical") for v in p.physical_sites.values())


def _expand_twice(method, start: int = 1) -> list[dict]:
    """Two expansion events (always a new best loss): the second uses a reserve of 2 up."""
    events = []
    for epoch in (start, start + 1):
        method.set_epoch(epoch)
        events += method.end_epoch(val_loss=10.0 - epoch)
    return events


def test_after_each_growth_the_model_computes_what_the_simulated_one_does():
    x, y = _lenet_input()
    phys, p, sim, s = _pair("lenet5_caffe", LENET, x)
    opt = torch.optim.Adam(phys.parameters(), lr=1e-2)
    p.bind_optimizers(opt)
    grows = []
    for epoch in range(5):
        p.set_epoch(epoch)
        _train(phys, p, opt, x, y, steps=2)
        events = p.end_epoch(val_loss=10.0 - epoch)  # always a new best: expand every epoch
        grows += [e for e in events if e["event"] == "grow"]
        # the same open units and weights in the pre-allocated network: the same outputs
        _embed(phys, sim)
        s.allocated = list(p.allocated)
        assert torch.allclose(_eval(phys, x), _eval(sim, x), atol=1e-5, rtol=0)
        a, b = p.architecture(), s.architecture()
        assert (a["arch"], a["params"], a["params_dense"]) == (b["arch"], b["params"], b["params_dense"])
    assert {e["group"] for e in grows} >= {"conv1", "conv2", "fc1"}
    assert torch.allclose(_eval(p.compact(x), x), _eval(phys, x), atol=1e-5, rtol=0)  # compaction works too
    assert p.physical_widths()[1] * 16 == p.physical_widths()[2]  # fc1 reads 16 features per channel


def test_growth_extends_adam_state_with_zeros_and_training_continues():
    x, y = _lenet_input()
    phys, p, _, _ = _pair("lenet5_caffe", LENET, x)
    opt = torch.optim.Adam(phys.parameters(), lr=1e-2)
    p.bind_optimizers(opt)
    _train(phys, p, opt, x, y, steps=3)
    old_w = opt.state[phys.conv2.weight]["exp_avg"].clone()
    old_phi = opt.state[phys.fc1.npn_in.phi]["exp_avg_sq"].clone()
    old_step = opt.state[phys.conv2.weight]["step"].clone()
    events = _expand_twice(p)
    assert {"epoch": 2, "event": "grow", "group": "conv2", "units": [5, 6], "width": 7} in events
    assert tuple(phys.conv2.weight.shape) == (7, 7, 5, 5) and tuple(phys.fc1.weight.shape) == (7, 112)
    state = opt.state[phys.conv2.weight]
    assert torch.equal(state["exp_avg"][:5, :5], old_w) and not state["exp_avg"][5:].any()
    assert not state["exp_avg"][:, 5:].any()  # conv1 grew too: new input columns
    assert torch.equal(state["step"], old_step)
    phi_state = opt.state[phys.fc1.npn_in.phi]["exp_avg_sq"]
    assert torch.equal(phi_state[:80], old_phi) and not phi_state[80:].any()
    assert {id(q) for g in opt.param_groups for q in g["params"]} == {id(q) for q in phys.parameters()}
    assert (phys.conv2.npn_out.phi[5:] == -40.0).all()  # new units hibernate (k = 1)
    # drawn as the full-size layers draw them: uniform in +-1/sqrt(full fan-in), outgoing weights too
    # (grow alone would draw conv2's rows from its physical fan-in 5*25: up to twice as wide)
    for new, fan_in in ((phys.conv2.weight[5:], 20 * 25), (phys.fc1.weight[:, 80:], 800),
                        (phys.conv2.weight[:, 5:], 20 * 25)):
        bound = fan_in**-0.5
        assert new.abs().max() <= bound and new.abs().max() > 0.5 * bound  # hundreds of draws
    assert phys.conv2.bias[5:].abs().max() <= (20 * 25) ** -0.5
    w = phys.conv2.weight.detach().clone()
    _train(phys, p, opt, x, y, steps=3)
    assert not torch.equal(phys.conv2.weight[:5], w[:5])
    assert torch.equal(phys.conv2.weight[5:], w[5:])  # closed units get no gradient, no Adam step
    assert torch.isfinite(_eval(phys, x)).all()


def test_moons_input_gate_stays_full_width_and_hidden_gate_is_physical():
    torch.manual_seed(2)
    x = torch.randn(8, 100)
    phys, p, sim, s = _pair("mlp", MOONS, x)
    assert p.physical_sites["fc1:in"].startswith("simulated: group 'x'")
    assert p.physical_sites["fc2:in"] == "physical: group 'fc1'"
    assert p.physical_widths() == [100, 5] and tuple(phys.fc1.weight.shape) == (5, 100)
    assert torch.allclose(_eval(phys, x), _eval(sim, x), atol=1e-6, rtol=0)
    assert p.architecture()["params"] == s.architecture()["params"] == 3 * 3 + 3 * 2


def test_state_dict_of_a_smaller_model_loads_by_resizing():
    x, y = _lenet_input()
    phys, p, _, _ = _pair("lenet5_caffe", LENET, x)
    opt = torch.optim.Adam(phys.parameters(), lr=1e-2)
    p.bind_optimizers(opt)
    saved = copy.deepcopy(phys.state_dict())
    expected = _eval(phys, x)
    _expand_twice(p)
    assert p.physical_widths() == [7, 7, 112, 7]
    phys.load_state_dict(saved)  # e.g. the best epoch's weights, saved before a growth
    assert p.physical_widths() == [5, 5, 80, 5] and tuple(phys.fc1.weight.shape) == (5, 80)
    assert torch.equal(_eval(phys, x), expected)
    assert {id(q) for g in opt.param_groups for q in g["params"]} == {id(q) for q in phys.parameters()}
    _train(phys, p, opt, x, y, steps=1)


def test_bad_arguments_raise():
    x, _ = _lenet_input()
    model = get_model("lenet5_caffe")
    with pytest.raises(ValueError, match="mode must be one of"):
        PhysicalNPN(model, mode="grow", example_input=x)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="remove_after"):
            PhysicalNPN(model, mode="sparse", remove_after=bad, example_input=x)
    for bad in (0, 0.5, -0.1, "0.1"):
        with pytest.raises(ValueError, match="remove_below"):
            PhysicalNPN(model, mode="sparse", remove_after=2, remove_below=bad, example_input=x)
    with pytest.raises(ValueError, match="remove_closed"):
        PhysicalNPN(model, mode="sparse", remove_closed="yes", example_input=x)
    with pytest.raises(ValueError, match="reserve"):
        PhysicalNPN(model, reserve=0, example_input=x, init_active=3)
    with pytest.raises(TypeError, match="example_input"):
        PhysicalNPN(model, init_active=3)
    p = PhysicalNPN(model, example_input=x, init_active=3, stages=(0, 9), fill=0.5)
    with pytest.raises(RuntimeError, match="bind_optimizers"):  # the second expansion grows
        _expand_twice(p)


def test_moons_recipe_physical_and_simulated_agree_statistically(tmp_path):
    """One seed of the 3-seed comparison (benchmarks/physical_npn_moons.py, docs/npn-physical.md), at
    5% of the epochs: loose bounds, the two runs draw different gate noise."""
    from neuroplastic.recipes.runner import execute, prepare

    results = {}
    for label, extra in (("simulated", []), ("physical", ["method.name=neuroplastic.methods.npn_physical:PhysicalNPN",
                                                          "method.reserve=2"])):
        prep = prepare("npn-moons-expand", ["epochs_scale=0.05", "seed=0", *extra], out=tmp_path / label)
        results[label] = execute(prep, progress=False)
        results[label]["held"] = prep.method.architecture().get("params_physical")
    sim, phys = results["simulated"], results["physical"]
    assert min(sim["test_accuracy"], phys["test_accuracy"]) >= 0.7
    assert abs(sim["test_accuracy"] - phys["test_accuracy"]) <= 0.08
    assert 0.5 <= phys["params"] / sim["params"] <= 2.0
    assert phys["params_dense"] == sim["params_dense"] == 100 * 80 + 80 * 2
    assert "compact_file" in phys and "compact_error" not in phys
    assert phys["held"] < 100 * 40 + 40 * 2  # the physical MLP never held half its hidden units


def test_resnet_block_convs_are_physical_residual_streams_are_simulated():
    """Out-gates after BatchNorm (block convs) are resized with their BatchNorm; the stem and the fc
    inputs write or read a residual stream (several writers) and keep their full width."""
    torch.manual_seed(3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
    gates = {"conv1": "out", **{f"layer{i}.{b}.conv1": "out" for i in (1, 2, 3) for b in range(3)}, "fc": "in"}
    options = dict(mode="expand", k=7.0, gates=gates, init_active=3, stages=(0, 9), fill=3.0)
    with pytest.warns(UserWarning, match="residual stream"):
        phys, p, sim, s = _pair("resnet20", options, x, num_classes=10)
    assert p.physical_sites["conv1:out"].startswith("simulated") and p.physical_sites["fc:in"].startswith("simulated")
    assert p.physical_widths() == [16] + [5] * 9 + [64]
    assert phys.layer2[1].bn1.num_features == 5 and tuple(phys.layer2[1].bn1.running_var.shape) == (5,)
    opt = torch.optim.SGD(phys.parameters(), lr=0.05, momentum=0.9)
    p.bind_optimizers(opt)
    for epoch in range(2):
        p.set_epoch(epoch)
        _train(phys, p, opt, x, y, steps=1)
        p.end_epoch(val_loss=5.0 - epoch)
    assert p.physical_widths() == [16] + [7] * 9 + [64] and phys.layer3[2].conv2.in_channels == 7
    _embed(phys, sim)
    s.allocated = list(p.allocated)
    assert torch.allclose(_eval(phys, x), _eval(sim, x), atol=1e-5, rtol=0)
    assert p.architecture()["params"] == s.architecture()["params"]
    _train(phys, p, opt, x, y, steps=1)


def test_resume_of_a_grown_physical_run_matches_an_uninterrupted_run(tmp_path):
    from neuroplastic.recipes.runner import execute, prepare

    overrides = ["epochs_scale=0.02", "seed=1", "method.name=neuroplastic.methods.npn_physical:PhysicalNPN"]
    full = execute(prepare("npn-moons-expand", overrides, out=tmp_path / "a"), progress=False)
    prep = prepare("npn-moons-expand", overrides, out=tmp_path / "b")
    steps = {"n": 0}
    original_step = prep.method.step

    def step_then_die():
        original_step()
        steps["n"] += 1
        if steps["n"] == 4 * 12 + 2:  # inside epoch 12, after growths (expansion from epoch 2)
            raise KeyboardInterrupt

    prep.method.step = step_then_die
    with pytest.raises(KeyboardInterrupt):
        execute(prep, progress=False)
    assert prep.method.physical_widths()[1] > 5
    resumed_prep = prepare("npn-moons-expand", overrides, out=tmp_path / "b", resume=True)
    assert resumed_prep.method.physical_widths()[1] == 5  # fresh: allocated + reserve, grown on load
    resumed = execute(resumed_prep, progress=False)
    drop = ("wall_seconds", "session_seconds")
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}


def test_expand_step_larger_than_reserve_keeps_room_for_the_next_step():
    torch.manual_seed(2)
    x = torch.randn(8, 100)
    options = {**MOONS, "expand_step": 3}
    torch.manual_seed(0)
    model = get_model("mlp")
    p = PhysicalNPN(model, example_input=x, reserve=1, **options)
    assert p.physical_widths() == [100, 6]  # 3 allocated + room for one step of 3 (> reserve 1)
    p.bind_optimizers([])  # no optimizer: e.g. evaluating; growth still allowed
    p.set_epoch(1)
    events = p.end_epoch(val_loss=1.0)
    assert [e["units"] for e in events if e["event"] == "expand"] == [[3, 4, 5], [3, 4, 5]]
    assert {"epoch": 1, "event": "grow", "group": "fc1", "units": [6, 7, 8], "width": 9} in events
    assert p.physical_widths() == [100, 9] and tuple(model.fc2.weight.shape) == (2, 9)


def test_proportional_expansion_events_always_fit_the_physical_model():
    """expand_fraction opens ceil(f * allocated) units per event: the model keeps room for the next one."""
    x, _ = _lenet_input()
    p = PhysicalNPN(get_model("lenet5_caffe"), example_input=x, reserve=2, expand_fraction=0.5,
                    **{**LENET, "init_active": [3, 3, 48, 3]})
    p.bind_optimizers([])
    expected = [[3, 3, 48, 3]]
    for epoch in range(4):
        p.set_epoch(epoch + 1)
        p.end_epoch(val_loss=1.0 - 0.1 * epoch)
        expected.append([min(full, a + max(1, -(-a // 2))) for a, full in zip(expected[-1], (20, 50, 800, 500),
                                                                               strict=True)])
        assert p.allocated == expected[-1]
        for i, (alloc, width) in enumerate(zip(p.allocated, p.physical_widths(), strict=True)):
            assert width >= min(p.sites[i].n, alloc + p.expand_count(i))
