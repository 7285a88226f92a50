"""The machinery every mask method shares: :class:`MaskMethod`.

A mask method keeps per-weight 0/1 masks in a :class:`~neuroplastic.masks.MaskEngine` and changes them on
a schedule of optimizer steps. :class:`MaskMethod` holds the engine, the seeded generator, the step
counter, the drop-and-grow and prune primitives, the reports (density, exploration rate, sparse FLOPs)
and the persistence; the methods of :mod:`neuroplastic.methods.dst` and
:mod:`neuroplastic.methods.rewind` are small subclasses that say when and how the masks change.

Under DDP build the method with the same ``seed`` on every process: random choices come from a CPU
``torch.Generator`` seeded with it, and every other decision uses weights and all-reduced gradients, which
are identical on every process, so masks never diverge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroplastic.checks import check_choice, check_int
from neuroplastic.masks import (
    DISTRIBUTIONS,
    MaskEngine,
    dense_gradients,
    drop_by_magnitude,
    global_magnitude_masks,
    layer_densities,
    random_masks,
)
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import WEIGHTED, layer_flops
from neuroplastic.structure.optim_surgery import as_optimizer_list

#: training cost convention: forward + backward (activations) + backward (weights) ~ 3 forward passes
TRAINING_FLOPS_FACTOR = 3


def drop_count(fraction: float, nnz: int) -> int:
    """``ceil(fraction * nnz)`` as the reference code, rounded first so 0.3 * 10 gives 3, not 4."""
    return min(nnz, math.ceil(round(fraction * nnz, 9)))


class MaskMethod(CapacityMethod):
    """Shared machinery of the mask methods: engine, generator, step counter, reports, persistence.

    Parameters common to every mask method
    --------------------------------------
    epochs, steps_per_epoch:
        Length of training; needed by the methods whose schedules span the run.
    update_every:
        Optimizer steps between topology updates (reference ``--update-frequency``).
    sparse_init:
        Layer density distribution of the initial random mask: ``uniform``, ``er`` or ``erk``.
    include, exclude, exclude_first, exclude_classifier:
        Which Linear/Conv weights are masked (see :class:`MaskEngine`; ``exclude_first`` is ``--rm-first``).
    seed:
        Seed of the CPU generator for every random choice (same on every DDP process).
    example_input, input_shape:
        Optional example input (tensor with batch dimension) or input shape without batch dimension, for
        the dense per-layer FLOPs behind ``flops_sparse_*`` (reported as ``None`` without either).
    """

    name = "mask"
    takes_optimizer = True
    #: growth scores the dense gradient (RigL, GraNet): drop_and_grow checks that there is one
    grows_by_gradient = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        update_every: int = 100,
        sparse_init: str = "erk",
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        exclude_first: bool = False,
        exclude_classifier: bool = False,
        seed: int = 0,
        example_input: torch.Tensor | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        self.engine = MaskEngine(
            model,
            optimizer,
            include=include,
            exclude=exclude,
            exclude_first=exclude_first,
            exclude_classifier=exclude_classifier,
        )
        super().__init__(self.engine.model)
        self.sparse_init = check_choice("sparse_init", sparse_init, DISTRIBUTIONS)
        self.update_every = check_int("update_every", update_every, low=1)
        self.epochs = None if epochs is None else check_int("epochs", epochs, low=1)
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch, low=1)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed))
        self.global_step = 0
        self._events: list[dict[str, Any]] = []
        if example_input is not None and input_shape is not None:
            raise ValueError("give at most one of example_input and input_shape")
        example = example_input if example_input is not None else input_shape
        self._flops = layer_flops(self.model, example) if example is not None else None
        self._flops_sum = 0.0  # sum over steps of the per-example training FLOPs, for the mean
        self._flops_cache: tuple[int, float | None] = (-1, None)  # (engine.version, inference FLOPs)

    # -- helpers for subclasses ------------------------------------------------------------------------
    def _total_steps(self, who: str) -> int:
        if self.epochs is None or self.steps_per_epoch is None:
            raise ValueError(f"{who} needs epochs and steps_per_epoch (its schedules span the whole run)")
        return self.epochs * self.steps_per_epoch

    def _init_random(self, density: float) -> None:
        """Random masks at overall ``density`` with the ``sparse_init`` distribution, exact counts."""
        shapes = self.engine.shapes()
        densities = layer_densities(self.sparse_init, shapes, density)
        self.engine.set_masks(random_masks(shapes, densities, self.generator))
        self.engine.reset_exploration()

    def _on_grid(self, step: int, start: int = 0) -> bool:
        return step >= start and (step - start) % self.update_every == 0

    def _event(self, kind: str, **fields: Any) -> None:
        self._events.append({"event": kind, "step": self.global_step, "density": self.engine.density(), **fields})

    def drop_and_grow(self, fraction: float) -> int:
        """In every layer drop ``ceil(fraction * nnz)`` smallest-|w| weights and grow as many (exact)."""
        if self.grows_by_gradient:
            dense_gradients({name: self.engine.weight(name) for name in self.engine.masks}, self.name)
        moved = 0
        for name, mask in self.engine.masks.items():
            n = drop_count(fraction, int(mask.sum()))
            if n == 0:
                continue
            dropped = drop_by_magnitude(self.engine.weight(name), mask, n)
            self.engine.set_mask(name, self.grow(name, dropped, n))
            moved += n
        return moved

    def prune_global(self, count: int) -> None:
        """Keep the ``count`` active weights of largest |w| over all masked layers (no-op if fewer)."""
        if count < sum(self.engine.nnz().values()):
            weights = {n: self.engine.weight(n) for n in self.engine.masks}
            self.engine.set_masks(global_magnitude_masks(weights, self.engine.masks, count=count))

    def prune_layers(self, counts: dict[str, int]) -> None:
        """Keep the ``counts[name]`` active weights of largest |w| in each layer (no-op where fewer)."""
        for name, keep in counts.items():
            mask = self.engine.masks[name]
            n = int(mask.sum()) - keep
            if n > 0:
                self.engine.set_mask(name, drop_by_magnitude(self.engine.weight(name), mask, n))

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        """Activate ``n`` inactive entries of ``mask`` for layer ``name`` (the growth criterion)."""
        raise NotImplementedError

    # -- the loop hooks ----------------------------------------------------------------------------------
    def bind_optimizers(self, optimizers: Sequence[torch.optim.Optimizer], schedules: Sequence[Any] = ()) -> None:
        """Mask the state of the optimizer among ``optimizers`` that trains the masked weights (so a method
        built with ``optimizer=None``, before a framework built the optimizer, masks it from now on)."""
        masked = {id(self.engine.weight(name)) for name in self.engine.masks}
        mine = [opt for opt in as_optimizer_list(optimizers)
                if any(id(p) in masked for group in opt.param_groups for p in group["params"])]
        if len(mine) > 1:
            raise ValueError(f"{len(mine)} of the optimizers hold masked weights of method {self.name!r}; "
                             "one optimizer must train them")
        if mine:
            self.engine.optimizer = mine[0]

    def step(self) -> None:
        """Re-apply the masks; every ``update_every`` steps update the topology (see ``update``)."""
        self.global_step += 1
        self.engine.apply()
        self.update(self.global_step)
        self._flops_sum += self._training_flops() or 0.0

    def update(self, step: int) -> None:
        """The method's topology change at optimizer step ``step`` (the default changes nothing)."""

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """The mask-update events since the last call."""
        events, self._events = self._events, []
        return events

    # -- reports -------------------------------------------------------------------------------------------
    def _inference_flops(self) -> float | None:
        if self._flops is None:
            return None
        # recomputed only when a mask changed: counting nnz synchronises with an accelerator
        if self._flops_cache[0] != self.engine.version:
            dens = self.engine.layer_density()
            value = float(sum(f * dens.get(n, 1.0) for n, f in self._flops.items()))
            self._flops_cache = (self.engine.version, value)
        return self._flops_cache[1]

    def _training_flops(self) -> float | None:
        inf = self._inference_flops()
        return None if inf is None else TRAINING_FLOPS_FACTOR * inf

    def metrics(self) -> dict[str, Any]:
        """Density (total and per layer), exploration rate and sparse FLOPs per example.

        ``flops_sparse_inference``: sum over Linear/Conv layers of dense forward FLOPs x layer density
        (unmasked layers count fully). ``flops_sparse_training``: 3x that (forward + two backward
        products), the convention of the RigL/ITOP papers; ``flops_sparse_training_mean`` averages it over
        the steps so far (it falls during dense-to-sparse pruning). ``None`` without an example input.
        """
        steps = max(self.global_step, 1)
        return {
            "density": self.engine.density(),
            "layer_density": self.engine.layer_density(),
            "exploration_rate": self.engine.exploration_rate(),
            "flops_sparse_inference": self._inference_flops(),
            "flops_sparse_training": self._training_flops(),
            "flops_sparse_training_mean": None if self._flops is None else self._flops_sum / steps,
            "flops_dense": None if self._flops is None else float(sum(self._flops.values())),
        }

    def live_flops(self, input_shape: Sequence[int]) -> int:
        """Forward FLOPs per example of the masked network (``flops_sparse_inference``): dense FLOPs of
        every Linear/Conv layer times its density; the dense count when built without an example input."""
        sparse = self._inference_flops()
        return int(sparse) if sparse is not None else super().live_flops(input_shape)

    def architecture(self) -> dict[str, Any]:
        """``params``: active masked weights + weights of unmasked Linear/Conv layers; ``params_dense``."""
        masked = set(self.engine.layers)
        dense_rest = sum(
            m.weight.numel() for n, m in self.model.named_modules() if isinstance(m, WEIGHTED) and n not in masked
        )
        nnz = self.engine.nnz()
        return {
            "params": sum(nnz.values()) + dense_rest,
            "params_dense": sum(self.engine.numel().values()) + dense_rest,
            "layer_nnz": nnz,
        }

    def snapshot(self) -> dict[str, np.ndarray]:
        """``density/<layer>``: the layer's density as a one-element array."""
        return {f"density/{n}": np.array([d], dtype=np.float32) for n, d in self.engine.layer_density().items()}

    # -- persistence ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step counter, masks, exploration tracker and generator state (schedules are closed forms)."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "engine": self.engine.state_dict(),
            "generator": self.generator.get_state(),
            "flops_sum": self._flops_sum,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (and re-apply the masks)."""
        super().load_state_dict(state)
        self.global_step = int(state["global_step"])
        self.engine.load_state_dict(state["engine"])
        self.generator.set_state(state["generator"])
        self._flops_sum = float(state["flops_sum"])
