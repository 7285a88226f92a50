"""Evaluation of a model on a loader: mean loss and accuracy, in evaluation mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from neuroplastic.train.distributed import sum_over_processes


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: Callable | None = None, *,
             all_processes: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy (0-1) of ``model`` in eval mode over ``loader``; training mode restored.

    Eval mode makes NPN gates deterministic and BatchNorm use its running statistics. With
    ``all_processes`` every process of the ``torch.distributed`` group evaluates its share of the data
    (a framework's distributed sampler) and all get the mean over all the shares (a collective: every
    process must call it); outside a group it changes nothing.
    """
    criterion = criterion or nn.CrossEntropyLoss()
    device = device_of(model)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            total_loss += criterion(out, y).double().mean() * len(y)  # a per-example criterion works too
            correct += (out.argmax(1) == y).sum()
            n += len(y)
    finally:
        model.train(was_training)
    if all_processes:
        total_loss, correct, n = sum_over_processes(total_loss, correct, n)
        n = int(n)
    if n == 0:
        raise ValueError("evaluate() got an empty loader")
    return float(total_loss) / n, int(correct) / n


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
