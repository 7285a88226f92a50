"""Dynamic sparse training: Static, SET, RigL, GMP and GraNet, one small class each.

All of them keep their masks in a :class:`~neuroplastic.masks.MaskEngine` (through
:class:`~neuroplastic.methods.mask_method.MaskMethod`) and are driven the same way::

    rigl = RigL(model, optimizer, density=0.1, epochs=epochs, steps_per_epoch=len(loader))
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        rigl.step()          # masks re-applied; every ``update_every`` steps the topology changes

``step()`` counts optimizer steps itself (``self.global_step``, starting at 1 after the first step), so all
schedules are in steps; epochs given to the constructor are converted with ``steps_per_epoch``. A drop
and grow moves ``ceil(drop_fraction * nnz)`` weights per layer; ``drop_fraction`` is annealed as
``drop_fraction_anneal`` says. See ``docs/dst.md`` for the mapping to the reference code's flags
(``--prune-rate`` is our ``drop_fraction``, ``--update-frequency`` our ``update_every``) and our fixes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neuroplastic.checks import check_choice, check_fraction
from neuroplastic.masks import (
    Constant,
    CosineDecay,
    CubicDensity,
    grow_by_score,
    grow_random,
    kept_count,
    layer_densities,
)
from neuroplastic.methods.mask_method import MaskMethod

#: how a drop fraction changes over the run
ANNEALS = ("cosine", "constant")
#: how GMP and GraNet spread the pruning over the layers
DISTRIBUTIONS = ("global", "layerwise")


def grow_by_gradient(method: MaskMethod, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
    """RigL's growth: the ``n`` inactive positions of largest dense |gradient| of layer ``name``."""
    return grow_by_score(method.engine.weight(name).grad.abs(), mask, n)


class Static(MaskMethod):
    """Static sparse training: a fixed random mask at ``density`` (reference ``--fix``)."""

    name = "static"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, density: float, **kw: Any):
        super().__init__(model, optimizer, **kw)
        self.target_density = check_fraction("density", density, low_open=True)
        self._init_random(self.target_density)


class SET(MaskMethod):
    """Sparse Evolutionary Training: magnitude drop, random growth, per layer, every ``update_every`` steps.

    ``drop_fraction`` is the fraction of every layer's active weights dropped and regrown at an update
    (reference ``--prune-rate``); ``drop_fraction_anneal`` is ``"cosine"`` (decays to 0 at
    ``stop_fraction`` of training, as RigL) or ``"constant"`` (stops at ``stop_fraction``).
    """

    name = "set"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        density: float,
        drop_fraction: float = 0.3,
        drop_fraction_anneal: str = "cosine",
        stop_fraction: float = 0.75,
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, **kw)
        self.target_density = check_fraction("density", density, low_open=True)
        fraction = check_fraction("drop_fraction", drop_fraction)
        stop = round(check_fraction("stop_fraction", stop_fraction, low_open=True) * self._total_steps(self.name))
        if check_choice("drop_fraction_anneal", drop_fraction_anneal, ANNEALS) == "cosine":
            self.drop_schedule = CosineDecay(fraction, 0.0, max(stop, 1), stop_step=stop)
        else:
            self.drop_schedule = Constant(fraction, stop_step=stop)
        self._init_random(self.target_density)

    def update(self, step: int) -> None:
        fraction = self.drop_schedule(step)
        if self._on_grid(step) and fraction > 0:
            self._event("drop_and_grow", moved=self.drop_and_grow(fraction), drop_fraction=fraction)

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_random(mask, n, self.generator)


class RigL(SET):
    """RigL: SET with growth at the inactive positions of largest dense-gradient magnitude."""

    name = "rigl"
    grows_by_gradient = True

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_by_gradient(self, name, mask, n)


