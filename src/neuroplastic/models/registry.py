"""The model registry: named factories, and user models given as ``"module:function"``.

Every factory accepts ``num_classes`` and ``in_channels`` keyword arguments (plus its own options), and
returns a plain ``nn.Module`` built from standard layers, with modules registered in forward order so
that structure tools can pair each Conv with the BatchNorm that follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from neuroplastic.argcheck import check_arguments, unknown_keywords
from neuroplastic.errors import BadInput, BadType
from neuroplastic.imports import import_object

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
    """The callable named by ``"package.module:function"`` (a user's own model factory)."""
    obj = import_object(spec, f"user model {spec!r}")
    if not callable(obj):
        raise BadType(f"user model {spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def check_model_kwargs(name: str, factory: ModelFactory, kwargs: dict[str, Any]) -> None:
    """Raise :class:`~neuroplastic.errors.BadType` for a keyword the factory does not take, or a value that
    does not fit its annotation (``model.kwargs.conv1=wide``), naming the key, the value and what is allowed."""
    names = unknown_keywords(factory, kwargs)
    if names is not None and names[0]:
        raise BadType(f"model.kwargs: model {name!r} takes no {', '.join(names[0])}; "
                      f"its options: {', '.join(names[1])}")
    check_arguments(factory, kwargs, "model.kwargs")


def get_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs
) -> nn.Module:
    """Build a model by registered name, or by ``"module:function"`` for a user's own factory.

    ``num_classes`` and ``in_channels`` are passed on only when given, so a user factory that takes
    neither still works; ``kwargs`` go to the factory as they are, after :func:`check_model_kwargs`.
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
    check_model_kwargs(name, factory, kwargs)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} returned a {type(model).__name__}, not an nn.Module")
    return model
