"""Where unit gates sit in an ordinary ``nn.Module`` and how they are applied.

A *gate site* is a set of units of one weighted layer (``nn.Linear`` / ``nn.Conv2d``) that share one
gate vector:

* ``side="out"``: the layer's output units (neurons / channels). The gate multiplies the output of the
  BatchNorm that directly follows the layer when there is one (so a closed unit is exactly zero for
  every consumer, BN bias included), else the layer's own output.
* ``side="in"``: the layer's input features (NPN gates the moons inputs and LeNet5's 800 flattened
  conv features this way).

Gates are applied with forward (pre-)hooks, so the user's model code is not rewritten. The gate logits
``phi`` live in a :class:`UnitGates` submodule registered on the gated layer (``<layer>.npn_out`` or
``<layer>.npn_in``), so they are ordinary model parameters: optimizers, ``state_dict`` and DDP see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from neuroplastic.structure.trace import TraceFailure, fx_trace

GATEABLE = (nn.Linear, nn.Conv2d)
SIDES = ("out", "in")  # per-layer sides; "group" sites come from make_group_site
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class UnitGates(nn.Module):
    """The gate logits of one site and the gate values its hook applies.

    ``phase`` tells the hook what to multiply by:

    * ``"main"`` / ``"anti"``: the ARM pair ``1[u < pi]`` / ``1[u > 1 - pi]`` with a shared ``u``,
      drawn lazily on first use (one ``u`` per unit, or per unit and sample when ``per_sample``);
    * ``"open"``: the deterministic ``1[phi > 0]`` (frozen stages, evaluation);
    * ``"soft"``: the reference code's soft test gate ``pi * 1[pi >= 0.5]``;
    * ``"value"``: ``value_fn(x)`` (other gate families, e.g. hard concrete, compute their own gates);
    * ``None`` in training mode: a fresh Bernoulli(pi) sample per forward, like dropout.
    """

    def __init__(self, n: int, unit_dim: int) -> None:
        super().__init__()
        self.phi = nn.Parameter(torch.zeros(n))
        self.unit_dim = unit_dim
        self.k = 1.0
        self.prob_fn: Callable[[torch.Tensor, float], torch.Tensor] = lambda phi, k: torch.sigmoid(k * phi)
        self.phase: str | None = None
        self.eval_phase = "open"
        self.per_sample = False
        self.generator: torch.Generator | None = None
        self.u: torch.Tensor | None = None
        self.value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._open_key: tuple[int, int] | None = None
        self._open = False

    def prob(self) -> torch.Tensor:
        """Gate probabilities ``pi = g_k(phi)`` (differentiable)."""
        return self.prob_fn(self.phi, self.k)

    def current_phase(self) -> str | None:
        """The phase the hooks apply now: ``phase`` in training (and always ``"value"``), else
        ``eval_phase``."""
        return self.phase if self.training or self.phase == "value" else self.eval_phase

    def binary_per_unit(self) -> bool:
        """Whether the current gates are 0/1 and shared by the whole batch (one value per unit), so that
        scaling a layer's weights by them equals scaling its activations, bit for bit."""
        phase = self.current_phase()
        if phase in ("main", "anti"):
            return not self.per_sample
        return phase in ("open", None)

    def all_open(self) -> bool:
        """Whether every gate is exactly 1 under the deterministic ``"open"`` phase (the multiply can
        then be skipped). Cached until ``phi`` changes (its version counter or storage), so frozen
        stages pay one check per optimizer update of ``phi``, i.e. none."""
        if self.current_phase() != "open":
            return False
        key = (self.phi._version, self.phi.data_ptr())
        if self._open_key != key:
            self._open_key, self._open = key, bool((self.phi > 0).all())
        return self._open

    def unit_values(self, x: torch.Tensor) -> torch.Tensor:
        """The gate value of every unit, shape ``(units,)``, or ``(batch, units)`` for per-sample ARM
        gates; ``x`` is the activation being gated (its batch size and dtype are used)."""
        phase = self.current_phase()
        if phase == "value":
            assert self.value_fn is not None, "phase 'value' needs a value_fn"
            return self.value_fn(x)
        if phase == "open":
            return (self.phi > 0).to(x.dtype)
        pi = self.prob().detach()
        if phase == "soft":
            return pi * (pi >= 0.5).to(pi.dtype)
        if phase in ("main", "anti"):
            if self.u is None:
                shape = (x.shape[0], pi.numel()) if self.per_sample else (pi.numel(),)
                self.u = torch.rand(shape, generator=self.generator, device=pi.device, dtype=pi.dtype)
            z = (self.u < pi) if phase == "main" else (self.u > 1 - pi)
        else:  # stochastic forward outside a method's backward
            z = torch.rand(pi.shape, generator=self.generator, device=pi.device, dtype=pi.dtype) < pi
        return z.to(x.dtype)

    def gate_values(self, x: torch.Tensor, offset: int = 0, repeat: int = 1) -> torch.Tensor:
        """The gate tensor for activation ``x``, shaped to broadcast along the unit dimension.

        Unit ``u`` covers positions ``offset + u * repeat + j`` (``j < repeat``) of that dimension; the
        other positions (other groups after a concatenation) get 1.
        """
        z = self.unit_values(x)
        if repeat != 1:
            z = z.repeat_interleave(repeat, dim=-1)
        width = x.shape[self.unit_dim % x.dim()]
        if offset != 0 or z.shape[-1] != width:
            full = z.new_ones((*z.shape[:-1], width))
            full[..., offset : offset + z.shape[-1]] = z
            z = full
        return self._broadcast(z, x)

    def _broadcast(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dim = self.unit_dim % x.dim()
        if z.dim() == 2:  # (batch, units)
            shape = [x.shape[0]] + [1] * (x.dim() - 1)
            shape[dim] = z.shape[1]
        else:
            shape = [1] * x.dim()
            shape[dim] = z.shape[0]
        return z.reshape(shape)


@dataclass(frozen=True)
class HookPoint:
    """Where a gate multiplies: the output (or, for in-gates, the input) of ``module``, at the units'
    positions ``offset + u * repeat + j`` of the channel dimension."""

    module: str
    offset: int = 0
    repeat: int = 1


@dataclass
class GateSite:
    """One gate vector: which units (a layer's outputs or inputs, or a traced unit group), where the
    multiply happens, and which layers' outputs (``writes``) and inputs (``reads``) the units are.

    ``side`` is ``"out"``, ``"in"`` or ``"group"``; ``layer`` names the module that carries the gate
    parameters (``<layer>.npn_<side>.phi``); for a group it is the group's name (its first producer).
    ``writes`` / ``reads`` hold ``(layer, offset, repeat)`` for the live-architecture count.
    """

    name: str
    layer: str
    side: str
    n: int
    weights_per_unit: int
    hooks: list[HookPoint]
    gates: UnitGates
    writes: list[tuple[str, int, int]] = field(default_factory=list)
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)

    @property
    def hook_module(self) -> str:
        """The module of the first hook point (the only one for per-layer sites)."""
        return self.hooks[0].module


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The gateable layers (Linear, Conv2d) of ``model`` by name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GATEABLE)}


