"""The model zoo: standard-layer models for MNIST-like, CIFAR and ImageNet inputs, behind one registry."""

from neuroplastic.models import lenet, resnet_cifar, resnet_imagenet, vgg, wide_resnet  # noqa: F401  (registers the models)
from neuroplastic.models.lenet import MLP, LeNet5Caffe
from neuroplastic.models.registry import get_model, list_models, load_factory, register_model
from neuroplastic.models.resnet_cifar import BasicBlock, Bottleneck, CifarResNet
from neuroplastic.models.resnet_imagenet import ImageNetResNet
from neuroplastic.models.vgg import VGG
from neuroplastic.models.wide_resnet import WideBlock, WideResNet

__all__ = [
    "MLP",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "LeNet5Caffe",
    "WideBlock",
    "WideResNet",
    "get_model",
    "list_models",
    "load_factory",
    "register_model",
]
