"""Lightning: drive any capacity method from a ``lightning.Trainer`` (docs/integrations.md).

For methods whose backward pass is the plain one (the mask methods, LpSS, ``CapacityMethod``), a normal
``LightningModule`` with automatic optimization and one callback is enough::

    trainer = L.Trainer(max_epochs=epochs, callbacks=[CapacityCallback(method)])

For methods that own the backward pass (``method.owns_backward``: NPN and PhysicalNPN make a second, ARM
pass and add the L0 penalty; HardConcrete adds its penalty), the module hands each step to the method::

    class Classifier(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.automatic_optimization = False     # the method runs the backward pass

        def training_step(self, batch, batch_idx):
            x, y = batch
            return capacity_step(self, x, y)         # zero_grad, method.backward, optimizer and LR steps

``capacity_step`` works for every method; it is :func:`neuroplastic.train.step.train_step` on the
module's optimizers and per-step LR schedulers.

What the callback does, as :func:`neuroplastic.train.fit` does it: ``method.set_epoch`` when a training
epoch starts; ``method.step()`` after every optimizer step; ``method.end_epoch(val_loss=...)`` after the
epoch's validation (the logged metric ``monitor``), before any checkpoint of that epoch is written; the
step-wise expansion checks of ``expand_every`` on the validation loader; the method's architecture, metrics and the
epoch's event count logged through ``pl_module.log`` (``capacity/params``, ``capacity/arch/<layer>``, ...);
the records in ``callback.history`` and ``callback.events``.

Checkpoints: the method's state travels in the checkpoint as the callback's state and is loaded into the
method once Lightning has restored the optimizers. Lightning loads the weights before the callbacks and the
optimizers; a model whose shapes changed (PhysicalNPN) is resized to the checkpoint's widths by the
method's own ``load_state_dict`` pre-hook as the weights load, and ``configure_optimizers`` (which Lightning
calls after that) builds the optimizers on the resized parameters. So build optimizers in
``configure_optimizers`` from ``self.parameters()``; methods that take the optimizer at construction
(LpSS, IterativePruning) build it in ``__init__`` and return it there.

Several processes (``strategy="ddp"``): every process takes the same decisions. The monitored validation
loss and step-wise expansion checks are averaged over the processes' shares of the validation data, NPN's
gate logits stay out of DDP's reduction (their gradient is NPN's own estimate, averaged over processes),
``capacity_step`` prepares DDP's reduction for the pass the method back-propagates, and the module is
wrapped again after a resize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from neuroplastic.integrations.driver import DriverView, MethodDriver, scalars
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.epoch import expansion_check
from neuroplastic.train.step import train_step, training_criterion

try:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("neuroplastic.integrations.lightning needs Lightning: pip install 'neuroplastic[lightning]'"
                      ) from err

__all__ = ["CapacityCallback", "capacity_step"]


class CapacityCallback(DriverView, pl.Callback):
    """Drives ``method`` through a ``lightning.Trainer`` run (see the module docstring).

    Parameters
    ----------
    method : the capacity method, built on the network the ``LightningModule`` trains.
    monitor : the logged validation metric passed to ``method.end_epoch(val_loss=...)`` (None when not
        logged; NPN in expand mode needs it).
    criterion : ``criterion(output, target)`` for step-wise expansion checks (``expand_every``) on the
        validation loader, and for :func:`capacity_step`'s default; cross-entropy when None.
    log_prefix : prefix of the logged method metrics.
    """

    def __init__(self, method: CapacityMethod, *, monitor: str | None = "val_loss",
                 criterion: Callable | None = None, log_prefix: str = "capacity/") -> None:
        super().__init__()
        self.driver = MethodDriver(method)
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged metric or None, got {monitor!r}")
        if not isinstance(log_prefix, str):
            raise TypeError(f"log_prefix must be a string, got {log_prefix!r}")
        self.monitor = monitor
        self.criterion = criterion
        self.log_prefix = log_prefix
        self._global_step = 0  # trainer.global_step when the batch started
        self._stepped_by_helper = False  # capacity_step ran this batch's step (and method.step())
        self._step_schedules: list[Any] | None = None
        self._wrapped_ids: tuple[int, ...] = ()  # the parameters the DDP wrapper was built on

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.driver.attach(pl_module, "LightningModule")
        if stage == "fit":
            self.driver.check_world(trainer.world_size, rewraps=isinstance(trainer.strategy, DDPStrategy))
        if self.method.resizes_model:
            # a checkpoint's weights may resize the model before configure_optimizers has run
            self.method.bind_optimizers([])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.method.owns_backward and pl_module.automatic_optimization:
            raise ValueError(f"method {self.method.name!r} runs its own backward pass (owns_backward), which "
                             "Lightning's automatic optimization would replace: set self.automatic_optimization = "
                             "False in the LightningModule and return "
                             "neuroplastic.integrations.lightning.capacity_step(self, x, y) from training_step")
        configs = trainer.lr_scheduler_configs
        self.driver.bind(trainer.optimizers, [c.scheduler for c in configs])
        odd = [c for c in configs if c.interval != "step" or c.frequency != 1 or c.reduce_on_plateau]
        self._step_schedules = None if odd else [c.scheduler for c in configs]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.restore()  # Lightning restored the optimizers after on_fit_start
        check = self._expansion_check(trainer, pl_module) if self.method.expand_every is not None else None
        self.driver.expand_with(check, "")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.restore()  # trainer.validate(ckpt_path=...): no optimizers to wait for
        self._rewrap(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.restore()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.restore()

    # -- the loop --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.start_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._global_step = trainer.global_step
        self._stepped_by_helper = False
        self._rewrap(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._stepped_by_helper or trainer.global_step == self._global_step:
            return  # capacity_step did it all, or gradients are still accumulating
        if self.method.owns_backward:
            raise RuntimeError(f"method {self.method.name!r} runs its own backward pass, but this batch's optimizer "
                               "step ran without it: return neuroplastic.integrations.lightning.capacity_step(self, "
                               "x, y) from training_step")
        self.driver.optimizer_stepped()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the epoch's last validation and before ModelCheckpoint (which runs after every other callback)
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.driver.epoch_open:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch or progress.current.ready == trainer.num_training_batches:
            self._end_epoch(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.driver.epoch_open:  # no validation at the end of this epoch
            self._end_epoch(trainer)
        record = self.driver.history[-1] if self.driver.history else None
        if record is not None and record["epoch"] == trainer.current_epoch:
            pl_module.log_dict(scalars({k: v for k, v in record.items() if k not in ("epoch", "step", "val_loss")},
                                       self.log_prefix), on_step=False, on_epoch=True,
                               sync_dist=trainer.world_size > 1)  # the same on every process

    def _rewrap(self, trainer: pl.Trainer) -> None:
        """Wrap the LightningModule in DistributedDataParallel again when the method replaced parameters
        since the wrapper was built (PhysicalNPN's resizes): the old wrapper reduces the old parameters."""
        if not self.method.resizes_model or not isinstance(trainer.strategy.model, DistributedDataParallel):
            return
        ids = tuple(id(p) for p in trainer.strategy.model.module.parameters())
        if self._wrapped_ids and ids != self._wrapped_ids:
            trainer.strategy.model = trainer.strategy._setup_model(trainer.strategy.model.module)
        self._wrapped_ids = ids

    def _end_epoch(self, trainer: pl.Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor) if self.monitor is not None else None
        if value is not None and trainer.world_size > 1:  # each process validated its share: decide on the mean
            value = trainer.strategy.reduce(torch.as_tensor(value, dtype=torch.float64), reduce_op="mean")
        hint = (f"log it as {self.monitor!r} in validation_step, or pass CapacityCallback(monitor=...); logged: "
                f"{sorted(trainer.callback_metrics)}")
        self.driver.end_epoch(None if value is None else float(value), hint=hint)

    def _expansion_check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Callable[[int], list]:
        """:func:`~neuroplastic.train.epoch.expansion_check` on the Trainer's validation dataloader, built at
        the first check (Lightning loads that dataloader when it first validates)."""
        built: list[Callable[[int], list]] = []

        def check(step: int) -> list:
            if not built:
                loaders = trainer.val_dataloaders
                if loaders is None:
                    trainer.fit_loop.epoch_loop.val_loop.setup_data()
                    loaders = trainer.val_dataloaders
                if isinstance(loaders, list | tuple):
                    loaders = loaders[0] if len(loaders) == 1 else None
                if loaders is None:
                    raise ValueError(f"method {self.method.name!r} checks for expansion every expand_every="
                                     f"{self.method.expand_every} steps on the validation loss: give the Trainer "
                                     "one validation dataloader")
                criterion = self.criterion or torch.nn.CrossEntropyLoss()
                built.append(expansion_check(pl_module, self.method, loaders, criterion,
                                             all_processes=trainer.world_size > 1))  # a shard per process
            return built[0](step)

        return check

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.driver.load_state_dict(state_dict)


def capacity_step(module: pl.LightningModule, x: torch.Tensor, y: torch.Tensor,
                  criterion: Callable | None = None) -> torch.Tensor:
    """One whole training step of ``module`` under the :class:`CapacityCallback`'s method, for
    ``training_step`` with manual optimization: zero the gradients, ``method.backward`` (NPN's two ARM
    passes and penalty), step every optimizer and per-step LR scheduler, ``method.step()``
    (:func:`neuroplastic.train.step.train_step`). Returns the detached training loss.

    ``criterion(module(x), y)`` is the loss (cross-entropy when None, or the callback's ``criterion``);
    for methods whose ``closure_kind`` is ``"per_example"`` or ``"indexed"`` it must return one loss per
    example (the default does).
    """
    trainer = module.trainer
    if module.automatic_optimization:
        raise ValueError("capacity_step runs the whole optimizer step: set self.automatic_optimization = False in "
                         "the LightningModule (with automatic optimization return the loss instead)")
    callbacks = [cb for cb in trainer.callbacks if isinstance(cb, CapacityCallback)]
    if len(callbacks) != 1:
        raise ValueError(f"capacity_step needs exactly one CapacityCallback among the Trainer's callbacks, "
                         f"found {len(callbacks)}")
    callback = callbacks[0]
    if callback._step_schedules is None:
        raise ValueError("capacity_step steps the LR schedulers after every optimizer step; configure_optimizers "
                         "must return schedulers with interval='step' and frequency=1 (not ReduceLROnPlateau); "
                         "got " + ", ".join(f"{type(c.scheduler).__name__}(interval={c.interval!r}, "
                                            f"frequency={c.frequency})" for c in trainer.lr_scheduler_configs))
    method = callback.method
    optimizers = module.optimizers()
    optimizers = list(optimizers) if isinstance(optimizers, list | tuple) else [optimizers]
    loss_fn = training_criterion(method.closure_kind, criterion or callback.criterion)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        out = module(inputs)
        if torch.is_grad_enabled():  # a pass the method back-propagates: under DDP the reducer must expect it,
            trainer.strategy.pre_backward(out)  # as manual_backward would have it (no-op on one process)
        return out

    loss, _ = train_step(module, method, optimizers, callback._step_schedules, x, y, loss_fn, forward=forward)
    callback._stepped_by_helper = True
    callback.driver.optimizer_stepped(method_step=False)  # train_step ran method.step()
    return loss
