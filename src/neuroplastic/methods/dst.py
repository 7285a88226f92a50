"""Dynamic sparse training: Static, SET, RigL, GMP and GraNet, one small class each.

All of them keep their masks in a :class:`~neuroplastic.masks.MaskEngine` and are driven the same way::

    rigl = RigL(model, optimizer, density=0.1, epochs=epochs, steps_per_epoch=len(loader))
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        rigl.step()          # masks re-applied; every ``update_frequency`` steps the topology changes

``step()`` counts optimizer steps itself (``self.global_step``, starting at 1 after the first step), so all
schedules are in steps; epochs given to the constructor are converted with ``steps_per_epoch``.

Under DDP build the method with the same ``seed`` on every process: random choices come from a CPU
``torch.Generator`` seeded with it, and every other decision uses weights and all-reduced gradients, which
are identical on every process, so masks never diverge. See ``docs/dst.md`` for the mapping to the
reference code's flags and our fixes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroplastic.masks import (
    DISTRIBUTIONS,
    Constant,
    CosineDecay,
    CubicDensity,
    MaskEngine,
    dense_gradients,
    drop_by_magnitude,
    global_magnitude_masks,
    grow_by_score,
    grow_random,
    kept_count,
    layer_densities,
    random_masks,
)
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import WEIGHTED, layer_flops

#: training cost convention: forward + backward (activations) + backward (weights) ~ 3 forward passes
TRAINING_FLOPS_FACTOR = 3


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _fraction(name: str, value: Any, *, allow_zero: bool = False) -> float:
    low_ok = (lambda v: v >= 0.0) if allow_zero else (lambda v: v > 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low_ok(value) and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def _drop_count(fraction: float, nnz: int) -> int:
    """``ceil(fraction * nnz)`` as the reference code, rounded first so 0.3 * 10 gives 3, not 4."""
    return min(nnz, math.ceil(round(fraction * nnz, 9)))


class MaskMethod(CapacityMethod):
    """Shared machinery of the mask methods: engine, generator, step counter, reports, persistence.

    Parameters common to every mask method
    --------------------------------------
    epochs, steps_per_epoch:
        Length of training; needed by the methods whose schedules span the run.
    update_frequency:
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
    #: growth scores the dense gradient (RigL, GraNet): drop_and_grow checks that there is one
    grows_by_gradient = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        update_frequency: int = 100,
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
        if sparse_init not in DISTRIBUTIONS:
            raise ValueError(f"sparse_init must be one of {DISTRIBUTIONS}, got {sparse_init!r}")
        self.sparse_init = sparse_init
        self.update_frequency = _positive_int("update_frequency", update_frequency)
        self.epochs = None if epochs is None else _positive_int("epochs", epochs)
        self.steps_per_epoch = None if steps_per_epoch is None else _positive_int("steps_per_epoch", steps_per_epoch)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.generator = torch.Generator().manual_seed(seed)
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
        return step >= start and (step - start) % self.update_frequency == 0

    def _event(self, kind: str, **fields: Any) -> None:
        self._events.append({"event": kind, "step": self.global_step, "density": self.engine.density(), **fields})

    def drop_and_grow(self, fraction: float) -> int:
        """In every layer drop ``ceil(fraction * nnz)`` smallest-|w| weights and grow as many (exact)."""
        if self.grows_by_gradient:
            dense_gradients({name: self.engine.weight(name) for name in self.engine.masks}, self.name)
        moved = 0
        for name, mask in self.engine.masks.items():
            n = _drop_count(fraction, int(mask.sum()))
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
    def step(self) -> None:
        """Re-apply the masks; every ``update_frequency`` steps update the topology (see ``update``)."""
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

    @classmethod
    def option_names(cls) -> dict[str, inspect.Parameter]:
        """The constructor options of ``cls`` (its own and those its bases take through ``**kw``)."""
        options: dict[str, inspect.Parameter] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, MaskMethod) and "__init__" in vars(klass):
                for name, par in inspect.signature(klass.__init__).parameters.items():
                    if par.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("epochs", "steps_per_epoch"):
                        options[name] = par
        return options

    @classmethod
    def from_recipe(
        cls, model: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, **options: Any
    ) -> MaskMethod:
        """Build from a recipe's ``method`` options (unknown options are an error naming the allowed ones)."""
        allowed = cls.option_names()
        unknown = set(options) - set(allowed)
        if unknown:
            raise ValueError(f"unknown options for {cls.name}: {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(model, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Give each subclass a from_recipe whose signature lists its options, so that a recipe runner can
        # check option names (and pass the recipe's seed) by introspection, without instantiating.
        super().__init_subclass__(**kwargs)
        if "from_recipe" in vars(cls):
            return
        base = MaskMethod.from_recipe.__func__

        def from_recipe(klass, model, optimizer, *, epochs, steps_per_epoch, **options):
            return base(klass, model, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)

        kw = inspect.Parameter.KEYWORD_ONLY
        pos = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(n, pos) for n in ("cls", "model", "optimizer")]
        params += [inspect.Parameter(n, kw) for n in ("epochs", "steps_per_epoch")]
        params += [p.replace(annotation=inspect.Parameter.empty) for p in cls.option_names().values()]
        from_recipe.__signature__ = inspect.Signature(params)
        from_recipe.__doc__ = base.__doc__
        cls.from_recipe = classmethod(from_recipe)


