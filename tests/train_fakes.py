"""Tiny stand-ins shared by the training and recipe tests (not a test module)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neuroplastic.methods.base import CapacityMethod


class FakeLoader:
    """A shuffling in-memory loader with the ``set_epoch``/``state_dict`` protocol of ``TensorLoader``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def blobs(n: int = 96, dim: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: an easy, deterministic classification problem."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(classes, dim, generator=g)
    y = torch.arange(n) % classes
    return centers[y] + torch.randn(n, dim, generator=g), y


def tiny_mlp(dim: int = 6, classes: int = 3, hidden: int = 16) -> nn.Module:
    """A small MLP with dropout, so that training consumes the global torch generator."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, classes))


class NoisyMethod(CapacityMethod):
    """A method with its own generator and counters, emitting an event and a snapshot every epoch.

    It adds a little seeded noise to the first layer's weight after every step, so a resume that loses
    the method state (or its generator) ends with different weights.
    """

    name = "noisy"

    def __init__(self, model: nn.Module, seed: int = 0, kill_at_step: int | None = None):
        super().__init__(model)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.kill_at_step = kill_at_step

    def step(self) -> None:
        self.steps += 1
        if self.kill_at_step is not None and self.steps == self.kill_at_step:
            raise KeyboardInterrupt("simulated kill")
        w = next(self.model.parameters())
        with torch.no_grad():
            w.add_(1e-3 * torch.randn(w.shape, generator=self.generator))

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        return [{"kind": "noise", "val_loss": val_loss}]

    def metrics(self) -> dict[str, Any]:
        return {"steps": self.steps, "arch": [3, 2]}

    def snapshot(self) -> dict[str, Any]:
        return {"w/first": next(self.model.parameters()).detach()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
        self.steps = state["steps"]


def tiny_net(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    """A model factory with the zoo's signature, for images of shape (in_channels, 4, 4)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 16, 8), nn.ReLU(), nn.Linear(8, num_classes))


class FakeSplits:
    """Stand-in for :class:`neuroplastic.data.DataSplits`: blobs shaped as 1x4x4 images, 3 classes."""

    num_classes = 3
    input_shape = (1, 4, 4)

    def __init__(self, n: int = 120, seed: int = 0):
        x, y = blobs(n, dim=16, seed=seed)
        self.x, self.y = x.view(n, 1, 4, 4), y

    def loaders(self, batch_size: int, seed: int) -> dict[str, Any]:
        from neuroplastic.data import TensorLoader

        x, y = self.x, self.y
        return {"train": TensorLoader(x[:80], y[:80], batch_size, shuffle=True, seed=seed),
                "val": TensorLoader(x[80:100], y[80:100], 100),
                "test": TensorLoader(x[100:], y[100:], 100)}
