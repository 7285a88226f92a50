"""Keep an optimizer consistent when a parameter is replaced by a smaller or larger one.

Growing or shrinking a layer replaces its ``nn.Parameter`` objects. The optimizer must then (1) point
at the new objects, in the same place of the same param group, and (2) carry each per-parameter state
tensor (SGD ``momentum_buffer``, Adam ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) over to the new
shape: old slots keep their values exactly, new slots start at zero. Scalar state (Adam's ``step``)
is kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["remap_along", "replace_parameter"]

Optimizers = torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None


def remap_along(tensor: torch.Tensor, axis: int, src: torch.Tensor) -> torch.Tensor:
    """A new tensor whose slice ``i`` along ``axis`` is ``tensor``'s slice ``src[i]``, or zero if -1."""
    shape = list(tensor.shape)
    shape[axis] = len(src)
    out = tensor.new_zeros(shape)
    src = src.to(tensor.device)
    old = src >= 0
    if bool(old.any()):
        where = torch.nonzero(old).flatten()
        out.index_copy_(axis, where, tensor.index_select(axis, src[old]))
    return out


def as_optimizer_list(optimizers: Optimizers) -> list[torch.optim.Optimizer]:
    """``None``, one optimizer or several, as a list (checked to hold optimizers)."""
    if optimizers is None:
        return []
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    result = list(optimizers)
    for opt in result:
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or a list of them, got {type(opt)}")
    return result


def replace_parameter(
    optimizers: Optimizers,
    old: torch.nn.Parameter,
    new: torch.nn.Parameter,
    axis: int,
    src: torch.Tensor,
) -> None:
    """Make ``optimizers`` use ``new`` where they used ``old``, remapping state along ``axis``.

    ``src[i]`` is the index in ``old`` of slot ``i`` of ``new`` along ``axis`` (-1 for a new slot).
    State tensors with the shape of ``old`` are remapped (new slots zero); other state is kept.
    """
    for opt in as_optimizer_list(optimizers):
        found = False
        for group in opt.param_groups:
            for i, p in enumerate(group["params"]):
                if p is old:
                    group["params"][i] = new
                    found = True
        if not found:
            continue
        state = opt.state.pop(old, None)
        if state:
            opt.state[new] = {
                key: remap_along(value, axis, src)
                if isinstance(value, torch.Tensor) and value.shape == old.shape
                else value
                for key, value in state.items()
            }
