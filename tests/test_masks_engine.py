"""MaskEngine: layer selection, masks kept exact through optimizer steps, optimizer state surgery."""

import pytest
import torch
from torch import nn

from neuroplastic.masks import MaskEngine, erk, random_masks


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def test_default_layers_and_exclusions():
    m = net()
    assert list(MaskEngine(m).masks) == ["0", "4", "6"]  # conv, linear, linear; BN and biases never
    assert list(MaskEngine(m, exclude_first=True, exclude_classifier=True).masks) == ["4"]
    assert list(MaskEngine(m, include=["4", "6"], exclude=["6"]).masks) == ["4"]
    assert list(MaskEngine(m, exclude=["[46]"]).masks) == ["0"]
    with pytest.raises(ValueError, match="matches no Linear/Conv"):
        MaskEngine(m, include=["1"])  # the BatchNorm
    with pytest.raises(ValueError, match="no layer left"):
        MaskEngine(m, include=["0"], exclude_first=True)
    with pytest.raises(TypeError, match="include"):
        MaskEngine(m, include="4")


def test_wrapped_model_uses_inner_names():
    m = net()
    e = MaskEngine(nn.DataParallel(m))
    assert list(e.masks) == ["0", "4", "6"] and e.layers["4"] is m[4]


def sparse_engine(m, opt, density=0.3):
    e = MaskEngine(m, opt)
    e.set_masks(random_masks(e.shapes(), erk(e.shapes(), density), torch.Generator().manual_seed(1)))
    return e


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-2),
    ],
)
def test_masked_weights_and_state_stay_zero(make_opt):
    m = net()
    opt = make_opt(m.parameters())
    e = sparse_engine(m, opt)
    nnz = e.nnz()
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        e.apply()
        for name, mask in e.masks.items():
            w = e.weight(name)
            assert torch.all(w[~mask] == 0)
            assert w.grad[~mask].abs().sum() > 0, "dense gradients are left for growth criteria"
            state = [v for v in opt.state[w].values() if v.shape == w.shape]
            assert state and all(torch.all(v[~mask] == 0) for v in state)
    assert e.nnz() == nnz
    assert all(int((e.weight(n) != 0).sum()) == nnz[n] for n in nnz), "active weights moved away from 0"


def test_set_mask_zeroes_grown_weight_and_state_keeps_survivors():
    m = net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    e = MaskEngine(m, opt)
    w = e.weight("6")
    old = torch.zeros_like(w, dtype=torch.bool)
    old[0, :4] = True
    e.set_mask("6", old)
    x, y = torch.randn(4, 1, 6, 6), torch.randint(0, 3, (4,))
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    e.apply()
    survivor = w[0, 1].item()
    buf = opt.state[w]["momentum_buffer"]
    w.data[1, 0] = 7.0  # a stale value at an inactive position: must not survive growth
    buf[1, 0] = 3.0
    buf[0, 1] = 5.0  # a survivor's momentum must be kept
    new = old.clone()
    new[0, 0] = False  # dropped
    new[1, 0] = True  # grown
    e.set_mask("6", new)
    assert w[1, 0] == 0 and buf[1, 0] == 0
    assert w[0, 0] == 0 and buf[0, 0] == 0
    assert w[0, 1] == survivor and buf[0, 1] == 5.0
    assert e.nnz()["6"] == 4
    with pytest.raises(ValueError, match="shape"):
        e.set_mask("6", new[:1])
    with pytest.raises(KeyError, match="no masked layer"):
        e.set_mask("5", new)


def test_density_counts_and_exploration():
    m = net()
    e = MaskEngine(m)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[:, :2] = True  # 6 of 24
    e.set_mask("6", mask)
    assert e.nnz()["6"] == 6 and e.layer_density()["6"] == 0.25
    total = 36 + 64 * 8 + 24
    assert e.density() == pytest.approx((36 + 512 + 6) / total)
    e.reset_exploration()
    moved = torch.zeros(3, 8, dtype=torch.bool)
    moved[:, 2:4] = True
    e.set_mask("6", moved)  # 6 more entries have now been active
    assert e.exploration_rate() == pytest.approx((36 + 512 + 12) / total)


def test_state_dict_round_trip():
    m = net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    e = sparse_engine(m, opt)
    state = e.state_dict()
    m2 = net()
    e2 = MaskEngine(m2, torch.optim.SGD(m2.parameters(), lr=0.1))
    e2.load_state_dict(state)
    assert all(torch.equal(e2.masks[n], e.masks[n]) for n in e.masks)
    assert all(torch.all(e2.weight(n)[~e.masks[n]] == 0) for n in e.masks), "load applies the masks"
    assert e2.exploration_rate() == e.exploration_rate()