def model_graph(model: nn.Module) -> torch.fx.Graph | TraceFailure:
    """The ``torch.fx`` graph of ``model``, or the :class:`~neuroplastic.structure.trace.TraceFailure`
    that says which module and line blocked the trace. Per-layer gate sites only refine themselves with
    it (:func:`following_norm`, :func:`~neuroplastic.gates.links.chain_links`)."""
    return fx_trace(model)


def following_norm(model: nn.Module, layer: str, graph: torch.fx.Graph | TraceFailure | None = None) -> str | None:
    """Name of the BatchNorm that directly (and only) consumes ``layer``'s output, if any.

    Found in ``graph`` (traced here when None); for a model that cannot be traced (``graph`` is a
    :class:`TraceFailure`), the next module in registration order is taken when it is a BatchNorm of the
    right width (the caller warns once that the trace failed).
    """
    modules = dict(model.named_modules())
    module = modules[layer]
    width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
    if graph is None:
        graph = model_graph(model)
    if isinstance(graph, TraceFailure):
        names = list(modules)
        nxt = names[names.index(layer) + 1] if names.index(layer) + 1 < len(names) else None
        if nxt is not None and isinstance(modules[nxt], NORMS) and modules[nxt].num_features == width:
            return nxt
        return None
    for node in graph.nodes:
        if node.op == "call_module" and node.target == layer:
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module":
                target = modules.get(str(users[0].target))
                if isinstance(target, NORMS) and target.num_features == width:
                    return str(users[0].target)
            return None
    return None


