"""One training step of any method, as the method protocol says: the closure, the backward, the steps.

:func:`training_closure` builds the closure a method's ``closure_kind`` asks for, and
:func:`train_step` runs one step with it. The reference loop (:func:`neuroplastic.train.fit`) and the
framework callbacks use these, so every loop trains a method the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from neuroplastic.methods.base import CLOSURE_KINDS, CapacityMethod

Closure = Callable[..., torch.Tensor]


def training_criterion(kind: str, criterion: Callable | None = None) -> Callable:
    """The training loss for closures of ``kind``: ``criterion`` if given, else cross-entropy (unreduced
    for ``"per_example"`` and ``"indexed"`` closures, whose criterion must return per-example losses)."""
    if kind not in CLOSURE_KINDS:
        raise ValueError(f"closure_kind must be one of {CLOSURE_KINDS}, got {kind!r}")
    if criterion is not None:
        return criterion
    return nn.CrossEntropyLoss() if kind == "mean" else nn.CrossEntropyLoss(reduction="none")


def training_closure(model: Callable[..., torch.Tensor], criterion: Callable, x: torch.Tensor, y: torch.Tensor,
                     captured: dict[str, torch.Tensor] | None = None) -> Closure:
    """``closure(index=None)``: the loss of ``model`` on the batch (on the examples at ``index`` when given,
    for ``"indexed"`` methods). The first full-batch output is kept in ``captured["out"]`` (detached): it
    is the pass that trains (NPN's first ARM pass), for the training accuracy."""

    def closure(index: torch.Tensor | None = None) -> torch.Tensor:
        if index is not None:
            return criterion(model(x[index]), y[index])
        out = model(x)
        if captured is not None:
            captured.setdefault("out", out.detach())
        return criterion(out, y)

    return closure


class Wrapped:
    """The module whose forward trains: ``wrap(model)`` (e.g. a ``DistributedDataParallel``), built again
    whenever the model's parameters were replaced (a method that ``resizes_model``)."""

    def __init__(self, model: nn.Module, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.model, self.wrap = model, wrap
        self.module: nn.Module | None = None
        self._ids: tuple[int, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ids = tuple(id(p) for p in self.model.parameters())
        if self.module is None or ids != self._ids:
            self.module, self._ids = self.wrap(self.model), ids
        return self.module(*args, **kwargs)


def train_step(model: nn.Module, method: CapacityMethod, optimizers: Sequence[Optimizer], schedules: Sequence[Any],
               x: torch.Tensor, y: torch.Tensor, criterion: Callable,
               forward: Callable[..., torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step: zero the gradients, ``method.backward``, step every optimizer and schedule,
    then ``method.step()``. ``forward`` (default: ``model``) computes the outputs, e.g. a :class:`Wrapped`
    DDP model. Returns the (detached) loss and the model's output on the batch."""
    captured: dict[str, torch.Tensor] = {}
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss = method.backward(training_closure(forward or model, criterion, x, y, captured))
    for opt in optimizers:
        opt.step()
    for schedule in schedules:
        schedule.step()
    method.step()
    return loss.detach(), captured["out"]