class Static(MaskMethod):
    """Static sparse training: a fixed random mask at ``density`` (reference ``--fix``)."""

    name = "static"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, density: float, **kw: Any):
        super().__init__(model, optimizer, **kw)
        self.target_density = _fraction("density", density)
        self._init_random(self.target_density)


class SET(MaskMethod):
    """Sparse Evolutionary Training: magnitude drop, random growth, per layer, every ``update_frequency``.

    ``prune_rate`` is the drop fraction (reference ``--prune-rate``); ``prune_rate_decay`` is ``"cosine"``
    (decays to 0 at ``stop_fraction`` of training, as RigL) or ``"constant"`` (stops at ``stop_fraction``).
    """

    name = "set"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        density: float,
        prune_rate: float = 0.3,
        prune_rate_decay: str = "cosine",
        stop_fraction: float = 0.75,
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, **kw)
        self.target_density = _fraction("density", density)
        prune_rate = _fraction("prune_rate", prune_rate, allow_zero=True)
        stop = round(_fraction("stop_fraction", stop_fraction) * self._total_steps(self.name))
        if prune_rate_decay == "cosine":
            self.prune_rate = CosineDecay(prune_rate, 0.0, max(stop, 1), stop_step=stop)
        elif prune_rate_decay == "constant":
            self.prune_rate = Constant(prune_rate, stop_step=stop)
        else:
            raise ValueError(f"prune_rate_decay must be 'cosine' or 'constant', got {prune_rate_decay!r}")
        self._init_random(self.target_density)

    def update(self, step: int) -> None:
        fraction = self.prune_rate(step)
        if self._on_grid(step) and fraction > 0:
            self._event("drop_and_grow", moved=self.drop_and_grow(fraction), prune_rate=fraction)

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_random(mask, n, self.generator)


class RigL(SET):
    """RigL: SET with growth at the inactive positions of largest dense-gradient magnitude."""

    name = "rigl"
    grows_by_gradient = True

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_by_score(self.engine.weight(name).grad.abs(), mask, n)


