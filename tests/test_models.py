"""The model zoo: every model builds, runs on its natural input, traces with torch.fx, and has the
parameter counts published for it."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from neuroplastic.metrics import count_parameters, count_weights
from neuroplastic.models import get_model, list_models

# natural input of each model: (channels, side); "flat" means a feature vector of that length
FLAT_MODELS = {"mlp": 100}
MNIST_MODELS = {"lenet300_100", "lenet5_caffe", "wrn_lpss"}


def _natural_input(name: str) -> torch.Tensor:
    torch.manual_seed(0)
    if name in FLAT_MODELS:
        return torch.randn(2, FLAT_MODELS[name])
    if name in MNIST_MODELS:
        return torch.rand(2, 1, 28, 28)
    return torch.rand(2, 3, 32, 32)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: get_model(name).eval() for name in list_models()}


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_and_traces(models, name):
    model = models[name]
    x = _natural_input(name)
    with torch.no_grad():
        out = model(x)
        classes = {"mlp": 2, "resnet50_imagenet": 1000}.get(name, 10)  # the factories' defaults
        assert out.shape == (2, classes) and torch.isfinite(out).all()
        traced = torch.fx.symbolic_trace(model)
        # compare the traced graph on a smaller input where the model allows it (keeps the test fast)
        small = x if x.dim() == 2 or name in MNIST_MODELS else x[:, :, :16, :16]
        assert torch.allclose(traced(small), model(small), atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(list_models()) - MNIST_MODELS - set(FLAT_MODELS)))
def test_cifar_models_take_one_channel_28x28(name):
    model = get_model(name, num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_lenet5_caffe_has_430500_weights_and_named_layers(models):
    model = models["lenet5_caffe"]
    assert count_weights(model) == 430_500  # 500 + 25,000 + 400,000 + 5,000
    convs_and_fcs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert convs_and_fcs == ["conv1", "conv2", "fc1", "fc2"]
    assert model.fc1.in_features == 800


def test_lenet5_caffe_widths_build_3_3_48_3():
    model = get_model("lenet5_caffe", conv1=3, conv2=3, fc1=3)
    arch = (model.conv1.out_channels, model.conv2.out_channels, model.fc1.in_features, model.fc1.out_features)
    assert arch == (3, 3, 48, 3)
    assert count_weights(model) == 3 * 25 + 3 * 3 * 25 + 48 * 3 + 3 * 10


def test_lenet300_100_and_mlp_weights(models):
    assert count_weights(models["lenet300_100"]) == 784 * 300 + 300 * 100 + 100 * 10
    moons = get_model("mlp", in_features=100, hidden=(80,), num_classes=2)
    assert [m.out_features for m in moons.modules() if isinstance(m, nn.Linear)] == [80, 2]
    assert count_weights(moons) == 100 * 80 + 80 * 2
    deep = get_model("mlp", in_features=784, hidden=(300, 100), num_classes=10)
    assert [n for n, m in deep.named_modules() if isinstance(m, nn.Linear)] == ["fc1", "fc2", "fc3"]
    assert deep(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # images are flattened
    with pytest.raises(TypeError, match="in_channels"):
        get_model("mlp", in_channels=1)  # an MLP has no channels: refused, not ignored
    with pytest.raises(ValueError, match="widths"):
        get_model("mlp", hidden=(0,))


@pytest.mark.parametrize(("name", "shortcut", "params"), [
    ("resnet20", "A", 269_722),   # He et al.: 0.27M
    ("resnet32", "A", 464_154),   # 0.46M
    ("resnet56", "A", 853_018),   # 0.85M
    ("resnet56", "projection", 855_770),  # + 1x1 conv/BN projections at the two stage changes
])
def test_cifar_resnet_parameter_counts(name, shortcut, params):
    assert count_parameters(get_model(name, shortcut=shortcut)) == params


def test_wrn_lpss_has_267514_parameters(models):
    assert count_parameters(models["wrn_lpss"]) == 267_514


@pytest.mark.parametrize(("name", "params"), [
    ("resnet18", 11_173_962),
    ("resnet50", 23_520_842),
    ("wrn", 36_479_194),  # WRN-28-10, 36.5M in Zagoruyko & Komodakis
    # the common CIFAR VGGs (14,728,266 and 20,040,522) minus the conv biases, which the BN makes redundant
    ("vgg16_bn", 14_728_266 - (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)),
    ("vgg19_bn", 20_040_522 - (2 * 64 + 2 * 128 + 4 * 256 + 8 * 512)),
])
def test_large_model_parameter_counts(models, name, params):
    assert count_parameters(models[name]) == params


@pytest.mark.parametrize(("depth", "widen_factor", "params"), [(16, 8, 10_961_370), (40, 4, 8_949_210)])
def test_wrn_depth_and_width(depth, widen_factor, params):
    model = get_model("wrn", depth=depth, widen_factor=widen_factor)
    assert count_parameters(model) == params  # 11.0M and 8.9M in the WRN paper
    assert len(model.layer1) == (depth - 4) // 6 and model.fc.in_features == 64 * widen_factor
    uneven = get_model("wrn", blocks=(1, 2, 3), widen_factor=1)
    assert [len(uneven.layer1), len(uneven.layer2), len(uneven.layer3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="depth"):
        get_model("wrn", depth=27)
    with pytest.raises(ValueError, match="not both"):
        get_model("wrn", depth=28, blocks=(4, 4, 4))


def test_conv_is_followed_by_its_batchnorm_in_module_order(models):
    """Structure tools pair each Conv with the next module when it is a BatchNorm of the same width."""
    for name in ("resnet20", "resnet56", "wrn_lpss", "resnet18", "resnet50", "vgg16_bn", "vgg19_bn"):
        modules = [m for m in models[name].modules() if not isinstance(m, nn.Sequential | nn.Identity)]
        for i, m in enumerate(modules):
            if isinstance(m, nn.Conv2d):
                following = modules[i + 1]
                assert isinstance(following, nn.BatchNorm2d) and following.num_features == m.out_channels


def test_shortcut_option_a_has_no_parameters_and_keeps_shapes():
    model = get_model("resnet20", shortcut="A", in_channels=1).eval()
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.fx.symbolic_trace(model)(x), model(x), atol=1e-6)
    # the padded shortcut keeps the input in the middle channels and zeros elsewhere, subsampled by 2
    block = model.layer2[0]
    inp = torch.rand(1, 16, 8, 8)
    out = block.shortcut(inp)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], inp[:, :, ::2, ::2]) and out[:, :8].abs().sum() == 0
    with pytest.raises(ValueError, match="shortcut"):
        get_model("resnet20", shortcut="B")


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered models: .*lenet5_caffe"):
        get_model("alexnet")


def test_user_model_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from torch import nn
        def tiny(num_classes=3):
            return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))
        def not_a_model(num_classes=3):
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = get_model("my_models:tiny", num_classes=5)
        assert model(torch.zeros(1, 4)).shape == (1, 5)
        with pytest.raises(TypeError, match="not an nn.Module"):
            get_model("my_models:not_a_model")
        with pytest.raises(ValueError, match="my_models has no 'missing'"):
            get_model("my_models:missing")
    finally:
        sys.modules.pop("my_models", None)
    with pytest.raises(ValueError, match="module 'no_such_module_xyz' not found"):
        get_model("no_such_module_xyz:net")
    with pytest.raises(ValueError, match="must be given as 'package.module:name'"):
        get_model("my_models:")
