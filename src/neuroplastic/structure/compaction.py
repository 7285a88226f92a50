"""Remove units for real: shrink a live model in place, or compact a copy into a smaller dense model.

Removing unit ``u`` of a group slices every coupled tensor: the producers' weight rows and biases, the
BatchNorm vectors, depthwise convs (their ``groups`` too), and the consumers' input columns (``H*W``
consecutive columns after a flatten, at the group's offset after a concatenation).

Removal is exact when the removed units are zero where their consumers read them (a closed NPN gate
sits after the BatchNorm for that reason), or when the consumers' weights on them are zero (units just
added by :func:`~neuroplastic.structure.grow`). :func:`compact` checks this on the example input. A unit
that reads as a constant ``c != 0`` (for instance a BatchNorm'd channel whose conv was zeroed but
whose BatchNorm bias was not) can be folded into the consumer's bias (``fold_constants=True``); this is
exact for Linear consumers and for convs without zero padding, and refused for a conv with zero
padding (its borders would see 0 instead of ``c``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.structure.optim_surgery import Optimizers
from neuroplastic.structure.surgery import dim_size, resize_module, unit_positions
from neuroplastic.structure.trace import CONVS, NORMS, UnitGroup, UnitRef, trace_unit_groups

__all__ = ["select_units", "compact", "check_groups", "keep_from_layer_masks", "Keep", "ExampleInput"]

Keep = Mapping[str, torch.Tensor | Sequence[int]]
#: one batch of model input: a tensor, a tuple of positional inputs, or a mapping of keyword inputs
#: (``{"input_ids": ..., "attention_mask": ...}`` for a Hugging Face model; not for tracing)
ExampleInput = torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor]


def run_model(model: nn.Module, example_input: ExampleInput):
    """``model`` called on ``example_input``: unpacked as positional inputs (a tuple) or keywords (a mapping)."""
    if isinstance(example_input, Mapping):
        return model(**example_input)
    return model(*example_input) if isinstance(example_input, tuple) else model(example_input)


def _kind(module: nn.Module, dim: int) -> str | None:
    """The :class:`UnitRef` kind that ``module`` has along ``dim``, or None when it cannot be resized there."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, CONVS):
        if module.groups == 1:
            return "conv"
        return "depthwise" if dim == 0 and module.groups == module.in_channels == module.out_channels else None
    if isinstance(module, NORMS) and dim == 0:
        return "norm"
    return None


def check_groups(model: nn.Module, groups: list[UnitGroup]) -> None:
    """Raise :class:`~neuroplastic.errors.BadInput` unless every member of ``groups`` is a tensor of
    ``model`` that slicing can follow: the module exists, is resizable along the member's dimension with
    the member's ``kind``, and holds the group's ``size * repeat`` positions from ``offset`` on.

    Traced groups pass by construction; this is for groups declared by hand (or by
    :func:`~neuroplastic.structure.bert_unit_groups`) for a model ``torch.fx`` cannot trace.
    """
    if not isinstance(groups, list | tuple) or not all(isinstance(g, UnitGroup) for g in groups):
        raise BadInput(f"groups must be a list of UnitGroup, got {type(groups).__name__}")
    modules = dict(model.named_modules())
    for group in groups:
        if group.size < 1:
            raise BadInput(f"group {group.name!r} has size {group.size}; a group holds at least one unit")
        for ref in group.members:
            where = f"group {group.name!r}: member {ref.module!r} (dim={ref.dim}, kind={ref.kind!r})"
            module = modules.get(ref.module)
            if module is None:
                raise BadInput(f"{where} is not a module of {type(model).__name__}")
            kind = _kind(module, ref.dim) if ref.dim in (0, 1) else None
            if kind is None or kind != ref.kind:
                allowed = "a Linear, conv or BatchNorm along dim 0 (outputs) or a Linear or ungrouped conv along " \
                          "dim 1 (inputs)"
                raise BadInput(f"{where} is a {type(module).__name__}" + (f" of kind {kind!r}" if kind else "")
                               + f"; a member must be {allowed}, with the matching kind")
            end = ref.offset + group.size * ref.repeat
            if ref.offset < 0 or ref.repeat < 1 or end > dim_size(module, ref.dim):
                raise BadInput(f"{where} places {group.size} units x {ref.repeat} from offset {ref.offset} (up to "
                               f"{end}), but the module has {dim_size(module, ref.dim)} along dim {ref.dim}")


