"""LpSS: sparse training with weights on the unit Lp sphere, plus threshold-drop / gradient-grow topology updates.

Use it with an :class:`neuroplastic.lp.LpCGD` optimizer (which keeps the constrained units on the
sphere and sparsifies them through the geometry) and one ``lpss.step()`` after every
``optimizer.step()``::

    opt = LpCGD.for_model(model, lr=1 / 256, unconstrained_lr=1.0, p_first=1.2, p_rest=1.07, n_first=4,
                          momentum=0.9, nesterov=True)
    lpss = LpSS(model, opt, final_density=0.1, epochs=50, steps_per_epoch=len(loader))

What one topology update does (every ``update_every`` steps from ``begin`` to ``end`` of training):

1. drop, per masked layer, the active weights below ``h * mean|w|`` of their row's active weights
   (``h``: the drop threshold, cosine-annealed from ``drop_threshold`` to 0 over the update window);
2. regrow ``int(dropped * grow_fraction)`` inactive entries (just-dropped ones included) of largest
   row-wise L2-normalised gradient (``|.|`` by default). The gradient is the dense one the training
   loop's backward left in ``weight.grad`` (masked weights are exact zeros, so their gradient is
   defined): no extra forward/backward pass, unlike the reference, which recomputes it on the same
   batch after the optimizer step;
3. update the grow fraction with :class:`~neuroplastic.lp.topology.GrowController` from the mask
   sparsity, measured over the masked weights only (the reference divides by all parameters, BN and
   biases included, which biases it low).

With ``adapt_threshold=True`` (and the exact controller) an update whose threshold drops fewer entries
than the mask must lose to reach the target raises the threshold for that update until it does
(:func:`~neuroplastic.lp.topology.adapted_threshold`: the paper's "threshold adaptation"), so milder p,
whose rows are less concentrated, still reach the target.

The controller's target is ``final_density`` from the first update (the reference), or, with
``target_ramp > 0``, falls from ``init_density`` to ``final_density`` along Zhu & Gupta's cubic over
the first ``target_ramp`` of the update window (gradual sparsification instead of the reference's jump).

Semi-pruning: a masked constrained weight keeps its dual value in the optimizer (zero gradient and
momentum, decaying by ``1 - lr`` per step relative to its renormalised row), and a regrown one resumes
from it at once. Masked entries still count in the row's Lp norm, so a masked row has ``||w_j||_p <= 1``.
Masked unconstrained weights (stem, shortcuts, classifier) are plain zeros and regrow from zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroplastic.checks import check_bool, check_choice, check_fraction, check_int
from neuroplastic.lp.geometry import layer_hoyer, mass_support, net_hoyer
from neuroplastic.lp.lpcgd import LpCGD
from neuroplastic.lp.topology import GROW_SCORES, GrowController, adapted_threshold, growth_score, threshold_drop
from neuroplastic.masks import (
    Constant,
    CosineDecay,
    CubicDensity,
    MaskEngine,
    dense_gradients,
    grow_by_score,
    random_masks,
    uniform,
)
from neuroplastic.masks.engine import unwrap
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import count_weights, layer_flops

ANNEALS = ("cosine", "constant")


class LpSS(CapacityMethod):
    """Lp-spherical sparse training (see the module docstring).

    Parameters
    ----------
    model, optimizer:
        The model and its :class:`LpCGD` optimizer (built before this object).
    final_density:
        Mask density the controller steers to, in (0, 1) (the paper's sparsity ``s`` is ``1 - final_density``).
    epochs, steps_per_epoch:
        Length of training, to place the update window.
    begin, end:
        The update window as fractions of training (reference: 0.2 and 0.8).
    update_every:
        Optimizer steps between topology updates (the first one is at ``begin``).
    drop_threshold, drop_threshold_anneal:
        ``h`` at ``begin``, annealed to 0 at ``end`` by ``"cosine"`` (reference) or kept ``"constant"``.
    grow_fraction, grow_fraction_d:
        Initial grow fraction (reference 0.95) and the controller's gain (reference 0.1).
    grow_score:
        ``"abs"`` (default) or ``"signed_reference"`` (the reference's signed gradient score).
    controller:
        ``"reference"`` (the reference's rule, default) or ``"exact"``; see
        :class:`~neuroplastic.lp.topology.GrowController`.
    adapt_threshold:
        Raise an update's threshold when it drops too few entries to reach the target (needs
        ``controller="exact"``); off by default (the reference's fixed ``h``).
    target_ramp:
        Fraction of the update window, in [0, 1], over which the controller's target rises from
        ``init_density`` to ``final_density`` along a cubic (:class:`~neuroplastic.masks.CubicDensity`);
        0 (default, the reference) steers to ``final_density`` from the first update.
    init_density:
        Density of the random initial mask of every masked layer (reference 0.8: sparsity 0.2).
    include, exclude:
        Passed to :class:`~neuroplastic.masks.MaskEngine`: which Linear/Conv layers get masks
        (default all, as the reference: stem, shortcuts and classifier included).
    seed:
        Seed of the initial masks.
    sample_size:
        Number of ``|w|`` values per constrained layer in :meth:`snapshot`.
    input_shape:
        Input shape without the batch dimension (e.g. ``[1, 28, 28]``); with it, :meth:`metrics` reports
        ``flops_sparse_inference`` (each layer's dense forward FLOPs times its mask density).
    """

    name = "lpss"
    takes_optimizer = True

    def __init__(
        self,
        model: nn.Module,
        optimizer: LpCGD,
        *,
        final_density: float,
        epochs: int,
        steps_per_epoch: int,
        begin: float = 0.2,
        end: float = 0.8,
        update_every: int = 40,
        drop_threshold: float = 0.2,
        drop_threshold_anneal: str = "cosine",
        grow_fraction: float = 0.95,
        grow_fraction_d: float = 0.1,
        grow_score: str = "abs",
        controller: str = "reference",
        target_ramp: float = 0.0,
        adapt_threshold: bool = False,
        init_density: float = 0.8,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        seed: int = 0,
        sample_size: int = 4096,
        input_shape: list[int] | tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(model)
        if not isinstance(optimizer, LpCGD):
            raise TypeError(f"optimizer must be a neuroplastic.lp.LpCGD, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        # the controller works in sparsity, the reference's terms
        final_density = check_fraction("final_density", final_density, low_open=True, high_open=True)
        self.controller = GrowController(1.0 - final_density, grow_fraction, grow_fraction_d, controller)
        self.final_density = final_density
        begin, end = check_fraction("begin", begin), check_fraction("end", end)
        if begin >= end:
            raise ValueError(f"begin ({begin}) must be < end ({end})")
        self.total_steps = check_int("epochs", epochs, low=1) * check_int("steps_per_epoch", steps_per_epoch, low=1)
        self.begin_step = round(begin * self.total_steps)
        self.end_step = max(round(end * self.total_steps), self.begin_step + 1)
        self.update_every = check_int("update_every", update_every, low=1)
        h0 = check_fraction("drop_threshold", drop_threshold)
        window = self.end_step - self.begin_step
        anneal = check_choice("drop_threshold_anneal", drop_threshold_anneal, ANNEALS)
        self.threshold_schedule = CosineDecay(h0, 0.0, window) if anneal == "cosine" else Constant(h0)
        self.grow_score = check_choice("grow_score", grow_score, GROW_SCORES)
        self.sample_size = check_int("sample_size", sample_size, low=1)
        init_density = check_fraction("init_density", init_density, low_open=True)
        self.adapt_threshold = check_bool("adapt_threshold", adapt_threshold)
        if adapt_threshold and controller != "exact":
            raise ValueError(f"adapt_threshold needs controller='exact', got controller={controller!r}")
        self.target_ramp = check_fraction("target_ramp", target_ramp)
        if self.target_ramp > 0 and init_density < final_density:
            raise ValueError(
                f"target_ramp needs init_density ({init_density}) >= final_density "
                f"({final_density}): the ramp only lowers the density"
            )
        ramp_end = self.begin_step + round(self.target_ramp * window)
        self.target_schedule = CubicDensity(init_density, final_density, self.begin_step, ramp_end, self.update_every)
        self.steps = 0
        self.events: list[dict[str, Any]] = []

        # the engine holds and applies the masks; it does not touch optimizer state, because LpCGD keeps
        # a dual state of the weight's shape that must survive masking (semi-pruning) and masks its own
        # momentum (see LpCGD.set_mask)
        self.engine = MaskEngine(model, None, include=include, exclude=exclude)
        names = {id(m.weight): n for n, m in unwrap(model).named_modules() if hasattr(m, "weight")}
        self.layer_p: dict[str, float] = {}
        for group in optimizer.param_groups:
            if group["p"] is not None:
                for param in group["params"]:
                    if id(param) not in names:
                        raise ValueError("optimizer holds a constrained parameter that is not a weight of model")
                    self.layer_p[names[id(param)]] = group["p"]
        if not self.layer_p:
            raise ValueError("optimizer has no constrained (p > 1) parameter group; build it with LpCGD.for_model")
        shapes = self.engine.shapes()
        generator = torch.Generator().manual_seed(int(seed))
        device = next(iter(self.engine.masks.values())).device
        masks = random_masks(shapes, uniform(shapes, init_density), generator, device=device)
        self.engine.set_masks(masks)
        self._attach()
        self._flops = layer_flops(unwrap(model), input_shape) if input_shape is not None else None

    # -- plumbing ----------------------------------------------------------------------------------
    def _attach(self) -> None:
        """Give the optimizer the engine's current masks and write the masked weights."""
        with torch.no_grad():
            for name, mask in self.engine.masks.items():
                weight = self.engine.weight(name)
                self.optimizer.set_mask(weight, mask)
                if name in self.layer_p:  # a regrown constrained weight resumes from its latent value
                    weight.copy_(self.optimizer.dense_weight(weight) * mask)

    def current_target(self, step: int | None = None) -> float:
        """The controller's target density at ``step`` (default: now); constant when ``target_ramp == 0``."""
        step = self.steps if step is None else step
        if self.target_ramp == 0:
            return self.final_density
        return self.target_schedule(step)

    def is_update_step(self, step: int) -> bool:
        """True at ``begin_step + j * update_every`` before ``end_step``."""
        return self.begin_step <= step < self.end_step and (step - self.begin_step) % self.update_every == 0

    # -- training-loop hooks -----------------------------------------------------------------------
    def bind_optimizers(self, optimizers: Sequence[torch.optim.Optimizer], schedules: Sequence[Any] = ()) -> None:
        """Check that this method's :class:`LpCGD` is among the optimizers training the model (a loop
        that built another optimizer would train the weights off the sphere and against the masks);
        ``[]`` (no training, e.g. to evaluate) is accepted."""
        optimizers = list(optimizers)
        if optimizers and not any(opt is self.optimizer for opt in optimizers):
            given = ", ".join(type(opt).__name__ for opt in optimizers)
            raise ValueError(f"LpSS's LpCGD optimizer is not among the optimizers training the model ({given}): "
                             "train with the LpCGD the method was built with")

    def step(self) -> None:
        """After ``optimizer.step()`` (before the next ``zero_grad``): topology update when due, masks applied."""
        if self.is_update_step(self.steps):
            self.update_topology()
        self.engine.apply()
        self.steps += 1

    @torch.no_grad()
    def update_topology(self) -> dict[str, Any]:
        """One drop/grow update of every masked layer (needs the gradients of the last backward)."""
        h = self.threshold_schedule(self.steps - self.begin_step)
        self.controller.target = 1.0 - self.current_target()
        sparsity_before = 1.0 - self.engine.density()
        dense_gradients({name: self.engine.weight(name) for name in self.engine.masks}, "LpSS")  # present, not all 0
        keeps = {}
        for name, mask in self.engine.masks.items():
            keeps[name] = threshold_drop(self.engine.weight(name), mask, h)
        n_drops = {name: int((mask & ~keeps[name]).sum()) for name, mask in self.engine.masks.items()}
        total = sum(self.engine.numel().values())
        threshold = h
        needed = math.ceil((self.controller.target - sparsity_before) * total - 1e-9)
        if self.adapt_threshold and sum(n_drops.values()) < needed:
            names = list(self.engine.masks)
            weights = [self.engine.weight(n) for n in names]
            threshold = max(h, adapted_threshold(weights, [self.engine.masks[n] for n in names], needed))
            keeps = {n: threshold_drop(w, self.engine.masks[n], threshold) for n, w in zip(names, weights, strict=True)}
            n_drops = {name: int((mask & ~keeps[name]).sum()) for name, mask in self.engine.masks.items()}
        grow_fraction = self.controller.fraction_for(sum(n_drops.values()), sparsity_before, total)
        grown = 0
        for name, keep in keeps.items():
            weight = self.engine.weight(name)
            n_grow = min(int(n_drops[name] * grow_fraction), int((~keep).sum()))
            self.engine.set_mask(name, grow_by_score(growth_score(weight.grad, self.grow_score), keep, n_grow))
            grown += n_grow
        dropped = sum(n_drops.values())
        self._attach()
        sparsity = 1.0 - self.engine.density()
        event = {
            "event": "lpss_update",
            "step": self.steps,
            "epoch": self.epoch,
            "drop_threshold": h,
            "threshold": threshold,
            "grow_fraction": grow_fraction,
            "dropped": dropped,
            "grown": grown,
            "density": 1.0 - sparsity,
            "target_density": 1.0 - self.controller.target,
        }
        self.controller.update(sparsity, h)
        self.events.append(event)
        return event

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """The topology updates of the epoch (one event each)."""
        events, self.events = self.events, []
        return events

    # -- reporting ---------------------------------------------------------------------------------
    def _constrained_weights(self) -> dict[str, torch.Tensor]:
        modules = dict(unwrap(self.model).named_modules())
        return {name: modules[name].weight.detach() for name in self.layer_p}

    def architecture(self) -> dict[str, Any]:
        """Live weights (active mask entries plus unmasked Linear/Conv weights) and the dense count."""
        dense = count_weights(self.model)
        masked_off = sum(self.engine.numel().values()) - sum(self.engine.nnz().values())
        return {"params": dense - masked_off, "params_dense": dense, "constrained": dict(self.layer_p)}

    def metrics(self) -> dict[str, Any]:
        """Mask density (total and per layer), Hoyer sparsity per constrained layer and for them together,
        live params.

        ``constrained_live``: active entries of the constrained layers; ``constrained_used``: of those, the
        fewest per unit that carry 99% of the unit's squared L2 norm (:func:`~neuroplastic.lp.mass_support`),
        i.e. the weights the constrained layers really use.
        """
        weights = self._constrained_weights()
        nonzero = sum(int(torch.count_nonzero(self.engine.weight(n))) for n in self.engine.masks)
        return {
            "density": self.engine.density(),
            "layer_density": self.engine.layer_density(),
            "hoyer": {name: layer_hoyer(w) for name, w in weights.items()},
            "hoyer_net": net_hoyer(weights),
            "params": self.architecture()["params"],
            "nonzero_masked_weights": nonzero,
            "constrained_live": sum(int(self.engine.masks[n].sum()) for n in weights if n in self.engine.masks),
            "constrained_used": sum(int(mass_support(w).sum()) for w in weights.values()),
            "grow_fraction": self.controller.grow_fraction,
            "drop_threshold": self.threshold_schedule(max(self.steps - self.begin_step, 0)),
            "flops_sparse_inference": self._sparse_flops(),
        }

    def live_flops(self, input_shape: Sequence[int]) -> int:
        """Forward FLOPs per example of the masked network (``flops_sparse_inference``: every layer's dense
        FLOPs times its mask density; the layers' FLOPs counted on ``input_shape`` when the method was
        built without one)."""
        flops = self._flops if self._flops is not None else layer_flops(unwrap(self.model), input_shape)
        density = self.engine.layer_density()
        return int(sum(f * density.get(name, 1.0) for name, f in flops.items()))

    def _sparse_flops(self) -> float | None:
        if self._flops is None:
            return None
        density = self.engine.layer_density()
        return float(sum(f * density.get(name, 1.0) for name, f in self._flops.items()))

    def snapshot(self) -> dict[str, np.ndarray]:
        """``absw/<layer>``: ``sample_size`` evenly spaced entries of ``|w|``; ``p/<layer>``: the exponent."""
        out: dict[str, np.ndarray] = {}
        for name, w in self._constrained_weights().items():
            flat = w.abs().flatten()
            idx = torch.linspace(0, flat.numel() - 1, min(self.sample_size, flat.numel()), device=flat.device)
            out[f"absw/{name}"] = flat[idx.round().long()].cpu().numpy().astype(np.float16)
            out[f"p/{name}"] = np.array([self.layer_p[name]], dtype=np.float16)
        return out

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Epoch, step counter, controller, masks (the optimizer holds the dual state)."""
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "controller": self.controller.state_dict(),
            "engine": self.engine.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and hand the masks to the optimizer again.

        Call it before the model's and the optimizer's own ``load_state_dict``, as
        :func:`neuroplastic.train.fit` does (method, model, optimizers): the masks live in the optimizer by
        parameter, not in its state, and the loads that follow replace the weights and the dual state
        ``_attach`` wrote. ``tests/test_faults.py`` resumes a killed LpSS run bit for bit this way; loading
        the model first does not."""
        super().load_state_dict(state)
        self.steps = int(state["steps"])
        self.controller.load_state_dict(state["controller"])
        self.engine.load_state_dict(state["engine"])
        self._attach()
