"""LpCGD: the dual-space update on the unit Lp sphere, and plain SGD for unconstrained parameters."""

import copy

import pytest
import torch
from torch import nn

from neuroplastic.lp import LpCGD, layer_hoyer, lp_norm


def _naive_step(w, v, buf, grad, *, p, lr, momentum, nesterov, weight_decay, first):
    """The update written directly from the formulas (float64, no stabilisation)."""
    q = p / (p - 1)
    d = grad + weight_decay * w
    if momentum:
        buf = d.clone() if first else momentum * buf + d
        d = d + momentum * buf if nesterov else buf

    def nq(x):
        return x / torch.linalg.vector_norm(x, ord=q, dim=1, keepdim=True)

    v = nq((1 - lr) * v - lr * nq(d))
    w = torch.sign(v) * v.abs().pow(1 / (p - 1))
    return w, v, buf


def test_one_step_hand_computed_p2():
    # p = q = 2: v = w = [0.6, 0.8]; g/|g| = [1, 0]; 0.5*v - 0.5*[1, 0] = [-0.2, 0.4]; / sqrt(0.2)
    w = nn.Parameter(torch.tensor([[0.6, 0.8]]))
    opt = LpCGD([w], lr=0.5, p=2.0)
    w.grad = torch.tensor([[3.0, 0.0]])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[-0.2, 0.4]]) / 0.2**0.5)


