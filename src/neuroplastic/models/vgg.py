"""VGG-16 and VGG-19 with BatchNorm, for CIFAR-sized inputs.

The usual CIFAR variant: the conv stack of VGG with BN after every conv, four max-pools (the fifth is
replaced by global average pooling, which equals ``AvgPool2d(2)`` on 32x32 inputs and also works on
28x28), and one ``Linear(512, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neuroplastic.models.registry import register_model

# "M" is a 2x2 max-pool; numbers are conv widths
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512),
}


class VGG(nn.Module):
    """``features`` (conv 3x3 -> BN -> ReLU, and max-pools), ``avgpool``, ``flatten``, ``fc``.

    Convs have no bias (the BN that follows has one). Convs get Kaiming-normal (fan_out) weights, the
    Linear N(0, 0.01) weights and zero bias.
    """

    def __init__(self, config: Sequence[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                conv = nn.Conv2d(channels, width, 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.flatten(self.avgpool(self.features(x))))


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-16 with BN for CIFAR (13 convs, Linear(512, num_classes))."""
    return VGG(CONFIGS["vgg16"], num_classes, in_channels)


@register_model("vgg19_bn")
def vgg19_bn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-19 with BN for CIFAR (16 convs, Linear(512, num_classes))."""
    return VGG(CONFIGS["vgg19"], num_classes, in_channels)
