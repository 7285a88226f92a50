"""Objects named ``"package.module:attribute"``: user models, user methods, optional parts of the package."""

from __future__ import annotations

import importlib
from typing import Any

from neuroplastic.errors import BadInput


class ObjectNotFound(BadInput):
    """A ``"module:attribute"`` path that does not name an importable object (bad input)."""


def import_object(spec: str, what: str = "object") -> Any:
    """Import the object ``spec`` names (``"package.module:attribute"``, dotted attributes allowed).

    ``what`` says in the error what the object was for (``"user model 'my.models:net'"``). A module that
    is missing, or an attribute it lacks, is an :class:`ObjectNotFound`; an error raised while the
    module itself imports (a bug in it) propagates unchanged.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ObjectNotFound(f"{what} must be given as 'package.module:name', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):  # the named module itself is missing
            raise ObjectNotFound(f"{what} is not available: module {err.name!r} not found") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ObjectNotFound(f"{what} is not available: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
