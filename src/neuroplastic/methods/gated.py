"""What every unit-gate method shares: gate sites on the model, per-site penalty strengths, the
expected-L0 penalty, live-architecture reporting, snapshots and removal of the gates.

:class:`~neuroplastic.methods.npn.NPN` (stochastic binary gates, ARM/AR) and
:class:`~neuroplastic.methods.hard_concrete.HardConcrete` (Louizos et al.'s relaxed gates) are small
subclasses that say how a gate is sampled and when a unit counts as open.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from neuroplastic.gates.links import chain_links
from neuroplastic.gates.sites import (
    GateSite,
    UnitGates,
    attach,
    default_placement,
    detach,
    make_group_site,
    make_site,
    model_graph,
    remove_hooks,
    weighted_layers,
)
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import count_weights, layer_flops
from neuroplastic.structure.compaction import ExampleInput
from neuroplastic.structure.groups import UnitGroup, UnitRef
from neuroplastic.structure.trace import TraceFailure


def split_param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split ``model``'s parameters into (weights, gate logits), e.g. for SGD on weights + Adam on gates."""
    gate_ids = {id(m.phi) for m in model.modules() if isinstance(m, UnitGates)}
    params = list(model.parameters())
    return [p for p in params if id(p) not in gate_ids], [p for p in params if id(p) in gate_ids]


def npn_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    gate_lr: float = 1e-2,
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
    **options: Any,
) -> torch.optim.Optimizer:
    """One optimizer for a gated model (NPN, HardConcrete): weights at ``lr``, gate logits in their own
    parameter group at ``gate_lr``.

    Gate logits need a larger step than weights: at Adam 1e-3 NPN's logits hardly move in a short
    plastic stage, so nothing is pruned (docs/npn.md). ``options`` (e.g. ``weight_decay``, ``momentum``)
    go to the optimizer for the weights' group only; the gate group gets none (no decay on logits).
    Build it after the method has attached its gates.
    """
    for key, value in (("lr", lr), ("gate_lr", gate_lr)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"npn_optimizer: {key} must be a positive number, got {value!r}")
    weights, gates = split_param_groups(model)
    if not gates:
        raise ValueError("npn_optimizer: the model has no gate logits; attach the method (e.g. NPN(model, ...)) "
                         "before building the optimizer")
    gate_group: dict[str, Any] = {"params": gates, "lr": gate_lr}
    if "weight_decay" in options:
        gate_group["weight_decay"] = 0.0
    return optimizer([{"params": weights, **options}, gate_group], lr=lr)


