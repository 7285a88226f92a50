
import pytest
import torch
from torch import nn

from neuroplastic.methods.hard_concrete import GAMMA, ZETA, HardConcrete


def test_keep_probability_matches_monte_carlo_of_the_training_gate():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    hc = HardConcrete(model, lam=1.0)
    with torch.no_grad():
        hc.sites[0].gates.phi.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    torch.manual_seed(0)
    fn = hc.sites[0].gates.value_fn
    samples = torch.stack([fn(torch.zeros(1, 4)) for _ in range(20000)])
    p_nonzero = (samples > 0).float().mean(0)
    assert torch.allclose(p_nonzero, hc.keep_prob(hc.sites[0]).detach(), atol=0.015)
    # penalty = lam * weights_per_unit (3 inputs) * sum P(open)
    assert hc.penalty().item() == pytest.approx(3 * hc.keep_prob(hc.sites[0]).sum().item(), rel=1e-6)


def test_eval_gate_is_deterministic_and_closes_negative_units():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    hc = HardConcrete(model, lam=0.0)
    with torch.no_grad():
        hc.sites[0].gates.phi.copy_(torch.tensor([-5.0, -0.5, 0.5, 5.0]))
    expected = torch.clamp(torch.sigmoid(torch.tensor([-5.0, -0.5, 0.5, 5.0])) * (ZETA - GAMMA) + GAMMA, 0, 1)
    assert torch.allclose(hc.eval_gates(hc.sites[0]), expected)
    assert hc.architecture()["arch"] == [3]
    model.eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    gates = hc.eval_gates(hc.sites[0]).detach()
    # eval applies exactly these gates to the first layer's units (the closed one contributes nothing)
    first, last = (torch.nn.functional.linear(x, model[0].weight, model[0].bias), model[2])
    expected = last(torch.relu(first) * gates)
    assert gates[0] == 0 and 0 < gates[1] < 1 and torch.allclose(model(x), expected, atol=1e-6)
    assert not torch.allclose(model(x), last(torch.relu(first)), atol=1e-3)  # the gates do act


def test_training_reduces_the_penalty_and_gates_get_gradients():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    hc = HardConcrete(model, lam=0.05)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 5), torch.randint(0, 2, (64,))
    before = hc.expected_l0()
    for _ in range(60):
        opt.zero_grad()
        hc.backward(lambda: nn.functional.cross_entropy(model(x), y))
        assert hc.sites[0].gates.phi.grad is not None
        opt.step()
    assert hc.expected_l0() < before
    with pytest.raises(ValueError, match="init_drop_rate"):
        HardConcrete(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), init_drop_rate=1.5)
