"""The model registry: named factories, and user models given as ``"module:function"``.

Every factory accepts ``num_classes`` and ``in_channels`` keyword arguments (plus its own options), and
returns a plain ``nn.Module`` built from standard layers, with modules registered in forward order so
that structure tools can pair each Conv with the BatchNorm that follows it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from neuroplastic.errors import BadInput

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`get_model` (besides ``"module:function"`` strings)."""
    return sorted(_REGISTRY)


def load_factory(spec: str) -> ModelFactory:
    """Import the callable named by ``"package.module:function"`` (a user's own model factory)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInput(f"a user model must be given as 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"cannot import module {module_name!r} of user model {spec!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInput(f"module {module_name!r} has no attribute {attr!r} (user model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"user model {spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def get_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs
) -> nn.Module:
    """Build a model by registered name, or by ``"module:function"`` for a user's own factory.

    ``num_classes`` and ``in_channels`` are passed on only when given, so a user factory that takes
    neither still works; ``kwargs`` go to the factory as they are.
    """
    if ":" in name:
        factory = load_factory(name)
    elif name in _REGISTRY:
        factory = _REGISTRY[name]
    else:
        raise BadInput(f"unknown model {name!r}; registered models: {', '.join(list_models())} "
                       f"(or give your own as 'module:function')")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} returned a {type(model).__name__}, not an nn.Module")
    return model
