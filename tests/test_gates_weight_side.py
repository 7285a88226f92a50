"""Gating the weights (batch-shared 0/1 gates) must compute exactly what gating the activations computes."""

import copy

import pytest
import torch
from torch import nn

from neuroplastic.gates.sites import weight_side_tensors
from neuroplastic.methods.npn import NPN

# out-gate before a BatchNorm, out-gates on a Conv and a Linear, in-gates on a Conv and a Linear
GATES = {"0": "out", "3": "out", "6": "in", "9": "in", "11": "out"}


def net(affine: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, affine=affine), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(5, 6, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(24, 7), nn.ReLU(), nn.Linear(7, 3),
    )


def activation_gated(model: nn.Module, sites, zs) -> nn.Module:
    """A copy of ``model`` without NPN gates whose activations are multiplied by ``zs`` with hooks."""
    ref = net(affine=model[1].affine)
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "npn_" not in k})
    modules = dict(ref.named_modules())
    for site, z in zip(sites, zs, strict=True):
        def scale(x, z=z, dim=site.gates.unit_dim):
            shape = [1] * x.dim()
            shape[dim % x.dim()] = -1
            return z.view(shape)
        module = modules[site.hook_module]
        if site.side == "in":
            module.register_forward_pre_hook(lambda m, a, scale=scale: (a[0] * scale(a[0]),))
        else:
            module.register_forward_hook(lambda m, a, out, scale=scale: out * scale(out))
    return ref


def set_main_gates(npn: NPN, seed: int = 1) -> list[torch.Tensor]:
    """Put every site in the ARM main phase with a fixed ``u``; return the gates ``1[u < pi]``."""
    gen = torch.Generator().manual_seed(seed)
    zs = []
    for site in npn.sites:
        with torch.no_grad():
            site.gates.phi.copy_(torch.randn(site.n, generator=gen) * 0.3)
        site.gates.phase = "main"
        site.gates.u = torch.rand(site.n, generator=gen)
        zs.append((site.gates.u < site.gates.prob().detach()).float())
    assert any(0 < z.sum() < z.numel() for z in zs), "the test needs open and closed units"
    return zs


def weight_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad for k, p in model.named_parameters() if "npn_" not in k}


@pytest.mark.parametrize("affine", [True, False])
def test_weight_side_gating_equals_activation_gating(affine):
    model = net(affine)
    npn = NPN(model, k=2.0, gates=GATES)
    modules = dict(model.named_modules())
    uses_weights = [bool(weight_side_tensors(s, modules[s.hook_module])) for s in npn.sites]
    # a BatchNorm without affine parameters has nothing to scale: its out-gate keeps the activation path
    assert uses_weights == [affine, True, True, True, True]
    zs = set_main_gates(npn)
    ref = activation_gated(model, npn.sites, zs)
    x, y = torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,))
    for m in (model, ref):
        out = m(x)
        nn.functional.cross_entropy(out, y).backward()
        m.out = out
    assert torch.allclose(model.out, ref.out, atol=1e-6, rtol=0)
    got, want = weight_grads(model), weight_grads(ref)
    assert got.keys() == want.keys()
    for k in got:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=0), k
    # closed units get no gradient on their weights, and the parameters are no longer shadowed
    closed = zs[0] == 0
    assert torch.all(model[0].weight.grad[closed] == 0)
    assert not any(name in m.__dict__ for m in model.modules() for name in ("weight", "bias"))
    assert model[0].weight is model[0]._parameters["weight"]


def test_npn_gate_and_weight_gradients_match_activation_gating():
    model = net()
    npn = NPN(model, k=2.0, gates=GATES, seed=3)
    with torch.no_grad():
        for i, site in enumerate(npn.sites):
            site.gates.phi.copy_(torch.linspace(-0.8, 0.8, site.n) * (-1) ** i)
    x, y = torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,))
    reference_init = copy.deepcopy(model.state_dict())
    state = npn.generator.get_state()
    loss = npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
    gen = torch.Generator().set_state(state)  # the sites draw u in forward order, which is site order
    u = [torch.rand(s.n, generator=gen) for s in npn.sites]
    pis = [s.gates.prob().detach() for s in npn.sites]
    main = [(ui < pi).float() for ui, pi in zip(u, pis, strict=True)]
    anti = [(ui > 1 - pi).float() for ui, pi in zip(u, pis, strict=True)]
    ref_main = activation_gated(model, npn.sites, main)
    ref_main.load_state_dict({k: v for k, v in reference_init.items() if "npn_" not in k})
    f_main = nn.functional.cross_entropy(ref_main(x), y)
    f_main.backward()
    ref_anti = activation_gated(model, npn.sites, anti)
    ref_anti.load_state_dict({k: v for k, v in reference_init.items() if "npn_" not in k})
    with torch.no_grad():
        f_anti = nn.functional.cross_entropy(ref_anti(x), y)
    assert torch.allclose(loss, f_main.detach(), atol=1e-6, rtol=0)
    for site, ui in zip(npn.sites, u, strict=True):
        expected = (f_anti - f_main.detach()) * (ui - 0.5) * 2.0  # lam = 0: no penalty gradient
        assert torch.allclose(site.gates.phi.grad, expected, atol=1e-6, rtol=0), site.name
    got, want = weight_grads(model), weight_grads(ref_main)
    for k in got:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=0), k


def test_frozen_stage_all_open_is_the_plain_model_and_closed_units_still_close():
    model, plain = net(), net()
    npn = NPN(model, k=2.0, gates=GATES, stages=(1, 2))  # epoch 0: frozen, every unit open
    x, y = torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,))
    npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
    nn.functional.cross_entropy(plain(x), y).backward()
    assert all(s.gates.phi.grad is None for s in npn.sites)
    got, want = weight_grads(model), weight_grads(plain)
    assert all(torch.equal(got[k], want[k]) for k in got)
    with torch.no_grad():
        npn.sites[1].gates.phi[:2] = -1.0  # an in-place change of phi is seen by the next forward
    zs = [(s.gates.phi.detach() > 0).float() for s in npn.sites]
    ref = activation_gated(model, npn.sites, zs)
    assert torch.allclose(model(x), ref(x), atol=1e-6, rtol=0)
    assert torch.all(model[3](torch.randn(1, 4, 8, 8))[0, :2] == 0)


def test_a_failing_forward_leaves_no_gated_weights_behind():
    model = net()
    npn = NPN(model, k=2.0, gates=GATES)
    set_main_gates(npn)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 8, 8))  # wrong channel count: conv0 raises after its pre-hook
    assert model[0].weight is model[0]._parameters["weight"]
    assert "weight" not in model[0].__dict__
