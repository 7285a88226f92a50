"""Optimizers and learning-rate schedules from plain dictionaries (as recipes write them).

Every schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per optimizer step, so that
epoch-valued milestones and per-step piecewise-linear schedules share one code path. Milestones and
knots are given in epochs (floats allowed); the multiplier is evaluated at ``step / steps_per_epoch``.

Example spec::

    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
     "schedule": {"name": "multistep", "milestones": [60, 120], "gamma": 0.1}}
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from neuroplastic.errors import BadInput

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "step", "cosine", "piecewise")

_OPTIMIZER_KEYS = {
    "sgd": {"lr", "momentum", "weight_decay", "nesterov", "dampening"},
    "adam": {"lr", "betas", "eps", "weight_decay"},
    "adamw": {"lr", "betas", "eps", "weight_decay"},
}


def build_optimizer(params: Iterable[Any], spec: dict[str, Any]) -> Optimizer:
    """Build a SGD/Adam/AdamW optimizer from ``spec`` (``name`` plus the optimizer's own keywords).

    ``schedule`` in ``spec`` is ignored here (see :func:`build_schedule`). Unknown keys are errors.
    """
    spec = dict(spec)
    spec.pop("schedule", None)
    name = spec.pop("name", None)
    if name not in OPTIMIZERS:
        raise BadInput(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    unknown = set(spec) - _OPTIMIZER_KEYS[name]
    if unknown:
        raise BadInput(
            f"unknown keys for optimizer {name!r}: {sorted(unknown)}; allowed: {sorted(_OPTIMIZER_KEYS[name])}"
        )
    if "lr" not in spec:
        raise BadInput(f"optimizer {name!r} needs an 'lr'")
    if "betas" in spec:
        spec["betas"] = tuple(spec["betas"])
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(params, **spec)


def lr_multiplier(schedule: dict[str, Any] | None, epochs: float):
    """Return ``f(epoch_float) -> multiplier`` for a schedule spec (``None`` means constant)."""
    if schedule is None:
        return lambda e: 1.0
    schedule = dict(schedule)
    name = schedule.pop("name", None)
    if name not in SCHEDULES:
        raise BadInput(f"schedule name must be one of {SCHEDULES}, got {name!r}")

    def take(*keys: str, defaults: dict[str, Any] | None = None) -> list[Any]:
        defaults = defaults or {}
        unknown = set(schedule) - set(keys)
        if unknown:
            raise BadInput(f"unknown keys for schedule {name!r}: {sorted(unknown)}; allowed: {sorted(keys)}")
        missing = [k for k in keys if k not in schedule and k not in defaults]
        if missing:
            raise BadInput(f"schedule {name!r} needs {missing}")
        return [schedule.get(k, defaults.get(k)) for k in keys]

    if name == "constant":
        take()
        return lambda e: 1.0
    if name == "multistep":
        milestones, gamma = take("milestones", "gamma", defaults={"gamma": 0.1})
        milestones = sorted(float(m) for m in milestones)
        # an epoch counts as reached once it has started: the epoch index e uses floor semantics
        return lambda e: gamma ** bisect.bisect_right(milestones, e + 1e-9)
    if name == "step":
        step_size, gamma = take("step_size", "gamma", defaults={"gamma": 0.1})
        if step_size <= 0:
            raise BadInput(f"schedule 'step' needs step_size > 0, got {step_size}")
        return lambda e: gamma ** math.floor((e + 1e-9) / step_size)
    if name == "cosine":
        (eta_min,) = take("eta_min_factor", defaults={"eta_min_factor": 0.0})
        return lambda e: eta_min + (1 - eta_min) * 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs))
    knots, values = take("knots", "values")
    if len(knots) != len(values) or len(knots) < 2 or list(knots) != sorted(knots):
        raise BadInput(f"piecewise schedule needs >= 2 increasing knots and as many values, got {knots}, {values}")
    return lambda e: _interp(e, [float(k) for k in knots], [float(v) for v in values])


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, x) - 1
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return float(ys[i] + t * (ys[i + 1] - ys[i]))


def build_schedule(
    optimizer: Optimizer, schedule: dict[str, Any] | None, *, epochs: float, steps_per_epoch: int
) -> LambdaLR:
    """A per-step LR schedule: call ``.step()`` after every ``optimizer.step()``.

    Every schedule gives a multiplier of the optimizer's ``lr``; for ``piecewise`` the ``values`` are
    those multipliers at the ``knots`` (epochs), linearly interpolated in between.
    """
    if steps_per_epoch <= 0:
        raise BadInput(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    f = lr_multiplier(schedule, epochs)
    return LambdaLR(optimizer, lambda step: f(step / steps_per_epoch))
