"""Fully connected nets and LeNet5-Caffe, for MNIST-like inputs (and the moons MLP)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.models.registry import register_model


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` for each hidden width, then a ``Linear`` classifier.

    Layers are named ``fc1``, ``relu1``, ``fc2``, ... in forward order; the last Linear is ``fc{L}``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        widths = [in_features, *hidden, num_classes]
        if any(int(w) < 1 for w in widths):
            raise BadInput(f"all MLP widths must be >= 1, got {widths}")
        self.flatten = nn.Flatten()
        for i in range(len(widths) - 1):
            self.add_module(f"fc{i + 1}", nn.Linear(int(widths[i]), int(widths[i + 1])))
            if i < len(widths) - 2:
                self.add_module(f"relu{i + 1}", nn.ReLU())

    def forward(self, x):
        # the module list is fixed at construction, so this loop traces to a static graph
        for module in self.children():
            x = module(x)
        return x


@register_model("mlp")
def mlp(num_classes: int = 2, in_features: int = 100, hidden: Sequence[int] = (80,)) -> MLP:
    """A generic MLP; the default is NPN's moons net 100-80-2. Images are flattened, so give
    ``in_features = channels * height * width`` for them (e.g. 784 for MNIST). It takes no
    ``in_channels``: an MLP knows only its flattened input width."""
    return MLP(in_features, hidden, num_classes)


@register_model("lenet300_100")
def lenet300_100(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> MLP:
    """LeNet-300-100: 784 -> 300 -> 100 -> 10 with ReLUs (266,200 weights for MNIST)."""
    return MLP(in_channels * input_size * input_size, (300, 100), num_classes)


class LeNet5Caffe(nn.Module):
    """LeNet5-Caffe: conv 5x5 -> ReLU -> maxpool 2 -> conv 5x5 -> ReLU -> maxpool 2 -> fc -> ReLU -> fc.

    With the default widths 20-50-500 on 28x28 inputs the flattened conv2 output has 800 features and
    the net has 430,500 weights (500 + 25,000 + 400,000 + 5,000). The NPN paper writes an architecture
    as ``a-b-c-d`` = conv1 channels, conv2 channels, fc1 inputs (conv2 channels x 4 x 4), fc1 outputs,
    so ``conv1=3, conv2=3, fc1=3`` builds 3-3-48-3.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, conv1: int = 20, conv2: int = 50,
                 fc1: int = 500, input_size: int = 28) -> None:
        super().__init__()
        for name, value in (("conv1", conv1), ("conv2", conv2), ("fc1", fc1), ("num_classes", num_classes)):
            if value < 1:
                raise BadInput(f"{name} width must be >= 1, got {value}")
        side = ((input_size - 4) // 2 - 4) // 2  # two valid 5x5 convs, each followed by a 2x2 pool
        if side < 1:
            raise BadInput(f"input_size={input_size} is too small for LeNet5-Caffe (needs >= 16)")
        self.conv1 = nn.Conv2d(in_channels, conv1, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(conv1, conv2, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(conv2 * side * side, fc1)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(fc1, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


@register_model("lenet5_caffe")
def lenet5_caffe(num_classes: int = 10, in_channels: int = 1, conv1: int = 20, conv2: int = 50,
                 fc1: int = 500, input_size: int = 28) -> LeNet5Caffe:
    """LeNet5-Caffe (20-50-800-500 by default); widths configurable (see :class:`LeNet5Caffe`)."""
    return LeNet5Caffe(num_classes, in_channels, conv1, conv2, fc1, input_size)
