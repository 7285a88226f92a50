"""Hugging Face ``transformers``: drive any capacity method from a ``Trainer`` (docs/integrations.md).

``CapacityTrainer`` is a ``transformers.Trainer`` that takes the method and does everything::

    trainer = CapacityTrainer(model=model, args=args, train_dataset=train, eval_dataset=val, method=method,
                              optimizers=(optimizer, schedule))
    trainer.train()                                   # trainer.train(resume_from_checkpoint=True) resumes

For methods whose backward pass is the plain one (the mask methods, LpSS), the callback alone works in a
plain ``Trainer``: ``Trainer(..., callbacks=[CapacityCallback(method)])``. Methods that own the backward
pass (``method.owns_backward``: NPN and PhysicalNPN make a second, ARM pass and add the L0 penalty) need
``CapacityTrainer``, whose ``training_step`` hands the step to ``method.backward`` with a closure over the
Trainer's own ``compute_loss``.

What the callback does, as :func:`neuroplastic.train.fit` does it: ``method.set_epoch`` in
``on_epoch_begin``; ``method.step()`` in ``on_optimizer_step`` (after the optimizer step, before the LR
scheduler step and ``zero_grad``: the gradients RigL grows by are still there); ``method.end_epoch`` with the
epoch's ``eval_loss`` (with ``eval_strategy="epoch"``; without validation at each epoch end it gets None),
before that epoch's checkpoint is written; the records in ``callback.history`` and ``callback.events``, and
the metrics logged as ``capacity/...`` (through ``Trainer.log`` in ``CapacityTrainer``, else appended to the
Trainer state's ``log_history``).

Checkpoints: the method's state is written into every checkpoint folder (``neuroplastic_method.pt``) and
loaded on resume once the Trainer has restored the optimizer. The Trainer loads the weights before it
builds the optimizer; a model whose shapes changed (PhysicalNPN) is resized to the checkpoint's widths by the
method's ``load_state_dict`` pre-hook as they load, and an optimizer the Trainer builds then holds the
resized parameters (one passed in ``optimizers=`` follows the resize: the callback binds it at once).

Several processes (``torchrun``): every process takes the same decisions (NPN's gate logits are kept out
of DDP's reduction, ``eval_loss`` is the Trainer's gathered one, step-wise expansion checks average over the
processes' shares). No gradient accumulation and no fp16 loss scaling for methods that own the backward
pass; methods that change the model's shapes (PhysicalNPN) train through ``CapacityTrainer``, which wraps the
model in DDP again after every resize.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from neuroplastic.integrations.driver import DriverView, MethodDriver, scalars, unwrap_optimizer
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.checkpoint import load_checkpoint, save_atomic
from neuroplastic.train.distributed import rewrap_like, sum_over_processes
from neuroplastic.train.epoch import step_expansion_check

try:
    import transformers
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("neuroplastic.integrations.huggingface needs transformers: pip install "
                      "'neuroplastic[huggingface]'") from err

__all__ = ["STATE_FILE", "CapacityCallback", "CapacityTrainer"]

#: the file in each checkpoint folder that holds the method's state
STATE_FILE = "neuroplastic_method.pt"


class CapacityCallback(DriverView, transformers.TrainerCallback):
    """Drives ``method`` through a ``transformers.Trainer`` run (see the module docstring).

    Parameters
    ----------
    method : the capacity method, built on the model the Trainer trains (or a module inside it).
    metric : the evaluation metric passed to ``method.end_epoch(val_loss=...)``.
    log_prefix : prefix of the logged method metrics.
    """

    def __init__(self, method: CapacityMethod, *, metric: str = "eval_loss", log_prefix: str = "capacity/") -> None:
        self.driver = MethodDriver(method)
        for name, value in (("metric", metric), ("log_prefix", log_prefix)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {value!r}")
        self.metric = metric
        self.log_prefix = log_prefix
        self.trainer: CapacityTrainer | None = None  # set by CapacityTrainer
        self.resume_dir: str | None = None  # the checkpoint folder a CapacityTrainer resumes from
        self._awaiting_eval = False

    # -- set-up ----------------------------------------------------------------------------------
    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                    optimizer: Any = None, **kwargs: Any) -> None:
        if model is not None:
            self.driver.attach(model, "Trainer's model")
        if self.method.resizes_model:
            # a checkpoint's weights may resize the model before the Trainer builds its optimizer; an
            # optimizer given to the Trainer follows from now on
            self.method.bind_optimizers([] if optimizer is None else [unwrap_optimizer(optimizer)])

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        method = self.method
        if model is not None:
            self.driver.attach(model, "Trainer's model")
        self.driver.check_world(args.world_size, rewraps=self.trainer is not None)  # CapacityTrainer wraps again
        if method.owns_backward:
            self._check_backward_setting(args)
        self.driver.bind([] if optimizer is None else [optimizer], [] if lr_scheduler is None else [lr_scheduler])
        if state.global_step > 0:  # resumed from a checkpoint: the method state is in its folder
            folder = self.resume_dir or os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            path = Path(folder) / STATE_FILE
            if not path.is_file():
                raise FileNotFoundError(f"resuming at step {state.global_step}, but {path} (the {method.name!r} "
                                        "method's state) does not exist; resume from a checkpoint written with "
                                        "CapacityCallback, with CapacityTrainer.train(resume_from_checkpoint=...)")
            self.driver.load_state_dict(load_checkpoint(path, map_location="cpu"))
            self.driver.restore()  # the Trainer restored the optimizer and scheduler already
        check = None if self.trainer is None else self.trainer.expansion_check()
        self.driver.expand_with(check, "train with CapacityTrainer and an eval_dataset")

    def _check_backward_setting(self, args: Any) -> None:
        method = self.method
        if self.trainer is None:
            raise ValueError(f"method {method.name!r} runs its own backward pass (owns_backward), which the "
                             "Trainer's training_step would replace: train with "
                             "neuroplastic.integrations.huggingface.CapacityTrainer(..., method=method)")
        problems = [(args.gradient_accumulation_steps != 1,
                     f"gradient_accumulation_steps={args.gradient_accumulation_steps} (must be 1)"),
                    (bool(args.fp16), "fp16=True (loss scaling; use bf16 or fp32)"),
                    (args.n_gpu > 1, f"n_gpu={args.n_gpu} (DataParallel; use one process per device)"),
                    (method.closure_kind != "mean", f"closure_kind={method.closure_kind!r} (the Trainer's "
                                                   "compute_loss gives the mean loss; use sampling='batch' and "
                                                   "anti_fraction=1)")]
        bad = [what for failed, what in problems if failed]
        if bad:
            raise ValueError(f"method {method.name!r} runs its own backward pass; CapacityTrainer does not "
                             f"support {', '.join(bad)}")

    # -- the loop --------------------------------------------------------------------------------
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is the fraction of epochs done; a resumed epoch starts part-way
        self.driver.start_epoch(int(math.floor((state.epoch or 0.0) + 1e-9)))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.driver.optimizer_stepped()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # with an evaluation at each epoch end the Trainer evaluates next, then saves: end the epoch there
        self._awaiting_eval = str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "epoch"
        if not self._awaiting_eval:
            self._end_epoch(None, state)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        if self._awaiting_eval and self.driver.epoch_open:
            self._awaiting_eval = False
            value = (metrics or {}).get(self.metric)
            self._end_epoch(value, state, logged=sorted(metrics or {}))

    def _end_epoch(self, val_loss: float | None, state: Any, logged: list[str] | None = None) -> None:
        hint = (f"evaluate at each epoch end (eval_strategy='epoch' with an eval_dataset); metric {self.metric!r}"
                + ("" if logged is None else f", evaluated: {logged}"))
        record = self.driver.end_epoch(val_loss, hint=hint)
        logs = scalars({k: v for k, v in record.items() if k not in ("epoch", "step", "val_loss")}, self.log_prefix)
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "epoch": state.epoch, "step": state.global_step})

    # -- checkpoints -----------------------------------------------------------------------------
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not args.should_save:  # the main process writes
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not folder.is_dir():
            raise FileNotFoundError(f"the Trainer's checkpoint folder {folder} does not exist: cannot save the "
                                    f"{self.method.name!r} method's state next to it")
        save_atomic(self.driver.state_dict(), folder / STATE_FILE)


class CapacityTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that drives ``method`` (keyword-only; every other argument is the
    Trainer's): it installs a :class:`CapacityCallback`, hands the backward pass to methods that own it,
    logs the method's metrics and resumes the method with ``train(resume_from_checkpoint=...)``.

    ``metric`` is the evaluation metric passed to ``method.end_epoch`` (``"eval_loss"``).
    """

    def __init__(self, *args: Any, method: CapacityMethod, metric: str = "eval_loss", **kwargs: Any) -> None:
        self.capacity = CapacityCallback(method, metric=metric)
        self.capacity.trainer = self
        self._wrapper: DistributedDataParallel | None = None  # built again after a resize
        self._wrapped_ids: tuple[int, ...] = ()  # the parameters it reduces
        callbacks = list(kwargs.pop("callbacks", None) or [])
        super().__init__(*args, callbacks=[*callbacks, self.capacity], **kwargs)

    @property
    def method(self) -> CapacityMethod:
        """The method this Trainer drives."""
        return self.capacity.method

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; a resumed run loads the method's state from the checkpoint folder it resumes
        from (``True``: the last one in ``output_dir``)."""
        folder = resume_from_checkpoint
        if folder is True:
            folder = get_last_checkpoint(self.args.output_dir)
        self.capacity.resume_dir = folder if isinstance(folder, str | os.PathLike) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The Trainer's step, or, for a method that owns the backward pass, ``method.backward`` with a
        closure over ``compute_loss`` on this batch (NPN evaluates it twice: the ARM passes)."""
        method = self.method
        if not method.owns_backward:
            return super().training_step(model, inputs, num_items_in_batch)
        model = self._current_wrapper(model)
        model.train()
        if callable(getattr(self.optimizer, "train", None)):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)

        def closure() -> torch.Tensor:
            with self.compute_loss_context_manager():
                return self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)

        return method.backward(closure)

    def _current_wrapper(self, model: nn.Module) -> nn.Module:
        """The module to train through: the Trainer's DDP wrapper, or, once the method replaced parameters
        (PhysicalNPN's resizes), a new one with its settings (the Trainer's loop keeps handing the old one,
        which would go on reducing the old parameters)."""
        if not (self.method.resizes_model and isinstance(model, DistributedDataParallel)):
            return model
        wrapper = self._wrapper or model
        ids = tuple(id(p) for p in wrapper.module.parameters())
        if self._wrapped_ids and ids != self._wrapped_ids:
            old, wrapper = wrapper, rewrap_like(wrapper, wrapper.module)
            models = self.accelerator._models  # the accelerator's list of prepared models: the new one, not the old
            self.accelerator._models = [wrapper if m is old else m for m in models]
            self._wrapper = self.model_wrapped = wrapper
        self._wrapped_ids = ids
        return wrapper

    def expansion_check(self) -> Any:
        """:func:`~neuroplastic.train.epoch.step_expansion_check` on the first ``method.expand_val_batches``
        batches of the evaluation data (``compute_loss`` in eval mode, weighted by batch size); None when
        the method has no ``expand_every`` or there is no ``eval_dataset``."""
        method = self.method
        if method.expand_every is None or self.eval_dataset is None:
            return None

        @torch.no_grad()
        def val_loss() -> float:
            loader = self.get_eval_dataloader()
            n = method.expand_val_batches
            batches = loader if n is None else itertools.islice(loader, n)
            was_training = self.model.training
            self.model.eval()
            total, count = 0.0, 0
            try:
                for inputs in batches:
                    inputs = self._prepare_inputs(inputs)
                    size = transformers.trainer_pt_utils.find_batch_size(inputs)
                    with self.compute_loss_context_manager():
                        total += float(self.compute_loss(self.model, inputs)) * size
                    count += size
            finally:
                self.model.train(was_training)
            total, count = sum_over_processes(total, count)  # each process evaluated its share
            if count == 0:
                raise ValueError("the evaluation dataset yielded no batches for the expansion check")
            return total / count

        return step_expansion_check(method, val_loss)