def test_one_step_hand_computed_p15_with_nesterov():
    # p = 1.5, q = 3: v = [1, 0]; direction [0, -1] (nesterov scales it by 1.9, irrelevant after
    # normalisation); 0.5*[1,0] + 0.5*[0,1] = [0.5, 0.5] -> L3-normalised -> squared: w = [2^(-2/3)] * 2
    w = nn.Parameter(torch.tensor([[1.0, 0.0]]))
    opt = LpCGD([w], lr=0.5, p=1.5, momentum=0.9, nesterov=True)
    w.grad = torch.tensor([[0.0, -7.0]])
    opt.step()
    a = 2 ** (-2 / 3)
    torch.testing.assert_close(w.detach(), torch.tensor([[a, a]]))
    assert float(lp_norm(w.detach(), 1.5)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("momentum", "nesterov", "weight_decay"), [(0.0, False, 0.0), (0.9, True, 1e-2), (0.5, False, 0)]
)
def test_several_steps_match_the_naive_formulas(momentum, nesterov, weight_decay):
    g = torch.Generator().manual_seed(0)
    p, lr = 1.3, 0.1
    w0 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    w0 = w0 / torch.linalg.vector_norm(w0, ord=p, dim=1, keepdim=True)
    w = nn.Parameter(w0.clone())
    opt = LpCGD([w], lr=lr, p=p, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    ref_w, ref_v, buf = w0.clone(), torch.sign(w0) * w0.abs().pow(p - 1), None
    for i in range(5):
        grad = torch.randn(3, 5, generator=g, dtype=torch.float64)
        w.grad = grad.clone()
        opt.step()
        ref_w, ref_v, buf = _naive_step(
            ref_w,
            ref_v,
            buf,
            grad,
            p=p,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            first=i == 0,
        )
        torch.testing.assert_close(w.detach(), ref_w, rtol=1e-10, atol=1e-12)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.hidden = nn.Linear(6 * 4 * 4, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize("p", [1.07, 1.2, 1.5])
def test_units_stay_on_the_sphere_after_many_steps(p):
    torch.manual_seed(0)
    net = _Net()
    opt = LpCGD.for_model(net, lr=0.05, p_first=p, p_rest=p, momentum=0.9, nesterov=True)
    assert opt.layer_p == {"conv": p, "hidden": p}
    x, y = torch.randn(32, 3, 6, 6), torch.randint(0, 3, (32,))
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for w in (net.conv.weight, net.hidden.weight):
        assert torch.isfinite(w).all()
        torch.testing.assert_close(lp_norm(w.detach(), p), torch.ones(w.shape[0]), rtol=0, atol=1e-5)


def test_unconstrained_parameters_follow_torch_sgd_exactly():
    torch.manual_seed(0)
    a, b = _Net(), None
    b = copy.deepcopy(a)
    kw = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
    ours = LpCGD(a.parameters(), **kw)  # p=None: every group is plain SGD
    ref = torch.optim.SGD(b.parameters(), foreach=False, **kw)
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 3, (16,))
    for _ in range(10):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_masked_unconstrained_parameters_are_sgd_on_the_masked_gradient():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(5, 4, generator=g) < 0.5
    start = torch.randn(5, 4, generator=g) * mask
    a, b = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    ours = LpCGD([a], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    ours.set_mask(a, mask)
    ref = torch.optim.SGD([b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2, foreach=False)
    for _ in range(6):
        grad = torch.randn(5, 4, generator=g)
        a.grad, b.grad = grad.clone(), grad * mask  # masked weights are 0, so decay adds nothing there
        ours.step()
        ref.step()
        assert torch.equal(a.detach(), b.detach()) and torch.all(a[~mask] == 0)


def test_for_model_groups_and_unconstrained_lr():
    net = _Net()
    opt = LpCGD.for_model(net, lr=0.01, p_first=1.3, p_rest=1.1, n_first=1, unconstrained_lr=0.4)
    groups = [(g["p"], g["lr"], len(g["params"])) for g in opt.param_groups]
    assert groups == [(1.3, 0.01, 1), (1.1, 0.01, 1), (None, 0.4, 4)]
    assert opt.param_groups[0]["params"][0] is net.conv.weight
    assert float(lp_norm(net.conv.weight.detach(), 1.3).sub(1).abs().max()) < 1e-6  # projected at construction


def _train(net, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_state_dict_round_trip_gives_identical_next_steps():
    torch.manual_seed(0)
    net = _Net()
    opt = LpCGD.for_model(net, lr=0.05, p_first=1.2, p_rest=1.07, n_first=1, momentum=0.9, nesterov=True)
    _train(net, opt, 5, seed=1)
    saved_model, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    _train(net, opt, 3, seed=2)

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    net2 = _Net()
    opt2 = LpCGD.for_model(net2, lr=0.05, p_first=1.2, p_rest=1.07, n_first=1, momentum=0.9, nesterov=True)
    net2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train(net2, opt2, 3, seed=2)
    for pa, pb in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_masked_weights_are_latent_and_return():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 6))
    opt = LpCGD([w], lr=0.1, p=1.2, momentum=0.9)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, :2] = False
    opt.set_mask(w, mask)
    latent_before = opt.state[w]["dual"][:, :2].clone()
    for _ in range(5):
        w.grad = torch.randn(4, 6)
        opt.step()
    assert torch.all(w[:, :2] == 0)
    assert torch.all(opt.state[w]["momentum_buffer"][:, :2] == 0)
    assert torch.all(lp_norm(w.detach(), 1.2) <= 1 + 1e-6)
    dense = opt.dense_weight(w)
    torch.testing.assert_close(lp_norm(dense, 1.2), torch.ones(4), rtol=0, atol=1e-5)
    # a latent dual entry only shrinks by (1 - lr) per step before the row is renormalised
    latent = opt.state[w]["dual"][:, :2]
    assert torch.all(latent != 0) and torch.all(torch.sign(latent) == torch.sign(latent_before))
    opt.set_mask(w, None)
    w.grad = torch.zeros(4, 6)
    opt.step()
    assert torch.all(w[:, :2] != 0)  # the connections come back with their latent values


def test_sphere_constraint_makes_weights_sparser_as_p_approaches_one():
    """A trained toy layer: Hoyer sparsity rises monotonically with 1/(p-1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 24, generator=g)
    teacher = torch.randn(24, 3, generator=g) * (torch.rand(24, 3, generator=g) < 0.3)
    y = (x @ teacher).argmax(1)
    values = []
    for p in (2.0, 1.5, 1.3, 1.15, 1.07):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
        opt = LpCGD.for_model(net, lr=0.05, p_first=p, p_rest=p, momentum=0.9)
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        values.append(layer_hoyer(net[0].weight))
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_bad_settings_are_refused():
    w = nn.Parameter(torch.randn(3, 4))
    with pytest.raises(ValueError, match="p must be"):
        LpCGD([w], lr=0.1, p=1.0)
    with pytest.raises(ValueError, match=r"lr must be a number in \[0, 1\], got 1.5"):
        LpCGD([w], lr=1.5, p=1.2)
    with pytest.raises(ValueError, match="lr must be a number >= 0"):
        LpCGD([w], lr=-0.1)
    with pytest.raises(ValueError, match=">= 2 dimensions"):
        LpCGD([nn.Parameter(torch.randn(4))], lr=0.1, p=1.2)
    with pytest.raises(ValueError, match="nesterov"):
        LpCGD([w], lr=0.1, p=1.2, nesterov=True)
    with pytest.raises(ValueError, match="momentum must be a number >= 0"):
        LpCGD([w], lr=0.1, momentum=-1)
    opt = LpCGD([w], lr=0.1, p=1.2)
    opt.param_groups[0]["lr"] = 2.0  # e.g. a schedule multiplier too large for a mixing weight
    w.grad = torch.ones(3, 4)
    with pytest.raises(ValueError, match="lr must be a number in"):
        opt.step()
    with pytest.raises(ValueError, match="not managed"):
        opt.set_mask(nn.Parameter(torch.ones(3, 4)), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        opt.set_mask(w, torch.ones(3, 3, dtype=torch.bool))


def test_a_bad_group_is_refused_before_it_is_added():
    w = nn.Parameter(torch.randn(3, 4))
    opt = LpCGD([w], lr=0.1, p=1.2)
    with pytest.raises(ValueError, match="p must be"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(2, 2))], "p": 0.9})
    assert len(opt.param_groups) == 1
    v = nn.Parameter(torch.randn(2, 5) * 3)
    opt.add_param_group({"params": v, "p": 1.5})  # a single tensor is accepted, and projected
    assert float(lp_norm(v.detach(), 1.5).sub(1).abs().max()) < 1e-6
