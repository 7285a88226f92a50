"""Method names of the recipes -> the classes that implement them, imported only when used.

A recipe's ``method.name`` is one of :data:`METHODS` or a ``"module:Class"`` path to a user's own
:class:`~neuroplastic.methods.base.CapacityMethod` subclass. A method class plugs into the runner with a
``from_recipe`` classmethod::

    Class.from_recipe(model, [optimizer | optimizers,] *, epochs, steps_per_epoch, **options)

Methods that take an ``optimizer`` (mask methods zero its state on pruned weights) get the weights
optimizer, built first; methods that do not (NPN) are built first, since they may add parameters (gate
logits) to the model that the optimizers must then see.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn
from torch.optim import Optimizer

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
    "lpss": "neuroplastic.methods.lpss:LpSS",
}

# arguments of ``from_recipe`` that the runner supplies; everything else is a recipe option
_RUNNER_ARGS = {"cls", "model", "optimizer", "optimizers", "epochs", "steps_per_epoch"}


def load_object(path: str, what: str = "object") -> Any:
    """Import ``"package.module:attribute"``; a clear :class:`RecipeError` when it cannot."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RecipeError(f"{what} path must look like 'package.module:name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # only a missing target module is "not available"; a broken import inside it is a real bug
        if err.name is not None and module_name.startswith(err.name):
            raise RecipeError(f"{what} is not available: module {err.name!r} not found") from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RecipeError(f"{what} is not available: {module_name} has no {attr!r}") from None


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
    if cls is not CapacityMethod and not hasattr(cls, "from_recipe"):
        raise RecipeError(f"method {name!r} ({path}) has no from_recipe classmethod, so recipes cannot build it")
    return cls


def method_option_keys(name: str) -> set[str] | None:
    """The recipe options ``method.<key>`` the method accepts (``None``: not checkable, any key goes).

    When ``from_recipe`` forwards ``**options`` to the constructor (``cls(model, **options)``), the
    constructor's keyword parameters are the options.
    """
    cls = method_class(name)
    if cls is CapacityMethod:
        return set()
    for fn in (cls.from_recipe, cls.__init__):
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return {p.name for p in params if p.name not in _RUNNER_ARGS and p.name != "self"
                    and p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return None


def wants_optimizer(name: str) -> str | None:
    """``"optimizer"`` or ``"optimizers"`` when ``from_recipe`` takes the optimizer(s), else ``None``."""
    cls = method_class(name)
    if cls is CapacityMethod:
        return None
    params = inspect.signature(cls.from_recipe).parameters
    return next((k for k in ("optimizer", "optimizers") if k in params), None)


def build_method(
    name: str,
    model: nn.Module,
    optimizers: list[Optimizer] | None,
    *,
    epochs: int,
    steps_per_epoch: int,
    options: dict[str, Any],
) -> CapacityMethod:
    """Construct the method of a recipe (``optimizers`` only for methods that take them)."""
    cls = method_class(name)
    if cls is CapacityMethod:
        if options:
            raise RecipeError(f"method 'dense' takes no options, got {sorted(options)}")
        return CapacityMethod(model)
    from neuroplastic.recipes.option_types import check_method_optimizer, check_method_options

    check_method_options(cls, options)
    kwargs: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, **options}
    takes = wants_optimizer(name)
    if takes == "optimizer":
        check_method_optimizer(cls, optimizers[0])
        kwargs["optimizer"] = optimizers[0]
    elif takes == "optimizers":
        kwargs["optimizers"] = optimizers
    try:
        return cls.from_recipe(model, **kwargs)
    except ValueError as err:
        if isinstance(err, RecipeError):
            raise
        # the methods' own argument checks raise ValueError (BadInput ones included): bad recipe values.
        # Any other exception (TypeError, IndexError, ...) from a builder is a bug and keeps its traceback.
        raise RecipeError(f"method {name!r}: {err}") from err
