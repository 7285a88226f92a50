"""What the Hugging Face integration tests share with the script that runs them under torchrun: a network
with the Trainer's calling convention, the examples, the Trainer's arguments and one training run."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn

import integration_setups as S
from neuroplastic.integrations.huggingface import CapacityCallback, CapacityTrainer


class Classify(nn.Module):
    """A network with the Trainer's calling convention: ``model(x=..., labels=...)`` gives the loss."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"logits": logits} if labels is None else {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Examples(torch.utils.data.Dataset):
    """``{"x": image, "labels": digit}`` examples, as the Trainer's default collator stacks them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def arguments(out: Path, epochs: int = S.EPOCHS, **kwargs) -> transformers.TrainingArguments:
    """The shared batches in order, validation at each epoch end, no clipping, no logging to services."""
    return transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, train_sampling_strategy="sequential", logging_strategy="no",
        report_to="none", max_grad_norm=0.0, use_cpu=True, disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, **{"eval_strategy": "epoch", "save_strategy": "no",
                                     "per_device_train_batch_size": S.BATCH, "per_device_eval_batch_size": S.BATCH,
                                     **kwargs})


def train_hf(s: S.Setup, out: Path, epochs: int = S.EPOCHS, *, resume=None,
             **kwargs) -> tuple[CapacityCallback, transformers.Trainer]:
    """Train ``s`` through ``CapacityTrainer`` (methods that own the backward pass) or a plain Trainer with
    the callback (the others); returns the callback and the Trainer."""
    data = S.mnist()
    common = {"model": Classify(s.net), "args": arguments(out, epochs, **kwargs),
              "train_dataset": Examples(data.train_x, data.train_y), "eval_dataset": Examples(data.val_x, data.val_y),
              "optimizers": (s.optimizers[0], s.schedules[0])}
    if s.method.owns_backward:
        trainer = CapacityTrainer(**common, method=s.method)
        callback = trainer.capacity
    else:
        callback = CapacityCallback(s.method)
        trainer = transformers.Trainer(**common, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    return callback, trainer
