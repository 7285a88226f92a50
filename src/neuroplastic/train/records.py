"""What a run leaves on disk while it trains: history lines, capacity events, snapshots, TensorBoard.

Every file is append-only during a run; on resume each JSONL file is cut back to the number of lines the
checkpoint knew about, so that lines written after the last checkpoint (by an epoch that was killed
before its checkpoint landed) are not duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """Turn tensors, NumPy scalars and arrays, tuples and non-finite floats into plain JSON values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 and value.dim() == 0 else to_jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    raise TypeError(f"cannot write a {type(value).__name__} into a JSON record: {value!r}")


class JsonlLog:
    """An append-only JSON-lines file (one object per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All records in the file (an empty list when it does not exist)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, n_lines: int) -> list[dict[str, Any]]:
        """Keep only the first ``n_lines`` records; return them."""
        records = self.read()
        if len(records) < n_lines:
            raise ValueError(f"{self.path} has {len(records)} records but the checkpoint expects {n_lines}")
        records = records[:n_lines]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        return records


def write_snapshot(folder: str | Path, epoch: int, arrays: dict[str, Any]) -> Path | None:
    """Save ``arrays`` as float16 (integers kept) to ``folder/epoch_XXXXX.npz``; ``None`` when empty.

    Uncompressed ``np.savez``: the arrays are small (gate probabilities, a sample of weights), and
    compression would cost more time than it saves disk.
    """
    if not arrays:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, value in arrays.items():
        a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        out[key] = a.astype(np.float16) if np.issubdtype(a.dtype, np.floating) else a
    path = folder / f"epoch_{epoch:05d}.npz"
    np.savez(path, **out)
    return path


class ScalarWriter:
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports; otherwise nothing.

    TensorBoard is an optional extra (``pip install neuroplastic[tensorboard]``): without it a run says
    so once at debug level only, since nothing is wrong (``history.jsonl`` holds the same numbers).
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is an optional dependency
            log.debug("no TensorBoard scalars (%s): the optional extra neuroplastic[tensorboard] writes them",
                      err)
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def add(self, record: dict[str, Any], step: int) -> None:
        """Write every numeric scalar of ``record`` (nested dicts flattened with ``/``)."""
        if self.writer is None:
            return
        for key, value in _flat_scalars(record):
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Close the underlying writer, if any."""
        if self.writer is not None:
            self.writer.close()


def _flat_scalars(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    out = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flat_scalars(value, name + "/"))
        elif isinstance(value, list | tuple):
            out.extend((f"{name}/{i}", float(v)) for i, v in enumerate(value) if isinstance(v, numbers.Real))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out.append((name, float(value)))
    return out


class RunRecords:
    """The record files of a run folder: ``history.jsonl``, ``events.jsonl``, ``snapshots/`` and the
    optional TensorBoard scalars (see ``docs/architecture.md``)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.history = JsonlLog(self.run_dir / "history.jsonl")
        self.events = JsonlLog(self.run_dir / "events.jsonl")
        self.enabled = enabled  # False: a process that only trains alongside the one writing (DDP)
        self.writer = ScalarWriter(self.run_dir / "tensorboard", enabled=tensorboard and enabled)

    def start(self) -> None:
        """A fresh run: the contract's files exist from the start, empty."""
        if self.enabled:
            for log_file in (self.history, self.events):
                log_file.path.write_text("")

    def resume(self, n_history: int, n_events: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A resumed run: cut the files back to what the checkpoint knew; return their records."""
        if not self.enabled:
            return self.history.read()[:n_history], self.events.read()[:n_events]
        return self.history.truncate(n_history), self.events.truncate(n_events)

    def add_epoch(self, record: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Append an epoch's history record and its events; add its scalars to TensorBoard."""
        if not self.enabled:
            return
        self.history.append(record)
        for event in events:
            self.events.append(event)
        self.writer.add({k: v for k, v in record.items() if k != "epoch"}, record["epoch"])

    def add_snapshot(self, epoch: int, arrays: dict[str, Any]) -> None:
        """Write the method's snapshot of ``epoch`` (nothing when it is empty)."""
        if self.enabled:
            write_snapshot(self.run_dir / "snapshots", epoch, arrays)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        self.writer.close()
