"""Schedules for mask methods: drop fraction and density as functions of the optimizer step.

Each schedule is a small object: ``schedule(step)`` gives its value at optimizer step ``step`` (an int
counting finished optimizer steps), and ``state_dict()``/``load_state_dict()`` hold its configuration, so a
checkpoint records exactly what was used. The values are closed forms of ``step`` (no hidden counters), so
resuming at any step gives the same values.
"""

from __future__ import annotations

import math
from typing import Any

from neuroplastic.checks import check_fraction, check_int


class _Schedule:
    _fields: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """The configuration (the value is a pure function of it and the step)."""
        return {f: getattr(self, f) for f in self._fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Re-initialise from :meth:`state_dict` output (validated like the constructor's arguments)."""
        self.__init__(**{f: state[f] for f in self._fields})

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"


class CosineDecay(_Schedule):
    """Cosine decay from ``initial`` to ``final`` over ``total_steps``, optionally 0 from ``stop_step`` on.

    ``value(t) = final + (initial - final) * (1 + cos(pi * min(t, T) / T)) / 2``.

    * GraNet's drop fraction: ``CosineDecay(0.5, 0.005, total_training_steps)`` (stepped every iteration).
    * RigL's drop fraction: ``CosineDecay(0.3, 0.0, T_end, stop_step=T_end)`` with ``T_end = 0.75 T``:
      ``0`` from ``stop_step`` on means no more mask updates.
    """

    _fields = ("initial", "final", "total_steps", "stop_step")

    def __init__(self, initial: float, final: float, total_steps: int, stop_step: int | None = None) -> None:
        self.initial = check_fraction("initial", initial)
        self.final = check_fraction("final", final)
        self.total_steps = check_int("total_steps", total_steps, low=1)
        self.stop_step = None if stop_step is None else check_int("stop_step", stop_step, low=0)

    def __call__(self, step: int) -> float:
        if self.stop_step is not None and step >= self.stop_step:
            return 0.0
        t = min(max(step, 0), self.total_steps)
        return self.final + (self.initial - self.final) * (1.0 + math.cos(math.pi * t / self.total_steps)) / 2.0


class Constant(_Schedule):
    """A constant ``value``, 0 from ``stop_step`` on (SET's fixed drop fraction)."""

    _fields = ("value", "stop_step")

    def __init__(self, value: float, stop_step: int | None = None) -> None:
        self.value = check_fraction("value", value)
        self.stop_step = None if stop_step is None else check_int("stop_step", stop_step, low=0)

    def __call__(self, step: int) -> float:
        return 0.0 if self.stop_step is not None and step >= self.stop_step else self.value


class CubicDensity(_Schedule):
    """Zhu & Gupta's gradual density schedule, reaching ``final_density`` exactly at ``end_step``.

    With ``s = 1 - density``: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3`` for
    ``t0 <= t <= t1``; ``init_density`` before ``t0`` and ``final_density`` after ``t1``. In densities:
    ``d_t = d_f + (d_i - d_f) (1 - (t - t0) / (t1 - t0))^3``.

    Pruning happens at the steps where :meth:`is_update_step` is true: every ``update_every`` steps counted
    from ``start_step``, and always at ``end_step`` itself, so the final density is reached even when
    ``end_step - start_step`` is not a multiple of ``update_every`` (the reference code stops one update short
    and never reaches it, reference §3.5).
    """

    _fields = ("init_density", "final_density", "start_step", "end_step", "update_every")

    def __init__(
        self, init_density: float, final_density: float, start_step: int, end_step: int, update_every: int
    ) -> None:
        self.init_density = check_fraction("init_density", init_density)
        self.final_density = check_fraction("final_density", final_density)
        if self.final_density > self.init_density:
            raise ValueError(f"final_density ({final_density}) must be <= init_density ({init_density})")
        self.start_step = check_int("start_step", start_step, low=0)
        self.end_step = check_int("end_step", end_step, low=0)
        if self.end_step < self.start_step:
            raise ValueError(f"end_step ({end_step}) must be >= start_step ({start_step})")
        self.update_every = check_int("update_every", update_every, low=1)

    def __call__(self, step: int) -> float:
        if step < self.start_step:
            return self.init_density
        if step >= self.end_step:
            return self.final_density
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        return self.final_density + (self.init_density - self.final_density) * (1.0 - frac) ** 3

    def is_update_step(self, step: int) -> bool:
        """True at ``start_step + j * update_every`` (``j >= 0``) up to ``end_step``, and at ``end_step``."""
        if step < self.start_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.start_step) % self.update_every == 0
