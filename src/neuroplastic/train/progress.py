"""What a run shows while it trains: one bar for the whole run, one for the epoch, a line per epoch.

Epochs are counted from 0 everywhere, on screen as in ``history.jsonl``, ``events.jsonl`` and the pictures
(``epoch 3 (0-19)``).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

#: steps between two updates of the epoch bar's numbers (each update reads the device)
BAR_EVERY = 20


class EpochBar:
    """The bar of one epoch, with the running loss, accuracy and the live architecture."""

    def __init__(self, epoch: int, epochs: int, arch: dict[str, Any]) -> None:
        self.desc = f"epoch {epoch} (0-{epochs - 1})"
        self.arch = arch
        self.bar: tqdm | None = None

    def wrap(self, loader: Any) -> Any:
        """Iterate ``loader`` under the bar."""
        self.bar = tqdm(loader, desc=self.desc, leave=False, dynamic_ncols=True, position=1)
        return self.bar

    def update(self, i: int, loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """Refresh the numbers every :data:`BAR_EVERY` batches and at the last one."""
        if self.bar is not None and (i % BAR_EVERY == 0 or i == len(self.bar) - 1):
            self.bar.set_postfix(postfix(float(loss_sum) / n, int(correct) / n, self.arch), refresh=False)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()


class RunProgress:
    """The whole run's bar and its per-epoch summary lines (nothing at all when disabled)."""

    def __init__(self, epochs: int, done: int, enabled: bool = True) -> None:
        self.epochs = epochs
        self.bar = (tqdm(total=epochs, initial=done, desc="run", unit="epoch", dynamic_ncols=True, position=0)
                    if enabled else None)

    def epoch_bar(self, epoch: int, arch: dict[str, Any]) -> EpochBar | None:
        """The bar for ``epoch`` (None when disabled: creating one costs more than a tiny model's epoch)."""
        return EpochBar(epoch, self.epochs, arch) if self.bar is not None else None

    def epoch_done(self, record: dict[str, Any]) -> None:
        """Print the epoch's summary line and advance the run bar."""
        if self.bar is None:
            return
        tqdm.write(summary(record, self.epochs))
        self.bar.update(1)
        self.bar.set_postfix(postfix(record["train_loss"], record["train_acc"], record)
                             | {"val_acc": f"{record['val_acc']:.4f}"}, refresh=True)

    def close(self) -> None:
        """Close the run bar."""
        if self.bar is not None:
            self.bar.close()


def postfix(loss: float, acc: float, arch: dict[str, Any]) -> dict[str, Any]:
    """Loss, accuracy, live weights and (for unit methods) units per layer, for a bar."""
    post = {"loss": f"{loss:.4f}", "acc": f"{acc:.4f}", "params": arch.get("params")}
    if isinstance(arch.get("arch"), list | tuple):
        post["units"] = "-".join(str(u) for u in arch["arch"])
    return post


def summary(record: dict[str, Any], epochs: int) -> str:
    """The one-line summary of an epoch's history record."""
    text = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.4f} | val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} | "
            f"{record['seconds']:.1f}s")
    for key in ("k", "arch", "params"):
        if key in record:
            value = "-".join(map(str, record[key])) if isinstance(record[key], list) else record[key]
            text += f" | {key} {value}"
    return text
