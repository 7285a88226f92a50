"""The reference training loop: drives any :class:`~neuroplastic.methods.base.CapacityMethod`.

One call to :func:`fit` trains, validates, selects a model on the validation split, tests it once, and
leaves a run folder behind (``history.jsonl``, ``events.jsonl``, ``snapshots/``, ``checkpoint.pt``; see
``docs/architecture.md``). With ``resume=True`` it continues from ``checkpoint.pt`` and ends with exactly
the weights and history an uninterrupted run gives (same seed, same device, deterministic kernels).

Its parts are small modules of their own, for loops that are not this one: :mod:`~neuroplastic.train.step`
(one step as the method protocol says), :mod:`~neuroplastic.train.epoch` (one epoch),
:mod:`~neuroplastic.train.evaluate`, :mod:`~neuroplastic.train.checkpoint` (the run state, atomically),
:mod:`~neuroplastic.train.records` (the run folder's files) and :mod:`~neuroplastic.train.progress`.

Loaders are any re-iterable of ``(x, y)`` batches with ``len()``; when they have ``set_epoch(epoch)``,
``state_dict()`` and ``load_state_dict()`` (as :class:`neuroplastic.data.TensorLoader` has) those are
called, so their shuffling order survives a resume.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from neuroplastic.checks import check_choice, check_int
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.checkpoint import RunState, restore_run, save_run
from neuroplastic.train.distributed import broadcast_buffers
from neuroplastic.train.epoch import expansion_check, train_epoch
from neuroplastic.train.evaluate import evaluate
from neuroplastic.train.progress import RunProgress
from neuroplastic.train.records import RunRecords
from neuroplastic.train.step import Wrapped, training_criterion

log = logging.getLogger(__name__)

SELECTIONS = ("best_val", "last")
CHECKPOINT = "checkpoint.pt"


@dataclass
class FitResult:
    """What :func:`fit` returns: the history and the selected model's validation and test scores."""

    history: list[dict[str, Any]]
    selected_epoch: int
    val_loss: float
    val_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    wall_seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)


