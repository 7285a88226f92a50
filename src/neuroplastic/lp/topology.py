"""The LpSS-specific parts of a topology update: the row-wise threshold drop, the growth score and the
proportional controller on the grow fraction. Everything else (masks, exact-count growth, schedules) is
the mask engine's (:mod:`neuroplastic.masks`).
"""

from __future__ import annotations

from typing import Any

import torch

from neuroplastic.checks import check_choice, check_fraction, check_number
from neuroplastic.masks.rules import check_mask

GROW_SCORES = ("abs", "signed_reference")


def relative_magnitude(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``|w| / mean(|w| of the row's active entries)`` for every entry, the quantity the drop thresholds.

    Rows are units (dim 0); same shape as ``weight``. In a row whose active entries are all zero (or that
    has none) every entry reads ``inf``, so no threshold drops from it.
    """
    check_mask(mask, weight)
    absw = weight.detach().abs().reshape(weight.shape[0], -1)
    active = mask.reshape(weight.shape[0], -1)
    mean = (absw * active).sum(dim=1, keepdim=True) / active.sum(dim=1, keepdim=True).clamp_min(1)
    ratio = absw / torch.where(mean > 0, mean, torch.ones_like(mean))
    return torch.where(mean > 0, ratio, torch.full_like(ratio, float("inf"))).reshape(weight.shape)


def threshold_drop(weight: torch.Tensor, mask: torch.Tensor, h: float) -> torch.Tensor:
    """The mask kept after dropping every active entry with ``|w| < h * mean(|w| of the row's active entries)``.

    Rows are units (dim 0). A row without active entries stays without (the reference's ``>=`` against
    a zero threshold would revive the whole row; here nothing inactive is ever kept). ``h >= 0``; above 1
    it drops entries larger than their row's mean (see :func:`adapted_threshold`). Returns a new bool
    tensor; the inputs are not modified.
    """
    check_mask(mask, weight)
    if not 0.0 <= h < float("inf"):
        raise ValueError(f"drop fraction h must be a finite number >= 0, got {h}")
    return mask & (relative_magnitude(weight, mask) >= h)


def adapted_threshold(weights: list[torch.Tensor], masks: list[torch.Tensor], count: int) -> float:
    """The smallest ``h`` at which :func:`threshold_drop` drops at least ``count`` active entries in all.

    The LpSS paper's "threshold adaptation": when the drop fraction's threshold removes fewer entries than
    the mask must lose to reach its target, the threshold (relative to each row's mean) is raised to the
    ``count``-th smallest relative magnitude among the active entries of every layer together. Entries
    that tie with it are dropped too. Returns 0 for ``count <= 0``.
    """
    if len(weights) != len(masks):
        raise ValueError(f"got {len(weights)} weights but {len(masks)} masks")
    if count <= 0:
        return 0.0
    pairs = zip(weights, masks, strict=True)
    ratios = torch.cat([relative_magnitude(w, m)[m].flatten().float().cpu() for w, m in pairs])
    finite = ratios[torch.isfinite(ratios)]
    if finite.numel() == 0:
        return 0.0
    kth = finite.kthvalue(min(count, finite.numel())).values
    return float(torch.nextafter(kth, torch.tensor(float("inf"))))


def growth_score(grad: torch.Tensor, grow_score: str = "abs") -> torch.Tensor:
    """Score of each entry for regrowth: the gradient with every unit L2-normalised, ``|.|`` by default.

    ``grow_score="signed_reference"`` keeps the sign, as the reference code does, so only entries with
    a large *positive* gradient are regrown.
    """
    if grow_score not in GROW_SCORES:
        raise ValueError(f"grow_score must be one of {GROW_SCORES}, got {grow_score!r}")
    rows = grad.detach().reshape(grad.shape[0], -1)
    norm = torch.linalg.vector_norm(rows, ord=2, dim=1, keepdim=True)
    score = (rows / torch.where(norm > 0, norm, torch.ones_like(norm))).reshape(grad.shape)
    return score.abs() if grow_score == "abs" else score


CONTROLLERS = ("reference", "exact")


class GrowController:
    """Controller of the grow fraction (grown / dropped per update) that steers mask sparsity to a target.

    ``mode="reference"`` is the reference's rule: after each update with mask sparsity ``s`` and drop
    fraction ``h`` the grow fraction for the *next* update becomes::

        s < target * (1 - h/2):  (1 - gain) * s / target     (grow less: sparsity rises)
        otherwise:               (1 + gain) * s / target     (grow more: sparsity falls)

    Near the target ``s / target ~ 1``, so this settles into a limit cycle of amplitude about
    ``gain * dropped / masked weights`` around ``target * (1 - h/2)``.

    ``mode="exact"`` computes the grow fraction of the *current* update from its drops: grow
    ``dropped - (target - s) * total`` entries (at least 0), which lands the mask on the target whenever
    enough entries were dropped (up to per-layer rounding), and otherwise moves towards it.
    """

    def __init__(
        self, target_sparsity: float, initial: float = 0.95, gain: float = 0.1, mode: str = "reference"
    ) -> None:
        self.target = check_fraction("target_sparsity", target_sparsity, low_open=True, high_open=True)
        self.grow_fraction = check_number("grow_fraction", initial, low=0.0)
        self.gain = check_fraction("grow_fraction_d", gain, high_open=True)
        self.mode = check_choice("controller", mode, CONTROLLERS)

    def fraction_for(self, dropped: int, sparsity: float, total: int) -> float:
        """Grow fraction to use in an update that drops ``dropped`` of ``total`` entries at ``sparsity``."""
        if self.mode == "exact":
            if dropped == 0:
                return self.grow_fraction
            grow = dropped - (self.target - sparsity) * total
            self.grow_fraction = max(0.0, grow / dropped)
        return self.grow_fraction

    def update(self, sparsity: float, drop_fraction: float) -> float:
        """Grow fraction after an update that left the mask at ``sparsity`` (changes it in reference mode)."""
        if self.mode == "exact":
            return self.grow_fraction
        ratio = sparsity / self.target
        if sparsity < self.target * (1.0 - 0.5 * drop_fraction):
            self.grow_fraction = (1.0 - self.gain) * ratio
        else:
            self.grow_fraction = (1.0 + self.gain) * ratio
        return self.grow_fraction

    def state_dict(self) -> dict[str, Any]:
        """Target, gain, mode and the current grow fraction."""
        return {"target": self.target, "gain": self.gain, "mode": self.mode, "grow_fraction": self.grow_fraction}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.__init__(state["target"], state["grow_fraction"], state["gain"], state["mode"])