class UnitGateMethod(CapacityMethod):
    """Base class: gates placed on ``model`` (see :class:`~neuroplastic.methods.npn.NPN` for the
    meaning of ``gates``, ``include``, ``exclude`` and ``lam``)."""

    def __init__(
        self,
        model: nn.Module,
        lam: float | Sequence[float] | dict[str, float],
        gates: Sequence[str] | dict[str, str] | None,
        include: list[str] | None,
        exclude: list[str] | None,
        example_input: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(model)
        graph = model_graph(model)  # traced once; per-layer gates only refine themselves with it
        if gates == "groups":
            self.sites = _group_sites(model, include, exclude, example_input)
        else:
            placement = _placement(model, gates, include, exclude)
            self.sites = [make_site(model, layer, side, graph) for layer, side in placement.items()]
            if isinstance(graph, TraceFailure):
                warnings.warn(
                    f"{type(self).__name__}: {graph}. Per-layer gates train without the trace, but a closed "
                    "unit then only closes its own layer's weights, not the input weights of the layer that "
                    "reads it (architecture()['params'] and live_flops may count those), and a BatchNorm is "
                    "taken to follow a gated layer when it is registered right after it with the same width. "
                    "gates='groups' and PhysicalNPN need the trace, compact() the trace or declared unit groups "
                    "(compact(x, groups=...)); plain_model() exports without either. Make the forward traceable "
                    "to get them",
                    stacklevel=3,
                )
        self.lam = self.per_site("lam", lam, float)
        self._links = chain_links(model, graph)

    def _attach_all(self) -> None:
        for site in self.sites:
            attach(self.model, site)

    def per_site(self, arg: str, value: Any, cast, default: Any = None) -> list[Any]:
        """Expand a per-site option (scalar, list in site order, or dict by layer name) to a list."""
        layers = [s.layer for s in self.sites]
        if value is None:
            return [default] * len(self.sites)
        if isinstance(value, dict):
            unknown = set(value) - set(layers)
            if unknown:
                raise ValueError(f"{arg} names unknown gated layers {sorted(unknown)}; gated layers: {layers}")
            missing = set(layers) - set(value)
            if missing:
                raise ValueError(f"{arg} misses gated layers {sorted(missing)}")
            return [cast(value[layer]) for layer in layers]
        if isinstance(value, (list, tuple)):
            if len(value) != len(layers):
                raise ValueError(f"{arg} has {len(value)} entries but there are {len(layers)} gated layers {layers}")
            return [cast(v) for v in value]
        return [cast(value)] * len(layers)

    # -- the penalty ----------------------------------------------------------------------------
    def keep_prob(self, site: GateSite) -> torch.Tensor:
        """Probability that each unit of ``site`` is non-zero (differentiable)."""
        return site.gates.prob()

    def penalty(self) -> torch.Tensor:
        """``sum_sites lam * sum_j P(unit j open) * weights_per_unit`` (differentiable)."""
        total = self.sites[0].gates.phi.new_zeros(())
        for site, lam in zip(self.sites, self.lam, strict=True):
            if lam:
                total = total + lam * site.weights_per_unit * self.keep_prob(site).sum()
        return total

    def expected_l0(self) -> float:
        """Expected number of live gated weights, ``sum_j P(open) * weights_per_unit`` over all sites."""
        with torch.no_grad():
            return float(sum(s.weights_per_unit * self.keep_prob(s).sum() for s in self.sites))

    # -- reporting ------------------------------------------------------------------------------
    def open_units(self) -> list[torch.Tensor]:
        """Boolean open mask per site under the evaluation gate (``phi > 0``)."""
        return [(s.gates.phi.detach() > 0) for s in self.sites]

    def layer_open_masks(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """For every Linear/Conv2d: (open input features, open output units), closures propagated
        along producer -> consumer links (a channel closed upstream closes the features reading it)."""
        masks = {}
        for name, m in weighted_layers(self.model).items():
            n_out, n_in = m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1)
            masks[name] = [torch.ones(n_in, dtype=torch.bool), torch.ones(n_out, dtype=torch.bool)]
        for site, open_ in zip(self.sites, self.open_units(), strict=True):
            for where, side in ((site.writes, 1), (site.reads, 0)):
                for layer, offset, repeat in where:
                    unit_mask = open_.cpu().repeat_interleave(repeat)
                    masks[layer][side][offset : offset + len(unit_mask)] &= unit_mask
        for _ in range(2):  # closing travels both ways along a link
            for link in self._links:
                prod_out, cons_in = masks[link.producer][1], masks[link.consumer][0]
                cons_in &= prod_out.repeat_interleave(link.repeat)
                prod_out &= cons_in.view(-1, link.repeat).any(1)
        return {name: (m[0], m[1]) for name, m in masks.items()}

    def gate_parameters(self) -> list[nn.Parameter]:
        """The gate logits ``phi`` of every site, in the model's parameter order."""
        return split_param_groups(self.model)[1]

    def live_flops(self, input_shape: Sequence[int]) -> int:
        """Forward FLOPs per example of the open network: every layer's dense FLOPs times its open
        fraction of outputs times its open fraction of inputs (:meth:`layer_open_masks`, exact for Linear
        and ungrouped Conv layers; grouped convs count every input). Per input feature: finer than the
        compacted model, which keeps features it cannot remove (the network's inputs)."""
        masks = self.layer_open_masks()
        modules = dict(self.model.named_modules())
        total = 0.0
        for name, flops in layer_flops(self.model, tuple(input_shape)).items():
            if name in masks:
                open_in, open_out = masks[name]
                grouped = getattr(modules[name], "groups", 1) != 1
                flops = flops * float(open_out.float().mean()) * (1.0 if grouped else float(open_in.float().mean()))
            total += flops
        return round(total)

    def live_weights(self) -> int:
        """Weights whose input feature and output unit are both open (biases excluded)."""
        total = 0
        layers = weighted_layers(self.model)
        for name, (open_in, open_out) in self.layer_open_masks().items():
            w = layers[name].weight
            kernel = w[0, 0].numel()
            if getattr(layers[name], "groups", 1) == 1:
                total += int(open_out.sum()) * int(open_in.sum()) * kernel
            else:  # conservative for grouped convs: every input of an open output counts
                total += int(open_out.sum()) * w.shape[1] * kernel
        return total

    def architecture(self) -> dict[str, Any]:
        return {
            "layers": [s.name for s in self.sites],
            "arch": [int(m.sum()) for m in self.open_units()],
            "params": self.live_weights(),
            "params_dense": count_weights(self.model),
            "expected_l0": self.expected_l0(),
        }

    def metrics(self) -> dict[str, Any]:
        return self.architecture()

    def snapshot(self) -> dict[str, Any]:
        with torch.no_grad():
            return {f"pi/{s.name}": self.keep_prob(s).cpu().numpy().astype("float16") for s in self.sites}

    def eval_gates(self, site: GateSite) -> torch.Tensor:
        """The gate values of ``site`` in evaluation mode, one per unit (binary ``phi > 0`` by default)."""
        return (site.gates.phi.detach() > 0).to(site.gates.phi.dtype)

    @torch.no_grad()
    def plain_model(self) -> nn.Module:
        """A copy of the model without gates, computing what the gated model computes in evaluation mode,
        at full width (the model itself is left untouched). Needs no ``torch.fx`` trace, so it is the
        export for models that cannot be traced (e.g. Hugging Face models: ``save_pretrained`` it).

        The evaluation gates are baked into the copy: out-gates scale the following BatchNorm's weight
        and bias, or the layer's rows and bias; in-gates scale the layer's input columns (so the weights
        of a closed unit are zero); then the hooks and gate parameters are removed.
        """
        plain = copy.deepcopy(self.model)
        modules = dict(plain.named_modules())
        for site in self.sites:
            z = self.eval_gates(site)
            for point in site.hooks:
                target = modules[point.module]
                remove_hooks(target, site)
                units = slice(point.offset, point.offset + site.n * point.repeat)
                scale = z.repeat_interleave(point.repeat)
                if site.side == "in":
                    target.weight[:, units] *= scale.view([1, -1] + [1] * (target.weight.dim() - 2))
                else:
                    for tensor in (target.weight, target.bias):
                        if tensor is not None:
                            tensor[units] *= scale.view([-1] + [1] * (tensor.dim() - 1))
            delattr(modules[site.layer], f"npn_{site.side}")
        return plain

    @torch.no_grad()
    def compact(self, example_input: ExampleInput, *, groups: list[UnitGroup] | None = None) -> nn.Module:
        """A plain ``nn.Module`` without gates and without the closed units, computing what the gated
        model computes in evaluation mode (the model itself is left untouched).

        :meth:`plain_model` bakes the evaluation gates into a copy and
        :func:`neuroplastic.structure.compact` slices the closed units out of every coupled tensor; a closed
        unit that reads as a constant (an out-gated unit after an activation with ``act(0) != 0``) is folded
        into its consumer's bias. Units that cannot be removed (the network's input features, channels of
        a residual stream gated per layer) stay, with zero weights; a group whose units are all closed keeps
        one with zero outgoing weights. ``example_input`` is one batch of model input, used to check the
        result (and to trace the model when ``groups`` is None).

        ``groups``: the unit groups, declared instead of traced, for a model ``torch.fx`` cannot trace
        (:func:`neuroplastic.structure.bert_unit_groups` declares a BERT-style transformer's MLP units and
        attention heads); ``example_input`` may then be a mapping of keyword inputs. Every gate site must
        gate whole units of a declared group (an out-gate on a producer, an in-gate on a consumer, in blocks
        of the member's ``repeat``), else :class:`~neuroplastic.errors.BadInput` says which placements
        the groups allow. A unit is removed when every producer has it closed or every consumer reads it
        through a closed in-gate. Without ``groups``, a model ``torch.fx`` cannot trace is refused (the
        error names the module and line that blocked the trace).
        """
        from neuroplastic.errors import BadInput
        from neuroplastic.structure import compact, trace_unit_groups
        from neuroplastic.structure.compaction import check_groups, keep_from_layer_masks

        plain = self.plain_model()
        masks = self.layer_open_masks()
        opened = {name: out for name, (_, out) in masks.items()}
        if groups is None:
            failure = model_graph(plain)
            if isinstance(failure, TraceFailure):
                raise BadInput(f"compact() needs a torch.fx trace to find the tensors to slice: {failure}. Make "
                               "the forward traceable, or declare the unit groups (compact(x, groups=...); "
                               "neuroplastic.structure.bert_unit_groups for a BERT-style transformer), or export "
                               "at full width without the trace: plain_model() gives the model without gates, "
                               "closed units' weights zero (save its state_dict, or save_pretrained a Hugging Face "
                               "model)")
            groups = trace_unit_groups(plain, example_input)
            keep = keep_from_layer_masks(groups, opened)
        else:
            check_groups(plain, groups)
            _check_covered(self.sites, groups)
            keep = keep_from_layer_masks(groups, opened, {name: inp for name, (inp, _) in masks.items()})
        return compact(plain, keep, example_input, groups=groups, fold_constants=True)

    def remove(self) -> None:
        """Detach every gate from the model (hooks and gate parameters): the plain model is back."""
        for site in self.sites:
            detach(self.model, site)
        self.sites = []


def _group_sites(model, include, exclude, example_input) -> list[GateSite]:
    """One gate per prunable unit group (traced with :mod:`neuroplastic.structure`)."""
    from neuroplastic.structure import trace_unit_groups

    if example_input is None:
        raise ValueError("gates='groups' needs example_input (a batch, or the input shape without batch)")
    if not isinstance(example_input, torch.Tensor):
        param = next(model.parameters())
        example_input = torch.zeros((2, *[int(d) for d in example_input]), device=param.device)
    groups = [g for g in trace_unit_groups(model, example_input) if g.prunable]
    names = [g.name for g in groups]
    for arg, chosen in (("include", include), ("exclude", exclude)):
        for name in chosen or []:
            if name not in names:
                raise ValueError(f"{arg} names {name!r}, which is not a prunable unit group; groups: {names}")
    if not groups:
        raise ValueError("model cannot be gated: the trace found no prunable unit group")
    return [make_group_site(model, g) for g in groups
            if (include is None or g.name in include) and g.name not in (exclude or [])]


def _placement(model, gates, include, exclude) -> dict[str, str]:
    if gates is None:
        return default_placement(model, include, exclude)
    if include is not None or exclude is not None:
        raise ValueError("give either gates=... or include/exclude, not both")
    if isinstance(gates, dict):
        return dict(gates)
    if isinstance(gates, str):
        raise ValueError(f"gates must be 'groups', a list of layer names or a dict {{layer: side}}, got {gates!r}")
    return {layer: "out" for layer in gates}


def _check_covered(sites: list[GateSite], groups: list[UnitGroup]) -> None:
    """Raise :class:`~neuroplastic.errors.BadInput` unless each gate site gates whole units of one declared
    group: every layer it writes (out-gates) is a producer of a group of ``site.n`` units, and every layer
    it reads (in-gates) a consumer, at the same offset and in blocks of the member's ``repeat``."""
    from neuroplastic.errors import BadInput

    members = {(r.module, r.dim, r.offset, r.repeat, g.size) for g in groups for r in g.members}
    for site in sites:
        places = [(layer, 0, offset, repeat) for layer, offset, repeat in site.writes]
        places += [(layer, 1, offset, repeat) for layer, offset, repeat in site.reads]
        if places and all((*place, site.n) in members for place in places):
            continue
        allowed = sorted({f"{r.module!r}: {_side(r)}" for g in groups for r in g.members
                          if r.offset == 0 and r.kind in ("linear", "conv")})
        shown = ", ".join(allowed[:6]) + (f", ... ({len(allowed)} in all)" if len(allowed) > 6 else "")
        raise BadInput(f"gate site {site.name!r} ({site.n} units) is not covered by the declared groups: "
                       "compact(x, groups=...) removes units gated by an out-gate on a group's producer or an in-gate "
                       "on its consumer, one gate per unit of the group (in blocks of its repeat); the groups allow "
                       f"{shown or 'no gate'}")


def _side(ref: UnitRef) -> str:
    """The gate side (``gates={layer: side}``) that gates whole units of ``ref``'s group at ``ref``."""
    side = "out" if ref.dim == 0 else "in"
    return repr(side if ref.repeat == 1 else f"{side}:{ref.repeat}")
