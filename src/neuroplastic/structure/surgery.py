"""Resize one module along its output or input dimension, in place.

The one primitive behind :func:`~neuroplastic.structure.select_units` (shrink), :func:`grow` and
:func:`compact`: slot ``i`` of the resized dimension takes old slot ``src[i]``, or is a new slot
(``src[i] == -1``) filled as a fresh layer would be (incoming weights and biases), as an untouched
BatchNorm is (weight 1, bias 0, mean 0, var 1), or with zeros (outgoing weights: the new slots read
nothing yet). Every tensor is replaced by a new ``nn.Parameter`` (or buffer) and the module's shape
attributes (``out_channels``, ``in_features``, ``num_features``, ``groups`` ...) follow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from neuroplastic.structure.optim_surgery import Optimizers, remap_along, replace_parameter
from neuroplastic.structure.trace import CONVS, NORMS, UnitRef

__all__ = ["unit_positions", "resize_module", "resize_tensor", "dim_size", "default_init"]

Init = Callable[[torch.Tensor], None]


def unit_positions(ref: UnitRef, units: torch.Tensor) -> torch.Tensor:
    """Indices, along the member's dimension, of the entries holding ``units`` of its group."""
    units = torch.as_tensor(units, dtype=torch.long).flatten()
    steps = torch.arange(ref.repeat, dtype=torch.long)
    return (ref.offset + units[:, None] * ref.repeat + steps[None, :]).flatten()


def dim_size(module: nn.Module, dim: int) -> int:
    """Current size of the output (``dim=0``) or input (``dim=1``) dimension of ``module``."""
    if isinstance(module, nn.Linear):
        return module.out_features if dim == 0 else module.in_features
    if isinstance(module, CONVS):
        return module.out_channels if dim == 0 else module.in_channels
    if isinstance(module, NORMS):
        return module.num_features
    raise TypeError(f"cannot resize a module of type {type(module).__name__}")


def default_init(weight: torch.Tensor) -> None:
    """What ``nn.Linear`` / ``nn.Conv*`` ``reset_parameters`` does to a weight (Kaiming uniform)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


def _new_rows(name: str, module: nn.Module, n: int, like: torch.Tensor, init: Init | None) -> torch.Tensor:
    """Values for ``n`` new output slots of tensor ``name`` of ``module`` (incoming side)."""
    shape = (n, *like.shape[1:])
    if isinstance(module, NORMS):
        fill = 1.0 if name in ("weight", "running_var") else 0.0
        return torch.full(shape, fill, dtype=like.dtype, device=like.device)
    values = torch.empty(shape, dtype=like.dtype, device=like.device)
    fan_in = module.weight[0].numel()  # in_features, or in_channels / groups * kernel size
    if name == "weight":
        (init or default_init)(values)
    else:  # bias, as reset_parameters draws it
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(values, -bound, bound)
    return values


def _tensor_names(module: nn.Module, dim: int) -> list[tuple[str, int]]:
    """(tensor name, axis) of every tensor of ``module`` indexed by its ``dim`` dimension."""
    if dim == 1:
        if isinstance(module, CONVS) and module.groups != 1:
            raise TypeError("the input dimension of a grouped conv follows its output dimension")
        return [("weight", 1)]
    names = ["weight", "bias"]
    if isinstance(module, NORMS):
        names += ["running_mean", "running_var"]
    return [(n, 0) for n in names if getattr(module, n, None) is not None]


@torch.no_grad()
def resize_module(
    module: nn.Module,
    dim: int,
    src: torch.Tensor,
    optimizer: Optimizers = None,
    init: Init | None = None,
) -> None:
    """Resize ``module`` along ``dim`` (0: outputs, 1: inputs) so that slot ``i`` is old slot ``src[i]``.

    New slots (``src[i] == -1``): on the output side, weights drawn by ``init`` (default: the layer's
    own Kaiming-uniform init) and biases as ``reset_parameters`` draws them, BatchNorm at its defaults;
    on the input side, zeros. ``optimizer`` state follows (see :func:`replace_parameter`); gradients
    are remapped the same way.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (outputs) or 1 (inputs), got {dim}")
    src = torch.as_tensor(src, dtype=torch.long).flatten()
    n_new = int((src < 0).sum())
    for name, axis in _tensor_names(module, dim):
        old = getattr(module, name)
        fill = _new_rows(name, module, n_new, old, init) if n_new and dim == 0 else 0.0
        resize_tensor(module, name, src, axis=axis, optimizer=optimizer, fill=fill)
    _update_attributes(module, dim, len(src))


@torch.no_grad()
def resize_tensor(
    owner: nn.Module,
    name: str,
    src: torch.Tensor,
    axis: int = 0,
    optimizer: Optimizers = None,
    fill: float | torch.Tensor = 0.0,
) -> None:
    """Replace parameter (or buffer) ``owner.<name>`` by one whose slice ``i`` along ``axis`` is old
    slice ``src[i]``; new slices (``src[i] == -1``) take ``fill`` (a scalar, or a tensor holding the
    new slices in order). Gradient and ``optimizer`` state follow (new slots zero).

    This is the tool for per-unit tensors that live outside the group's layers, such as gate logits:
    ``resize_tensor(gate, "logits", torch.cat([torch.arange(size), torch.full((n,), -1)]), fill=c)``
    after ``grow(model, group, n)``, or ``src = kept indices`` after ``select_units``.
    """
    src = torch.as_tensor(src, dtype=torch.long).flatten()
    old = getattr(owner, name, None)
    if not (isinstance(old, nn.Parameter) or name in owner._buffers) or old is None:
        raise TypeError(f"{name!r} of {type(owner).__name__} is not a parameter or buffer")
    if not -old.dim() <= axis < old.dim():
        raise ValueError(f"axis must be in {-old.dim()}..{old.dim() - 1} for {name!r}, got {axis}")
    axis %= old.dim()
    if len(src) and int(src.max()) >= old.shape[axis]:
        raise ValueError(f"src refers to slot {int(src.max())} of {name!r}, which has {old.shape[axis]}")
    values = remap_along(old.detach(), axis, src)
    new_slots = torch.nonzero(src < 0).flatten().to(values.device)
    if len(new_slots):
        if isinstance(fill, torch.Tensor):
            values.index_copy_(axis, new_slots, fill.to(values))
        else:
            values.index_fill_(axis, new_slots, fill)
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(values, requires_grad=old.requires_grad)
        if old.grad is not None:
            new.grad = remap_along(old.grad, axis, src)
        replace_parameter(optimizer, old, new, axis, src)
        setattr(owner, name, new)
    else:
        owner._buffers[name] = values


def _update_attributes(module: nn.Module, dim: int, size: int) -> None:
    if isinstance(module, nn.Linear):
        setattr(module, "out_features" if dim == 0 else "in_features", size)
    elif isinstance(module, CONVS):
        if module.groups != 1:  # depthwise: one input channel per output channel
            module.in_channels = module.out_channels = module.groups = size
        else:
            setattr(module, "out_channels" if dim == 0 else "in_channels", size)
    elif isinstance(module, NORMS):
        module.num_features = size
