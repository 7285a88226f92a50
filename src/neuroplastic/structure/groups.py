"""Unit groups: the result of :func:`~neuroplastic.structure.trace_unit_groups`.

A *unit group* is a set of units (channels, features) that must be removed or added together because
the graph couples them. Each member of a group is a :class:`UnitRef`: where the group's units sit in
one module's output or input dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UnitRef", "UnitGroup", "group_of", "groups_of"]


@dataclass(frozen=True)
class UnitRef:
    """Where a group's units sit in one module's tensors.

    Unit ``u`` of the group occupies indices ``offset + u * repeat + j`` (``0 <= j < repeat``) along
    the module's output dimension (``dim=0``: weight rows, bias, BatchNorm vectors) or input dimension
    (``dim=1``: weight columns).

    ``kind`` is ``"linear"``, ``"conv"``, ``"depthwise"`` (a conv with ``groups == channels``: its
    output channels are its input channels), ``"norm"`` (BatchNorm) for ``dim=0``, and ``"linear"`` or
    ``"conv"`` for ``dim=1``.
    """

    module: str
    dim: int
    kind: str
    offset: int = 0
    repeat: int = 1


@dataclass
class UnitGroup:
    """Units that must be removed or added together.

    Attributes
    ----------
    name : the group's own name: the first module producing the units in trace order (for the network
        input, the name of the forward's input argument, e.g. ``"x"``). ``keep`` in
        :func:`~neuroplastic.structure.compact` and :func:`~neuroplastic.structure.select_units` takes it,
        or the name of any layer producing the units (a residual stream by any conv writing it).
    size : number of units.
    producers : members whose *output* dimension holds the units (convs, Linears, depthwise convs and
        the BatchNorms normalising them).
    consumers : members whose *input* dimension reads the units.
    prunable : whether the units may be removed or added; False for the network input, for groups
        reaching the model output, and for groups touching an operation the trace does not understand.
    reason : why the group is not prunable (empty when it is).
    """

    name: str
    size: int
    producers: list[UnitRef] = field(default_factory=list)
    consumers: list[UnitRef] = field(default_factory=list)
    prunable: bool = True
    reason: str = ""

    @property
    def members(self) -> list[UnitRef]:
        """Producers then consumers."""
        return self.producers + self.consumers

    def gate_sites(self) -> list[UnitRef]:
        """Where a per-unit gate goes so that closed units read exactly zero at every consumer.

        The group's BatchNorms if it has any (a gate after the BatchNorm, since its bias would
        otherwise leak into the consumers), else its producing layers. Multiply the output slice
        ``[offset, offset + size * repeat)`` of each site by the same gate vector (repeated
        ``repeat`` times). Exact when what follows the sites is channel-wise with ``f(0) = 0``
        (ReLU, pooling, residual additions); otherwise :func:`compact` reports the leak.
        """
        norms = [r for r in self.producers if r.kind == "norm"]
        return norms or list(self.producers)

    def modules(self) -> list[str]:
        """Names of every module holding tensors of this group, without repeats."""
        return list(dict.fromkeys(r.module for r in self.members))


def groups_of(groups: list[UnitGroup], module_name: str) -> list[UnitGroup]:
    """Every group holding tensors of ``module_name`` (as producer or consumer)."""
    return [g for g in groups if module_name in g.modules()]


def group_of(groups: list[UnitGroup], module_name: str) -> UnitGroup:
    """The group whose units are the outputs of ``module_name`` (a conv, Linear or BatchNorm).

    Raises ``ValueError`` when the module produces no group or the pieces of several (a BatchNorm
    after a concatenation); use :func:`groups_of` then.
    """
    found = [g for g in groups if any(r.module == module_name for r in g.producers)]
    if len(found) != 1:
        names = [g.name for g in found]
        raise ValueError(
            f"module_name={module_name!r} produces the units of {len(found)} groups {names}; "
            "group_of needs exactly one (see groups_of)"
        )
    return found[0]
