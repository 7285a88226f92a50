"""Method names of the recipes -> the classes that implement them, imported only when used.

A recipe's ``method.name`` is one of :data:`METHODS` or a ``"module:Class"`` path to a user's own
:class:`~neuroplastic.methods.base.CapacityMethod` subclass. Every method is built the same way, through
the protocol the base class declares (``option_names``, ``takes_optimizer``, ``from_recipe``)::

    Class.from_recipe(model, optimizer_or_None, *, epochs, steps_per_epoch, example_input, **options)

Methods with ``takes_optimizer`` (mask methods zero its state on pruned weights) get the weights
optimizer, built first; the others (NPN) are built first, since they may add parameters (gate logits)
to the model that the optimizers must then see.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from neuroplastic.imports import ObjectNotFound, import_object
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.recipes.config import RecipeError

METHODS: dict[str, str] = {
    "dense": "neuroplastic.methods.base:CapacityMethod",
    "npn": "neuroplastic.methods.npn:NPN",
    "npn_physical": "neuroplastic.methods.npn_physical:PhysicalNPN",
    "hard_concrete": "neuroplastic.methods.hard_concrete:HardConcrete",
    "static": "neuroplastic.methods.dst:Static",
    "set": "neuroplastic.methods.dst:SET",
    "rigl": "neuroplastic.methods.dst:RigL",
    "gmp": "neuroplastic.methods.dst:GMP",
    "granet": "neuroplastic.methods.dst:GraNet",
    "imp": "neuroplastic.methods.rewind:IterativePruning",
    "lpss": "neuroplastic.methods.lpss:LpSS",
}


def load_object(path: str, what: str = "object") -> Any:
    """Import ``"package.module:attribute"``; a :class:`RecipeError` when it names nothing importable."""
    try:
        return import_object(path, what)
    except ObjectNotFound as err:
        raise RecipeError(str(err)) from None


def method_class(name: str) -> type[CapacityMethod]:
    """The class for a method name of :data:`METHODS` or a ``"module:Class"`` path."""
    if ":" in name:
        path = name
    elif name in METHODS:
        path = METHODS[name]
    else:
        raise RecipeError(f"unknown method {name!r}; known methods: {sorted(METHODS)} (or 'module:Class')")
    cls = load_object(path, what=f"method {name!r}" if path == name else f"method {name!r} ({path})")
    if not (isinstance(cls, type) and issubclass(cls, CapacityMethod)):
        raise RecipeError(f"method {name!r} ({path}) is not a CapacityMethod subclass")
    return cls


def method_option_keys(name: str) -> set[str]:
    """The recipe options ``method.<key>`` the method accepts (its :meth:`~CapacityMethod.option_names`)."""
    return set(method_class(name).option_names())


def build_method(
    name: str,
    model: nn.Module,
    optimizer: Optimizer | None,
    *,
    epochs: int,
    steps_per_epoch: int,
    options: dict[str, Any],
    example_input: torch.Tensor | None = None,
) -> CapacityMethod:
    """Construct the method of a recipe (``optimizer``: the weights optimizer, for ``takes_optimizer`` methods)."""
    from neuroplastic.recipes.option_types import check_method_optimizer, check_method_options

    cls = method_class(name)
    check_method_options(cls, options)
    if cls.takes_optimizer:
        check_method_optimizer(cls, optimizer)
    try:
        return cls.from_recipe(model, optimizer if cls.takes_optimizer else None, epochs=epochs,
                               steps_per_epoch=steps_per_epoch, example_input=example_input, **options)
    except ValueError as err:
        if isinstance(err, RecipeError):
            raise
        # the methods' own argument checks raise ValueError (BadInput ones included): bad recipe values.
        # Any other exception (TypeError, IndexError, ...) from a builder is a bug and keeps its traceback.
        raise RecipeError(f"method {name!r}: {err}") from err