def _indices(group: UnitGroup, value: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Sorted unit indices to keep in ``group`` (a bool mask of length ``size`` is accepted too)."""
    idx = torch.as_tensor(value).detach().cpu().flatten()
    if idx.dtype == torch.bool:
        if len(idx) != group.size:
            raise ValueError(
                f"keep[{group.name!r}] is a mask of length {len(idx)}, the group has {group.size}"
            )
        idx = torch.nonzero(idx).flatten()
    if idx.numel() and (idx.is_floating_point() or idx.is_complex()):
        raise TypeError(
            f"keep[{group.name!r}] must hold integer unit indices or a bool mask, got {idx.dtype}"
        )
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= group.size):
        raise ValueError(f"keep[{group.name!r}] has indices outside 0..{group.size - 1}: {idx.tolist()}")
    if len(torch.unique(idx)) != len(idx):
        raise ValueError(f"keep[{group.name!r}] repeats unit indices: {idx.tolist()}")
    return torch.sort(idx).values


def _resolve(groups: list[UnitGroup], keep: Keep) -> dict[str, tuple[UnitGroup, torch.Tensor]]:
    """``keep``'s keys resolved to groups: a group's name or the name of any module producing its units."""
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must map group (or producing layer) names to unit indices, got {type(keep).__name__}")
    by_name = {g.name: g for g in groups}
    by_producer = {r.module: g for g in groups for r in g.producers}
    result: dict[str, tuple[UnitGroup, torch.Tensor]] = {}
    for key, value in keep.items():
        group = by_name.get(key) or by_producer.get(key)
        if group is None:
            raise ValueError(f"keep names {key!r}, which is neither a group nor a layer producing one; groups are "
                             f"{sorted(by_name)}")
        if group.name in result:
            raise ValueError(f"keep names group {group.name!r} twice (as {key!r} and by another of its layers)")
        if not group.prunable:
            raise ValueError(f"group {group.name!r} is not prunable: {group.reason}")
        result[group.name] = (group, _indices(group, value))
    return result


def _dropped(group: UnitGroup, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(group.size, dtype=torch.bool)
    mask[kept] = False
    return torch.nonzero(mask).flatten()


def _apply(model: nn.Module, plan: dict[str, tuple[UnitGroup, torch.Tensor]], optimizer: Optimizers) -> None:
    """Slice every member of every planned group; each (module, dim) is resized once."""
    drops: dict[tuple[str, int], list[torch.Tensor]] = {}
    for group, kept in plan.values():
        dropped = _dropped(group, kept)
        if len(dropped):
            for ref in group.members:
                drops.setdefault((ref.module, ref.dim), []).append(unit_positions(ref, dropped))
    modules = dict(model.named_modules())
    for (name, dim), positions in drops.items():
        module = modules[name]
        keep_mask = torch.ones(dim_size(module, dim), dtype=torch.bool)
        keep_mask[torch.cat(positions)] = False
        resize_module(module, dim, torch.nonzero(keep_mask).flatten(), optimizer)


def select_units(
    model: nn.Module,
    keep: Keep,
    example_input: ExampleInput | None = None,
    *,
    groups: list[UnitGroup] | None = None,
    optimizer: Optimizers = None,
) -> nn.Module:
    """Shrink ``model`` in place: each group named in ``keep`` keeps only the given unit indices.

    ``groups`` (from :func:`trace_unit_groups`) is traced from ``example_input`` when not given.
    Parameters are replaced by smaller ones and ``optimizer`` (one or a list) follows them, its state
    sliced the same way. Unlike :func:`compact`, nothing checks that the removed units were zero, and
    every group keeps at least one unit. The groups passed in are stale afterwards: trace again.
    """
    if groups is None:
        if example_input is None:
            raise ValueError("select_units needs example_input (to trace the groups) or groups")
        groups = trace_unit_groups(model, example_input)
    else:
        check_groups(model, groups)
    plan = _resolve(groups, keep)
    for name, (_, kept) in plan.items():
        if len(kept) == 0:
            raise ValueError(
                f"keep[{name!r}] is empty; a live group needs at least one unit (compact allows 0)"
            )
    _apply(model, plan, optimizer)
    return model


@torch.no_grad()
def _consumer_inputs(model: nn.Module, names: set[str], example_input) -> dict[str, torch.Tensor]:
    """The eval-mode input of each named module on ``example_input``."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[n].register_forward_pre_hook(lambda m, args, n=n: seen.__setitem__(n, args[0].detach()))
        for n in names
    ]
    was_training = model.training
    model.eval()
    try:
        run_model(model, example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen


def _zero_padding(conv: nn.Module) -> bool:
    if conv.padding_mode != "zeros" or conv.padding == "valid":
        return False  # no zero padding: every tap of a constant channel sees the constant
    return conv.padding == "same" or any(int(p) > 0 for p in conv.padding)


@torch.no_grad()
def _fold_or_check(
    consumer: nn.Module, ref: UnitRef, group: str, positions: torch.Tensor, x: torch.Tensor,
    fold_constants: bool, atol: float,
) -> None:  # fmt: skip
    """Check the removed inputs of ``consumer`` are harmless; fold constants into its bias if allowed.

    A removed input is harmless when it reads zero or when the consumer's weights on it are all zero
    (freshly grown units); one that reads as a constant can be folded (see the module docstring).
    """
    positions = positions.to(consumer.weight.device)
    if isinstance(consumer, nn.Linear):  # features last, any leading dimensions (tokens of a sequence)
        x = x.reshape(-1, x.shape[-1])
    dead = consumer.weight.index_select(1, positions).transpose(0, 1).flatten(1).eq(0).all(dim=1)
    vals = x.index_select(1, positions.to(x.device)).transpose(0, 1).reshape(len(positions), -1)
    live = torch.nonzero((vals.abs().amax(dim=1) > atol) & ~dead.to(vals.device)).flatten()
    if len(live) == 0:
        return
    positions, vals = positions[live.to(positions.device)], vals[live]
    lo, hi = vals.amin(dim=1), vals.amax(dim=1)
    where = f"group {group!r}: removed units read by {ref.module!r}"
    if not fold_constants:
        raise ValueError(
            f"{where} are not zero (max |x| = {float(vals.abs().max()):.3g} > atol={atol}); close them "
            "after the BatchNorm, or pass fold_constants=True if they are constant"
        )
    if float((hi - lo).max()) > atol:
        raise ValueError(f"{where} are neither zero nor constant (spread {float((hi - lo).max()):.3g})")
    if isinstance(consumer, CONVS) and _zero_padding(consumer):
        raise ValueError(f"{where} are constant but {ref.module!r} zero-pads: folding would not be exact")
    weight = consumer.weight.index_select(1, positions)
    weight = weight.flatten(2).sum(dim=2) if weight.dim() > 2 else weight  # a constant sees every tap
    shift = weight @ ((hi + lo) / 2).to(weight)
    if consumer.bias is None:
        consumer.bias = nn.Parameter(torch.zeros_like(shift))
    consumer.bias.add_(shift)


def compact(
    model: nn.Module,
    keep: Keep,
    example_input: ExampleInput | None = None,
    *,
    groups: list[UnitGroup] | None = None,
    fold_constants: bool = False,
    atol: float = 1e-6,
) -> nn.Module:
    """A new, smaller dense copy of ``model`` keeping, in each group named in ``keep``, those units.

    Parameters
    ----------
    model : left untouched; its eval-mode behaviour on ``example_input`` is used to check that every
        removed unit reads as zero (within ``atol``) at each of its consumers, or has zero weights
        there, so a gated model (gates as forward hooks or modules after the BatchNorm) is checked
        with its gates closed.
    keep : group name (or the name of a layer producing the group's units) -> unit indices (or a bool
        mask over the group) to keep; groups not named stay whole. A group may keep no unit: one unit
        then stays with its outgoing weights zeroed, so the model remains valid (layers of width 0 are
        not supported by every runtime).
    example_input : a batch used to trace the groups and to check the removed units. It may be left
        out when ``groups`` are given: then, as in :func:`select_units`, nothing checks that the removed
        units were zero (and ``fold_constants`` is not available). With ``groups`` given it may also be a
        mapping of keyword inputs (``model(**example_input)``), as a Hugging Face model takes.
    groups : the groups of ``model`` if already traced, or declared by hand for a model ``torch.fx``
        cannot trace (checked by :func:`check_groups`; e.g. :func:`~neuroplastic.structure.bert_unit_groups`).
    fold_constants : fold removed units that read as a constant into the consumer's bias (see the
        module docstring for when this is exact); otherwise such units raise ``ValueError``.
    atol : what counts as zero (and as constant).

    Returns
    -------
    A deep copy of ``model`` (forward hooks included, so remove gate hooks from it if they should not
    stay) with sliced parameters and updated shape attributes.
    """
    if groups is None:
        if example_input is None:
            raise ValueError("compact needs example_input (to trace the groups and check the removed units) "
                             "or groups")
        groups = trace_unit_groups(model, example_input)
    else:
        check_groups(model, groups)
    if example_input is None and fold_constants:
        raise ValueError("fold_constants needs example_input (the constants are read from it)")
    plan = _resolve(groups, keep)
    # a group keeping nothing keeps unit 0 as a placeholder, removed in spirit (outgoing weights zeroed)
    removed = {name: _dropped(group, kept) for name, (group, kept) in plan.items()}
    plan = {
        name: (g, kept if len(kept) else torch.zeros(1, dtype=torch.long)) for name, (g, kept) in plan.items()
    }
    readers = {r.module for name, pos in removed.items() if len(pos) for r in plan[name][0].consumers}
    inputs = _consumer_inputs(model, readers, example_input) if example_input is not None else None
    small = copy.deepcopy(model)
    modules = dict(small.named_modules())
    for name, units in removed.items():
        if not len(units):
            continue
        for ref in plan[name][0].consumers:
            positions = unit_positions(ref, units)
            consumer = modules[ref.module]
            if inputs is not None:
                _fold_or_check(consumer, ref, name, positions, inputs[ref.module], fold_constants, atol)
            with torch.no_grad():
                consumer.weight.index_fill_(1, positions.to(consumer.weight.device), 0.0)
    _apply(small, plan, optimizer=None)
    return small


def _open_units(group: UnitGroup, refs: list[UnitRef], masks: Mapping[str, torch.Tensor], arg: str,
                side: str) -> torch.Tensor | None:
    """Units of ``group`` open in any of ``refs`` (each ref's layer mask read at the ref's positions), or
    None when there is no ref or one of them has no mask."""
    if not refs or any(r.module not in masks for r in refs):
        return None
    result = torch.zeros(group.size, dtype=torch.bool)
    for ref in refs:
        m = torch.as_tensor(masks[ref.module]).detach().cpu().flatten()
        end = ref.offset + group.size * ref.repeat
        if m.dtype != torch.bool or len(m) < end:
            raise ValueError(f"{arg}[{ref.module!r}] must be a bool mask of length {end} or more (the layer's "
                             f"{side}; group {group.name!r} sits at positions {ref.offset}..{end - 1}), got "
                             f"{m.dtype} of {len(m)}")
        result |= m[unit_positions(ref, torch.arange(group.size))].view(group.size, ref.repeat).any(dim=1)
    return result


def keep_from_layer_masks(
    groups: list[UnitGroup],
    open_units: Mapping[str, torch.Tensor],
    open_inputs: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``keep`` for :func:`compact` from per-layer gates: ``{layer name: bool mask of open output units}``,
    and optionally ``open_inputs``: ``{layer name: bool mask of open input features}`` (in-gates).

    With one gate per layer (the paper's placement) rather than one per group, a unit of a group is
    zero everywhere only when every layer that writes it (the group's conv / Linear producers: the
    stem and each residual branch of a stream) has it closed; so a unit is kept when any of them has it
    open. A group with a writing layer that has no mask is left whole on that side. With ``open_inputs``,
    a unit is kept only when some consumer also reads it (a unit whose every consumer has the input
    closed by an in-gate has zero outgoing weights), when all the group's consumers have masks. A unit
    of ``repeat`` positions (an attention head's block) is open in a layer when any of them is. Groups
    with neither side known are left out.

    The compact model carries no gates, so a kept unit that is closed in one of its writers must have
    that gate baked in before compacting (zero the writer's BatchNorm weight and bias for it, or its
    weight row and bias when no BatchNorm follows).
    """
    keep: dict[str, torch.Tensor] = {}
    for group in groups:
        if not group.prunable:
            continue
        writers = [r for r in group.producers if r.kind in ("conv", "linear")]
        written = _open_units(group, writers, open_units, "open_units", "outputs")
        read = _open_units(group, group.consumers, open_inputs or {}, "open_inputs", "inputs")
        if written is None and read is None:
            continue
        keep[group.name] = read if written is None else written if read is None else written & read
    return keep
