"""The one interface every capacity-changing method implements.

A training loop (ours in :mod:`neuroplastic.train`, or a user's own) drives any method the same way::

    method.set_epoch(epoch)
    for x, y in loader:
        optimizer.zero_grad()
        loss = method.backward(lambda: criterion(model(x), y))
        optimizer.step()
        method.step()
    method.end_epoch(val_loss=validation_loss)

Methods that need more than one forward pass per step (NPN's ARM estimator) own the backward step,
as :class:`torch.optim.LBFGS` owns its closure; the others inherit the plain ``loss.backward()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class CapacityMethod:
    """Base class: a policy that changes which units or connections of ``model`` are live.

    Subclasses override the hooks they need. Every hook has a harmless default so that the same
    loop drives every method.
    """

    #: short name used in results files and logs (``"npn"``, ``"rigl"``, ...)
    name: str = "method"
    #: what :meth:`backward`'s closure must return: ``"mean"`` (the mean loss of the batch),
    #: ``"per_example"`` (one loss per example) or ``"indexed"`` (``closure(index=None)``: per-example losses
    #: of the examples at ``index``, all of them when None); :func:`neuroplastic.train.fit` follows it
    closure_kind: str = "mean"

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.epoch = 0

    # -- the training-loop hooks ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Tell the method which epoch starts (drives stage and density schedules)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def backward(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Evaluate ``closure`` (which returns the scalar training loss), back-propagate, return it.

        The returned tensor is detached. The default is one forward and one backward pass.
        """
        loss = closure()
        loss.backward()
        return loss.detach()

    def step(self) -> None:
        """Call once after every ``optimizer.step()`` (masks are re-applied, topology updated)."""

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """Call after each validation; returns the capacity events it caused (may be empty)."""
        return []

    # -- reporting -----------------------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        """The live architecture: at least ``{"params": live weights, "params_dense": all weights}``."""
        from neuroplastic.metrics import count_weights

        n = count_weights(self.model)
        return {"params": n, "params_dense": n}

    def metrics(self) -> dict[str, Any]:
        """Scalars (and small lists) worth one line of the training history per epoch."""
        return {}

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state (schedules, counters, RNG); model and optimizer tensors are saved apart."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.epoch = int(state["epoch"])
