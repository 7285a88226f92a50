"""Trace tests, and the fixture zoo that the other ``test_structure_*`` files import.

Each model is small but has the coupling it stands for: a flatten into a Linear (LeNet5-Caffe, VGG),
identity and 1x1-projection residual additions (ResNet-20), a depthwise conv inside an inverted
residual (MobileNetV2), a concatenation read by BatchNorms and convs (DenseNet).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplastic.structure import trace_unit_groups


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(20, 32), nn.Linear(32, 24), nn.Linear(24, 5)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5Caffe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGGBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 3
        for v in (8, "M", 16, 16, "M", 32, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 24), nn.ReLU(), nn.Dropout(), nn.Linear(24, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Mini(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1)
        )
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNetMini(nn.Module):
    def __init__(self, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1, bias=False)
        self.dense = nn.Sequential(*[DenseLayer(10 + i * growth, growth) for i in range(3)])
        cin = 10 + 3 * growth
        self.trans_bn = nn.BatchNorm2d(cin)
        self.trans_conv = nn.Conv2d(cin, 14, 1, bias=False)
        self.bn = nn.BatchNorm2d(14)
        self.fc = nn.Linear(14, 10)

    def forward(self, x):
        x = self.trans_conv(F.relu(self.trans_bn(self.dense(self.stem(x)))))
        x = F.avg_pool2d(x, 2)
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1))


#: name -> (builder, example input shape without batch)
ZOO = {
    "mlp": (MLP, (20,)),
    "lenet5": (LeNet5Caffe, (1, 28, 28)),
    "resnet20": (ResNet20, (3, 16, 16)),
    "vgg_bn": (VGGBN, (3, 32, 32)),
    "mobilenetv2": (MobileNetV2Mini, (3, 16, 16)),
    "densenet": (DenseNetMini, (3, 8, 8)),
}


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (defaults hide bugs)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def make(name: str, seed: int = 0, batch: int = 4) -> tuple[nn.Module, torch.Tensor]:
    """A fixture model (eval mode, random BatchNorm state) and an input batch."""
    torch.manual_seed(seed)
    builder, shape = ZOO[name]
    model = builder().eval()
    randomize_bn(model, torch.Generator().manual_seed(seed))
    return model, torch.randn(batch, *shape)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_traces_with_input_and_output_blocked(name):
    model, x = make(name)
    groups = trace_unit_groups(model, x)
    by_name = {g.name: g for g in groups}
    assert not by_name["x"].prunable and "network input" in by_name["x"].reason
    blocked_output = [g for g in groups if "reaches the model output" in g.reason]
    assert len(blocked_output) == 1 and blocked_output[0].size == model(x).shape[1]
    assert any(g.prunable for g in groups)


def test_trace_blocks_what_it_cannot_follow():
    class Tricky(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
            self.scale = nn.Parameter(torch.ones(4))  # a per-channel tensor outside any layer
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.a(x) * self.scale[:, None, None]
            z = self.b(y).mean(1, keepdim=True)  # averages over channels
            w = self.c(y) + z
            return self.fc(w.mean((2, 3)))

    x = torch.randn(2, 3, 4, 4)  # H == C == 4: shapes alone could not tell mean(1) from mean(2)
    groups = {g.name: g for g in trace_unit_groups(Tricky(), x)}
    assert not groups["a"].prunable and "cannot follow" in groups["a"].reason
    assert not groups["b"].prunable and "mixes channels" in groups["b"].reason
    assert not groups["c"].prunable and "broadcasts along the channel dimension" in groups["c"].reason


def test_group_of_and_groups_of():
    from neuroplastic.structure import group_of, groups_of

    model, x = make("densenet")
    groups = trace_unit_groups(model, x)
    assert group_of(groups, "dense.1.conv").size == 6
    # the transition BatchNorm normalises the pieces of four groups: group_of refuses to pick one
    with pytest.raises(ValueError, match="produces the units of 4 groups"):
        group_of(groups, "trans_bn")
    assert [g.name for g in groups_of(groups, "trans_bn")] == [
        "stem", "dense.0.conv", "dense.1.conv", "dense.2.conv"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="produces the units of 0 groups"):
        group_of(groups, "nope")
