import pytest
import torch
from torch import nn

from neuroplastic.structure.optim_surgery import remap_along, replace_parameter


def test_remap_along_by_hand():
    t = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert remap_along(t, 1, torch.tensor([2, -1, 0])).tolist() == [[3.0, 0.0, 1.0], [6.0, 0.0, 4.0]]
    assert remap_along(t, 0, torch.tensor([-1, 1])).tolist() == [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0]]
    assert remap_along(t, 0, torch.tensor([], dtype=torch.long)).shape == (0, 3)


def test_replace_parameter_in_several_optimizers_keeps_places_and_state():
    a, b, c = (nn.Parameter(torch.arange(3.0) + i) for i in range(3))
    sgd = torch.optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1, momentum=0.9)
    adam = torch.optim.Adam([b], lr=0.1)
    (a.sum() + b.square().sum() + c.sum()).backward()
    sgd.step()
    adam.step()
    old_m, old_v = adam.state[b]["exp_avg"].clone(), adam.state[b]["exp_avg_sq"].clone()
    old_buf = sgd.state[b]["momentum_buffer"].clone()
    new_b = nn.Parameter(torch.zeros(4))
    src = torch.tensor([0, -1, 1, 2])
    replace_parameter([sgd, adam], b, new_b, 0, src)
    assert sgd.param_groups[1]["params"][0] is new_b and sgd.param_groups[1]["params"][1] is c
    assert adam.param_groups[0]["params"] == [new_b] and b not in adam.state
    assert torch.equal(
        sgd.state[new_b]["momentum_buffer"], torch.stack([old_buf[0], 0 * old_buf[0], *old_buf[1:]])
    )
    assert torch.equal(adam.state[new_b]["exp_avg"], remap_along(old_m, 0, src))
    assert torch.equal(adam.state[new_b]["exp_avg_sq"], remap_along(old_v, 0, src))
    assert torch.equal(adam.state[new_b]["step"], torch.tensor(1.0))
    new_b.grad = torch.ones(4)
    adam.step()  # works on the new tensor
    other = nn.Parameter(torch.zeros(2))  # a parameter no optimizer holds: nothing happens
    replace_parameter(sgd, other, nn.Parameter(torch.zeros(3)), 0, torch.tensor([0, 1, -1]))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        replace_parameter([object()], a, new_b, 0, src)
