import pytest
import torch
from torch import nn

from neuroplastic.methods.hard_concrete import HardConcrete
from neuroplastic.methods.npn import NPN, split_param_groups
from neuroplastic.metrics import count_weights
from neuroplastic.models import get_model
from neuroplastic.structure import load_compact, save_compact


def _close_randomly(method, fraction=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for site in method.sites:
            closed = torch.rand(site.n, generator=g) < fraction
            closed[0] = False  # keep every layer alive
            site.gates.phi[closed] = -1.0


def _train_a_little(model, method, x, y, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        method.backward(lambda: nn.functional.cross_entropy(model(x), y))
        opt.step()


# weights of the compacted model from the open units (``arch``): closed units leave, but the network's
# input features and the flattened positions of a kept conv channel stay (their columns are zeroed)
def _mlp_compact_weights(arch):
    hidden = arch[1]
    return 100 * hidden + hidden * 2


def _lenet_compact_weights(arch):
    c1, c2, _, hidden = arch
    return c1 * 25 + c2 * c1 * 25 + c2 * 16 * hidden + hidden * 10


@pytest.mark.parametrize(
    "name, kwargs, gates, shape, compact_weights",
    [
        ("mlp", {"in_features": 100, "hidden": (80,), "num_classes": 2}, {"fc1": "in", "fc2": "in"}, (100,),
         _mlp_compact_weights),
        ("lenet5_caffe", {}, {"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"}, (1, 28, 28),
         _lenet_compact_weights),
        ("resnet20", {}, None, (3, 32, 32), None),  # residual groups: a channel stays if any writer keeps it
    ],
)
def test_compact_equals_gated_eval_output(name, kwargs, gates, shape, compact_weights):
    torch.manual_seed(0)
    model = get_model(name, **kwargs)
    npn = NPN(model, k=7, gates=gates, stages=None)
    x, y = torch.randn(8, *shape), torch.randint(0, 2, (8,))
    _train_a_little(model, npn, x, y)  # BN statistics move away from their defaults
    _close_randomly(npn)
    model.eval()
    small = npn.compact(x)
    small.eval()
    assert not split_param_groups(small)[1], "the compact model has no gates"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in small.modules())
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert npn.live_weights() < count_weights(small) < count_weights(model)
    if compact_weights is not None:
        assert count_weights(small) == compact_weights(npn.architecture()["arch"])
    # the original gated model is untouched
    assert split_param_groups(model)[1] and npn.sites[0].handles


def test_compact_lenet5_counts_the_open_channels(tmp_path):
    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    npn = NPN(model, k=7, gates={"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"})
    with torch.no_grad():
        npn.sites[0].gates.phi[7:] = -1  # 7 of 20 conv1 channels
        npn.sites[1].gates.phi[9:] = -1  # 9 of 50 conv2 channels
        npn.sites[3].gates.phi[30:] = -1  # 30 of 500 fc1 units (fc2's inputs)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    small = npn.compact(x)
    assert [small.conv1.out_channels, small.conv2.out_channels, small.fc1.in_features, small.fc1.out_features] == [
        7, 9, 144, 30]
    assert count_weights(small) == 25 * 7 + 25 * 7 * 9 + 144 * 30 + 30 * 10 == npn.live_weights()
    path = tmp_path / "small.pt"
    save_compact(small, path)
    torch.load(path, weights_only=True)
    again = load_compact(lambda: get_model("lenet5_caffe"), path)
    again.eval()
    assert torch.allclose(again(x), model(x), atol=1e-5)


def test_hard_concrete_compacts_with_its_soft_eval_gates():
    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    hc = HardConcrete(model, lam=0.0)
    with torch.no_grad():
        for site in hc.sites:
            site.gates.phi.uniform_(-3, 3)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    small = hc.compact(x)
    small.eval()
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert count_weights(small) < count_weights(model)


class _Concat(nn.Module):
    """A DenseNet-style block: two convs concatenated, then a conv and a classifier."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(9)
        self.c = nn.Conv2d(9, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = torch.cat([torch.relu(self.bn_a(self.a(x))), self.b(x)], 1)
        y = torch.relu(self.c(torch.relu(self.bn(y))))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("factory, shape", [(lambda: get_model("resnet20"), (3, 32, 32)), (_Concat, (3, 8, 8))])
def test_group_gates_prune_residual_streams_and_concat_slices(factory, shape):
    torch.manual_seed(0)
    model = factory()
    x, y = torch.randn(8, *shape), torch.randint(0, 3, (8,))
    npn = NPN(model, k=7, gates="groups", example_input=x, stages=None, lam=1e-4)
    assert all(s.side == "group" for s in npn.sites)
    _train_a_little(model, npn, x, y)
    _close_randomly(npn, seed=1)
    model.eval()
    small = npn.compact(x)
    small.eval()
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert count_weights(small) < count_weights(model)
    if factory is not _Concat:  # the residual stream of the first stage is one gated group
        stream = next(s for s in npn.sites if len(s.hooks) > 2)
        assert small.conv1.out_channels == int(npn.open_units()[npn.sites.index(stream)].sum())


def test_group_gates_need_an_example_input():
    with pytest.raises(ValueError, match="example_input"):
        NPN(get_model("resnet20"), gates="groups")
