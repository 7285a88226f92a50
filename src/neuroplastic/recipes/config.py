"""The recipe schema: loading, ``key=value`` overrides, validation, and the ``epochs_scale`` budget knob.

A recipe is a plain nested dict (read from YAML). :func:`validate` checks it against :data:`SCHEMA` and
fills defaults; sections the schema leaves open (``method`` options, ``model.kwargs``, optimizer specs)
are checked by the code that consumes them (the method's ``from_recipe`` signature, ``build_optimizer``),
still before anything is written to disk.

Epoch-valued fields are recognised in ONE place, :func:`is_epoch_key`: ``epochs``, ``stages``,
``milestones``, ``knots``, ``step_size`` and any key ending in ``_epoch`` or ``_epochs``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neuroplastic.errors import BadInput

log = logging.getLogger(__name__)


class RecipeError(BadInput):
    """A recipe, an override or a value in it is wrong; the message says which and what is allowed."""


_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One schema entry: allowed types, a default (or required), and an optional value check."""

    types: tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # human words for ``check``, used in the error message


def _int(lo: int, default: Any = _REQUIRED) -> Field:
    return Field((int,), default, lambda v: v >= lo, f">= {lo}")


def _choice(*values: str, default: Any = _REQUIRED) -> Field:
    return Field((str,), default, lambda v: v in values, f"one of {list(values)}")


OPEN = "open"  # a section whose keys are checked by the code that consumes it

SCHEMA: dict[str, Any] = {
    "name": Field((str,)),
    "description": Field((str,)),
    "seed": _int(0, default=0),
    "epochs": _int(1),
    "epochs_scale": Field((float, int), 1.0, lambda v: v > 0, "> 0"),
    "selection": _choice("best_val", "last", default="best_val"),
    "select_from_epoch": _int(0, default=0),
    "snapshot_every": _int(0, default=1),
    "data": {
        "name": Field((str,)),
        "val_size": _int(1),
        "batch_size": _int(1),
        "eval_batch_size": _int(1, default=1000),
        "normalize": Field((bool,), True),
        "augment": {
            "crop_padding": _int(0, default=0),
            "padding_mode": _choice("zeros", "reflect", default="zeros"),
            "flip": Field((bool,), False),
            "cutout": _int(0, default=0),
        },
    },
    "model": {"name": Field((str,)), "kwargs": OPEN},
    "method": OPEN,
    "optim": {"weights": OPEN, "gates": OPEN},
}
_OPTIONAL_SECTIONS = {"augment": {}, "kwargs": {}, "gates": None}


def is_epoch_key(key: str) -> bool:
    """Whether a recipe key holds epochs (and so is scaled by ``epochs_scale``)."""
    return key in {"epochs", "stages", "milestones", "knots", "step_size"} or key.endswith(("_epoch", "_epochs"))


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe; the top level must be a mapping."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            recipe = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys to values, got {type(recipe).__name__}")
    return recipe


def parse_value(text: str) -> Any:
    """A YAML scalar (or flow list/map); ``1e-3`` is read as a float, not a string as in YAML 1.1."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"cannot parse override value {text!r}: {err}") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"method.k=5"`` -> ``(["method", "k"], 5)``."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise RecipeError(f"an override must look like key=value or section.key=value, got {text!r}")
    return path, parse_value(value)


def apply_overrides(recipe: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``recipe`` with each ``dotted.key=value`` set (missing sections are created).

    Whether the key exists is checked by :func:`validate` afterwards, which lists the valid keys.
    """
    recipe = copy.deepcopy(recipe)
    for text in overrides:
        path, value = parse_override(text)
        node = recipe
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise RecipeError(f"override {text!r}: {where} is a value ({child!r}), not a section")
            node = child
        node[path[-1]] = value
    return recipe


