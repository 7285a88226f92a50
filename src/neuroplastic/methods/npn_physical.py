"""Physically-sized NPN: the network holds only the units it uses, growing and shrinking for real.

:class:`NPN` simulates capacity changes inside a full-size network: closed and hibernating units are
multiplied by a zero gate but still cost compute and memory. :class:`PhysicalNPN` changes the model's
shapes instead, so the cost of a training step follows the live width:

* **expand**: the model holds its allocated units plus ``reserve`` hibernating ones and grows
  (:func:`~neuroplastic.structure.grow`) whenever expansion uses the reserve up;
* **shrink** (both modes): when the hardening stage begins (gates frozen at ``1[phi > 0]``), every
  closed unit leaves the model (:func:`~neuroplastic.structure.select_units`): the third stage trains
  the small network, and computes exactly what the simulated one does. Optionally (``remove_after``),
  units whose gate probability stayed below ``remove_below`` for that many plastic epochs leave during
  the plastic stage too (an extension: such a unit can no longer reopen).

The optimizers follow every change (their parameters are swapped; Adam moments and momentum keep the
slots that stay, and start at zero in new ones)::

    npn = PhysicalNPN(model, mode="sparse", k=7, lam=..., stages=(5, 65), example_input=x[:2])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    npn.bind_optimizers([optimizer])     # before the first epoch that may resize the model

A physically-sized group is a traced unit group (:mod:`neuroplastic.structure`) with a single
conv/Linear producer whose units are the units of one or more gate sites: the producer's out-gate
(``repeat`` 1), or a consumer's in-gate reading the group (``repeat`` 1, or ``H*W`` after a flatten:
LeNet5's fc1 in-gate reads conv2's channels as 16 features each). Sites that do not map onto such a
group (the network's input features, a residual stream) keep their full width and are simulated, as
in :class:`NPN`; ``physical_sites`` says which is which and why.

With ``gates="groups"`` every traced unit group is one site, residual streams included: a stream
shrinks (and grows) in every layer that writes or reads it.

New units start as hibernating units of the simulated model would: gate logit ``-40/k``, incoming
weights and biases and outgoing weights drawn as the *full-size* layers' default ``reset_parameters``
draws them (uniform in ``+-1/sqrt(full fan-in)``), BatchNorm at its defaults. Their gates are closed,
so the model's function is unchanged by a growth.

Every gate module of a physical site carries two buffers, so that checkpoints describe the current
shape: ``origin`` (the full-size index of each unit it holds, for snapshots at full width) and
``closed_epochs`` (consecutive plastic epochs below ``remove_below``). A state dict of another width
resizes the model before it is loaded (:meth:`PhysicalNPN._before_model_load`), so resuming a run that
shrank or grew is exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neuroplastic.gates.sites import weighted_layers
from neuroplastic.methods.npn import HIBERNATING_LOGIT, NPN
from neuroplastic.metrics import count_weights
from neuroplastic.structure import grow, select_units, trace_unit_groups
from neuroplastic.structure.growth import insertion_src
from neuroplastic.structure.optim_surgery import Optimizers, as_optimizer_list
from neuroplastic.structure.surgery import resize_tensor, unit_positions
from neuroplastic.structure.trace import UnitGroup


@dataclass
class PhysicalGroup:
    """A traced unit group sized to its gate sites' allocation.

    ``sites`` holds ``(site index, repeat)``: site unit ``u`` is group unit ``u // repeat``.
    """

    name: str
    full: int
    size: int
    sites: list[tuple[int, int]] = field(default_factory=list)


class PhysicalNPN(NPN):
    """:class:`NPN` on a network that physically holds only the units it uses.

    Takes every option of :class:`NPN` (``options`` go to it unchanged); ``mode`` and ``k`` default to
    expansion at ``k = 1``, the paper's setting for growing. Its own parameters:

    Parameters
    ----------
    mode : ``"expand"`` (start from ``init_active`` units plus the reserve, grow for real) or
        ``"sparse"`` (start full size, shrink for real).
    reserve : expand mode: hibernating units kept per physically-sized group beyond the allocated ones
        (>= 1); when expansion uses them up the group grows by ``reserve`` units (never beyond its full
        width).
    remove_closed : when the hardening stage begins, remove every closed unit (default True; exact:
        frozen gates multiply them by 0).
    remove_after : plastic-stage removal (an extension, off by default): a unit whose gate probability
        stayed below ``remove_below`` at the end of this many consecutive plastic epochs is removed.
    remove_below : the gate probability under which a plastic unit counts as closed for ``remove_after``.
    example_input : one batch of model input (any values; two examples are enough), to trace the groups.
    optimizers : the optimizer(s) holding the model's parameters, if they exist already; else call
        :meth:`bind_optimizers` once they do (a resize without bound optimizers raises).
    """

    name = "npn_physical"
    resizes_model = True

    def __init__(
        self,
        model: nn.Module,
        mode: str = "expand",
        k: float = 1.0,
        lam: float | Sequence[float] | dict[str, float] = 0.0,
        *,
        reserve: int = 2,
        remove_closed: bool = True,
        remove_after: int | None = None,
        remove_below: float = 1e-3,
        example_input: torch.Tensor | None = None,
        optimizers: Optimizers = None,
        **options: Any,
    ) -> None:
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 1:
            raise ValueError(f"reserve must be an int >= 1, got {reserve!r}")
        if not isinstance(remove_closed, bool):
            raise ValueError(f"remove_closed must be True or False, got {remove_closed!r}")
        if remove_after is not None and (isinstance(remove_after, bool) or not isinstance(remove_after, int)
                                         or remove_after < 1):
            raise ValueError(f"remove_after must be None or an int >= 1 (plastic epochs), got {remove_after!r}")
        if isinstance(remove_below, bool) or not isinstance(remove_below, (int, float)) or not 0 < remove_below < 0.5:
            raise ValueError(f"remove_below must be a gate probability in (0, 0.5), got {remove_below!r}")
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(f"example_input must be a tensor (one batch of model input), got {type(example_input)}")
        self.reserve = reserve
        self.remove_closed = remove_closed
        self.remove_after = remove_after
        self.remove_below = float(remove_below)
        self._restoring = False
        self._pending: list[dict[str, Any]] = []  # removals made by set_epoch, reported by the next end_epoch
        self._ready = False  # NPN.__init__ calls set_epoch before the groups exist
        # None: not bound yet (a resize raises); [] after bind_optimizers([]): the model has none
        self.optimizers: list[torch.optim.Optimizer] | None = (
            None if optimizers is None else as_optimizer_list(optimizers))
        full_layers = weighted_layers(model)
        # the full-size fan-ins: new units are drawn as the full-size layers would draw them
        self._full_fan_in = {name: m.weight[0].numel() for name, m in full_layers.items()}
        self._params_full = count_weights(model)
        super().__init__(model, mode, k, lam, example_input=example_input, **options)
        self._example = example_input[:2].detach()
        self._groups = self._trace()
        self.groups, self.physical_sites = self._plan()
        for pg in self.groups:
            for i, _ in pg.sites:
                gates = self.sites[i].gates
                gates.register_buffer("origin", torch.arange(gates.phi.numel(), device=gates.phi.device))
                gates.register_buffer("closed_epochs", torch.zeros_like(gates.origin))
        if mode == "expand":
            self._resize_to({g.name: min(g.full, max(self._needed(g) + reserve, self._needed(g, ahead=True)))
                             for g in self.groups})
        self._load_hook = model.register_load_state_dict_pre_hook(self._before_model_load)
        self._ready = True

    def bind_optimizers(self, optimizers: Optimizers, schedules: Sequence[Any] = ()) -> None:
        """The optimizer(s) whose parameters and state follow every resize of the model (``[]`` when
        the model is not being trained, e.g. to load a checkpoint for evaluation)."""
        self.optimizers = as_optimizer_list(optimizers)

    # -- which sites are physically sized -------------------------------------------------------
    def _trace(self) -> list[UnitGroup]:
        was_training = self.model.training
        try:
            return trace_unit_groups(self.model, self._example)
        finally:
            self.model.train(was_training)

    def _plan(self) -> tuple[list[PhysicalGroup], dict[str, str]]:
        """Map every gate site to a resizable group, or record why it stays full width (simulated)."""
        groups: dict[str, PhysicalGroup] = {}
        status: dict[str, str] = {}
        for i, site in enumerate(self.sites):
            found = self._site_group(site)
            if isinstance(found, str):
                status[site.name] = f"simulated: {found}"
                if "network input" not in found:
                    warnings.warn(f"PhysicalNPN: gate site {site.name} keeps its full width ({found})",
                                  stacklevel=3)
                continue
            group, repeat = found
            pg = groups.setdefault(group.name, PhysicalGroup(group.name, group.size, group.size))
            pg.sites.append((i, repeat))
            status[site.name] = f"physical: group {group.name!r}"
        for pg in groups.values():  # new units must be closed for every reader of the group
            group = self._group(pg.name)
            gated_in = {self.sites[i].layer for i, _ in pg.sites if self.sites[i].side == "in"}
            has_out = any(self.sites[i].side in ("out", "group") for i, _ in pg.sites)
            if not has_out and not {r.module for r in group.consumers} <= gated_in:
                for i, _ in pg.sites:
                    status[self.sites[i].name] = f"simulated: group {pg.name!r} has ungated readers"
                pg.sites = []
        return [g for g in groups.values() if g.sites], status

    def _site_group(self, site) -> tuple[UnitGroup, int] | str:
        """The group holding ``site``'s units and the site units per group unit, or why there is none."""
        if site.hooks[0].repeat != 1 and site.side != "group":
            return f"{site.name} gates blocks of {site.hooks[0].repeat} features, not units"
        if site.side == "group":  # one gate for the whole traced group, residual streams included
            candidates = [g for g in self._groups if g.name == site.layer]
            repeat = 1
        elif site.side == "out":
            candidates = [g for g in self._groups if any(r.module == site.layer for r in g.producers)]
            repeat = 1
        else:
            reads = [(g, r) for g in self._groups for r in g.consumers if r.module == site.layer]
            if len(reads) != 1 or reads[0][1].offset != 0:
                return f"{site.layer} reads {len(reads)} groups (or at an offset)"
            candidates, repeat = [reads[0][0]], reads[0][1].repeat
        if len(candidates) != 1:
            return f"{site.layer}'s units belong to {len(candidates)} groups"
        group = candidates[0]
        if not group.prunable:
            kind = "the network input" if not group.producers else "not resizable"
            return f"group {group.name!r} is {kind} ({group.reason})"
        writers = [r for r in group.producers if r.kind in ("conv", "linear")]
        if len(writers) != 1 and site.side != "group":
            return f"group {group.name!r} has {len(writers)} writing layers (a residual stream)"
        norms = [r.module for r in group.producers if r.kind == "norm"]
        if site.side == "out" and norms and site.hook_module not in norms:
            return f"the gate of {site.layer} sits before BatchNorm {norms[0]!r}"
        if group.size * repeat != site.n:
            return f"group {group.name!r} has {group.size}x{repeat} units, the site {site.n}"
        return group, repeat

    def _group(self, name: str) -> UnitGroup:
        return next(g for g in self._groups if g.name == name)

    # -- sizes ----------------------------------------------------------------------------------
    def _needed(self, pg: PhysicalGroup, ahead: bool = False) -> int:
        """Group units holding the allocated site units (with ``ahead``, plus the units the next
        expansion event opens at each site), capped at the full width."""
        sizes = [min(self.sites[i].n, self.allocated[i] + (self.expand_count(i) if ahead else 0)) for i, _ in pg.sites]
        return min(pg.full, max(math.ceil(size / r) for size, (_, r) in zip(sizes, pg.sites, strict=True)))

    def _refill(self) -> list[dict[str, Any]]:
        """Grow every group that could not take the next expansion step; returns the grow events."""
        events = []
        for pg in self.groups:
            deficit = self._needed(pg, ahead=True) - pg.size
            if deficit > 0:
                new = min(pg.full, pg.size + max(self.reserve, deficit))
                events.append({"epoch": self.epoch, "event": "grow", "group": pg.name,
                               "units": list(range(pg.size, new)), "width": new})
                self._resize_to({pg.name: new})
        return events

    def _resize_to(self, sizes: dict[str, int]) -> None:
        """Shrink (keep the first units) or grow each named group to its new size, gates included."""
        shrink = {n: range(s) for n, s in sizes.items() if s < self._by_name(n).size}
        if shrink:
            select_units(self.model, shrink, groups=self._groups, optimizer=self.optimizers)
            for name, s in shrink.items():
                self._resize_gates(self._by_name(name), torch.arange(len(s)))
            self._groups = self._trace()
        for name, size in sizes.items():
            pg = self._by_name(name)
            if size > pg.size:
                if self.optimizers is None:
                    raise RuntimeError("PhysicalNPN must know the optimizers to grow the model: pass "
                                       "optimizers=... or call bind_optimizers(...) after creating them")
                n, old = size - pg.size, pg.size
                grow(self.model, self._group(name), n, optimizer=self.optimizers)
                self._resize_gates(pg, insertion_src(old, [(old, n)]))
                self._groups = self._trace()
                self._init_new_units(self._group(name), old, size)

    def _by_name(self, name: str) -> PhysicalGroup:
        return next(g for g in self.groups if g.name == name)

    def _resize_gates(self, pg: PhysicalGroup, src: torch.Tensor) -> None:
        """Resize every site's gate logits (new ones hibernating) and buffers to the group's new units."""
        for i, r in pg.sites:
            site_src = (src[:, None] * r + torch.arange(r)).flatten()
            site_src[site_src < 0] = -1
            gates = self.sites[i].gates
            resize_tensor(gates, "phi", site_src, optimizer=self.optimizers, fill=HIBERNATING_LOGIT / self.schedule.k)
            n_new = int((site_src < 0).sum())
            start = int(gates.origin.max()) + 1 if gates.origin.numel() else 0
            resize_tensor(gates, "origin", site_src, fill=torch.arange(start, start + n_new))
            resize_tensor(gates, "closed_epochs", site_src, fill=0)
        pg.size = len(src)

    # -- shrinking ------------------------------------------------------------------------------
    def _remove(self, removable: dict[int, torch.Tensor], why: str) -> list[dict[str, Any]]:
        """Remove, for real, every group unit that some site says may leave.

        ``removable[i]`` is a bool per unit of site ``i`` (its physical width). A group unit leaves when,
        for one of its sites, all the site units it holds may leave (a closed out-gate, or all the
        flattened features an in-gate reads from a channel). A group keeps at least one unit.
        """
        keep: dict[str, torch.Tensor] = {}
        for pg in self.groups:
            stay = torch.ones(pg.size, dtype=torch.bool)
            for i, r in pg.sites:
                if i in removable:
                    stay &= ~removable[i].detach().cpu().view(-1, r).all(1)
            if bool(stay.all()):
                continue
            if not bool(stay.any()):
                stay[0] = True  # select_units keeps one unit per group; its gate stays closed
            keep[pg.name] = torch.nonzero(stay).flatten()
        if not keep:
            return []
        if self.optimizers is None:
            raise RuntimeError("PhysicalNPN must know the optimizers to remove units: pass optimizers=... or "
                               "call bind_optimizers(...) after creating them")
        select_units(self.model, keep, groups=self._groups, optimizer=self.optimizers)
        events = []
        for name, idx in keep.items():
            pg = self._by_name(name)
            gone = sorted(set(range(pg.size)) - set(idx.tolist()))
            for i, r in pg.sites:  # allocated units are a prefix; kept ones stay a prefix
                site_kept = (idx[:, None] * r + torch.arange(r)).flatten()
                self.allocated[i] = int((site_kept < self.allocated[i]).sum())
            self._resize_gates(pg, idx)
            events.append({"epoch": self.epoch, "event": "remove", "why": why, "group": name, "units": gone,
                           "width": len(idx)})
        self._groups = self._trace()
        return events

    def remove_closed_units(self) -> list[dict[str, Any]]:
        """Remove every unit whose gate is closed now (``phi <= 0`` and a zero evaluation gate): exact
        while gates are frozen. Called when the hardening stage begins; returns the remove events."""
        removable = {}
        for pg in self.groups:
            for i, _ in pg.sites:
                site = self.sites[i]
                removable[i] = (site.gates.phi.detach() <= 0) & (self.eval_gates(site) == 0)
        events = self._remove(removable, "closed at hardening")
        self.events.extend(events)
        return events

    def _remove_long_closed(self) -> list[dict[str, Any]]:
        """Plastic stage: count the epochs each allocated unit spent below ``remove_below``; remove
        those that reached ``remove_after``."""
        removable = {}
        with torch.no_grad():
            for pg in self.groups:
                for i, _ in pg.sites:
                    gates = self.sites[i].gates
                    low = self.keep_prob(self.sites[i]) < self.remove_below
                    low[self.allocated[i]:] = False  # the expansion reserve is not a closed unit
                    gates.closed_epochs.copy_((gates.closed_epochs + 1) * low)
                    removable[i] = gates.closed_epochs >= self.remove_after
        events = self._remove(removable, f"below {self.remove_below:g} for {self.remove_after} plastic epochs")
        self.events.extend(events)
        return events

    def set_epoch(self, epoch: int) -> None:
        """:meth:`NPN.set_epoch`; entering (or resuming in) the hardening stage removes closed units."""
        super().set_epoch(epoch)
        if (self._ready and not self._restoring and self.remove_closed and self.schedule.stages is not None
                and self.stage == 3):
            self._pending.extend(self.remove_closed_units())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the method state; the model's widths follow when its state dict is loaded."""
        self._restoring = True
        try:
            super().load_state_dict(state)
        finally:
            self._restoring = False

    @torch.no_grad()
    def _init_new_units(self, group: UnitGroup, start: int, stop: int) -> None:
        """Draw units ``start..stop`` as the full-size layers' ``reset_parameters`` would have."""
        modules = dict(self.model.named_modules())
        units = torch.arange(start, stop)
        for ref in group.members:
            if ref.kind not in ("conv", "linear"):
                continue  # BatchNorms: grow set their defaults already
            module = modules[ref.module]
            bound = 1.0 / math.sqrt(self._full_fan_in[ref.module])
            where = unit_positions(ref, units).to(module.weight.device)
            weight = module.weight.index_select(ref.dim, where)
            module.weight.index_copy_(ref.dim, where, weight.uniform_(-bound, bound))
            if ref.dim == 0 and module.bias is not None:
                module.bias.index_copy_(0, where, module.bias[where].uniform_(-bound, bound))

    # -- expansion ------------------------------------------------------------------------------
    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """:meth:`NPN.end_epoch`, then grow every group whose reserve the expansion used up, and (with
        ``remove_after``, in the plastic stage) remove units that stayed closed long enough."""
        events = super().end_epoch(val_loss)
        if not self._checking:  # the hardening removals of this epoch's set_epoch, for the loop's event log
            events, self._pending = self._pending + events, []
        if any(e["event"] == "expand" for e in events):
            grown = self._refill()
            self.events.extend(grown)
            events = events + grown
        if self.remove_after is not None and self.stage == 2 and not self._checking:  # once per epoch
            events = events + self._remove_long_closed()
        return events

    # -- reporting and persistence --------------------------------------------------------------
    def physical_widths(self) -> list[int]:
        """Units each gate site holds physically (its full width where it is simulated)."""
        return [int(s.gates.phi.numel()) for s in self.sites]

    def architecture(self) -> dict[str, Any]:
        """:meth:`NPN.architecture` (``params_dense`` is the full-size network's) plus the physical
        widths per site (``physical_arch``) and the weights the model holds now (``params_physical``)."""
        arch = super().architecture()
        arch["params_physical"] = arch["params_dense"]
        arch["params_dense"] = self._params_full
        arch["physical_arch"] = self.physical_widths()
        return arch

    def snapshot(self) -> dict[str, Any]:
        """Gate probabilities at full width (a removed or never-grown unit reads 0), so that snapshots
        of one run line up whatever the model's size was."""
        snap = super().snapshot()
        with torch.no_grad():
            for pg in self.groups:
                for i, _ in pg.sites:
                    site = self.sites[i]
                    full = torch.zeros(site.n, dtype=torch.float16)
                    full[site.gates.origin.cpu()] = self.keep_prob(site).cpu().to(torch.float16)
                    snap[f"pi/{site.name}"] = full.numpy()
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "physical": {g.name: g.size for g in self.groups}}

    def _before_model_load(self, module, state_dict, prefix, *args) -> None:
        """Resize the physical model to the widths of a state dict about to be loaded into it (a
        checkpoint to resume, or the best epoch's weights, saved when the model was smaller)."""
        sizes = {}
        for pg in self.groups:
            i, r = pg.sites[0]
            key = f"{prefix}{self.sites[i].layer}.npn_{self.sites[i].side}.phi"
            if key in state_dict:
                sizes[pg.name] = state_dict[key].shape[0] // r
        if sizes:
            self._resize_to(sizes)

    def remove(self) -> None:
        self._load_hook.remove()
        super().remove()
