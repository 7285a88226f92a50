"""The reference training loop: drives any :class:`~neuroplastic.methods.base.CapacityMethod`.

One call to :func:`fit` trains, validates, selects a model on the validation split, tests it once, and
leaves a run folder behind (``history.jsonl``, ``events.jsonl``, ``snapshots/``, ``checkpoint.pt``; see
``docs/architecture.md``). With ``resume=True`` it continues from ``checkpoint.pt`` and ends with exactly
the weights and history an uninterrupted run gives (same seed, same device, deterministic kernels).

Loaders are any re-iterable of ``(x, y)`` batches with ``len()``; when they have ``set_epoch(epoch)``,
``state_dict()`` and ``load_state_dict()`` (as :class:`neuroplastic.data.TensorLoader` has) those are
called, so their shuffling order survives a resume.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from neuroplastic.train.records import JsonlLog, ScalarWriter, write_snapshot

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


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, criterion: Callable | None = None) -> tuple[float, float]:
    """Mean loss and accuracy (0-1) of ``model`` in eval mode over ``loader``; training mode restored.

    Eval mode makes NPN gates deterministic and BatchNorm use its running statistics.
    """
    criterion = criterion or nn.CrossEntropyLoss()
    device = _device_of(model)
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
    if n == 0:
        raise ValueError("evaluate() got an empty loader")
    return float(total_loss) / n, int(correct) / n


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
    select_after: int = 0,
    snapshot_every: int = 1,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
) -> FitResult:
    """Train ``model`` under ``method`` for ``epochs`` epochs and test the selected model once.

    Parameters
    ----------
    optimizers, schedules
        Every optimizer is stepped after each ``method.backward``; every schedule (stepped once per
        optimizer step, as :func:`neuroplastic.train.optim.build_schedule` makes them) right after.
    loaders
        ``{"train": ..., "val": ..., "test": ...}``; ``test`` is optional and is never used for selection.
    criterion
        ``criterion(output, target)``; default cross-entropy. The training closure follows the method's
        ``closure_kind``: for ``"per_example"`` / ``"indexed"`` methods (NPN with ``sampling="sample"`` or
        ``anti_fraction < 1``) the default is unreduced and a given criterion must return per-example losses.
    selection
        ``"best_val"``: the epoch with the highest validation accuracy (ties: lower validation loss,
        then the earlier epoch) among epochs ``>= select_after``; ``"last"``: the final epoch.
    select_after
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

    A method with an ``expand_every`` attribute that is not None (NPN's step-wise expansion) gets
    ``method.check_expansion(val_loss)`` after every ``expand_every``-th training step (counted over
    the whole run), with the mean loss over the first ``method.expand_val_batches`` validation batches
    (all when None); its events are logged with that step.
    callbacks
        Functions ``f(epoch, record)`` called after each epoch's history record is written (e.g. to draw
        pictures or drive a progress display); they must not change the model.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not 0 <= select_after < epochs:
        raise ValueError(f"select_after must be in [0, epochs={epochs}), got {select_after!r}")
    if snapshot_every < 0:
        raise ValueError(f"snapshot_every must be >= 0, got {snapshot_every}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    for key in ("train", "val"):
        if key not in loaders:
            raise ValueError(f"loaders needs a {key!r} entry, got {sorted(loaders)}")
    kind = getattr(method, "closure_kind", "mean")
    # methods whose closure returns per-example losses (NPN's sampling="sample", anti_fraction < 1) train
    # with an unreduced loss; a criterion given by the caller must then return per-example losses itself
    train_criterion = criterion or (nn.CrossEntropyLoss() if kind == "mean" else nn.CrossEntropyLoss(reduction="none"))
    criterion = criterion or nn.CrossEntropyLoss()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history_log, events_log = JsonlLog(run_dir / "history.jsonl"), JsonlLog(run_dir / "events.jsonl")
    ckpt_path = run_dir / CHECKPOINT

    state = {"epoch": -1, "step": 0, "wall": 0.0, "best": None, "history": [], "events": []}
    if resume and ckpt_path.exists():
        state = _restore(ckpt_path, model, method, optimizers, schedules, loaders, history_log, events_log)
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    else:
        if resume:
            log.info("no checkpoint in %s yet: starting from the first epoch", run_dir)
        for f in (history_log.path, events_log.path):
            f.write_text("")  # the contract's files exist from the start, empty

    writer = ScalarWriter(run_dir / "tensorboard", enabled=tensorboard)
    check = _expansion_check(model, method, loaders["val"], criterion)
    history, events = state["history"], state["events"]
    # one bar for the whole run (epochs, with the last epoch's loss, accuracies and live units); the
    # epoch's own bar runs below it
    run_bar = (tqdm(total=epochs, initial=state["epoch"] + 1, desc="run", unit="epoch", dynamic_ncols=True, position=0)
               if progress else None)
    try:
        for epoch in range(state["epoch"] + 1, epochs):
            t0 = time.perf_counter()
            lrs = [group["lr"] for opt in optimizers for group in opt.param_groups]
            train_loss, train_acc, state["step"], new_events = _train_epoch(
                model, method, optimizers, schedules, loaders["train"], train_criterion, epoch, epochs, state["step"],
                progress, check,
            )
            val_loss, val_acc = evaluate(model, loaders["val"], criterion)
            new_events += method.end_epoch(val_loss=val_loss) or []
            seconds = time.perf_counter() - t0
            state["wall"] += seconds
            record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                      "val_acc": val_acc, "lr": lrs, "seconds": seconds, **method.metrics()}
            history.append(record)
            history_log.append(record)
            if run_bar is not None:
                tqdm.write(_summary(record))
                run_bar.update(1)
                run_bar.set_postfix(_postfix(train_loss, train_acc, record) | {"val_acc": f"{val_acc:.4f}"},
                                    refresh=True)
            for event in new_events:
                event = {"epoch": epoch, "step": state["step"], **event}
                events.append(event)
                events_log.append(event)
            writer.add({k: v for k, v in record.items() if k != "epoch"}, epoch)
            for callback in callbacks:
                callback(epoch, record)
            if snapshot_every and ((epoch + 1) % snapshot_every == 0 or epoch == epochs - 1):
                snapshot = getattr(method, "snapshot", None)
                write_snapshot(run_dir / "snapshots", epoch, snapshot() if snapshot else {})
            if epoch >= select_after and (selection == "last" or _better(record, state["best"])):
                state["best"] = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss,
                                 "model": None if selection == "last" else _cpu_copy(model.state_dict())}
            state["epoch"] = epoch
            if (epoch + 1) % checkpoint_every == 0 or epoch == epochs - 1:
                _save(ckpt_path, state, model, method, optimizers, schedules, loaders)
    finally:
        writer.close()
        if run_bar is not None:
            run_bar.close()

    best = state["best"]
    if best["model"] is not None:
        model.load_state_dict(best["model"])
    test_loss = test_acc = None
    if loaders.get("test") is not None:
        test_loss, test_acc = evaluate(model, loaders["test"], criterion)
    return FitResult(history=history, selected_epoch=best["epoch"], val_loss=best["val_loss"],
                     val_accuracy=best["val_acc"], test_loss=test_loss, test_accuracy=test_acc,
                     wall_seconds=state["wall"], events=events)


