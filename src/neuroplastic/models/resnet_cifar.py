"""ResNets with a CIFAR stem (a 3x3 conv, no max-pool): ResNet-20/32/56, the LpSS demo net, ResNet-18/50.

ResNet-20/32/56 (He et al. 2016, section 4.2) have three stages of :class:`BasicBlock` with widths
16/32/64; ResNet-18 and ResNet-50 have four stages of widths 64..512 (BasicBlock, resp.
:class:`Bottleneck`), as used for CIFAR in the sparse-training literature. All end with global average
pooling and one Linear, so inputs of any size work (28x28 one-channel inputs included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.models.registry import register_model

SHORTCUTS = ("projection", "A")


def kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) conv weights, BatchNorm weight 1 and bias 0, zero conv biases.

    Linear layers keep PyTorch's default initialisation.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """``conv1 -> bn1 -> relu1 -> conv2 -> bn2``, plus the shortcut, then ``relu2``.

    The shortcut is the identity when shapes match, else a 1x1 conv + BN (``"projection"``) or
    :class:`PadShortcut` (``"A"``).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "projection") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = make_shortcut(in_channels, channels, stride, shortcut)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """``conv1 (1x1) -> bn1 -> relu1 -> conv2 (3x3, stride) -> bn2 -> relu2 -> conv3 (1x1, 4x) -> bn3``,
    plus the shortcut, then ``relu3``. Output width is ``4 * channels``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "projection") -> None:
        super().__init__()
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(channels, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = make_shortcut(in_channels, out, stride, shortcut)
        self.relu3 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Identity if the shape is kept, else a projection (1x1 conv + BN) or an option-A shortcut."""
    if kind not in SHORTCUTS:
        raise BadInput(f"shortcut must be one of {SHORTCUTS}, got {kind!r}")
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class CifarResNet(nn.Module):
    """Stem ``conv1 -> bn1 -> relu``, ``layer1..layerK`` of BasicBlocks, ``avgpool``, ``flatten``, ``fc``.

    Parameters
    ----------
    blocks
        Blocks per stage, e.g. ``(9, 9, 9)`` for ResNet-56.
    widths
        Channels per stage; the stem has ``widths[0]`` channels. Stages after the first use stride 2.
    shortcut
        ``"projection"`` (1x1 conv + BN where the shape changes) or ``"A"`` (subsample + zero channels).
    block
        ``"basic"`` (:class:`BasicBlock`) or ``"bottleneck"`` (:class:`Bottleneck`, output 4x wider).
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int] = (16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3, shortcut: str = "projection", block: str = "basic") -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
            raise BadInput(f"blocks and widths must be non-empty, of equal length and >= 1, "
                           f"got blocks={tuple(blocks)}, widths={tuple(widths)}")
        if shortcut not in SHORTCUTS:
            raise BadInput(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if block not in BLOCKS:
            raise BadInput(f"block must be one of {tuple(BLOCKS)}, got {block!r}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        add_stages(self, blocks, widths, BLOCKS[block], shortcut, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


def add_stages(model: nn.Module, blocks: Sequence[int], widths: Sequence[int],
               block_class: type[BasicBlock] | type[Bottleneck], shortcut: str, num_classes: int) -> None:
    """Register ``layer1..layerK`` (stage ``i > 0`` starts with stride 2), ``avgpool``, ``flatten`` and
    ``fc`` on ``model`` after its stem of ``widths[0]`` channels, then apply :func:`kaiming_init`."""
    channels = widths[0]
    for i, (n, width) in enumerate(zip(blocks, widths, strict=True)):
        layers = []
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(block_class(channels, width, stride, shortcut))
            channels = width * block_class.expansion
        model.add_module(f"layer{i + 1}", nn.Sequential(*layers))
    model.num_stages = len(blocks)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.fc = nn.Linear(channels, num_classes)
    kaiming_init(model)


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, shortcut: str) -> CifarResNet:
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), (16, 32, 64), num_classes, in_channels, shortcut)


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "projection") -> CifarResNet:
    """ResNet-20 for CIFAR (3 x 3 BasicBlocks, widths 16/32/64)."""
    return _cifar_resnet(20, num_classes, in_channels, shortcut)


@register_model("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "projection") -> CifarResNet:
    """ResNet-32 for CIFAR (3 x 5 BasicBlocks, widths 16/32/64)."""
    return _cifar_resnet(32, num_classes, in_channels, shortcut)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "projection") -> CifarResNet:
    """ResNet-56 for CIFAR (3 x 9 BasicBlocks, widths 16/32/64), the NPN paper's CIFAR net."""
    return _cifar_resnet(56, num_classes, in_channels, shortcut)


@register_model("wrn_lpss")
def wrn_lpss(num_classes: int = 10, in_channels: int = 1) -> CifarResNet:
    """The LpSS demo net for Fashion-MNIST: BasicBlocks [2, 3, 3], widths 16/32/64, projection
    shortcuts, 1 input channel; 267,514 parameters with 10 classes."""
    return CifarResNet((2, 3, 3), (16, 32, 64), num_classes, in_channels, "projection")


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-18 with the CIFAR stem: BasicBlocks [2, 2, 2, 2], widths 64/128/256/512."""
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, "projection", "basic")


@register_model("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-50 with the CIFAR stem: Bottlenecks [3, 4, 6, 3], widths 64..512 (x4 at the outputs)."""
    widths = (64, 128, 256, 512)
    return CifarResNet((3, 4, 6, 3), widths, num_classes, in_channels, "projection", "bottleneck")
