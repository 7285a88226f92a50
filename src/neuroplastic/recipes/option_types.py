"""Type checks of a recipe's ``method`` options against the method's own annotations.

A recipe value of the wrong kind (``method.k=abc``, ``method.stages=5``) would otherwise surface deep in
the method as an unrelated ``TypeError``. :func:`check_method_options` compares every option with the
type hints of the ``__init__`` methods along the class's MRO (the class's own first) and raises a
:class:`~neuroplastic.recipes.config.RecipeError` naming the key, the value and what is allowed.
Annotations it does not understand (a class of the user's, a callable) are not checked.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

from neuroplastic.recipes.config import RecipeError

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPINGS = (dict, collections.abc.Mapping)


def method_option_types(cls: type) -> dict[str, Any]:
    """Option name -> type hint, from the ``__init__`` annotations along ``cls``'s MRO."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # noqa: BLE001 - an unresolvable annotation just is not checked
            continue
    hints.pop("return", None)
    return hints


def check_method_options(cls: type, options: dict[str, Any]) -> None:
    """Raise a :class:`RecipeError` for the first option whose value does not fit its annotation."""
    hints = method_option_types(cls)
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not matches(value, hint):
            raise RecipeError(f"method.{key}: got {value!r} ({type(value).__name__}); allowed: {describe(hint)}")


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` (unknown annotations match anything)."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, str]: fixed length
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(matches(v, args[0]) for v in value)  # list[int], tuple[int, ...]
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
        return True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """Human words for an annotation (``a number``, ``a list of ints``, ``None`` ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    words = {type(None): "None", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return f"a list of ({describe(args[0])})" if args else "a list"
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return f"a mapping of {describe(args[0])} to ({describe(args[1])})" if len(args) == 2 else "a mapping"
    return getattr(hint, "__name__", str(hint))