def _expansion_check(model: nn.Module, method: CapacityMethod, val_loader: Any,
                     criterion: Callable) -> Callable[[int], list[dict[str, Any]]] | None:
    """For a method with ``expand_every``: a function of the global step that runs its expansion
    check every ``expand_every`` steps and returns the events (each with its ``step``); else None."""
    every = getattr(method, "expand_every", None)
    if every is None:
        return None
    n_batches = getattr(method, "expand_val_batches", None)

    def check(step: int) -> list[dict[str, Any]]:
        if step % every:
            return []
        batches = val_loader if n_batches is None else itertools.islice(val_loader, n_batches)
        val_loss, _ = evaluate(model, batches, criterion)
        return [{"step": step, **event} for event in method.check_expansion(val_loss)]

    return check


def _train_epoch(model, method, optimizers, schedules, loader, criterion, epoch, epochs, step, progress,
                 check=None):
    """One pass over ``loader``; returns (mean loss, accuracy, global step after the epoch, the events
    of the step-wise expansion checks ``check(step)``)."""
    events: list[dict[str, Any]] = []
    method.set_epoch(epoch)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    model.train()
    device = _device_of(model)
    # running sums stay on the device: no host synchronisation per step
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    arch = method.architecture() if progress else {}
    # no bar object at all without progress: creating one per epoch costs more than a tiny model's epoch
    bar = (tqdm(loader, desc=f"epoch {epoch} (0-{epochs - 1})", leave=False, dynamic_ncols=True, position=1)
           if progress else None)
    for i, (x, y) in enumerate(bar if bar is not None else loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        captured: dict[str, torch.Tensor] = {}

        def closure(index=None, x=x, y=y, captured=captured) -> torch.Tensor:
            if index is not None:  # a sub-batch (closure_kind "indexed"): NPN's anti_fraction
                return criterion(model(x[index]), y[index])
            out = model(x)
            captured.setdefault("out", out.detach())  # the first pass is the one that trains (NPN: ARM pass 1)
            return criterion(out, y)

        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss = method.backward(closure)
        for opt in optimizers:
            opt.step()
        for schedule in schedules:
            schedule.step()
        method.step()
        step += 1
        if check is not None:
            events += check(step)
        loss_sum += loss.detach().double() * len(y)
        correct += (captured["out"].argmax(1) == y).sum()
        n += len(y)
        if progress and (i % 20 == 0 or i == len(loader) - 1):
            bar.set_postfix(_postfix(float(loss_sum) / n, int(correct) / n, arch), refresh=False)
    if bar is not None:
        bar.close()
    if n == 0:
        raise ValueError("the training loader yielded no batches")
    return float(loss_sum) / n, int(correct) / n, step, events


def _postfix(loss: float, acc: float, arch: dict[str, Any]) -> dict[str, Any]:
    post = {"loss": f"{loss:.4f}", "acc": f"{acc:.4f}", "params": arch.get("params")}
    if isinstance(arch.get("arch"), list | tuple):
        post["units"] = "-".join(str(u) for u in arch["arch"])
    return post


def _summary(record: dict[str, Any]) -> str:
    text = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} | {record['seconds']:.1f}s")
    for key in ("k", "arch", "params"):
        if key in record:
            value = "-".join(map(str, record[key])) if isinstance(record[key], list) else record[key]
            text += f" | {key} {value}"
    return text


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    return (record["val_acc"], -record["val_loss"]) > (best["val_acc"], -best["val_loss"])


