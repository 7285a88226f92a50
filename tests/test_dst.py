"""Static, SET, RigL, GMP and GraNet: exact counts after every update, schedules honoured, persistence."""

import copy
import math

import pytest
import torch
from torch import nn

from neuroplastic.masks import kept_count
from neuroplastic.masks.density import erk
from neuroplastic.methods.dst import GMP, SET, GraNet, RigL, Static
from neuroplastic.recipes.registry import method_class


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 4)
    )


DATA = [(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(i)), torch.arange(16) % 4) for i in range(4)]


def train(model, opt, method, steps, start=0, check=None):
    for t in range(start, start + steps):
        x, y = DATA[t % len(DATA)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        method.step()
        if check is not None:
            check(method)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def make(cls, model, opt, **kw):
    base = {"epochs": 4, "steps_per_epoch": 10, "update_every": 3, "seed": 1}
    return cls(model, opt, **{**base, **kw})


@pytest.mark.parametrize("cls", [Static, SET, RigL])
def test_fixed_density_methods_keep_exact_layer_counts(cls):
    model = net()
    opt = sgd(model)
    method = make(cls, model, opt, density=0.2, sparse_init="erk")
    nnz = method.engine.nnz()
    shapes = {n: tuple(m.shape) for n, m in method.engine.masks.items()}
    assert len(shapes) == 3 and nnz == {n: kept_count(d, math.prod(shapes[n])) for n, d in erk(shapes, 0.2).items()}

    def check(m):
        assert m.engine.nnz() == nnz
        for n, mask in m.engine.masks.items():
            w = m.engine.weight(n)
            assert torch.all(w[~mask] == 0) and torch.all(opt.state[w]["momentum_buffer"][~mask] == 0)

    train(model, opt, method, 40, check=check)
    events = method.end_epoch()
    if cls is Static:
        assert events == [] and method.engine.exploration_rate() == pytest.approx(method.engine.density())
    else:
        # updates every 3 steps while the drop fraction is positive (stops at 75% of 40 steps)
        assert [e["step"] for e in events] == list(range(3, 30, 3))
        assert method.engine.exploration_rate() > method.engine.density()


def test_rigl_grows_at_largest_gradient_and_zeroes_new_state():
    model = net()
    opt = sgd(model)
    rigl = make(RigL, model, opt, density=0.3, sparse_init="uniform", update_every=1)
    train(model, opt, rigl, 2)  # momentum buffers exist
    name = "5"
    w = rigl.engine.weight(name)
    before = rigl.engine.masks[name].clone()
    x, y = DATA[0]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    rigl.engine.apply()
    grad = w.grad.abs().clone()
    rigl.global_step += 1
    rigl.update(rigl.global_step)
    after = rigl.engine.masks[name]
    grown = after & ~before
    n = int(grown.sum())
    assert n > 0
    # every grown entry beats every entry that stayed inactive
    assert grad[grown].min() >= grad[~after].max()
    assert torch.all(w[grown] == 0) and torch.all(opt.state[w]["momentum_buffer"][grown] == 0)


def test_rigl_needs_gradients():
    model = net()
    opt = sgd(model)
    rigl = make(RigL, model, opt, density=0.3, update_every=1)
    with pytest.raises(RuntimeError, match="backward"):
        rigl.step()


@pytest.mark.parametrize("method", ["rigl", "granet"])
def test_gradient_growth_refuses_gradients_zeroed_before_the_step(method):
    """zero_grad() (in place, not to None) before step() would make growth pick the lowest indices."""
    model = net()
    opt = sgd(model)
    if method == "rigl":
        m = make(RigL, model, opt, density=0.3, update_every=1)
    else:
        m = make(GraNet, model, opt, final_density=0.3, init_density=0.5, update_every=1)
    x, y = DATA[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    with pytest.raises(RuntimeError, match="all zero at this update"):
        for _ in range(3):
            m.step()


@pytest.mark.parametrize("distribution", ["global", "layerwise"])
@pytest.mark.parametrize("cls", [GMP, GraNet])
def test_gradual_pruning_hits_final_density_exactly(cls, distribution):
    model = net()
    opt = sgd(model)
    # 40 steps; pruning from step 5 to step 25 every 3 steps (5, 8, ..., 23) and at 25 (not on the grid)
    m = make(
        cls,
        model,
        opt,
        final_density=0.07,
        init_density=1.0 if cls is GMP else 0.5,
        init_prune_epoch=0.5,
        final_prune_epoch=2.5,
        distribution=distribution,
        sparse_init="erk",
    )
    total = sum(m.engine.numel().values())
    seen = []

    def check(method):
        nnz = sum(method.engine.nnz().values())
        step = method.global_step
        if method.schedule.is_update_step(step) and distribution == "global":
            assert nnz == kept_count(method.schedule(step), total), f"exact global count at step {step}"
        seen.append(nnz)

    train(model, opt, m, 40, check=check)
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False)), "density never increases"
    final = m.engine.nnz()
    if distribution == "global":
        assert sum(final.values()) == kept_count(0.07, total)
    else:
        assert final == {n: kept_count(d, m.engine.numel()[n]) for n, d in m._final_layer.items()}
    assert seen[24] == sum(final.values()), "final density reached at the final prune step, not later"
    prunes = [e["step"] for e in m.end_epoch() if e["event"] == "prune"]
    assert prunes[-1] == 25


