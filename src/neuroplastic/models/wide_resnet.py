"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): WRN-d-k, pre-activation blocks.

WRN-d-k has a 3x3 stem of 16 channels, three stages of ``(d - 4) / 6`` :class:`WideBlock` of widths
16k, 32k, 64k (strides 1, 2, 2), then BN, ReLU, global average pooling and one Linear.

Blocks are pre-activation (BN -> ReLU -> conv), so the only Conv -> BN pairs that a channel gate
can treat as one unit group are ``conv1 -> bn2`` inside each block (the L0 paper gates exactly these);
the other convs write into the residual stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.models.registry import register_model
from neuroplastic.models.resnet_cifar import kaiming_init


class WideBlock(nn.Module):
    """``bn1 -> relu1 -> conv1 (stride) -> bn2 -> relu2 -> [dropout] -> conv2``, plus the shortcut.

    Where the shape changes, the shortcut is a 1x1 conv applied to the pre-activated input
    ``relu1(bn1(x))`` (as in the authors' code); otherwise it is the identity on ``x``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.projects = stride != 1 or in_channels != channels  # fixed at construction: traces statically
        self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False) if self.projects else (
            nn.Identity())

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(o)))))
        return y + (self.shortcut(o) if self.projects else x)


class WideResNet(nn.Module):
    """``conv1`` stem, ``layer1..layer3`` of :class:`WideBlock`, ``bn``, ``relu``, ``avgpool``, ``flatten``,
    ``fc``."""

    def __init__(self, blocks: Sequence[int], widen_factor: int, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1:
            raise BadInput(f"blocks must be three positive counts (one per stage), got {tuple(blocks)}")
        if widen_factor < 1:
            raise BadInput(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise BadInput(f"dropout must be in [0, 1), got {dropout}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        for i, (n, base) in enumerate(zip(blocks, (16, 32, 64), strict=True)):
            width = base * widen_factor
            layers = []
            for j in range(n):
                layers.append(WideBlock(channels, width, 2 if (i > 0 and j == 0) else 1, dropout))
                channels = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.flatten(self.avgpool(self.relu(self.bn(x)))))


@register_model("wrn")
def wrn(num_classes: int = 10, in_channels: int = 3, depth: int | None = None, widen_factor: int = 10,
        blocks: Sequence[int] | None = None, dropout: float = 0.0) -> WideResNet:
    """WRN-``depth``-``widen_factor`` (default WRN-28-10); give ``blocks`` (three counts) instead of
    ``depth`` for uneven stages. ``depth`` must be 6n + 4 (e.g. 16, 22, 28, 40)."""
    if blocks is not None:
        if depth is not None:
            raise BadInput(f"give depth or blocks, not both (got depth={depth}, blocks={tuple(blocks)})")
    else:
        depth = 28 if depth is None else depth
        if depth < 10 or (depth - 4) % 6 != 0:
            raise BadInput(f"depth must be 6n + 4 with n >= 1 (e.g. 16, 22, 28), got {depth}")
        n = (depth - 4) // 6
        blocks = (n, n, n)
    return WideResNet(blocks, widen_factor, num_classes, in_channels, dropout)
