"""The method protocol driven from a training framework's hooks: what the Lightning and Hugging Face
integrations share, with no framework imported.

A framework calls, from its own hooks, what :func:`neuroplastic.train.fit` calls from its loop::

    driver = MethodDriver(method)
    driver.attach(module, "LightningModule")      # the method's model must be part of what trains
    driver.bind(optimizers, schedules)            # once the framework has built them
    driver.restore()                              # a resumed method state, once the optimizers are restored
    driver.start_epoch(epoch)
    ...  # per optimizer step (after optimizer.step()):
    driver.optimizer_stepped()                    # method.step(), step-wise expansion checks
    driver.end_epoch(val_loss)                    # after validation: method.end_epoch, the record, the events

It keeps what a run folder would hold: ``history`` (one record per epoch: ``epoch``, ``step``, ``val_loss``,
``method.architecture()`` and ``method.metrics()``) and ``events`` (every capacity event with its ``epoch``
and ``step``), and its ``state_dict`` carries them and the method's state through the framework's
checkpoints.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.distributed import lift_ddp_ignores

Events = list[dict[str, Any]]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The ``torch.optim.Optimizer`` a framework's wrapper holds (Accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): the object whose parameters and state a method changes."""
    inner = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer) and inner.optimizer is not inner:
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer).__name__}")
    return inner


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a history record, flat, for a logger: nested dicts and lists become
    ``key/sub`` entries (lists as long as the record's ``layers`` are keyed by those layer names)."""
    layers = record.get("layers")
    names = list(layers) if isinstance(layers, list | tuple) and all(isinstance(n, str) for n in layers) else None
    out: dict[str, float] = {}

    def walk(key: str, value: Any) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, numbers.Real):
            if math.isfinite(float(value)):
                out[key] = float(value)
        elif isinstance(value, Mapping):
            for sub, item in value.items():
                walk(f"{key}/{sub}", item)
        elif isinstance(value, list | tuple):
            keys = names if names is not None and len(names) == len(value) else range(len(value))
            for sub, item in zip(keys, value, strict=True):
                walk(f"{key}/{sub}", item)

    for key, value in record.items():
        walk(f"{prefix}{key}", value)
    return out


class DriverView:
    """What every framework callback shows of the :class:`MethodDriver` it holds as ``self.driver``."""

    driver: MethodDriver

    @property
    def method(self) -> CapacityMethod:
        """The method this callback drives."""
        return self.driver.method

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per finished epoch (:attr:`MethodDriver.history`)."""
        return self.driver.history

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every capacity event of the run, with its ``epoch`` and ``step``."""
        return self.driver.events