def test_final_prune_happens_even_when_the_schedule_ends_at_step_zero():
    model = net()
    opt = sgd(model)
    g = make(GMP, model, opt, final_density=0.1, final_prune_epoch=0)  # e.g. a recipe scaled down to 1 epoch
    train(model, opt, g, 2)
    assert sum(g.engine.nnz().values()) == kept_count(0.1, sum(g.engine.numel().values()))
    assert [e["step"] for e in g.end_epoch()] == [1]


def test_granet_regrows_after_final_prune_and_keeps_counts():
    model = net()
    opt = sgd(model)
    g = make(GraNet, model, opt, final_density=0.1, init_density=0.5, final_prune_epoch=1)
    train(model, opt, g, 10)
    nnz = g.engine.nnz()
    g.end_epoch()
    train(model, opt, g, 30, start=10, check=lambda m: m.engine.nnz() == nnz or pytest.fail("count changed"))
    regrows = [e for e in g.end_epoch() if e["event"] == "drop_and_grow"]
    assert [e["step"] for e in regrows] == list(range(12, 41, 3)) and all(e["moved"] > 0 for e in regrows)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (SET, {"density": 0.2}),
        (RigL, {"density": 0.2}),
        (GraNet, {"final_density": 0.1, "init_density": 0.6}),
        (GMP, {"final_density": 0.1, "distribution": "layerwise"}),
    ],
)
def test_state_dict_round_trip_reproduces_next_masks(cls, kw):
    model = net()
    opt = sgd(model)
    m = make(cls, model, opt, **kw)
    train(model, opt, m, 7)
    # resume as a loop does: build model, optimizer and method, then load the three states
    model2 = net()
    opt2 = sgd(model2)
    m2 = make(cls, model2, opt2, **{**kw, "seed": 99})  # a different seed: the state must override it
    model2.load_state_dict(copy.deepcopy(model.state_dict()))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    m2.load_state_dict(copy.deepcopy(m.state_dict()))
    for _ in range(3):
        train(model, opt, m, 6, start=7)
        train(model2, opt2, m2, 6, start=7)
        for n in m.engine.masks:
            assert torch.equal(m.engine.masks[n], m2.engine.masks[n])
    assert m.metrics() == m2.metrics()


