"""Checks of keyword arguments given as data (recipe options, model kwargs) against a callable's annotations.

A recipe value of the wrong kind (``method.k=abc``, ``method.stages=5``, ``model.kwargs.conv1=wide``) would
otherwise surface deep in the code as an unrelated ``TypeError``. :func:`check_arguments` compares every
value with the type hints of a function, or of the ``__init__`` methods along a class's MRO (the class's
own first), and raises a :class:`~neuroplastic.errors.BadType` (or the error type asked for) naming the
key, the value and what is allowed. Annotations it does not understand (a class of the user's, a
callable) are not checked. :func:`unknown_keywords` finds names a callable does not accept.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any

from neuroplastic.errors import BadType

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPINGS = (dict, collections.abc.Mapping)


def argument_types(obj: Any) -> dict[str, Any]:
    """Argument name -> type hint: of a function, or of the ``__init__`` methods along a class's MRO."""
    hints: dict[str, Any] = {}
    functions = [k.__dict__.get("__init__") for k in reversed(obj.__mro__)] if isinstance(obj, type) else [obj]
    for fn in functions:
        if fn is None:
            continue
        try:
            hints.update(typing.get_type_hints(fn))
        except Exception:  # noqa: BLE001 - an unresolvable annotation just is not checked
            continue
    hints.pop("return", None)
    return hints


def check_arguments(obj: Any, values: dict[str, Any], where: str, error: type[Exception] = BadType) -> None:
    """Raise ``error`` for the first value that does not fit its annotation in ``obj``.

    The message reads ``{where}.{key}: got {value!r} ({type}); allowed: {what}``.
    """
    hints = argument_types(obj)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not matches(value, hint):
            raise error(f"{where}.{key}: got {value!r} ({type(value).__name__}); allowed: {describe(hint)}")


def unknown_keywords(fn: Any, names: typing.Iterable[str]) -> tuple[list[str], list[str]] | None:
    """``(unknown, accepted)`` keyword names of callable ``fn``; ``None`` when it takes ``**kwargs``
    (or has no signature to read), so that any name goes."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    accepted = sorted(p.name for p in params
                      if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
    return sorted(set(names) - set(accepted)), accepted


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
