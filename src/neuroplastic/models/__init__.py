"""The model zoo: standard-layer models for MNIST-like and CIFAR inputs, behind one registry."""

from neuroplastic.models import lenet, resnet_cifar  # noqa: F401  (registers the models)
from neuroplastic.models.lenet import MLP, LeNet5Caffe
from neuroplastic.models.registry import get_model, list_models, load_factory, register_model
from neuroplastic.models.resnet_cifar import BasicBlock, CifarResNet

__all__ = [
    "MLP",
    "BasicBlock",
    "CifarResNet",
    "LeNet5Caffe",
    "get_model",
    "list_models",
    "load_factory",
    "register_model",
]
