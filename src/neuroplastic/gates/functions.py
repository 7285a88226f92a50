"""Gate probability functions ``pi = g_k(phi)`` and the slope needed to turn a logit-space gradient
into a gradient for ``phi``.

The ARM and AR estimators give an unbiased gradient of ``E[f(z)]``, ``z ~ Bernoulli(pi)``, with respect
to the gate *logit* ``alpha = logit(pi)``. For ``phi`` the chain rule multiplies by
``d alpha / d phi = g_k'(phi) / (pi (1 - pi))``:

* scaled sigmoid ``sigmoid(k phi)``: the factor is exactly ``k`` (the NPN paper's formula);
* centred, scaled hard sigmoid ``clip(k phi / 7 + 1/2, 0, 1)`` (L0-ARM): the factor is
  ``(k/7) / (pi (1 - pi))`` inside the linear region and 0 where the gate is saturated. L0-ARM's code
  uses ``k`` here as well, which is biased for this gate; that choice is kept as
  ``HardSigmoid(slope="reference")``.
"""

from __future__ import annotations

import torch

HARD_SIGMOID_SCALE = 7.0


class GateFunction:
    """``pi = g_k(phi)`` plus ``d logit(pi) / d phi`` for the estimators."""

    name = "gate"

    def prob(self, phi: torch.Tensor, k: float) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def logit_slope(self, phi: torch.Tensor, k: float) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Sigmoid(GateFunction):
    """The scaled sigmoid ``g_k(phi) = sigmoid(k * phi)`` of NPN; plastic everywhere."""

    name = "sigmoid"

    def prob(self, phi: torch.Tensor, k: float) -> torch.Tensor:
        return torch.sigmoid(k * phi)

    def logit_slope(self, phi: torch.Tensor, k: float) -> torch.Tensor:
        return torch.full_like(phi, float(k))


class HardSigmoid(GateFunction):
    """The centred, scaled hard sigmoid ``clip(k * phi / 7 + 1/2, 0, 1)`` of L0-ARM.

    ``slope="exact"`` (default) gives the unbiased chain rule; ``slope="reference"`` multiplies by
    ``k`` as L0-ARM's code does. A saturated gate (pi 0 or 1) gets no gradient: once pruned it cannot
    come back, which is why NPN prefers the sigmoid.
    """

    name = "hard_sigmoid"

    def __init__(self, slope: str = "exact") -> None:
        if slope not in ("exact", "reference"):
            raise ValueError(f"slope must be 'exact' or 'reference', got {slope!r}")
        self.slope = slope

    def prob(self, phi: torch.Tensor, k: float) -> torch.Tensor:
        return torch.clamp(k * phi / HARD_SIGMOID_SCALE + 0.5, 0.0, 1.0)

    def logit_slope(self, phi: torch.Tensor, k: float) -> torch.Tensor:
        pi = self.prob(phi, k)
        inside = (pi > 0) & (pi < 1)
        if self.slope == "reference":
            return torch.where(inside, torch.full_like(phi, float(k)), torch.zeros_like(phi))
        safe = torch.where(inside, pi * (1 - pi), torch.ones_like(pi))
        return torch.where(inside, (k / HARD_SIGMOID_SCALE) / safe, torch.zeros_like(phi))


def gate_function(name: str | GateFunction) -> GateFunction:
    """Look up a gate function by name (``"sigmoid"``, ``"hard_sigmoid"``) or pass one through."""
    if isinstance(name, GateFunction):
        return name
    if name == "sigmoid":
        return Sigmoid()
    if name == "hard_sigmoid":
        return HardSigmoid()
    raise ValueError(f"gate must be 'sigmoid' or 'hard_sigmoid', got {name!r}")