class GMP(MaskMethod):
    """Gradual magnitude pruning on the cubic schedule (Zhu & Gupta), global or layer-wise.

    The masked weights go from ``init_density`` (default 1.0: dense) to ``final_density`` between
    ``init_prune_epoch`` and ``final_prune_epoch``, pruning every ``update_every`` steps and exactly
    at the final step (so ``final_density`` is reached). ``distribution="global"`` prunes the smallest
    |w| over all masked layers together (reference ``GMP``); ``"layerwise"`` moves every layer from its
    initial density to its ``sparse_init`` share of ``final_density`` on the same curve (with
    ``sparse_init="uniform"``, Zhu & Gupta's original, reference ``GMP_uniform``). ``final_prune_epoch``
    defaults to 11/16 of ``epochs`` (110 of 160, the reference runs).
    """

    name = "gmp"
    #: the density the masks start from when ``init_density`` is not given
    default_init_density = 1.0

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        final_density: float,
        init_density: float | None = None,
        init_prune_epoch: float = 0,
        final_prune_epoch: float | None = None,
        distribution: str = "global",
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, **kw)
        total = self._total_steps(self.name)
        init = self.default_init_density if init_density is None else init_density
        self.init_density = check_fraction("init_density", init, low_open=True)
        self.final_density = check_fraction("final_density", final_density, low_open=True)
        if final_prune_epoch is None:
            final_prune_epoch = self.epochs * 11 / 16
        if not 0 <= init_prune_epoch <= final_prune_epoch <= self.epochs:
            raise ValueError(
                f"need 0 <= init_prune_epoch ({init_prune_epoch}) <= final_prune_epoch ({final_prune_epoch}) "
                f"<= epochs ({self.epochs})"
            )
        self.distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
        start, end = round(init_prune_epoch * self.steps_per_epoch), round(final_prune_epoch * self.steps_per_epoch)
        self.schedule = CubicDensity(
            self.init_density, self.final_density, start, min(end, total), self.update_every
        )
        self._init_random(self.init_density)
        self._final_pruned = False
        self._init_layer = self.engine.layer_density()
        self._final_layer = layer_densities(self.sparse_init, self.engine.shapes(), self.final_density)

    def prune(self, step: int) -> None:
        """Prune to the scheduled density (never regrows: only active weights are candidates)."""
        target = self.schedule(step)
        before = self.engine.density()
        if self.distribution == "global":
            self.prune_global(kept_count(target, sum(self.engine.numel().values())))
        else:
            span = self.schedule.init_density - self.schedule.final_density
            ratio = 0.0 if span == 0 else (target - self.schedule.final_density) / span  # (1 - frac)^3
            dens = {n: f + (self._init_layer[n] - f) * ratio for n, f in self._final_layer.items()}
            self.prune_layers({n: kept_count(d, self.engine.masks[n].numel()) for n, d in dens.items()})
        if self.engine.density() < before:
            self._event("prune", target_density=target)

    def update(self, step: int) -> None:
        # the final prune also happens late when end_step falls before the first step (end_step 0)
        if self.schedule.is_update_step(step) or (step >= self.schedule.end_step and not self._final_pruned):
            self.prune(step)
            self._final_pruned = step >= self.schedule.end_step

    def state_dict(self) -> dict[str, Any]:
        """The mask state plus whether the final prune has happened."""
        return {**super().state_dict(), "final_pruned": self._final_pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        self._final_pruned = bool(state["final_pruned"])


class GraNet(GMP):
    """GraNet: gradual magnitude pruning plus zero-cost neuroregeneration (RigL drop-and-grow).

    Takes :class:`GMP`'s options. Starts from a random ``sparse_init`` mask at ``init_density`` (default
    0.5, the reference's; 1.0: dense-to-sparse), prunes on the cubic schedule to ``final_density``
    (``distribution`` global or layer-wise, see :class:`GMP`) and, at every update from
    ``init_prune_epoch`` to the end of training, drops ``ceil(drop_fraction * nnz)`` smallest-|w| weights
    per layer and regrows as many at the inactive positions of largest dense |grad|. The drop fraction
    decays by cosine from ``drop_fraction`` to ``min_drop_fraction`` over the whole run (reference
    ``--prune-rate``: 0.5 -> 0.005).
    """

    name = "granet"
    grows_by_gradient = True
    default_init_density = 0.5

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        drop_fraction: float = 0.5,
        min_drop_fraction: float = 0.005,
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, **kw)
        initial = check_fraction("drop_fraction", drop_fraction)
        final = check_fraction("min_drop_fraction", min_drop_fraction)
        self.drop_schedule = CosineDecay(initial, min(final, initial), self._total_steps(self.name))

    def update(self, step: int) -> None:
        super().update(step)  # the gradual prune, when scheduled
        fraction = self.drop_schedule(step)
        if self._on_grid(step, self.schedule.start_step) and fraction > 0:
            self._event("drop_and_grow", moved=self.drop_and_grow(fraction), drop_fraction=fraction)

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_by_gradient(self, name, mask, n)