class MethodDriver:
    """Drives one :class:`CapacityMethod` from a framework's hooks, as :func:`neuroplastic.train.fit` does
    from its loop (see the module docstring for the calls and their order)."""

    def __init__(self, method: CapacityMethod) -> None:
        if not isinstance(method, CapacityMethod):
            raise TypeError(f"method must be a neuroplastic CapacityMethod (NPN, RigL, LpSS, ...), "
                            f"got {type(method).__name__}")
        self.method = method
        #: optimizer steps taken so far (the step of ``neuroplastic.train.fit``'s records)
        self.steps = 0
        #: the epoch that started last, and whether its ``end_epoch`` is still due
        self.epoch = -1
        self.epoch_open = False
        #: one record per finished epoch: ``epoch``, ``step``, ``val_loss``, ``method.architecture()``,
        #: ``method.metrics()`` and the number of ``events``
        self.history: list[dict[str, Any]] = []
        #: every capacity event, with its ``epoch`` and ``step``
        self.events: Events = []
        self._step_events: Events = []  # events of step-wise expansion checks in the open epoch
        self._check: Callable[[int], Events] | None = None
        self._pending: dict[str, Any] | None = None

    # -- wiring ----------------------------------------------------------------------------------
    def attach(self, model: nn.Module, where: str) -> None:
        """Check that the method's model is part of ``model``, the module the framework trains (a copy,
        or a method built on another model, would change weights nobody trains)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"the {where} must be a torch.nn.Module, got {type(model).__name__}")
        trained = {id(p) for p in model.parameters()}
        missing = [name for name, p in self.method.model.named_parameters() if id(p) not in trained]
        if missing:
            raise ValueError(f"the {self.method.name!r} method's model is not part of the {where} being trained "
                             f"({len(missing)} of its parameters are not, e.g. {missing[0]!r}): build the method "
                             f"on the network the {where} holds, not on a copy")
        lift_ddp_ignores(model)  # DDP wraps the framework's module, not the method's model

    def check_world(self, world_size: int, *, rewraps: bool = False) -> None:
        """Refuse a model that changes shape under several processes unless the framework's DDP wrapper is
        built again after every resize (``rewraps``): the old wrapper would keep reducing the old
        parameters."""
        if self.method.resizes_model and world_size > 1 and not rewraps:
            raise ValueError(f"method {self.method.name!r} changes the model's shapes during training, which this "
                             f"integration supports on one process only (got world_size={world_size}); train it "
                             f"with one process, with Lightning's strategy='ddp', or with neuroplastic.train.fit")

    def bind(self, optimizers: Iterable[Any], schedules: Sequence[Any] = ()) -> None:
        """``method.bind_optimizers`` with the framework's optimizers (unwrapped) and per-step schedules."""
        self.method.bind_optimizers([unwrap_optimizer(o) for o in optimizers], list(schedules))

    def expand_with(self, check: Callable[[int], Events] | None, how: str) -> None:
        """Set the step-wise expansion check (``method.expand_every``): ``check(step)`` as
        :func:`~neuroplastic.train.epoch.expansion_check` or
        :func:`~neuroplastic.train.epoch.step_expansion_check` build it for the framework's validation
        data. ``how`` says in the error what the framework needs when ``check`` is None."""
        if self.method.expand_every is not None and check is None:
            raise ValueError(f"method {self.method.name!r} checks for expansion every expand_every="
                             f"{self.method.expand_every} steps on the validation loss: {how}")
        self._check = check

    # -- the loop ----------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        """``method.set_epoch(epoch)`` when a training epoch starts."""
        self.method.set_epoch(epoch)
        self.epoch = epoch
        self.epoch_open = True

    def optimizer_stepped(self, *, method_step: bool = True) -> None:
        """After every optimizer step: ``method.step()`` (unless the caller's step ran it, as
        :func:`neuroplastic.train.step.train_step` does), then the step-wise expansion check when due."""
        if method_step:
            self.method.step()
        self.steps += 1
        if self._check is not None:
            self._step_events += self._check(self.steps)

    def end_epoch(self, val_loss: float | None, hint: str = "") -> dict[str, Any]:
        """``method.end_epoch(val_loss=...)`` after the epoch's validation (``None`` without one); records
        the epoch in :attr:`history` and its events (those of step-wise checks first) in :attr:`events`;
        returns the record. A method that needs the validation loss and got none raises its error, with
        ``hint`` (how the framework provides one) added."""
        val = None if val_loss is None else float(val_loss)
        try:
            ended = self.method.end_epoch(val_loss=val) or []
        except ValueError as err:
            if val is None and hint:
                raise ValueError(f"{err} (epoch {self.epoch}: no validation loss; {hint})") from err
            raise
        new = self._step_events + ended
        self._step_events = []
        self.epoch_open = False
        events = [{"epoch": self.epoch, "step": self.steps, **event} for event in new]
        self.events += events
        record = {"epoch": self.epoch, "step": self.steps, "val_loss": val, **self.method.architecture(),
                  **self.method.metrics(), "events": len(events)}
        self.history.append(record)
        return record

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's state and the driver's counters and records, for the framework's checkpoint."""
        return {"method": self.method.state_dict(), "steps": self.steps, "epoch": self.epoch,
                "epoch_open": self.epoch_open, "step_events": list(self._step_events),
                "history": list(self.history), "events": list(self.events)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take a :meth:`state_dict`; the method's part waits for :meth:`restore` (a method may restore
        into its optimizer's state, e.g. LpSS, which frameworks load after the callbacks)."""
        missing = {"method", "steps", "epoch", "history", "events"} - set(state)
        if missing:
            raise ValueError(f"not a neuroplastic method state: keys {sorted(missing)} are missing")
        self.steps, self.epoch = int(state["steps"]), int(state["epoch"])
        self.epoch_open = bool(state.get("epoch_open", False))
        self._step_events = list(state.get("step_events", []))
        self.history, self.events = list(state["history"]), list(state["events"])
        self._pending = dict(state["method"])

    def restore(self) -> None:
        """Load a method state taken by :meth:`load_state_dict` into the method (once the optimizers hold
        their restored state); nothing when there is none."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.method.load_state_dict(pending)
