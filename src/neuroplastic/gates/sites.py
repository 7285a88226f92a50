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

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

GATEABLE = (nn.Linear, nn.Conv2d)
SIDES = ("out", "in")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class UnitGates(nn.Module):
    """The gate logits of one site and the gate values its hook applies.

    ``phase`` tells the hook what to multiply by:

    * ``"main"`` / ``"anti"``: the ARM pair ``1[u < pi]`` / ``1[u > 1 - pi]`` with a shared ``u``,
      drawn lazily on first use (one ``u`` per unit, or per unit and sample when ``per_sample``);
    * ``"open"``: the deterministic ``1[phi > 0]`` (frozen stages, evaluation);
    * ``"soft"``: the reference code's soft test gate ``pi * 1[pi >= 0.5]``;
    * ``"value"``: an explicit tensor ``value`` (used by other gate families, e.g. hard concrete);
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
        self.value: torch.Tensor | None = None

    def prob(self) -> torch.Tensor:
        """Gate probabilities ``pi = g_k(phi)`` (differentiable)."""
        return self.prob_fn(self.phi, self.k)

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        """The gate tensor for activation ``x``, shaped to broadcast along the unit dimension."""
        phase = self.phase if self.training or self.phase == "value" else self.eval_phase
        if phase == "value":
            z = self.value
        elif phase == "open":
            z = (self.phi > 0).to(x.dtype)
        elif phase == "soft":
            pi = self.prob().detach()
            z = pi * (pi >= 0.5).to(pi.dtype)
        else:
            pi = self.prob().detach()
            if phase in ("main", "anti"):
                if self.u is None:
                    shape = (x.shape[0], pi.numel()) if self.per_sample else (pi.numel(),)
                    self.u = torch.rand(shape, generator=self.generator, device=pi.device, dtype=pi.dtype)
                z = (self.u < pi) if phase == "main" else (self.u > 1 - pi)
            else:  # stochastic forward outside a method's backward
                z = torch.rand(pi.shape, device=pi.device) < pi
            z = z.to(x.dtype)
        assert z is not None
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


@dataclass
class GateSite:
    """One gate vector: which layer's units, which side, where the multiply happens."""

    name: str
    layer: str
    side: str
    n: int
    weights_per_unit: int
    hook_module: str
    gates: UnitGates
    handle: torch.utils.hooks.RemovableHandle | None = None


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The gateable layers (Linear, Conv2d) of ``model`` by name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GATEABLE)}


def following_norm(model: nn.Module, layer: str) -> str | None:
    """Name of the BatchNorm that directly (and only) consumes ``layer``'s output, if any.

    Found with ``torch.fx``; for models that cannot be traced, the next module in registration order
    is used when it is a BatchNorm of the right width, with a warning.
    """
    module = dict(model.named_modules())[layer]
    width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
    modules = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure falls back, loudly
        names = list(modules)
        nxt = names[names.index(layer) + 1] if names.index(layer) + 1 < len(names) else None
        if nxt is not None and isinstance(modules[nxt], NORMS) and modules[nxt].num_features == width:
            warnings.warn(
                f"model is not traceable by torch.fx ({type(exc).__name__}); assuming BatchNorm {nxt!r} "
                f"follows {layer!r} because it is registered next",
                stacklevel=3,
            )
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


def make_site(model: nn.Module, layer: str, side: str) -> GateSite:
    """Build (but do not attach) the gate site for ``layer``'s ``side`` units."""
    layers = weighted_layers(model)
    if layer not in layers:
        raise ValueError(f"cannot gate {layer!r}: not a Linear/Conv2d of the model; gateable layers: {list(layers)}")
    if side not in SIDES:
        raise ValueError(f"gate side for {layer!r} must be one of {SIDES}, got {side!r}")
    module = layers[layer]
    w = module.weight
    if side == "out":
        n = w.shape[0]
        per_unit = w[0].numel()
        hook = following_norm(model, layer) or layer
    else:
        n = w.shape[1] * (module.groups if isinstance(module, nn.Conv2d) else 1)
        per_unit = w.numel() // n
        hook = layer
    unit_dim = -1 if isinstance(module, nn.Linear) else 1
    gates = UnitGates(n, unit_dim).to(device=w.device, dtype=w.dtype)
    return GateSite(f"{layer}:{side}", layer, side, n, per_unit, hook, gates)


def attach(model: nn.Module, site: GateSite) -> None:
    """Register the site's gates on its layer and hook the multiply into the forward pass."""
    modules = dict(model.named_modules())
    attr = f"npn_{site.side}"
    if hasattr(modules[site.layer], attr):
        raise ValueError(f"layer {site.layer!r} already carries {attr} gates")
    modules[site.layer].add_module(attr, site.gates)
    gates = site.gates
    if site.side == "out":
        site.handle = modules[site.hook_module].register_forward_hook(
            lambda mod, inputs, out: out * gates.gate_values(out)
        )
    else:
        site.handle = modules[site.hook_module].register_forward_pre_hook(
            lambda mod, args: (args[0] * gates.gate_values(args[0]), *args[1:])
        )


def detach(model: nn.Module, site: GateSite) -> None:
    """Undo :func:`attach`: remove the hook and the gates submodule."""
    if site.handle is not None:
        site.handle.remove()
        site.handle = None
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
