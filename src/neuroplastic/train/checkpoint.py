"""Atomic checkpoints and the random-number-generator states a bit-exact resume needs.

A checkpoint is written atomically (:mod:`neuroplastic.files`): a crash (or a full disk) during the
write leaves the previous checkpoint intact, never a truncated file.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroplastic.files import write_atomic


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CUDA ones too when present)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global generator is what user code may draw from)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators with one integer."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically (:func:`neuroplastic.files.write_atomic`): if serialising or
    writing fails, ``path`` is left untouched."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (our own files: full unpickling is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


@dataclass
class RunState:
    """Where a run stands after its last finished epoch: what a checkpoint holds besides the tensors.

    ``best`` is the selected epoch so far (``epoch``, ``val_acc``, ``val_loss`` and, for ``best_val``
    selection, a CPU copy of the model's state dict); ``history`` and ``events`` are the records so far.
    """

    epoch: int = -1
    step: int = 0
    wall: float = 0.0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def save_run(path: str | os.PathLike, state: RunState, model: nn.Module, method: Any,
             optimizers: Sequence[torch.optim.Optimizer], schedules: Sequence[Any],
             loaders: Mapping[str, Any]) -> None:
    """Write everything a bit-exact resume needs, atomically (the record files are kept apart: only
    their lengths are saved, and a resume cuts them back to those lengths)."""
    save_atomic({
        "epoch": state.epoch, "step": state.step, "wall": state.wall, "best": state.best,
        "n_history": len(state.history), "n_events": len(state.events),
        "model": model.state_dict(), "method": method.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers], "schedules": [s.state_dict() for s in schedules],
        "loaders": {k: v.state_dict() for k, v in loaders.items() if v is not None and hasattr(v, "state_dict")},
        "rng": rng_state(),
    }, path)


def restore_run(path: str | os.PathLike, model: nn.Module, method: Any, optimizers: Sequence[torch.optim.Optimizer],
                schedules: Sequence[Any], loaders: Mapping[str, Any]) -> tuple[RunState, int, int]:
    """Load a checkpoint written by :func:`save_run` into the run's objects; returns the run state
    without its records and the number of history and event records it knew about."""
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
    state = RunState(epoch=ckpt["epoch"], step=ckpt["step"], wall=ckpt["wall"], best=ckpt["best"])
    return state, ckpt["n_history"], ckpt["n_events"]
