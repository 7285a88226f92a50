import itertools

import pytest
import torch

from neuroplastic.gates import HardSigmoid, Sigmoid, StageSchedule, antithetic_gates, ar_logit_grad, arm_logit_grad


def test_sigmoid_values_and_logit_slope():
    phi = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
    g = Sigmoid()
    pi = g.prob(phi, 7.0)
    assert torch.allclose(pi, torch.sigmoid(7 * phi))
    pi.sum().backward()
    # d pi / d phi = k pi (1 - pi), so d logit(pi) / d phi = k
    assert torch.allclose(phi.grad, 7 * pi.detach() * (1 - pi.detach()))
    assert torch.equal(g.logit_slope(phi.detach(), 7.0), torch.full((3,), 7.0))


def test_hard_sigmoid_values_and_slopes():
    g = HardSigmoid()
    phi = torch.tensor([-2.0, -0.25, 0.0, 0.25, 2.0])
    assert torch.allclose(g.prob(phi, 7.0), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    slope = g.logit_slope(phi, 7.0)
    # exact chain rule: (k/7) / (pi (1 - pi)) inside, 0 where saturated
    assert torch.allclose(slope, torch.tensor([0.0, 1 / 0.1875, 4.0, 1 / 0.1875, 0.0]))
    assert torch.allclose(HardSigmoid("reference").logit_slope(phi, 7.0), torch.tensor([0.0, 7, 7, 7, 0.0]))
    with pytest.raises(ValueError, match="slope"):
        HardSigmoid("bogus")


def _toy_f(z: torch.Tensor) -> torch.Tensor:
    """A non-linear objective of 3 binary gates with interactions; z: (..., 3)."""
    w = torch.tensor([1.0, -2.0, 0.5])
    return (z * w).sum(-1) ** 2 + 3.0 * z[..., 0] * z[..., 2] - z[..., 1]


def _exact_logit_grad(alpha: torch.Tensor) -> torch.Tensor:
    alpha = alpha.clone().requires_grad_(True)
    pi = torch.sigmoid(alpha)
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        z = torch.tensor(bits)
        p = torch.prod(torch.where(z > 0, pi, 1 - pi))
        total = total + p * _toy_f(z)
    (grad,) = torch.autograd.grad(total, alpha)
    return grad


@pytest.mark.parametrize("name", ["arm", "ar"])
def test_estimators_unbiased_against_enumeration(name):
    torch.manual_seed(0)
    alpha = torch.tensor([0.3, -1.2, 2.0])
    pi = torch.sigmoid(alpha)
    m = 200_000
    u = torch.rand(m, 3)
    z1, z2 = antithetic_gates(u, pi)
    f1 = _toy_f(z1)
    if name == "arm":
        draws = (_toy_f(z2) - f1)[:, None] * (u - 0.5)
        mean = arm_logit_grad(f1, _toy_f(z2), u)
    else:
        draws = f1[:, None] * (1 - 2 * u)
        mean = ar_logit_grad(f1, u)
    assert torch.allclose(mean, draws.mean(0), atol=1e-5)
    exact = _exact_logit_grad(alpha)
    bound = 5 * draws.std(0) / m**0.5 + 1e-4
    assert torch.all((mean - exact).abs() < bound), (mean, exact, bound)
    # and the bound is tight enough to catch a sign error
    assert torch.any((-mean - exact).abs() > bound)


def test_stage_schedule():
    s = StageSchedule(7.0, (2, 5))
    assert [s.stage(e) for e in range(7)] == [1, 1, 2, 2, 2, 3, 3]
    assert [s(e) for e in range(7)] == [5000.0, 5000.0, 7.0, 7.0, 7.0, 5000.0, 5000.0]
    assert [s.frozen(e) for e in (0, 2, 5)] == [True, False, True]
    always = StageSchedule(1.0, None)
    assert always.stage(100) == 2 and always(0) == 1.0
    restored = StageSchedule(1.0, None)
    restored.load_state_dict(s.state_dict())
    assert [restored(e) for e in range(7)] == [s(e) for e in range(7)]
    for bad in [(5, 2), (1,), (-1, 3)]:
        with pytest.raises(ValueError, match="stages"):
            StageSchedule(7.0, bad)
    with pytest.raises(ValueError, match="k must be"):
        StageSchedule(0.0, None)
