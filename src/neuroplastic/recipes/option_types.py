"""Type checks of a recipe's ``method`` options against the method's own annotations.

:func:`check_method_options` compares every option with the type hints of the ``__init__`` methods along
the method class's MRO (see :mod:`neuroplastic.argcheck`) and raises a
:class:`~neuroplastic.recipes.config.RecipeError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from neuroplastic.argcheck import argument_types, check_arguments, describe, matches
from neuroplastic.recipes.config import RecipeError

__all__ = ["check_method_optimizer", "check_method_options", "describe", "matches", "method_option_types"]

method_option_types = argument_types


def check_method_options(cls: type, options: dict[str, Any]) -> None:
    """Raise a :class:`RecipeError` for the first option whose value does not fit its annotation."""
    check_arguments(cls, options, "method", RecipeError)


def check_method_optimizer(cls: type, optimizer: Any) -> None:
    """Raise a :class:`RecipeError` when the weights optimizer is not of the type the method's
    ``from_recipe`` annotates for it (LpSS needs ``optim.weights.name: lpcgd``)."""
    hint = argument_types(cls).get("optimizer")
    if hint is not None and not matches(optimizer, hint):
        raise RecipeError(f"optim.weights: method {getattr(cls, 'name', cls.__name__)!r} needs an optimizer of type "
                          f"{describe(hint)}, got {type(optimizer).__name__}")
