"""One training epoch of any method, and the step-wise expansion checks that may run inside it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.distributed import sum_over_processes, world
from neuroplastic.train.evaluate import device_of, evaluate
from neuroplastic.train.progress import EpochBar
from neuroplastic.train.step import train_step


@dataclass
class EpochResult:
    """Mean training loss and accuracy of an epoch, the global step after it, and the events of its
    step-wise expansion checks."""

    loss: float
    accuracy: float
    step: int
    events: list[dict[str, Any]] = field(default_factory=list)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


def train_epoch(
    model: nn.Module,
    method: CapacityMethod,
    optimizers: Sequence[Optimizer],
    schedules: Sequence[Any],
    loader: Any,
    criterion: Callable,
    *,
    epoch: int,
    step: int = 0,
    bar: EpochBar | None = None,
    check: Callable[[int], list[dict[str, Any]]] | None = None,
    forward: Callable[..., torch.Tensor] | None = None,
) -> EpochResult:
    """One pass over ``loader`` (``method.set_epoch``, then :func:`~neuroplastic.train.step.train_step`
    per batch). ``step`` is the global step before the epoch; ``check(step)`` runs after every step (see
    :func:`expansion_check`); ``forward`` computes the outputs (default ``model``; a DDP wrapper).
    Under ``torch.distributed`` the mean loss and accuracy are over every process's share (a collective at
    the end of the epoch: every process must call this). Raises :class:`NonFiniteLoss` naming the first
    step whose loss was not finite, at the end of the epoch (the check stays on the device: no host
    synchronisation per step).
    """
    method.set_epoch(epoch)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    model.train()
    device = device_of(model)
    # running sums stay on the device: no host synchronisation per step
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    events: list[dict[str, Any]] = []
    n = 0
    start = step
    batches = bar.wrap(loader) if bar is not None else loader
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, out = train_step(model, method, optimizers, schedules, x, y, criterion, forward)
        step += 1
        if check is not None:
            events += check(step)
        loss = loss.double()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * len(y)
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        if bar is not None:
            bar.update(i, loss_sum, correct, n)
    if bar is not None:
        bar.close()
    if world()[1] > 1:  # every process trained its share of each batch: the epoch's numbers are of all shares
        loss_sum, correct, n = sum_over_processes(loss_sum, correct, n)
        n = int(n)
    if n == 0:
        raise ValueError("the training loader yielded no batches")
    if int(first_bad) >= 0:
        raise NonFiniteLoss(f"the training loss is not finite at step {int(first_bad)} (epoch {epoch}, steps "
                            f"{start + 1}..{step}); lower the learning rate or check the data")
    return EpochResult(float(loss_sum) / n, int(correct) / n, step, events)


def expansion_check(model: nn.Module, method: CapacityMethod, val_loader: Any, criterion: Callable, *,
                    all_processes: bool = False) -> Callable[[int], list[dict[str, Any]]] | None:
    """For a method with ``expand_every``: a function of the global step that, every ``expand_every``
    steps, evaluates the first ``method.expand_val_batches`` validation batches (all when None) and
    returns the events of ``method.check_expansion`` (each with its ``step``); None for other methods.
    ``all_processes``: each process's loader holds its share of the validation data, and the decision is
    taken on the mean over all of them (:func:`~neuroplastic.train.evaluate.evaluate`)."""
    n_batches = method.expand_val_batches

    def val_loss() -> float:
        batches = val_loader if n_batches is None else itertools.islice(val_loader, n_batches)
        return evaluate(model, batches, criterion, all_processes=all_processes)[0]

    return step_expansion_check(method, val_loss)


def step_expansion_check(method: CapacityMethod,
                         val_loss: Callable[[], float]) -> Callable[[int], list[dict[str, Any]]] | None:
    """:func:`expansion_check` for any loop: ``check(step)`` calls ``method.check_expansion(val_loss())``
    every ``method.expand_every`` steps (``val_loss`` evaluates the loop's validation batches; the
    framework integrations give their own) and returns its events, each with its ``step``; None for a
    method without ``expand_every``."""
    every = method.expand_every
    if every is None:
        return None

    def check(step: int) -> list[dict[str, Any]]:
        if step % every:
            return []
        return [{"step": step, **event} for event in method.check_expansion(val_loss())]

    return check
