"""LpCGD: momentum SGD whose constrained weights move on the unit Lp sphere, in the dual space.

A param group with ``p=None`` is trained by plain momentum SGD (the same arithmetic as
:class:`torch.optim.SGD` with ``foreach=False``). A param group with an exponent ``p > 1`` holds weights
whose units (rows) live on the unit Lp sphere; per parameter it keeps the dual state
``v = sign(w)|w|^(p-1)`` (on the unit Lq sphere, ``q = p/(p-1)``) and each step does::

    d = grad (+ weight_decay * w), then PyTorch-style momentum (Nesterov optional)
    v = normalize_q((1 - lr) * v - lr * normalize_q(d))
    w = sign(v) |v|^(1/(p-1))                     # so ||w_j||_p = 1 for every unit j

Only the direction of ``d`` matters (it is normalised per unit), so for constrained groups ``lr`` is a
mixing weight in ``[0, 1]``, not a step size in gradient units. Constrained weights are projected onto
the sphere when the optimizer is built.

Masks (attached by :class:`neuroplastic.LpSS` with :meth:`LpCGD.set_mask`) make a masked weight
*latent*: its gradient and momentum are zeroed, the weight written back is ``w * mask``, but the dual
state keeps its value (decaying by ``1 - lr`` per step, relative to the renormalised row), so a
regrown connection resumes from it. This is the reference's "semi-pruning".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from neuroplastic.checks import check_number
from neuroplastic.lp.geometry import EPS, check_p, from_dual, normalize, project, to_dual
from neuroplastic.lp.layers import assign_p, constrained_layers, constrained_params


class LpCGD(Optimizer):
    """Lp-constrained gradient descent (see the module docstring).

    Parameters
    ----------
    params:
        Parameters or param groups. A group's ``p`` (default: the ``p`` given here) selects the rule:
        ``None`` for momentum SGD, a number ``> 1`` for the Lp-sphere update. Constrained parameters
        need at least 2 dimensions (units on dim 0).
    lr:
        Step size (SGD groups) or dual mixing weight in ``[0, 1]`` (constrained groups).
    momentum, dampening, nesterov, weight_decay:
        As in :class:`torch.optim.SGD`; the momentum runs on the raw gradient before normalisation.
    eps:
        Rows whose largest magnitude is ``<= eps`` count as zero rows (no division by zero).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        p: float | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        eps: float = EPS,
    ) -> None:
        defaults = {
            "lr": lr,
            "p": p,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "eps": eps,
        }
        self._masks: dict[torch.Tensor, torch.Tensor] = {}
        #: ``{module name: p}`` of the constrained layers when built by :meth:`for_model`, else ``{}``
        self.layer_p: dict[str, float] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its settings; constrained weights are projected onto the sphere."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        self._check_group({**self.defaults, **param_group, "params": params})  # before the group is added
        super().add_param_group({**param_group, "params": params})
        group = self.param_groups[-1]
        if group["p"] is not None:
            with torch.no_grad():
                for param in group["params"]:
                    param.copy_(project(param, group["p"], group["eps"]))
                    self.state[param]["dual"] = to_dual(param, group["p"], group["eps"])

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        p = group["p"]
        if p is not None:
            check_p(p, "p")
            for param in group["params"]:
                if param.dim() < 2:
                    raise ValueError(
                        f"a constrained parameter needs >= 2 dimensions (units on dim 0), got shape "
                        f"{tuple(param.shape)}; give it a group with p=None"
                    )
        check_number("lr", group["lr"], low=0.0, high=1.0 if p is not None else None)
        check_number("momentum", group["momentum"], low=0.0)
        check_number("dampening", group["dampening"], low=0.0)
        check_number("weight_decay", group["weight_decay"], low=0.0)
        check_number("eps", group["eps"], low=0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")

    # -- masks ---------------------------------------------------------------------------------
    def set_mask(self, param: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Attach a 0/1 mask to ``param`` (``None`` detaches); masked weights become latent (module doc)."""
        if not any(param is q for g in self.param_groups for q in g["params"]):
            raise ValueError("set_mask: param is not managed by this optimizer")
        if mask is None:
            self._masks.pop(param, None)
            return
        if mask.shape != param.shape:
            raise ValueError(f"set_mask: mask shape {tuple(mask.shape)} != param shape {tuple(param.shape)}")
        self._masks[param] = mask

    def mask_of(self, param: torch.Tensor) -> torch.Tensor | None:
        """The mask attached to ``param``, or ``None``."""
        return self._masks.get(param)

    def dense_weight(self, param: torch.Tensor) -> torch.Tensor:
        """The unmasked weight of a constrained ``param`` (latent entries included), from its dual state."""
        for group in self.param_groups:
            if group["p"] is not None and any(param is q for q in group["params"]):
                return from_dual(self.state[param]["dual"], group["p"], group["eps"])
        raise ValueError("dense_weight: param is not a constrained parameter of this optimizer")

    # -- the update ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - same signature as torch optimizers
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check_group(group)  # a schedule may have pushed lr out of range
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("LpCGD does not support sparse gradients")
                self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        lr, p, momentum = group["lr"], group["p"], group["momentum"]
        mask = self._masks.get(param)
        state = self.state[param]
        d = param.grad
        if group["weight_decay"] != 0:
            d = d.add(param, alpha=group["weight_decay"])
        if mask is not None:
            d = d * mask
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(d).detach()
            else:
                buf.mul_(momentum).add_(d, alpha=1 - group["dampening"])
                if mask is not None:
                    buf.mul_(mask)  # no momentum survives on a latent connection (also after a drop)
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        if p is None:
            param.add_(d, alpha=-lr)
            if mask is not None:
                param.mul_(mask)
            return
        eps = group["eps"]
        q = p / (p - 1.0)
        v = state.get("dual")
        if v is None:
            v = to_dual(param, p, eps)
        v = v.to(param.device)
        v = normalize((1.0 - lr) * v - lr * normalize(d, q, eps), q, eps)
        state["dual"] = v
        w = from_dual(v, p, eps)
        param.copy_(w if mask is None else w * mask)

    # -- construction from a model ---------------------------------------------------------------
    @classmethod
    def for_model(
        cls,
        model: nn.Module | Iterable[torch.Tensor],
        *,
        lr: float,
        p_first: float = 1.2,
        p_rest: float | None = 1.07,
        n_first: int = 4,
        unconstrained_lr: float | None = None,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        include: Iterable[str] | str | None = None,
        exclude: Iterable[str] | str | None = None,
        eps: float = EPS,
    ) -> LpCGD:
        """Build an LpCGD for ``model``: constrained layers picked by :func:`constrained_layers`.

        ``model`` may also be a bare parameter list (as ``list(model.parameters())``): the same shape
        rules then apply through :func:`constrained_params`, ``layer_p`` is keyed by position, and
        ``include``/``exclude`` are refused (they name modules).

        One param group per distinct exponent (in layer order), then one SGD group (``p=None``) with
        every other parameter, whose lr is ``unconstrained_lr`` (default ``lr``). The chosen layers
        and their exponents are in ``optimizer.layer_p``.

        Two lrs exist because the constrained update only uses the gradient's direction: with a mean
        loss, the reference's summed-loss schedule ``vals / batch_size`` is reproduced by
        ``lr = 1 / batch_size`` and ``unconstrained_lr = 1`` with ``vals`` as schedule multipliers.
        """
        if isinstance(model, nn.Module):
            modules = dict(model.named_modules())
            layer_p = assign_p(constrained_layers(model, include=include, exclude=exclude), p_first, p_rest, n_first)
            weights = [modules[name].weight for name in layer_p]
            params = list(model.parameters())
        else:
            params = list(model)
            if not all(isinstance(q, torch.Tensor) for q in params):
                raise TypeError("model must be an nn.Module or an iterable of parameters")
            if include is not None or exclude is not None:
                raise ValueError("include/exclude name layers: give the model, not a parameter list")
            weights = constrained_params(params)
            layer_p = assign_p([str(i) for i in range(len(weights))], p_first, p_rest, n_first)
        groups: dict[float, list[torch.Tensor]] = {}
        for weight, p in zip(weights, layer_p.values(), strict=True):
            groups.setdefault(p, []).append(weight)
        taken = {id(w) for w in weights}
        free = [q for q in params if id(q) not in taken]
        param_groups: list[dict[str, Any]] = [{"params": ws, "p": p} for p, ws in groups.items()]
        if free:
            param_groups.append({"params": free, "p": None, "lr": lr if unconstrained_lr is None else unconstrained_lr})
        opt = cls(param_groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, eps=eps)
        opt.layer_p = layer_p
        return opt


#: recipe keys of an ``lpcgd`` optimizer spec (``name`` and ``schedule`` are handled by the runner)
SPEC_KEYS = (
    "lr",
    "p_first",
    "p_rest",
    "n_first",
    "unconstrained_lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "include",
    "exclude",
    "eps",
)


def build_lpcgd(model: nn.Module | Iterable[torch.Tensor], spec: dict[str, Any]) -> LpCGD:
    """An :class:`LpCGD` from a recipe's optimizer spec (``{"name": "lpcgd", "lr": ..., ...}``).

    The keys are the keywords of :meth:`LpCGD.for_model` (see :data:`SPEC_KEYS`); ``schedule`` is left
    to :func:`neuroplastic.train.optim.build_schedule`. Unknown keys are errors.
    """
    spec = dict(spec)
    spec.pop("schedule", None)
    name = spec.pop("name", "lpcgd")
    if name != "lpcgd":
        raise ValueError(f"build_lpcgd builds optimizer 'lpcgd', got name {name!r}")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown keys for optimizer 'lpcgd': {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    if "lr" not in spec:
        raise ValueError("optimizer 'lpcgd' needs an 'lr'")
    return LpCGD.for_model(model, **spec)
