"""ResNets with the ImageNet stem (He et al. 2016): a 7x7 stride-2 conv and a 3x3 stride-2 max-pool.

``resnet50_imagenet`` is torchvision's ``resnet50`` layout (ResNet v1.5: the stride sits on the 3x3
conv of a Bottleneck), 25,557,032 parameters at 1000 classes, built from the same blocks as the CIFAR
ResNets of :mod:`neuroplastic.models.resnet_cifar`, so it traces with ``torch.fx`` like them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.models.registry import register_model
from neuroplastic.models.resnet_cifar import BLOCKS, add_stages


class ImageNetResNet(nn.Module):
    """Stem ``conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (3x3, stride 2)``, ``layer1..layerK``,
    ``avgpool``, ``flatten``, ``fc``; inputs of any size (224x224 for ImageNet).

    Parameters
    ----------
    blocks
        Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
    widths
        Channels per stage (before a Bottleneck's 4x expansion); the stem has ``widths[0]`` channels.
    block
        ``"basic"`` or ``"bottleneck"``. Shortcuts are projections (1x1 conv + BN) where the shape changes.
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000,
                 in_channels: int = 3, block: str = "bottleneck") -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
            raise BadInput(f"blocks and widths must be non-empty, of equal length and >= 1, "
                           f"got blocks={tuple(blocks)}, widths={tuple(widths)}")
        if block not in BLOCKS:
            raise BadInput(f"block must be one of {tuple(BLOCKS)}, got {block!r}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        add_stages(self, blocks, widths, BLOCKS[block], "projection", num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


@register_model("resnet50_imagenet")
def resnet50_imagenet(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    """ResNet-50 with the ImageNet stem: Bottlenecks [3, 4, 6, 3], widths 64..512 (x4 at the outputs)."""
    return ImageNetResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels, "bottleneck")