def parse_side(layer: str, side: str) -> tuple[str, int]:
    """``"out"`` / ``"in"``, optionally ``":<block>"`` (e.g. ``"in:16"``: one gate per block of 16
    consecutive features, such as an attention head's slice of the output projection's input), as
    ``(side, block)``."""
    if not isinstance(side, str):
        raise ValueError(f"gate side for {layer!r} must be a string 'out' | 'in' (optionally ':<block>'), got {side!r}")
    name, _, block = side.partition(":")
    if name not in SIDES or (block and not (block.isdigit() and int(block) > 0)):
        raise ValueError(f"gate side for {layer!r} must be one of {SIDES}, optionally with ':<block size>' "
                         f"(e.g. 'in:64' gates blocks of 64 input features), got {side!r}")
    return name, int(block or 1)


def make_site(model: nn.Module, layer: str, side: str, graph: torch.fx.Graph | TraceFailure | None = None) -> GateSite:
    """Build (but do not attach) the gate site for ``layer``'s ``side`` units (see :func:`parse_side`).

    ``graph`` (:func:`model_graph`, traced here when None) only places an out-gate after a BatchNorm
    that follows the layer; an untraceable model gets the site all the same.
    """
    layers = weighted_layers(model)
    if layer not in layers:
        raise ValueError(f"cannot gate {layer!r}: not a Linear/Conv2d of the model; gateable layers: {list(layers)}")
    side, block = parse_side(layer, side)
    module = layers[layer]
    w = module.weight
    width = w.shape[0] if side == "out" else w.shape[1]
    if width % block:
        raise ValueError(f"cannot gate {layer!r} in blocks of {block}: its {width} {side}put units are not a multiple")
    if side == "out":
        per_unit = w[0].numel() * block
        hook = following_norm(model, layer, graph) or layer
    else:
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"cannot gate the inputs of grouped conv {layer!r}: gate its producer's outputs")
        per_unit = w.numel() // width * block
        hook = layer
    n = width // block
    unit_dim = -1 if isinstance(module, nn.Linear) else 1
    gates = UnitGates(n, unit_dim).to(device=w.device, dtype=w.dtype)
    where = [(layer, 0, block)]
    name = f"{layer}:{side}" if block == 1 else f"{layer}:{side}:{block}"
    return GateSite(name, layer, side, n, per_unit, [HookPoint(hook, 0, block)], gates,
                    writes=where if side == "out" else [], reads=where if side == "in" else [])


def make_group_site(model: nn.Module, group) -> GateSite:
    """One gate for a traced unit group (:class:`neuroplastic.structure.UnitGroup`): it multiplies the
    group's slice at each of ``group.gate_sites()`` (its BatchNorms, else its producers), so a closed
    unit is zero in every branch that writes it (a whole residual stream, a concatenated slice)."""
    if not group.prunable:
        raise ValueError(f"unit group {group.name!r} cannot be gated: {group.reason}")
    modules = dict(model.named_modules())
    writers = [r for r in group.producers if r.kind in ("conv", "linear", "depthwise")]
    per_unit = sum(modules[r.module].weight[0].numel() for r in writers)
    w = modules[writers[0].module].weight
    gates = UnitGates(group.size, 1).to(device=w.device, dtype=w.dtype)
    hooks = [HookPoint(r.module, r.offset, r.repeat) for r in group.gate_sites()]
    return GateSite(
        f"{group.name}:group", group.name, "group", group.size, per_unit, hooks, gates,
        writes=[(r.module, r.offset, r.repeat) for r in writers if r.kind != "depthwise"],
        reads=[(r.module, r.offset, r.repeat) for r in group.consumers],
    )


def weight_side_tensors(site: GateSite, module: nn.Module) -> list[tuple[str, int]]:
    """The parameters of ``module`` (the site's only hook point) that batch-shared 0/1 gates can scale
    instead of the activation, as ``(name, unit dim)``; empty when the activation must be gated.

    Out-gates scale the rows of the layer's weight and its bias, or the affine weight and bias of the
    BatchNorm that follows; in-gates scale the input columns of the layer's weight. Group sites, hook
    points at an offset, non-affine BatchNorms and parametrized weights keep the activation path.
    """
    if site.side not in SIDES or len(site.hooks) != 1 or site.hooks[0].offset or site.hooks[0].repeat != 1:
        return []
    dim = 1 if site.side == "in" else 0
    names = ["weight"] if site.side == "in" else ["weight", "bias"]
    params = module._parameters
    if not isinstance(params.get("weight"), torch.Tensor) or params["weight"].shape[dim] != site.n:
        return []
    if any(hasattr(type(module), name) for name in names):  # e.g. torch.nn.utils.parametrize
        return []
    return [(name, dim) for name in names if params.get(name) is not None]


