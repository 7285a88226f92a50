"""LpSS: masks on the shared engine, topology updates, controller, semi-pruning, reporting, persistence."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neuroplastic.lp import LpCGD, lp_norm, mass_support
from neuroplastic.methods.lpss import LpSS


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, generator=g)
    w1, w2 = torch.randn(32, 32, generator=g) / 32**0.5, torch.randn(32, 4, generator=g)
    return x, (torch.tanh(x @ w1) @ w2).argmax(1)


def _setup(p=1.1, seed=0, **options):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = LpCGD.for_model(net, lr=0.05, p_first=p, p_rest=p, momentum=0.9, nesterov=True)
    kw = {"final_density": 0.2, "epochs": 30, "steps_per_epoch": 10, "update_every": 5, "begin": 0.1, "end": 0.9}
    kw.update(options)
    return net, opt, LpSS(net, opt, **kw)


def _train(net, opt, method, steps, seed=1):
    x, y = _data()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 512, (64,), generator=g)
        opt.zero_grad()
        method.backward(lambda idx=idx: nn.functional.cross_entropy(net(x[idx]), y[idx]))
        opt.step()
        method.step()


def test_initial_masks_layers_and_p():
    net, opt, lpss = _setup(init_density=0.75)
    assert lpss.layer_p == {"0": 1.1, "2": 1.1}  # the classifier is free but masked
    assert list(lpss.engine.masks) == ["0", "2", "4"]
    for name, m in lpss.engine.masks.items():
        assert int((~m).sum()) == m.numel() - round(0.75 * m.numel())
        assert torch.all(lpss.engine.weight(name)[~m] == 0)
    assert lpss.metrics()["density"] == pytest.approx(0.75, abs=1e-3)
    # the constrained weights are the masked dense weights of the optimizer's sphere
    w = net[0].weight.detach()
    torch.testing.assert_close(w, opt.dense_weight(net[0].weight) * lpss.engine.masks["0"])


def test_update_steps_follow_the_window_and_frequency():
    _, _, lpss = _setup()  # 300 steps: window [30, 270), every 5
    steps = [t for t in range(300) if lpss.is_update_step(t)]
    assert steps[0] == 30 and steps[-1] == 265 and len(steps) == 48
    assert lpss.threshold_schedule(0) == pytest.approx(0.2) and lpss.threshold_schedule(240) == pytest.approx(0.0)


@pytest.mark.parametrize(("controller", "target"), [("exact", 0.5), ("exact", 0.9), ("reference", 0.8)])
def test_controller_reaches_the_target_density(controller, target):
    net, opt, lpss = _setup(final_density=1 - target, controller=controller)
    _train(net, opt, lpss, 300)
    events = lpss.end_epoch()
    assert len(events) == 48
    assert abs(lpss.metrics()["density"] - (1 - target)) < 0.01
    # semi-pruning and the sphere: every constrained row of the optimizer's dense weight has norm 1
    for name in lpss.layer_p:
        weight = lpss.engine.weight(name)
        norms = lp_norm(opt.dense_weight(weight), 1.1)
        torch.testing.assert_close(norms, torch.ones(weight.shape[0]), atol=1e-5, rtol=0)
        assert torch.all(lp_norm(weight.detach(), 1.1) <= 1 + 1e-5)


def test_target_ramp_follows_the_cubic_and_the_exact_controller_tracks_it():
    # window [30, 270): the target density falls over its first half, steps 30..150, from 0.8 to 0.2
    net, opt, lpss = _setup(controller="exact", target_ramp=0.5)
    cubic = [(60, 0.2 + 0.6 * 0.75**3), (90, 0.2 + 0.6 * 0.5**3)]
    for t, expected in [(0, 0.8), (30, 0.8), *cubic, (150, 0.2), (290, 0.2)]:
        assert lpss.current_target(t) == pytest.approx(expected)
    _train(net, opt, lpss, 300)
    events = lpss.end_epoch()
    for event in events:
        assert event["target_density"] == pytest.approx(lpss.current_target(event["step"]))
    # while the target rises slowly the exact controller lands on it at every update
    ramp = [e for e in events if e["step"] <= 150]
    assert max(abs(e["density"] - e["target_density"]) for e in ramp) < 0.01
    assert ramp[1]["density"] > 0.7  # gradual, not the reference's jump
    assert abs(lpss.metrics()["density"] - 0.2) < 0.01
    # without a ramp the target is constant from the first update
    _, _, flat = _setup()
    assert flat.current_target(30) == flat.current_target(0) == 0.2


def test_adapt_threshold_reaches_a_target_the_fixed_threshold_cannot():
    # p = 1.5 spreads each unit's weights, so h <= 0.1 of the row mean drops too little for 0.9
    options = {"p": 1.5, "final_density": 0.1, "controller": "exact", "drop_threshold": 0.1}
    net, opt, fixed = _setup(**options)
    _train(net, opt, fixed, 300)
    assert fixed.metrics()["density"] > 0.2
    assert all(e["threshold"] == e["drop_threshold"] for e in fixed.end_epoch())
    net, opt, adapted = _setup(**options, adapt_threshold=True)
    _train(net, opt, adapted, 300)
    events = adapted.end_epoch()
    assert events[0]["threshold"] > 1.0 > events[0]["drop_threshold"]  # raised (above the row mean here)
    assert abs(events[0]["density"] - 0.1) < 0.005  # lands on the target at the first update
    raised = [e for e in events if e["threshold"] > e["drop_threshold"]]
    assert all(abs(e["density"] - 0.1) < 0.005 for e in raised)
    assert len(raised) < len(events)  # only where the fixed threshold was not enough
    assert abs(adapted.metrics()["density"] - 0.1) < 0.005


def test_regrown_constrained_weights_resume_from_their_latent_value():
    net, opt, lpss = _setup(begin=0.0)
    _train(net, opt, lpss, 1)  # step 0 was an update
    old = {n: m.clone() for n, m in lpss.engine.masks.items()}
    for _ in range(4):
        _train(net, opt, lpss, 1)
    _train(net, opt, lpss, 1)  # step 5: an update
    grown = {n: lpss.engine.masks[n] & ~old[n] for n in old}
    assert all(int(g.sum()) > 0 for g in grown.values())
    for name in ("0", "2"):  # constrained: resumed from the dual state, so non-zero (and equal to it)
        w = lpss.engine.weight(name).detach()
        assert torch.all(w[grown[name]] != 0)
        torch.testing.assert_close(w, opt.dense_weight(lpss.engine.weight(name)) * lpss.engine.masks[name])
    assert torch.all(net[4].weight[grown["4"]] == 0)  # unconstrained classifier regrows from zero


@pytest.mark.parametrize("grow_score", ["abs", "signed_reference"])
def test_grow_score_option_decides_the_sign(grow_score):
    net, opt, lpss = _setup(begin=0.0, grow_fraction=1.0, grow_score=grow_score)
    mask = lpss.engine.masks["0"]
    with torch.no_grad():  # equal magnitudes except one active zero: exactly one drop in layer 0
        net[0].weight.copy_(mask.float())
        active = mask.flatten().nonzero().squeeze(1)
        net[0].weight.view(-1)[active[0]] = 0.0
    for layer in lpss.engine.layers.values():
        layer.weight.grad = torch.zeros_like(layer.weight)
    inactive = (~mask).flatten().nonzero().squeeze(1)
    a, b = inactive[0], inactive[1]
    net[0].weight.grad.view(-1)[a] = -5.0  # largest |score|, negative
    net[0].weight.grad.view(-1)[b] = 1.0  # largest signed score
    before = mask.clone().flatten()
    lpss.update_topology()
    new = lpss.engine.masks["0"].flatten()
    assert int(new.sum()) == int(before.sum())  # one dropped, one grown (grow fraction 1)
    assert not new[active[0]]
    assert bool(new[a]) == (grow_score == "abs") and bool(new[b]) == (grow_score == "signed_reference")


def test_metrics_and_snapshot():
    net, opt, lpss = _setup(sample_size=100)
    _train(net, opt, lpss, 40)
    m = lpss.metrics()
    dense = 32 * 64 + 64 * 64 + 64 * 4
    active = sum(int(mask.sum()) for mask in lpss.engine.masks.values())
    assert m["params"] == active and lpss.architecture()["params_dense"] == dense
    assert m["density"] == pytest.approx(active / dense)
    assert set(m["hoyer"]) == {"0", "2"} and 0 < m["hoyer_net"] < 1
    expected_net = (m["hoyer"]["0"] * 2048 + m["hoyer"]["2"] * 4096) / 6144
    assert m["hoyer_net"] == pytest.approx(expected_net)
    assert m["nonzero_masked_weights"] <= active
    live = int(lpss.engine.masks["0"].sum() + lpss.engine.masks["2"].sum())
    assert m["constrained_live"] == live
    used = sum(int(mass_support(lpss.engine.weight(n)).sum()) for n in ("0", "2"))
    assert m["constrained_used"] == used and 0 < used < live  # p = 1.1 leaves many active weights tiny
    snap = lpss.snapshot()
    assert set(snap) == {"absw/0", "absw/2", "p/0", "p/2"}
    assert snap["absw/0"].shape == (100,) and snap["absw/0"].dtype == np.float16
    assert np.all(snap["absw/0"] >= 0) and float(snap["p/2"][0]) == pytest.approx(1.1, abs=1e-3)


def test_sparse_flops_follow_the_layer_densities():
    _, _, lpss = _setup(input_shape=[32])
    density = lpss.engine.layer_density()
    expected = 2 * (2048 * density["0"] + 4096 * density["2"] + 256 * density["4"])
    assert lpss.metrics()["flops_sparse_inference"] == pytest.approx(expected)
    assert _setup()[2].metrics()["flops_sparse_inference"] is None


def test_state_dict_round_trip_gives_identical_next_steps():
    net, opt, lpss = _setup(begin=0.0)
    _train(net, opt, lpss, 12, seed=1)
    saved = copy.deepcopy((net.state_dict(), opt.state_dict(), lpss.state_dict()))
    _train(net, opt, lpss, 12, seed=2)  # two topology updates happen in here

    net2, opt2, lpss2 = _setup(begin=0.0, seed=5)  # another init and another initial mask
    net2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    lpss2.load_state_dict(saved[2])
    _train(net2, opt2, lpss2, 12, seed=2)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    for name in lpss.engine.masks:
        assert torch.equal(lpss.engine.masks[name], lpss2.engine.masks[name])
    assert lpss.controller.state_dict() == lpss2.controller.state_dict()


def test_from_recipe():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = LpCGD.for_model(net, lr=0.1, p_first=1.3)
    lpss = LpSS.from_recipe(net, opt, epochs=2, steps_per_epoch=5, final_density=0.5, update_every=2)
    assert lpss.update_every == 2 and lpss.total_steps == 10
    with pytest.raises(ValueError, match=r"unknown options for method 'lpss': \['sparsity'\]"):
        LpSS.from_recipe(net, opt, epochs=2, steps_per_epoch=5, final_density=0.5, sparsity=0.5)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"final_density": 1.0}, ValueError, "final_density"),
        ({"final_density": 0.0}, ValueError, "final_density"),
        ({"begin": 0.8, "end": 0.2}, ValueError, "begin"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"drop_threshold": 1.5}, ValueError, "drop_threshold"),
        ({"drop_threshold_anneal": "linear"}, ValueError, "drop_threshold_anneal"),
        ({"grow_score": "signed"}, ValueError, "grow_score"),
        ({"controller": "pid"}, ValueError, "controller"),
        ({"init_density": 0.0}, ValueError, "init_density"),
        ({"target_ramp": 1.5}, ValueError, "target_ramp"),
        ({"adapt_threshold": True}, ValueError, "adapt_threshold needs controller='exact'"),
        ({"adapt_threshold": 1, "controller": "exact"}, TypeError, "adapt_threshold must be True or False"),
        ({"target_ramp": 0.5, "init_density": 0.1}, ValueError, "target_ramp"),
        ({"epochs": 0}, ValueError, "epochs"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        _setup(**options)


def test_needs_lpcgd_and_gradients():
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="LpCGD"):
        LpSS(net, sgd, final_density=0.5, epochs=1, steps_per_epoch=10)
    with pytest.raises(ValueError, match="no constrained"):
        LpSS(net, LpCGD(net.parameters(), lr=0.1), final_density=0.5, epochs=1, steps_per_epoch=10)
    opt = LpCGD.for_model(net, lr=0.1, p_first=1.3)
    lpss = LpSS(net, opt, final_density=0.5, epochs=1, steps_per_epoch=10, begin=0.0)
    with pytest.raises(RuntimeError, match="which has none"):
        lpss.step()  # step 0 is an update step, and no backward has run
    for p in net.parameters():  # a loop that zeroes gradients in place before the method's step
        p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="all zero at this update"):
        lpss.step()


@pytest.mark.parametrize(
    ("recipe", "density", "p_first", "p_rest"),
    [
        ("lpss-fashion-s90", 0.1, 1.2, 1.07),
        ("lpss-fashion-s50", 0.5, 1.4, 1.3),
        ("lpss-fashion-s90-adaptive", 0.1, 1.3, 1.15),
        ("lpss-fashion-s80-adaptive", 0.2, 1.3, 1.15),
        ("lpss-fashion-s50-adaptive", 0.5, 1.3, 1.15),
    ],
)
def test_shipped_recipes_build_the_reference_setting(recipe, density, p_first, p_rest):
    from neuroplastic.models import get_model
    from neuroplastic.recipes.runner import build_training, resolve

    model = get_model("wrn_lpss", num_classes=10, in_channels=1)
    method, (opt,), (schedule,) = build_training(resolve(recipe), model, steps_per_epoch=10)
    assert isinstance(method, LpSS) and method.final_density == density
    adaptive = recipe.endswith("adaptive")
    assert method.adapt_threshold is adaptive and method.target_ramp == (0.5 if adaptive else 0.0)
    assert method.controller.mode == ("exact" if adaptive else "reference")
    assert list(opt.layer_p.values()) == [p_first] * 4 + [p_rest] * 12  # the 16 block convs, stem excluded
    assert "conv1" not in opt.layer_p and "fc" not in opt.layer_p
    # mean-loss conversion of the reference's lr = vals / 256: the constrained mixing weight is vals / 256,
    # plain SGD (stem, shortcuts, fc, BN, biases) gets vals
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.04 / 256, 0.04 / 256, 0.04])
    opt.step()  # no gradients yet: changes nothing, but the scheduler expects an optimizer step first
    for _ in range(250):  # 25 of 50 epochs: the schedule lies between the knots 16.67 (0.5) and 47 (0.004)
        schedule.step()
    expected = 0.5 + (25 - 50 / 3) / (47 - 50 / 3) * (0.004 - 0.5)
    assert opt.param_groups[-1]["lr"] == pytest.approx(expected, rel=1e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected / 256, rel=1e-5)


def test_bind_optimizers_refuses_optimizers_without_its_lpcgd():
    """A framework that built another optimizer would train off the sphere: the error says so."""
    net, opt, lpss = _setup()
    lpss.bind_optimizers([opt])
    lpss.bind_optimizers([])  # not training (e.g. loading to evaluate)
    with pytest.raises(ValueError, match=r"LpSS's LpCGD optimizer is not among the optimizers .*\(AdamW\)"):
        lpss.bind_optimizers([torch.optim.AdamW(net.parameters())])


@pytest.mark.parametrize(
    ("recipe", "density"), [("lpss-fashion-s80-adaptive", "0.2"), ("lpss-fashion-s50-adaptive", "0.5")]
)
def test_adaptive_recipes_at_other_sparsities_are_the_s90_recipe_at_that_density(recipe, density):
    """docs/lpss.md's 50-epoch runs at s = 0.8 and 0.5 ran `lpss-fashion-s90-adaptive method.final_density=D`;
    the named recipes must train exactly that (only the name and description differ)."""
    from neuroplastic.recipes.runner import resolve

    named = resolve(recipe)
    overridden = resolve("lpss-fashion-s90-adaptive", [f"method.final_density={density}"])
    for key in ("name", "description"):
        named.pop(key), overridden.pop(key)
    assert named == overridden