def validate(recipe: dict[str, Any], method_keys: Callable[[str], set[str] | None] | None = None) -> dict[str, Any]:
    """A checked copy of ``recipe`` with defaults filled in; raises :class:`RecipeError`.

    ``method_keys(name)`` returns the option names the method accepts (``None``: any); without it the
    ``method`` options are not checked here.
    """
    out = _validate_section(recipe, SCHEMA, "")
    method = out["method"]
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise RecipeError(f"method must be a section with a 'name', got {method!r}")
    if method_keys is not None:
        allowed = method_keys(method["name"])
        unknown = set(method) - {"name"} - (allowed if allowed is not None else set(method))
        if unknown:
            raise RecipeError(f"unknown key(s) {sorted(unknown)} in method (method {method['name']!r}); "
                              f"valid keys: {sorted({'name'} | allowed)}")
    for key in ("weights", "gates"):
        spec = out["optim"][key]
        if spec is not None and not (isinstance(spec, dict) and "name" in spec):
            raise RecipeError(f"optim.{key} must be an optimizer spec with a 'name', got {spec!r}")
    if out["optim"]["weights"] is None:
        raise RecipeError("optim.weights is required")
    if not isinstance(out["model"]["kwargs"], dict):
        raise RecipeError(f"model.kwargs must be a mapping, got {out['model']['kwargs']!r}")
    if out["select_from_epoch"] >= out["epochs"]:
        raise RecipeError(f"select_from_epoch must be < epochs ({out['epochs']}), got {out['select_from_epoch']}")
    return out


def _validate_section(given: Any, schema: dict[str, Any], where: str) -> dict[str, Any]:
    label = where or "the recipe"
    if given is _REQUIRED_SECTION:
        raise RecipeError(f"section {where} is required")
    if not isinstance(given, dict):
        raise RecipeError(f"{label} must be a section (a mapping), got {given!r}")
    unknown = set(given) - set(schema)
    if unknown:
        raise RecipeError(f"unknown key(s) {sorted(unknown)} in {label}; valid keys: {sorted(schema)}")
    out = {}
    for key, spec in schema.items():
        path = f"{where}.{key}" if where else key
        if spec is OPEN:
            out[key] = copy.deepcopy(given.get(key, _OPTIONAL_SECTIONS.get(key)))
        elif isinstance(spec, dict):
            out[key] = _validate_section(given.get(key, _OPTIONAL_SECTIONS.get(key, _REQUIRED_SECTION)), spec, path)
        else:
            out[key] = _check_field(given.get(key, spec.default), spec, path)
    return out


class _RequiredSection(dict):
    """Placeholder for a missing required section: reports the missing section, not its first key."""


_REQUIRED_SECTION = _RequiredSection()


def _check_field(value: Any, spec: Field, path: str) -> Any:
    if value is _REQUIRED:
        raise RecipeError(f"{path} is required")
    if isinstance(value, bool) and bool not in spec.types or not isinstance(value, spec.types):
        names = "/".join(t.__name__ for t in spec.types)
        raise RecipeError(f"{path} must be {names}, got {value!r}")
    if spec.check is not None and not spec.check(value):
        raise RecipeError(f"{path} must be {spec.rule}, got {value!r}")
    return value


def scale_epochs(recipe: dict[str, Any], scale: float) -> dict[str, Any]:
    """A copy of ``recipe`` with every epoch-valued field (see :func:`is_epoch_key`) multiplied by ``scale``.

    Integers are rounded half up and positive ones stay >= 1; integer lists stay strictly increasing
    (each entry at least one more than the one before). An integer boundary that lay inside the run
    (``0 < v < epochs``) stays inside the scaled run (``<= epochs - 1``), so a stage or a selection window
    never vanishes by rounding. Floats (e.g. piecewise ``knots``) are scaled exactly. ``epochs_scale``
    itself is set to 1.0 in the result, so scaling is never applied twice.
    """
    if not (isinstance(scale, int | float) and not isinstance(scale, bool) and scale > 0):
        raise RecipeError(f"epochs_scale must be a number > 0, got {scale!r}")
    epochs = recipe.get("epochs")
    bounds = None
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        bounds = (epochs, _scale_number(epochs, float(scale), "epochs"))
    out = _scale(recipe, float(scale), None, bounds)
    if "epochs" in out and bounds is not None:
        out["epochs"] = bounds[1]
    if "epochs_scale" in out:
        out["epochs_scale"] = 1.0
    for message in vanished_spans(recipe, out):
        log.warning("warning: epochs_scale=%g: %s; use a larger epochs_scale", scale, message)
    return out


