"""Iterative magnitude pruning with weight rewinding and learning-rate rewinding."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from neuroplastic.masks import kept_count
from neuroplastic.methods.rewind import IterativePruning

SPE = 3  # steps per epoch


def setup(rewind, rewind_epoch=1, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = LambdaLR(opt, lambda step: 0.5 ** (step // SPE))  # LR halves every epoch
    imp = IterativePruning(
        model,
        opt,
        rounds=2,
        final_density=0.25,
        rewind=rewind,
        rewind_epoch=rewind_epoch,
        epochs_per_round=3,
        steps_per_epoch=SPE,
        scheduler=sched,
        **kw,
    )
    return model, opt, sched, imp


def run_epoch(model, opt, sched, imp, gen, end=True):
    for _ in range(SPE):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        imp.step()
    return imp.end_epoch() if end else None


def test_weight_rewinding_restores_survivors_and_optimizer_state():
    model, opt, sched, imp = setup("weights")
    assert imp.total_epochs == 3 + 2 * 2
    gen = torch.Generator().manual_seed(0)
    run_epoch(model, opt, sched, imp, gen)  # after epoch 1: the rewind point
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_buf = opt.state[model[0].weight]["momentum_buffer"].clone()
    run_epoch(model, opt, sched, imp, gen)
    events = run_epoch(model, opt, sched, imp, gen)  # end of round 0: prune to 0.25 ** 0.5 = 0.5
    assert [e["event"] for e in events] == ["prune_round"] and events[0]["round"] == 1
    total = sum(imp.engine.numel().values())
    assert sum(imp.engine.nnz().values()) == kept_count(0.5, total)
    for name, mask in imp.engine.masks.items():
        w = imp.engine.weight(name)
        assert torch.equal(w[mask], saved[f"{name}.weight"][mask]), "survivors rewound exactly"
        assert torch.all(w[~mask] == 0)
    assert torch.equal(model[0].bias, saved["0.bias"])
    buf = opt.state[model[0].weight]["momentum_buffer"]
    mask0 = imp.engine.masks["0"]
    assert torch.equal(buf[mask0], saved_buf[mask0]) and torch.all(buf[~mask0] == 0)
    assert sched.get_last_lr()[0] == pytest.approx(0.1 * 0.5), "LR back at epoch 1 of the schedule"


def test_every_weight_rewind_restores_the_rewind_point_not_the_previous_round():
    """The second rewind restores the optimizer state saved after epoch 1, as the first does."""
    model, opt, sched, imp = setup("weights")
    gen = torch.Generator().manual_seed(0)
    run_epoch(model, opt, sched, imp, gen)  # the rewind point
    saved_buf = opt.state[model[0].weight]["momentum_buffer"].clone()
    point = {k: v.clone() for k, v in imp.state_dict()["rewind_point"]["optimizer"]["state"][0].items()}
    for _ in range(2 + 2):  # the rest of round 0, then round 1 (2 epochs): two rewinds
        run_epoch(model, opt, sched, imp, gen)
    assert imp.round == 2
    buf, mask0 = opt.state[model[0].weight]["momentum_buffer"], imp.engine.masks["0"]
    assert torch.equal(buf[mask0], saved_buf[mask0]) and torch.all(buf[~mask0] == 0)
    kept = imp.state_dict()["rewind_point"]["optimizer"]["state"][0]
    assert all(torch.equal(kept[k], v) for k, v in point.items()), "the rewind point itself is unchanged"


def test_lr_rewinding_keeps_weights_and_reaches_final_density():
    model, opt, sched, imp = setup("lr", distribution="layerwise")
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        run_epoch(model, opt, sched, imp, gen)
    run_epoch(model, opt, sched, imp, gen, end=False)
    before = {n: imp.engine.weight(n).detach().clone() for n in imp.engine.masks}
    events = imp.end_epoch()
    for name, mask in imp.engine.masks.items():
        assert int(mask.sum()) == kept_count(0.5, mask.numel()), "layer-wise: every layer at 0.5"
        assert torch.equal(imp.engine.weight(name)[mask], before[name][mask]), "weights kept"
    assert events[0]["lr_restart_step"] == SPE and sched.get_last_lr()[0] == pytest.approx(0.05)
    rounds = []
    for _ in range(imp.total_epochs - 3):
        rounds += [e["round"] for e in run_epoch(model, opt, sched, imp, gen)]
    assert rounds == [2], "the second pruning after the 2 epochs of round 1, none after"
    assert imp.engine.nnz() == {n: kept_count(0.25, m.numel()) for n, m in imp.engine.masks.items()}


def _same(a, b) -> bool:
    """Nested state dicts equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_state_round_trip_continues_exactly():
    """A fresh instance loaded mid-run (after the first pruning round) continues exactly as the original."""
    model, opt, sched, imp = setup("weights")
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # round 0 and its pruning: round 1, half the weights masked, a rewind point
        run_epoch(model, opt, sched, imp, gen)
    state = imp.state_dict()
    model2, opt2, sched2, other = setup("weights")
    assert not _same(other.state_dict(), state), "a fresh instance differs (else the round trip shows nothing)"
    other.load_state_dict(state)
    assert _same(other.state_dict(), state) and other.round == 1
    for target, source in ((model2, model), (opt2, opt), (sched2, sched)):
        target.load_state_dict(copy.deepcopy(source.state_dict()))  # torch keeps loaded tensors: copy
    gen2 = torch.Generator().manual_seed(1)
    gen.manual_seed(1)
    events = [run_epoch(model, opt, sched, imp, gen) for _ in range(4)]
    assert [run_epoch(model2, opt2, sched2, other, gen2) for _ in range(4)] == events
    assert any(e for e in events), "the continuation prunes again"
    assert _same(other.state_dict(), imp.state_dict()) and _same(model2.state_dict(), model.state_dict())


def test_state_errors():
    model, opt, sched, imp = setup("weights", rewind_epoch=0)
    with pytest.raises(ValueError, match="exactly one"):
        IterativePruning(model, opt, rounds=2, epochs_per_round=2, steps_per_epoch=1)
    with pytest.raises(ValueError, match="rewind must be"):
        IterativePruning(model, opt, rounds=2, epochs_per_round=2, steps_per_epoch=1, final_density=0.5, rewind="x")
    with pytest.raises(ValueError, match="rewind_epoch"):
        IterativePruning(model, opt, rounds=2, epochs_per_round=2, steps_per_epoch=1, final_density=0.5, rewind_epoch=2)
    with pytest.raises(ValueError, match="total_epochs|must equal"):
        IterativePruning.from_recipe(
            model, opt, epochs=5, steps_per_epoch=1, rounds=2, epochs_per_round=2, density_per_round=0.5
        )
    m = IterativePruning.from_recipe(
        model, opt, epochs=6, steps_per_epoch=1, rounds=2, epochs_per_round=2, density_per_round=0.5
    )
    assert m.final_density == 0.25