class _GateHook:
    """The forward pre-hook and forward hook that apply one site's gates at one hook point.

    When the gates are one 0/1 value per unit shared by the batch and the point allows it
    (:func:`weight_side_tensors`), the pre-hook scales the module's parameters for this call (the
    scaled tensors shadow the parameters in the module's ``__dict__``; the forward hook, called even
    when the forward raises, removes them): ``conv(x, W * z) == conv(x, W) * z`` exactly for binary
    ``z``, and costs a multiply of the (small) weight instead of the (large) activation. Otherwise the
    activation is multiplied: the module's input for in-gates, its output for out- and group gates.
    When every gate is 1 in the deterministic ``"open"`` phase (frozen stages, evaluation) nothing is
    multiplied at all.
    """

    def __init__(self, site: GateSite, point: HookPoint, module: nn.Module) -> None:
        self.gates, self.side, self.offset, self.repeat = site.gates, site.side, point.offset, point.repeat
        self.tensors = weight_side_tensors(site, module)
        self.shadowed = False

    def pre(self, module: nn.Module, args: tuple) -> tuple | None:
        self._unshadow(module)
        if self.gates.all_open():
            return None
        if self.tensors and self.gates.binary_per_unit():
            z = self.gates.unit_values(args[0])
            for name, dim in self.tensors:
                p = module._parameters[name]
                shape = [1] * p.dim()
                shape[dim] = -1
                module.__dict__[name] = p * z.to(p.dtype).view(shape)
            self.shadowed = True
            return None
        if self.side == "in":
            x = args[0]
            return (x * self.gates.gate_values(x, self.offset, self.repeat), *args[1:])
        return None

    def post(self, module: nn.Module, inputs: tuple, out: torch.Tensor | None) -> torch.Tensor | None:
        if self.shadowed:
            self._unshadow(module)
            return None
        if self.side == "in" or out is None or self.gates.all_open():
            return None
        return out * self.gates.gate_values(out, self.offset, self.repeat)

    def _unshadow(self, module: nn.Module) -> None:
        if self.shadowed:
            for name, _ in self.tensors:
                module.__dict__.pop(name, None)
            self.shadowed = False


def attach(model: nn.Module, site: GateSite) -> None:
    """Register the site's gates on its layer and hook the multiply into the forward pass."""
    modules = dict(model.named_modules())
    attr = f"npn_{site.side}"
    if hasattr(modules[site.layer], attr):
        raise ValueError(f"layer {site.layer!r} already carries {attr} gates")
    modules[site.layer].add_module(attr, site.gates)
    for point in site.hooks:
        module = modules[point.module]
        hook = _GateHook(site, point, module)
        site.handles.append(module.register_forward_pre_hook(hook.pre))
        site.handles.append(module.register_forward_hook(hook.post, always_call=True))


def remove_hooks(module: nn.Module, site: GateSite) -> None:
    """Remove ``site``'s hooks from ``module`` by id (also from a deep copy of the hooked model, where
    the site's handles no longer point at the module's hook dicts)."""
    for handle in site.handles:
        for hooks in (module._forward_pre_hooks, module._forward_hooks, module._forward_hooks_always_called):
            hooks.pop(handle.id, None)


def detach(model: nn.Module, site: GateSite) -> None:
    """Undo :func:`attach`: remove the hooks and the gates submodule."""
    for handle in site.handles:
        handle.remove()
    site.handles = []
    layer = dict(model.named_modules())[site.layer]
    delattr(layer, f"npn_{site.side}")


def default_placement(
    model: nn.Module, include: list[str] | None = None, exclude: list[str] | None = None
) -> dict[str, str]:
    """Out-gates on every Linear/Conv2d except the last layer (the classifier), restricted by
    ``include`` / ``exclude`` (layer names)."""
    layers = list(weighted_layers(model))
    if not layers:
        raise ValueError("model cannot be gated: it has no nn.Linear or nn.Conv2d layer")
    for arg, names in (("include", include), ("exclude", exclude)):
        for name in names or []:
            if name not in layers:
                raise ValueError(f"{arg} names {name!r}, which is not a Linear/Conv2d layer; layers: {layers}")
    chosen = include if include is not None else layers[:-1]
    return {name: "out" for name in chosen if name not in (exclude or [])}