def vanished_spans(original: dict[str, Any], scaled: dict[str, Any]) -> list[str]:
    """What scaling emptied: epoch spans between integer boundaries (``method.stages`` ...) that held
    epochs in ``original`` and hold none in ``scaled`` (e.g. NPN's plastic stage of a very short run)."""
    found = []
    for path, value, new in _epoch_lists(original, scaled, ""):
        bounds = [(0, 0), *zip(value, new, strict=True)]  # the span before the first boundary counts too
        for i in range(1, len(bounds)):
            (a, new_a), (b, new_b) = bounds[i - 1], bounds[i]
            if b > a and new_b <= new_a:
                span = f"before {path}[0]" if i == 1 else f"from {path}[{i - 2}] to {path}[{i - 1}]"
                name = _SPAN_NAMES.get(path.rsplit(".", 1)[-1], {}).get(i - 1) if len(value) == 2 else None
                found.append(f"{path} {value} became {new} in a run of {scaled.get('epochs')} epochs, so the "
                             f"epochs {span}{f' ({name})' if name else ''} are gone")
    return found


def _epoch_lists(original: Any, scaled: Any, where: str):
    """``(dotted key, original list, scaled list)`` of every integer list of an epoch key."""
    for key, value in original.items():
        new = scaled.get(key) if isinstance(scaled, dict) else None
        if isinstance(value, dict):
            yield from _epoch_lists(value, new, f"{where}{key}.")
        elif (is_epoch_key(key) and isinstance(value, list) and isinstance(new, list) and len(new) == len(value)
              and all(isinstance(v, int) and not isinstance(v, bool) for v in [*value, *new])):
            yield f"{where}{key}", value, new


# names of the spans of two-boundary schedules, for the warning of :func:`vanished_spans`
_SPAN_NAMES = {"stages": {0: "NPN's pre-training stage", 1: "NPN's plastic stage"}}


def _scale(node: Any, scale: float, key: str | None, bounds: tuple[int, int] | None) -> Any:
    if isinstance(node, dict):
        return {k: _scale(v, scale, k, bounds) for k, v in node.items()}
    if key is None or not is_epoch_key(key):
        if isinstance(node, list):
            return [_scale(v, scale, None, bounds) for v in node]
        return copy.deepcopy(node)
    if isinstance(node, list):
        out, previous = [], None
        for v in node:
            s = _scale_number(v, scale, key)
            if isinstance(s, int) and previous is not None and s <= previous:
                s = previous + 1  # rounding must not merge or reorder boundaries
            out.append(s)
            previous = s if isinstance(s, int) else None
        return [_inside(v, s, bounds) for v, s in zip(node, out, strict=True)]
    return _inside(node, _scale_number(node, scale, key), bounds)


def _inside(original: Any, scaled: Any, bounds: tuple[int, int] | None) -> Any:
    """Keep an integer boundary that was inside the run inside the scaled run."""
    if bounds is None or not isinstance(scaled, int) or isinstance(scaled, bool):
        return scaled
    epochs, new_epochs = bounds
    if 0 < original < epochs:
        return min(scaled, new_epochs - 1)
    return scaled


def _scale_number(v: Any, scale: float, key: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RecipeError(f"epoch-valued field {key!r} must hold numbers, got {v!r}")
    if isinstance(v, float):
        return v * scale
    scaled = math.floor(v * scale + 0.5)
    return max(scaled, 1) if v > 0 else scaled