def _cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state_dict.items()}


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _loader_states(loaders: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.state_dict() for k, v in loaders.items() if v is not None and hasattr(v, "state_dict")}


def _save(path, state, model, method, optimizers, schedules, loaders) -> None:
    save_atomic({
        "epoch": state["epoch"], "step": state["step"], "wall": state["wall"], "best": state["best"],
        "n_history": len(state["history"]), "n_events": len(state["events"]),
        "model": model.state_dict(), "method": method.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers], "schedules": [s.state_dict() for s in schedules],
        "loaders": _loader_states(loaders), "rng": rng_state(),
    }, path)


def _restore(path, model, method, optimizers, schedules, loaders, history_log, events_log) -> dict[str, Any]:
    ckpt = load_checkpoint(path, map_location="cpu")  # tensors move to their devices on load
    if len(ckpt["optimizers"]) != len(optimizers) or len(ckpt["schedules"]) != len(schedules):
        raise ValueError(f"{path} holds {len(ckpt['optimizers'])} optimizers and {len(ckpt['schedules'])} "
                         f"schedules; this run has {len(optimizers)} and {len(schedules)}")
    # the method first: it may rebuild gates or masks that the model's state dict then fills
    method.load_state_dict(ckpt["method"])
    model.load_state_dict(ckpt["model"])
    for opt, s in zip(optimizers, ckpt["optimizers"], strict=True):
        opt.load_state_dict(s)
    for sch, s in zip(schedules, ckpt["schedules"], strict=True):
        sch.load_state_dict(s)
    for key, s in ckpt["loaders"].items():
        if loaders.get(key) is None:
            raise ValueError(f"{path} holds the state of a {key!r} loader that this run does not have")
        loaders[key].load_state_dict(s)
    set_rng_state(ckpt["rng"])
    return {"epoch": ckpt["epoch"], "step": ckpt["step"], "wall": ckpt["wall"], "best": ckpt["best"],
            "history": history_log.truncate(ckpt["n_history"]), "events": events_log.truncate(ckpt["n_events"])}
