"""Argument checks shared by every layer of the package, so bad input reads the same everywhere.

Each check returns the value (as ``float`` or ``int``) or raises an error that names the parameter, the
value given and what is allowed: a value out of range is a :class:`~neuroplastic.errors.BadInput` (a
``ValueError``); a value of the wrong type (a string or a bool where a number belongs) is a
:class:`~neuroplastic.errors.BadType` (a ``TypeError`` and bad input).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

from neuroplastic.errors import BadInput, BadType


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it is a finite real number within the bounds (``None``: unbounded)."""
    allowed = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadType(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    value = float(value)
    bad = (not math.isfinite(value)
           or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise BadInput(f"{name} must be {allowed}, got {value!r}")
    return value


def check_fraction(name: str, value: Any, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float in [0, 1] (ends excluded as asked)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) ``>= low``."""
    allowed = "an int" if low is None else f"an int >= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadType(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise BadInput(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, allowed: Collection[Any]) -> Any:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise BadInput(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise BadType(f"{name} must be True or False, got {value!r}")
    return value