def test_reports():
    model = net()
    opt = sgd(model)
    m = make(Static, model, opt, density=0.25, sparse_init="uniform", exclude_first=True, input_shape=(1, 8, 8))
    # dense FLOPs per example: conv 2*6*36*9 = 3888, fc1 2*216*32 = 13824, fc2 2*32*4 = 256
    d = m.engine.layer_density()
    expected = 3888 + 13824 * d["3"] + 256 * d["5"]
    met = m.metrics()
    assert met["flops_sparse_inference"] == pytest.approx(expected)
    assert met["flops_sparse_training"] == pytest.approx(3 * expected)
    assert met["flops_dense"] == 3888 + 13824 + 256
    arch = m.architecture()
    assert arch["params"] == 54 + sum(m.engine.nnz().values()) and arch["params_dense"] == 54 + 6912 + 128
    assert set(m.snapshot()) == {"density/3", "density/5"}
    m.engine.set_mask("5", torch.zeros(4, 32, dtype=torch.bool))  # the FLOPs follow a mask change
    assert m.metrics()["flops_sparse_inference"] == pytest.approx(3888 + 13824 * d["3"])


def test_training_flops_mean_falls_behind_during_dense_to_sparse():
    model = net()
    opt = sgd(model)
    g = make(GMP, model, opt, final_density=0.1, final_prune_epoch=2, input_shape=(1, 8, 8))
    dense = g.metrics()["flops_sparse_training"]
    assert dense == 3 * (3888 + 13824 + 256)
    train(model, opt, g, 30)
    met = g.metrics()
    assert met["flops_sparse_training"] < met["flops_sparse_training_mean"] < dense
    assert "flops_sparse_inference" in make(Static, net(), None, density=0.5).metrics()


def test_bad_options_are_errors():
    model = net()
    opt = sgd(model)
    with pytest.raises(ValueError, match="sparse_init"):
        make(Static, model, opt, density=0.1, sparse_init="ERK-ish")
    with pytest.raises(ValueError, match="density"):
        make(Static, model, opt, density=0.0)
    with pytest.raises(ValueError, match="seed"):
        make(Static, model, opt, density=0.1, seed=1.5)
    with pytest.raises(ValueError, match="epochs and steps_per_epoch"):
        RigL(model, opt, density=0.1)
    with pytest.raises(ValueError, match="final_prune_epoch"):
        make(GraNet, model, opt, final_density=0.1, final_prune_epoch=9)
    with pytest.raises(ValueError, match="distribution"):
        make(GMP, model, opt, final_density=0.1, distribution="uniform")
    with pytest.raises(ValueError, match="drop_fraction_anneal"):
        make(SET, model, opt, density=0.1, drop_fraction_anneal="linear")
    with pytest.raises(ValueError, match=r"unknown options for method 'rigl': \['prune-rate'\]"):
        RigL.from_recipe(model, opt, epochs=1, steps_per_epoch=1, density=0.1, **{"prune-rate": 0.3})


def test_from_recipe_names():
    assert [method_class(n) for n in ("static", "set", "rigl", "gmp", "granet")] == [Static, SET, RigL, GMP, GraNet]
    model = net()
    m = method_class("granet").from_recipe(model, sgd(model), epochs=2, steps_per_epoch=5, final_density=0.2, seed=3)
    assert isinstance(m, GraNet) and m.schedule.end_step == round(2 * 11 / 16 * 5)


def test_a_mask_method_built_without_its_optimizer_takes_it_in_bind_optimizers():
    """Frameworks build the optimizer after the method: bind_optimizers hands it over, and training then
    equals a method built with it (momentum of dropped and regrown weights is zeroed the same way)."""
    results = []
    for later in (False, True):
        model = net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        method = RigL(model, None if later else opt, density=0.3, epochs=1, steps_per_epoch=8, update_every=2)
        method.bind_optimizers([torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1), opt])  # picks its own
        assert method.engine.optimizer is opt
        train(model, opt, method, 8)
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
    model = net()
    method = RigL(model, None, density=0.3, epochs=1, steps_per_epoch=8)
    two = [torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters(), lr=0.1)]
    with pytest.raises(ValueError, match="2 of the optimizers hold masked weights of method 'rigl'"):
        method.bind_optimizers(two)
