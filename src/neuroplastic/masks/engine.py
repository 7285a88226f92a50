"""The mask engine: one boolean mask per weight tensor, applied to the weights and the optimizer state.

Every unstructured method (Static, SET, RigL, GMP, GraNet, LpSS, iterative pruning) keeps its masks in a
:class:`MaskEngine`. The engine only *holds and applies* masks; deciding which entries to drop and grow is
the job of the pure functions in :mod:`neuroplastic.masks.rules` and of the methods.

Conventions
-----------
* By default the ``.weight`` of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` is masked; biases and norm
  layers never are.
* Masks are keyed by module name *of the inner model*: a model wrapped in ``DistributedDataParallel`` (or
  ``DataParallel``) is unwrapped, so names never carry a ``module.`` prefix and masks are the same whether
  the engine is built before or after wrapping.
* :meth:`MaskEngine.apply` runs after every optimizer step. It zeroes masked weights and every optimizer
  state tensor of the weight's shape (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/...), so that
  masked entries carry no stale momentum when they are regrown.
* Gradients are not masked: growth criteria (RigL, GraNet) need the dense gradient of masked weights,
  which ``backward()`` leaves in ``weight.grad`` because masked weights are exact zeros, not removed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.metrics import WEIGHTED


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel`` wrappers (``model`` itself otherwise)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def _match(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


class MaskEngine:
    """Boolean masks on the weights of a model's Linear/Conv layers.

    Parameters
    ----------
    model:
        The model (possibly wrapped in DDP; the inner module is used).
    optimizer:
        Optional optimizer whose per-parameter state is masked along with the weights.
    include:
        Module names (or ``fnmatch`` patterns such as ``"features.*"``) to mask; default: every Linear/Conv.
        Each pattern must match at least one Linear/Conv layer.
    exclude:
        Module names or patterns to leave dense. Each pattern must match at least one selected layer.
    exclude_first:
        Leave the first Linear/Conv layer (in registration order) dense, as GraNet's ``--rm-first``.
    exclude_classifier:
        Leave the last Linear/Conv layer (in registration order) dense.

    Attributes
    ----------
    masks:
        ``{module name: bool tensor}`` (same shape and device as the weight).
    layers:
        ``{module name: module}`` for the masked layers, in registration order.
    ever_active:
        ``{module name: bool tensor}``: entries that were active at any time (ITOP exploration).
    version:
        Counter incremented at every mask change (cache key for quantities derived from the masks).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        exclude_first: bool = False,
        exclude_classifier: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        for pname, value in (("include", include), ("exclude", exclude)):
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise TypeError(f"{pname} must be a list of module names or patterns, got {value!r}")
        self.model = unwrap(model)
        self.optimizer = optimizer
        candidates = [(n, m) for n, m in self.model.named_modules() if isinstance(m, WEIGHTED)]
        if not candidates:
            raise ValueError("model has no Linear or Conv layer to mask")
        for pattern in include or []:
            if not any(_match(n, [pattern]) for n, _ in candidates):
                names = [n for n, _ in candidates]
                raise ValueError(f"include pattern {pattern!r} matches no Linear/Conv layer; layers: {names}")
        selected = [(n, m) for n, m in candidates if include is None or _match(n, include)]
        if exclude_first:
            selected = [(n, m) for n, m in selected if n != candidates[0][0]]
        if exclude_classifier:
            selected = [(n, m) for n, m in selected if n != candidates[-1][0]]
        for pattern in exclude or []:
            if not any(_match(n, [pattern]) for n, _ in selected):
                names = [n for n, _ in selected]
                raise ValueError(f"exclude pattern {pattern!r} matches no masked layer; layers: {names}")
        selected = [(n, m) for n, m in selected if not _match(n, exclude or [])]
        if not selected:
            raise ValueError("no layer left to mask after include/exclude/exclude_first/exclude_classifier")
        self.layers: dict[str, nn.Module] = dict(selected)
        if optimizer is not None:
            held = {id(q) for group in optimizer.param_groups for q in group["params"]}
            if not any(id(m.weight) in held for m in self.layers.values()):
                raise BadInput(f"optimizer holds none of the weights of the masked layers {list(self.layers)}: "
                               "build it from this model's parameters (e.g. model.parameters())")
        self.masks: dict[str, torch.Tensor] = {
            n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.layers.items()
        }
        self.ever_active: dict[str, torch.Tensor] = {n: m.clone() for n, m in self.masks.items()}
        #: incremented whenever a mask changes, so that callers can cache what they derive from masks
        self.version = 0

    # -- access ------------------------------------------------------------------------------------
    def weight(self, name: str) -> torch.Tensor:
        """The weight parameter of masked layer ``name``."""
        return self.layers[name].weight

    def shapes(self) -> dict[str, torch.Size]:
        """``{name: weight shape}`` of the masked layers (input of :mod:`neuroplastic.masks.density`)."""
        return {n: m.weight.shape for n, m in self.layers.items()}

    def _state_tensors(self, param: torch.Tensor) -> list[torch.Tensor]:
        """Optimizer state tensors of ``param`` that have its shape (per-entry state)."""
        if self.optimizer is None:
            return []
        state = self.optimizer.state.get(param, {})
        return [v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == param.shape]

    # -- applying and changing masks ---------------------------------------------------------------
    @torch.no_grad()
    def apply(self) -> None:
        """Zero masked weights and their per-entry optimizer state (call after every optimizer step)."""
        for name, mask in self.masks.items():
            w = self.layers[name].weight
            w.mul_(mask)
            for t in self._state_tensors(w):
                t.mul_(mask)

    @torch.no_grad()
    def set_mask(self, name: str, new_mask: torch.Tensor, *, zero_grown: bool = True) -> None:
        """Replace the mask of layer ``name`` and apply it.

        Newly grown positions (inactive before, active now) get zero optimizer state and, when
        ``zero_grown`` (the default, as in RigL and GraNet), a zero weight. Positions active before and
        after keep their weight and state; dropped positions are zeroed.
        """
        if name not in self.masks:
            raise KeyError(f"no masked layer named {name!r}; masked layers: {list(self.masks)}")
        old = self.masks[name]
        if not isinstance(new_mask, torch.Tensor) or new_mask.shape != old.shape:
            got = tuple(new_mask.shape) if isinstance(new_mask, torch.Tensor) else type(new_mask).__name__
            raise ValueError(f"new_mask for {name!r} must be a tensor of shape {tuple(old.shape)}, got {got}")
        new_mask = new_mask.to(device=old.device, dtype=torch.bool)
        grown = new_mask & ~old
        w = self.layers[name].weight
        if zero_grown:
            w.masked_fill_(grown, 0.0)
        w.mul_(new_mask)
        for t in self._state_tensors(w):
            t.masked_fill_(grown, 0)
            t.mul_(new_mask)
        self.masks[name] = new_mask
        self.ever_active[name] |= new_mask
        self.version += 1

    def set_masks(self, masks: dict[str, torch.Tensor], *, zero_grown: bool = True) -> None:
        """:meth:`set_mask` for every entry of ``masks``."""
        for name, mask in masks.items():
            self.set_mask(name, mask, zero_grown=zero_grown)

    # -- counting ----------------------------------------------------------------------------------
    def nnz(self) -> dict[str, int]:
        """Number of active entries of each mask."""
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def numel(self) -> dict[str, int]:
        """Number of entries of each masked weight."""
        return {n: m.numel() for n, m in self.masks.items()}

    def layer_density(self) -> dict[str, float]:
        """Fraction of active entries of each masked weight."""
        return {n: int(m.sum()) / m.numel() for n, m in self.masks.items()}

    def density(self) -> float:
        """Fraction of active entries over all masked weights together."""
        return sum(self.nnz().values()) / sum(self.numel().values())

    def exploration_rate(self) -> float:
        """ITOP exploration rate: fraction of masked-weight entries that were ever active."""
        ever = sum(int(m.sum()) for m in self.ever_active.values())
        return ever / sum(self.numel().values())

    def reset_exploration(self) -> None:
        """Restart the exploration tracker from the current masks (e.g. after a dense-to-sparse phase)."""
        self.ever_active = {n: m.clone() for n, m in self.masks.items()}

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Masks and exploration tracker (copies, on their device)."""
        return {
            "masks": {n: m.clone() for n, m in self.masks.items()},
            "ever_active": {n: m.clone() for n, m in self.ever_active.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and apply the masks to weights and optimizer state."""
        for key in ("masks", "ever_active"):
            if set(state[key]) != set(self.masks):
                raise ValueError(f"state {key!r} has layers {sorted(state[key])}, engine has {sorted(self.masks)}")
        for n, m in state["masks"].items():
            if m.shape != self.masks[n].shape:
                raise ValueError(f"mask {n!r} has shape {tuple(m.shape)}, expected {tuple(self.masks[n].shape)}")
            self.masks[n] = m.to(device=self.masks[n].device, dtype=torch.bool).clone()
        for n, m in state["ever_active"].items():
            self.ever_active[n] = m.to(device=self.masks[n].device, dtype=torch.bool).clone()
        self.version += 1
        self.apply()
