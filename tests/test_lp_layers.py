"""Which layers are constrained, and which p each gets (the reference's misassignment fixed)."""

import pytest
import torch
from torch import nn

from neuroplastic.lp import LpCGD, assign_p, build_lpcgd, constrained_layers, constrained_params


class _Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))) + self.downsample(x)


class _TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)  # grayscale stem: 1 input channel
        self.block = _Block(4, 8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: 1 input per filter
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.dw(self.block(torch.relu(self.stem(x)))).mean((2, 3)))


def test_rules_pick_the_block_convs_only():
    assert constrained_layers(_TinyResNet()) == ["block.conv1", "block.conv2"]


def test_include_and_exclude_patterns():
    net = _TinyResNet()
    assert constrained_layers(net, include="block.down*") == ["block.conv1", "block.conv2", "block.downsample"]
    assert constrained_layers(net, include=["fc"], exclude=["block.conv2"]) == ["block.conv1", "fc"]
    with pytest.raises(ValueError, match="matches no Linear/Conv layer"):
        constrained_layers(net, exclude=["nothing*"])
    with pytest.raises(ValueError, match="fewer than 2 weights per unit"):
        constrained_layers(nn.Sequential(nn.Linear(1, 4), nn.Linear(4, 2)), include=["0"])


def test_p_is_assigned_among_constrained_layers_only():
    # the stem is not constrained, so it does not consume p_first (the reference's bug)
    net = _TinyResNet()
    opt = LpCGD.for_model(net, lr=0.01, p_first=1.3, p_rest=1.1, n_first=1)
    assert opt.layer_p == {"block.conv1": 1.3, "block.conv2": 1.1}
    assert assign_p(["a", "b", "c"], 1.2, 1.07, 2) == {"a": 1.2, "b": 1.2, "c": 1.07}
    assert assign_p(["a", "b"], 1.4) == {"a": 1.4, "b": 1.4}


@pytest.mark.parametrize("n_first", [-1, 1.5, True])
def test_bad_n_first(n_first):
    with pytest.raises(ValueError, match="n_first"):
        assign_p(["a"], 1.2, 1.1, n_first)


def test_model_without_layers_is_refused():
    with pytest.raises(ValueError, match="no Linear/Conv"):
        constrained_layers(nn.Sequential(nn.ReLU()))


def test_parameter_list_follows_the_same_rules():
    net = _TinyResNet()
    chosen = constrained_params(net.parameters())
    assert chosen == [net.block.conv1.weight, net.block.conv2.weight]
    opt = build_lpcgd(
        list(net.parameters()),
        {"name": "lpcgd", "lr": 0.01, "p_first": 1.3, "n_first": 1, "p_rest": 1.1, "schedule": {"name": "constant"}},
    )
    assert opt.layer_p == {"0": 1.3, "1": 1.1}
    assert [g["p"] for g in opt.param_groups] == [1.3, 1.1, None]
    with pytest.raises(ValueError, match="give the model"):
        LpCGD.for_model(list(net.parameters()), lr=0.1, exclude=["fc"])


def test_build_lpcgd_from_a_recipe_spec():
    net = _TinyResNet()
    spec = {
        "name": "lpcgd",
        "lr": 0.004,
        "unconstrained_lr": 1.0,
        "p_first": 1.2,
        "p_rest": 1.07,
        "n_first": 4,
        "momentum": 0.9,
        "nesterov": True,
        "schedule": {"name": "piecewise", "knots": [0, 1], "values": [1, 0]},
    }
    opt = build_lpcgd(net, spec)
    assert opt.layer_p == {"block.conv1": 1.2, "block.conv2": 1.2}
    assert opt.param_groups[-1]["lr"] == 1.0 and opt.param_groups[0]["nesterov"]
    with pytest.raises(ValueError, match="unknown keys for optimizer 'lpcgd'"):
        build_lpcgd(net, {"name": "lpcgd", "lr": 0.1, "p": 1.2})
    with pytest.raises(ValueError, match="needs an 'lr'"):
        build_lpcgd(net, {"name": "lpcgd"})
    with pytest.raises(ValueError, match="builds optimizer 'lpcgd'"):
        build_lpcgd(net, {"name": "sgd", "lr": 0.1})
