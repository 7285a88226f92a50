"""Add units to a live model without changing what it computes.

``grow(model, group, n)`` appends ``n`` units at the end of ``group`` in every tensor coupled to it:
new incoming weights are drawn as the layer's own ``reset_parameters`` would draw them, new BatchNorm
channels start at their defaults (weight 1, bias 0, mean 0, var 1), and new outgoing weights (the
consumers' input columns) are zero, so the model's output is unchanged right after growing while the
new units receive gradients through their outgoing weights. The optimizer's state grows with zeros.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroplastic.structure.optim_surgery import Optimizers
from neuroplastic.structure.surgery import Init, dim_size, resize_module
from neuroplastic.structure.trace import UnitGroup, trace_unit_groups

__all__ = ["grow", "insertion_src"]


def insertion_src(size: int, inserts: list[tuple[int, int]]) -> torch.Tensor:
    """The ``src`` map of a dimension of ``size`` slots with ``count`` new slots put before each
    ``position`` (``inserts`` holds ``(position, count)`` pairs); see :func:`resize_module`."""
    pieces, previous = [], 0
    for position, count in sorted(inserts):
        if not 0 <= position <= size:
            raise ValueError(f"insertion position {position} outside 0..{size}")
        pieces += [torch.arange(previous, position), torch.full((count,), -1, dtype=torch.long)]
        previous = position
    pieces.append(torch.arange(previous, size))
    return torch.cat(pieces)


def grow(
    model: nn.Module,
    group: UnitGroup | str,
    n: int,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    *,
    optimizer: Optimizers = None,
    init: Init | None = None,
) -> nn.Module:
    """Add ``n`` units to ``group`` of ``model`` in place; the model computes the same function.

    Parameters
    ----------
    model : the live model; its Parameters of the group's members are replaced by larger ones.
    group : a :class:`UnitGroup` traced from ``model`` as it is now, or its name (then
        ``example_input`` is needed to trace it).
    n : number of units to add (>= 1).
    optimizer : one optimizer or a list; their param groups are pointed at the new Parameters (same
        places) and their state is extended with zeros for the new slots (step counts kept).
    init : called on the new incoming weight rows (shape ``(n, ...)``) of every conv / Linear
        producer; default: Kaiming uniform as in ``reset_parameters``. Biases are drawn as there.

    Returns
    -------
    ``model``. Traced groups are stale afterwards (sizes and offsets changed): trace again.
    """
    if isinstance(group, str):
        if example_input is None:
            raise ValueError(f"grow needs example_input to trace group {group!r} (or pass a UnitGroup)")
        by_name = {g.name: g for g in trace_unit_groups(model, example_input)}
        if group not in by_name:
            raise ValueError(f"group {group!r} is unknown; groups are {sorted(by_name)}")
        group = by_name[group]
    if not isinstance(group, UnitGroup):
        raise TypeError(f"group must be a UnitGroup or a group name, got {type(group).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not group.prunable:
        raise ValueError(f"group {group.name!r} cannot grow: {group.reason}")
    inserts: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for ref in group.members:  # new units go right after the group's last unit in every member
        inserts.setdefault((ref.module, ref.dim), []).append(
            (ref.offset + group.size * ref.repeat, n * ref.repeat)
        )
    modules = dict(model.named_modules())
    for (name, dim), where in inserts.items():
        module = modules[name]
        resize_module(module, dim, insertion_src(dim_size(module, dim), where), optimizer, init)
    return model