def fit(
    model: nn.Module,
    method: CapacityMethod,
    optimizers: Sequence[Optimizer],
    schedules: Sequence[Any],
    loaders: Mapping[str, Any],
    *,
    epochs: int,
    run_dir: str | Path,
    criterion: Callable | None = None,
    selection: str = "best_val",
    select_from_epoch: int = 0,
    snapshot_every: int = 1,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    main_process: bool = True,
) -> FitResult:
    """Train ``model`` under ``method`` for ``epochs`` epochs and test the selected model once.

    Parameters
    ----------
    optimizers, schedules
        Every optimizer is stepped after each ``method.backward``; every schedule (stepped once per
        optimizer step, as :func:`neuroplastic.train.optim.build_schedule` makes them) right after.
        Bind them to the method first (``method.bind_optimizers(optimizers, schedules)``).
    loaders
        ``{"train": ..., "val": ..., "test": ...}``; ``test`` is optional and is never used for selection.
    criterion
        ``criterion(output, target)``; default cross-entropy. The training closure follows the method's
        ``closure_kind``: for ``"per_example"`` / ``"indexed"`` methods (NPN with ``sampling="sample"`` or
        ``anti_fraction < 1``) the default is unreduced and a given criterion must return per-example losses.
    selection
        ``"best_val"``: the epoch with the highest validation accuracy (ties: lower validation loss,
        then the earlier epoch) among epochs ``>= select_from_epoch``; ``"last"``: the final epoch.
    select_from_epoch
        First epoch eligible for selection (e.g. NPN's hardening stage, where the architecture is final).
    snapshot_every
        ``method.snapshot()`` is written after every ``snapshot_every``-th epoch and after the last one;
        0 disables snapshots.
    checkpoint_every
        ``checkpoint.pt`` is written after every ``checkpoint_every``-th epoch and after the last one
        (a resume continues from the last one written; the logs are cut back to it). Writing it costs
        about 10 ms, more than a whole epoch of a tiny model (the moons demo writes one every 500).
    resume
        Continue from ``run_dir/checkpoint.pt`` (a fresh start when there is none yet).
    callbacks
        Functions ``f(epoch, record)`` called after each epoch's history record is written (e.g. to draw
        pictures or drive a progress display); they must not change the model.
    wrap, main_process
        Data-parallel training (:mod:`neuroplastic.train.distributed`): ``wrap(model)`` builds the module
        whose forward trains (``ddp_wrap``), again after the method replaced the model's parameters;
        evaluations use the model itself with rank 0's buffers. Only the main process writes the run
        folder; the others read a checkpoint to resume.

    A method with ``expand_every`` gets ``method.check_expansion(val_loss)`` every ``expand_every``
    training steps (:func:`~neuroplastic.train.epoch.expansion_check`). A loss that is not finite stops
    the run with :class:`~neuroplastic.train.epoch.NonFiniteLoss`, and a run folder that cannot be
    written with an ``OSError`` naming the epoch; either way the last checkpoint is kept.
    """
    check_choice("selection", selection, SELECTIONS)
    check_int("epochs", epochs, low=1)
    if not 0 <= check_int("select_from_epoch", select_from_epoch) < epochs:
        raise ValueError(f"select_from_epoch must be in [0, epochs={epochs}), got {select_from_epoch!r}")
    check_int("snapshot_every", snapshot_every, low=0)
    check_int("checkpoint_every", checkpoint_every, low=1)
    for key in ("train", "val"):
        if key not in loaders:
            raise ValueError(f"loaders needs a {key!r} entry, got {sorted(loaders)}")
    train_criterion = training_criterion(method.closure_kind, criterion)
    criterion = criterion or nn.CrossEntropyLoss()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    try:
        if main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
        records = RunRecords(run_dir, tensorboard=tensorboard, enabled=main_process)
        if resume and ckpt_path.exists():
            state, n_history, n_events = restore_run(ckpt_path, model, method, optimizers, schedules, loaders)
            state.history, state.events = records.resume(n_history, n_events)
            log.info("resuming %s after epoch %d", run_dir, state.epoch)
        else:
            if resume:
                log.info("no checkpoint in %s yet: starting from the first epoch", run_dir)
            state = RunState()
            records.start()
    except OSError as err:
        raise OSError(f"cannot write the run folder {run_dir}: {err}") from err

    check = expansion_check(model, method, loaders["val"], criterion)
    display = RunProgress(epochs, state.epoch + 1, enabled=progress and main_process)
    forward = Wrapped(model, wrap) if wrap is not None else None
    saved = state.epoch  # the epoch of the last checkpoint written
    try:
        for epoch in range(state.epoch + 1, epochs):
            t0 = time.perf_counter()
            lrs = [group["lr"] for opt in optimizers for group in opt.param_groups]
            bar = display.epoch_bar(epoch, method.architecture()) if progress and main_process else None
            result = train_epoch(model, method, optimizers, schedules, loaders["train"], train_criterion,
                                 epoch=epoch, step=state.step, bar=bar, check=check, forward=forward)
            state.step = result.step
            broadcast_buffers(model)
            val_loss, val_acc = evaluate(model, loaders["val"], criterion)
            new_events = result.events + (method.end_epoch(val_loss=val_loss) or [])
            seconds = time.perf_counter() - t0
            state.wall += seconds
            record = {"epoch": epoch, "train_loss": result.loss, "train_acc": result.accuracy, "val_loss": val_loss,
                      "val_acc": val_acc, "lr": lrs, "seconds": seconds, **method.metrics()}
            events = [{"epoch": epoch, "step": state.step, **event} for event in new_events]
            state.history.append(record)
            state.events += events
            if epoch >= select_from_epoch and (selection == "last" or _better(record, state.best)):
                state.best = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss,
                              "model": None if selection == "last" else _cpu_copy(model.state_dict())}
            state.epoch = epoch
            with _writing(run_dir, epoch, state.step, saved):
                records.add_epoch(record, events)
            display.epoch_done(record)
            for callback in callbacks:
                callback(epoch, record)
            with _writing(run_dir, epoch, state.step, saved):
                if snapshot_every and ((epoch + 1) % snapshot_every == 0 or epoch == epochs - 1):
                    records.add_snapshot(epoch, method.snapshot())
                if main_process and ((epoch + 1) % checkpoint_every == 0 or epoch == epochs - 1):
                    save_run(ckpt_path, state, model, method, optimizers, schedules, loaders)
                    saved = epoch
    finally:
        records.close()
        display.close()

    best = state.best
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    test_loss = test_acc = None
    if loaders.get("test") is not None:
        test_loss, test_acc = evaluate(model, loaders["test"], criterion)
    return FitResult(history=state.history, selected_epoch=best["epoch"], val_loss=best["val_loss"],
                     val_accuracy=best["val_acc"], test_loss=test_loss, test_accuracy=test_acc,
                     wall_seconds=state.wall, events=state.events)


@contextmanager
def _writing(run_dir: Path, epoch: int, step: int, saved: int) -> Iterator[None]:
    """Turn an ``OSError`` while writing the run folder (unwritable, disk full) into one that says which
    epoch and step it was and which checkpoint is kept."""
    try:
        yield
    except OSError as err:
        kept = f"the checkpoint of epoch {saved} is kept" if saved >= 0 else "no checkpoint was written yet"
        raise OSError(f"cannot write the run folder {run_dir} after epoch {epoch} (step {step}): {err}; "
                      f"{kept}") from err


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    return (record["val_acc"], -record["val_loss"]) > (best["val_acc"], -best["val_loss"])


def _cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state_dict.items()}