class GMP(MaskMethod):
    """Gradual magnitude pruning on the cubic schedule (Zhu & Gupta), global or layer-wise.

    The masked weights go from ``init_density`` (1.0: dense, the default) to ``final_density`` between
    ``init_prune_epoch`` and ``final_prune_epoch``, pruning every ``update_frequency`` steps and exactly
    at the final step (so ``final_density`` is reached). ``distribution="global"`` prunes the smallest
    |w| over all masked layers together (reference ``GMP``); ``"layerwise"`` moves every layer from its
    initial density to its ``sparse_init`` share of ``final_density`` on the same curve (with
    ``sparse_init="uniform"``, Zhu & Gupta's original, reference ``GMP_uniform``). ``final_prune_epoch``
    defaults to 11/16 of ``epochs`` (110 of 160, the reference runs).
    """

    name = "gmp"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        final_density: float,
        init_density: float = 1.0,
        init_prune_epoch: float = 0,
        final_prune_epoch: float | None = None,
        distribution: str = "global",
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, **kw)
        total = self._total_steps(self.name)
        self.init_density = _fraction("init_density", init_density)
        self.final_density = _fraction("final_density", final_density)
        if final_prune_epoch is None:
            final_prune_epoch = self.epochs * 11 / 16
        if not 0 <= init_prune_epoch <= final_prune_epoch <= self.epochs:
            raise ValueError(
                f"need 0 <= init_prune_epoch ({init_prune_epoch}) <= final_prune_epoch ({final_prune_epoch}) "
                f"<= epochs ({self.epochs})"
            )
        if distribution not in ("global", "layerwise"):
            raise ValueError(f"distribution must be 'global' or 'layerwise', got {distribution!r}")
        self.distribution = distribution
        start, end = round(init_prune_epoch * self.steps_per_epoch), round(final_prune_epoch * self.steps_per_epoch)
        self.schedule = CubicDensity(
            self.init_density, self.final_density, start, min(end, total), self.update_frequency
        )
        self._init_random(self.init_density)
        self._final_pruned = False
        self._init_layer = self.engine.layer_density()
        self._final_layer = layer_densities(self.sparse_init, self.engine.shapes(), self.final_density)

    def prune(self, step: int) -> None:
        """Prune to the scheduled density (never regrows: only active weights are candidates)."""
        target = self.schedule(step)
        before = self.engine.density()
        if self.distribution == "global":
            self.prune_global(kept_count(target, sum(self.engine.numel().values())))
        else:
            span = self.schedule.init_density - self.schedule.final_density
            ratio = 0.0 if span == 0 else (target - self.schedule.final_density) / span  # (1 - frac)^3
            dens = {n: f + (self._init_layer[n] - f) * ratio for n, f in self._final_layer.items()}
            self.prune_layers({n: kept_count(d, self.engine.masks[n].numel()) for n, d in dens.items()})
        if self.engine.density() < before:
            self._event("prune", target_density=target)

    def update(self, step: int) -> None:
        # the final prune also happens late when end_step falls before the first step (end_step 0)
        if self.schedule.is_update_step(step) or (step >= self.schedule.end_step and not self._final_pruned):
            self.prune(step)
            self._final_pruned = step >= self.schedule.end_step

    def state_dict(self) -> dict[str, Any]:
        """The mask state plus whether the final prune has happened."""
        return {**super().state_dict(), "final_pruned": self._final_pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        self._final_pruned = bool(state["final_pruned"])


class GraNet(GMP):
    """GraNet: gradual magnitude pruning plus zero-cost neuroregeneration (RigL drop-and-grow).

    Starts from a random ``sparse_init`` mask at ``init_density`` (1.0: dense-to-sparse; the reference
    default 0.5), prunes on the cubic schedule to ``final_density`` (``distribution`` global or
    layer-wise, see :class:`GMP`) and, at every update from ``init_prune_epoch`` to the end of training,
    drops ``ceil(prune_rate * nnz)`` smallest-|w| weights per layer and regrows as many at the inactive
    positions of largest dense |grad|. ``prune_rate`` decays by cosine from ``prune_rate`` to
    ``min_prune_rate`` over the whole run (reference: 0.5 -> 0.005).
    """

    name = "granet"
    grows_by_gradient = True

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        final_density: float,
        init_density: float = 0.5,
        prune_rate: float = 0.5,
        min_prune_rate: float = 0.005,
        **kw: Any,
    ) -> None:
        super().__init__(model, optimizer, final_density=final_density, init_density=init_density, **kw)
        initial = _fraction("prune_rate", prune_rate, allow_zero=True)
        final = _fraction("min_prune_rate", min_prune_rate, allow_zero=True)
        self.prune_rate = CosineDecay(initial, min(final, initial), self._total_steps(self.name))

    def update(self, step: int) -> None:
        super().update(step)  # the gradual prune, when scheduled
        fraction = self.prune_rate(step)
        if self._on_grid(step, self.schedule.start_step) and fraction > 0:
            self._event("drop_and_grow", moved=self.drop_and_grow(fraction), prune_rate=fraction)

    def grow(self, name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
        return grow_by_score(self.engine.weight(name).grad.abs(), mask, n)


#: recipe names of the methods (the runner looks them up here)
METHODS: dict[str, type[MaskMethod]] = {c.name: c for c in (Static, SET, RigL, GMP, GraNet)}
