"""The model zoo: standard-layer models for MNIST-like and CIFAR inputs, behind one registry."""

from neuroplastic.models import lenet, resnet_cifar, vgg, wide_resnet  # noqa: F401  (registers the models)
from neuroplastic.models.lenet import MLP, LeNet5Caffe
from neuroplastic.models.registry import get_model, list_models, load_factory, register_model
from neuroplastic.models.resnet_cifar import BasicBlock, Bottleneck, CifarResNet
from neuroplastic.models.vgg import VGG
from neuroplastic.models.wide_resnet import WideBlock, WideResNet

__all__ = [
    "MLP",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "LeNet5Caffe",
    "WideBlock",
    "WideResNet",
    "get_model",
    "list_models",
    "load_factory",
    "register_model",
]
