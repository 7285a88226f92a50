"""Neural Plasticity Networks (Li & Ji, IJCNN 2021): stochastic unit gates, an expected-L0 penalty,
the ARM/AR gradient estimators and the k stage scheduler, for sparsifying or expanding any model.

Usage (see docs/npn.md)::

    npn = NPN(model, mode="sparse", k=7, lam=0.1 / len(train_set), stages=(100, 350))
    optimizer = npn_optimizer(model, lr=1e-3, gate_lr=1e-2)  # gate logits at their own, larger lr
    for epoch in range(epochs):
        npn.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            loss = npn.backward(lambda: criterion(model(x), y))
            optimizer.step()
        npn.end_epoch(val_loss=evaluate(model))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from neuroplastic.gates import estimators
from neuroplastic.gates.functions import gate_function
from neuroplastic.gates.stages import K_FROZEN, StageSchedule
from neuroplastic.methods.gated import UnitGateMethod, split_param_groups  # noqa: F401 - re-exported

MODES = ("sparse", "expand")
EVAL_GATES = ("binary", "soft_reference")
SAMPLING = ("batch", "sample")
EXPAND_TRIGGERS = ("val_loss", "regularized")
OPEN_LOGIT = 3.0  # k * phi of an open unit at construction: pi = sigmoid(3) = 0.95
HIBERNATING_LOGIT = -40.0  # k * phi of a hibernating unit


class NPN(UnitGateMethod):
    """Attach NPN gates to ``model`` and drive their training.

    Parameters
    ----------
    model : the network; gates are attached in place (see :mod:`neuroplastic.gates.sites`).
    mode : ``"sparse"`` (start with all units open, let the L0 penalty close them) or ``"expand"``
        (start with ``init_active`` units open and open hibernating ones on validation improvement).
    k : the plastic-stage ``k`` of ``g_k`` (paper: 7 to sparsify, 1 to expand).
    lam : L0 penalty strength: a float for every site, a list in site order, or a dict keyed by layer
        name. The penalty is ``sum_sites lam * sum_j pi_j * weights_per_unit`` (weights only, no biases:
        an out-gate counts the unit's incoming weights, an in-gate the weights that read the feature).
        Scale it yourself (the paper uses ``lam / N``).
    gates : placement: ``None`` (out-gates on every Linear/Conv2d but the last layer), a list of layer
        names (out-gates), a dict ``{layer: "out" | "in"}``, or ``"groups"``: one gate per prunable unit
        group traced by :mod:`neuroplastic.structure` (residual streams and concatenations included).
    include, exclude : restrict the default placement by layer name (group name for ``"groups"``).
    example_input : a batch or an input shape; needed for ``gates="groups"``.
    init_active : units open at start per site (int, list, dict by layer, or None = all open); the
        rest hibernate at ``k*phi = -40``, open units start at ``k*phi = +3``.
    stages : ``(plastic_start, harden_start)`` epochs of the k schedule, or None (always plastic).
    gate : ``"sigmoid"`` (NPN) or ``"hard_sigmoid"`` (L0-ARM's option), or a GateFunction.
    estimator : ``"arm"`` (two passes, antithetic) or ``"ar"`` (one pass).
    sampling : ``"batch"`` (one ``u`` per gate per mini-batch, as the paper) or ``"sample"`` (one per
        gate per example; the closure must then return per-example losses).
    eval_gate : ``"binary"`` (``phi > 0`` open, default) or ``"soft_reference"`` (the reference code's
        ``pi`` where ``pi >= 0.5``).
    fill : ``k*phi`` given to a unit opened by expansion (the reference uses 0.1, 0 or 3 per script;
        must be >= 0). An allocated unit counts as open for the expansion test while ``phi >= 0``
        (``pi >= 0.5``, the reference's test), so a unit opened at ``fill=0`` does not block its layer.
    expand_step : hibernating units opened per layer per expansion event (at least).
    expand_fraction : extension, 0 = off (the paper): an event opens
        ``max(expand_step, ceil(expand_fraction * allocated))`` units in a layer, growth proportional
        to the layer's allocated width (:class:`PhysicalNPN` caps one event at its reserve).
    expand_every : extension, None = off (the paper: one check per epoch, in :meth:`end_epoch`): check
        for expansion every ``expand_every`` training steps instead. The training loop evaluates the
        validation loss and calls :meth:`check_expansion` (:func:`neuroplastic.train.fit` does);
        :meth:`end_epoch` then makes no check of its own.
    expand_val_batches : with ``expand_every``, how many batches of the validation loader (the first
        ones, the same every check) the loop evaluates for a check; None = all.
    expand_trigger : ``"val_loss"`` (the validation loss as the loop gives it) or ``"regularized"`` (plus
        this method's L0 penalty at the current ``k``, as the reference code's validation loss).
    anti_fraction : ARM only (an extension; 1 = the paper): evaluate both ARM terms on a random
        ``anti_fraction`` of the batch, drawn from the method's generator independently of ``u``. Still
        unbiased (a random subset's mean loss is unbiased for the batch's), cheaper (the antithetic pass
        and a no-grad main pass on the subset replace a full antithetic pass), noisier. The closure must
        then take an optional index tensor and return per-example losses of those examples
        (``closure_kind == "indexed"``; :func:`neuroplastic.train.fit` builds such closures); refused
        while a BatchNorm is in training mode (batch statistics couple the examples).
    seed : seed of the generator that draws ``u`` (identical on every DDP rank by construction).
    """

    name = "npn"
    owns_backward = True  # the penalty joins the loss and a second (ARM) pass

    def __init__(
        self,
        model: nn.Module,
        mode: str = "sparse",
        k: float = 7.0,
        lam: float | Sequence[float] | dict[str, float] = 0.0,
        *,
        gates: str | Sequence[str] | dict[str, str] | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        example_input: torch.Tensor | Sequence[int] | None = None,
        init_active: int | Sequence[int] | dict[str, int] | None = None,
        stages: Sequence[int] | None = None,
        k_frozen: float = K_FROZEN,
        gate: str = "sigmoid",
        estimator: str = "arm",
        sampling: str = "batch",
        eval_gate: str = "binary",
        fill: float = OPEN_LOGIT,
        expand_step: int = 1,
        anti_fraction: float = 1.0,
        expand_fraction: float = 0.0,
        expand_every: int | None = None,
        expand_val_batches: int | None = None,
        expand_trigger: str = "val_loss",
        seed: int = 0,
    ) -> None:
        super().__init__(model, lam, gates, include, exclude, example_input)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if estimator not in estimators.ESTIMATORS:
            raise ValueError(f"estimator must be one of {estimators.ESTIMATORS}, got {estimator!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if eval_gate not in EVAL_GATES:
            raise ValueError(f"eval_gate must be one of {EVAL_GATES}, got {eval_gate!r}")
        if expand_step < 1:
            raise ValueError(f"expand_step must be >= 1, got {expand_step}")
        if isinstance(anti_fraction, bool) or not isinstance(anti_fraction, (int, float)) or not 0 < anti_fraction <= 1:
            raise ValueError(f"anti_fraction must be a fraction of the batch in (0, 1], got {anti_fraction!r}")
        if anti_fraction < 1 and (estimator != "arm" or sampling != "batch"):
            raise ValueError(f"anti_fraction < 1 needs estimator='arm' and sampling='batch', got "
                             f"estimator={estimator!r}, sampling={sampling!r}")
        self.anti_fraction = float(anti_fraction)
        if not math.isfinite(fill) or fill < 0:
            raise ValueError(f"fill must be a finite k*phi >= 0 (a unit opened closed would block its layer), "
                             f"got {fill}")
        if not 0.0 <= expand_fraction <= 1.0:
            raise ValueError(f"expand_fraction must be in [0, 1] (0 = off), got {expand_fraction}")
        for key, value in (("expand_every", expand_every), ("expand_val_batches", expand_val_batches)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be None or an int >= 1, got {value!r}")
        if expand_trigger not in EXPAND_TRIGGERS:
            raise ValueError(f"expand_trigger must be one of {EXPAND_TRIGGERS}, got {expand_trigger!r}")
        self.mode = mode
        self.schedule = StageSchedule(k, stages, k_frozen)
        self.gate_fn = gate_function(gate)
        self.estimator = estimator
        self.sampling = sampling
        self.eval_gate = eval_gate
        self.fill = float(fill)
        self.expand_step = int(expand_step)
        self.expand_fraction = float(expand_fraction)
        self.expand_every = expand_every
        self.expand_val_batches = expand_val_batches
        self.expand_trigger = expand_trigger
        self._checking = False  # True while check_expansion runs end_epoch
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

        active = self.per_site("init_active", init_active, int)
        if mode == "expand" and any(a is None for a in active):
            raise ValueError("mode='expand' needs init_active for every gated layer (units open at start)")
        self.allocated: list[int] = []
        for site, n_active in zip(self.sites, active, strict=True):
            n_active = site.n if n_active is None else n_active
            if not 0 <= n_active <= site.n:
                raise ValueError(f"init_active for {site.layer!r} must be in [0, {site.n}], got {n_active}")
            with torch.no_grad():
                site.gates.phi.fill_(HIBERNATING_LOGIT / self.schedule.k)
                site.gates.phi[:n_active] = OPEN_LOGIT / self.schedule.k
            site.gates.prob_fn = self.gate_fn.prob
            site.gates.eval_phase = "open" if eval_gate == "binary" else "soft"
            site.gates.per_sample = sampling == "sample"
            site.gates.generator = self.generator
            self.allocated.append(n_active)
        self._attach_all()
        _keep_out_of_ddp(model, self.gate_parameters())
        self.best_loss = math.inf  # validation loss at the last expansion
        self.events: list[dict[str, Any]] = []
        self.set_epoch(0)

    # -- schedule -------------------------------------------------------------------------------
    @property
    def k(self) -> float:
        return self.schedule(self.epoch)

    @property
    def stage(self) -> int:
        return self.schedule.stage(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for site in self.sites:
            site.gates.k = self.k

    # -- the training step ----------------------------------------------------------------------
    @property
    def closure_kind(self) -> str:
        """What :meth:`backward`'s closure returns: ``"mean"`` (the mean loss), ``"per_example"`` (one
        loss per example: ``sampling="sample"``) or ``"indexed"`` (``closure(index=None)``: per-example
        losses of the examples in ``index``, all when None: ``anti_fraction < 1``)."""
        if self.anti_fraction < 1:
            return "indexed"
        return "per_example" if self.sampling == "sample" else "mean"

    def backward(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run the gated forward pass(es), back-propagate loss and penalty, write the gate gradients.

        In frozen stages gates are the deterministic ``1[phi > 0]``, the gate logits get no gradient
        (their ``.grad`` stays None so optimizers skip them) and only one pass is made. With ARM the
        antithetic pass is skipped when ``1[u < pi]`` and ``1[u > 1 - pi]`` agree at every gate: the
        two passes would compute the same loss (for a deterministic forward; with dropout the skipped
        difference has conditional mean 0), so the estimate is exactly 0.
        """
        if not callable(closure):
            raise TypeError(f"backward takes a closure that returns the loss, e.g. lambda: criterion(model(x), y); "
                            f"got a {type(closure).__name__}")
        if self.schedule.frozen(self.epoch):
            with self._phase("open"):
                loss = closure()
                self._check_loss(loss)
                loss.mean().backward()
            return loss.detach().mean()
        with self._phase("main"):
            loss = closure()
            self._check_loss(loss)
            (loss.mean() + self.penalty()).backward()
            u = [s.gates.u for s in self.sites]
            if self.estimator == "arm":
                main = loss.detach()
                if not self._antithetic_gates_differ(u):  # f(z_anti) = f(z_main): the estimate is exactly 0
                    anti = main
                elif self.anti_fraction < 1:  # both terms on a random sub-batch, independent of u
                    n = main.shape[0]
                    index = torch.randperm(n, generator=self.generator, device=self.generator.device)
                    index = index[: max(1, round(self.anti_fraction * n))].to(main.device)
                    main = main[index].mean()
                    with self._phase("anti", keep_u=True), torch.no_grad():
                        anti = closure(index).mean()
                else:
                    with self._phase("anti", keep_u=True), torch.no_grad(), _frozen_norm_stats(self.model):
                        anti = closure()
                logit_grads = [None if ui is None else estimators.arm_logit_grad(main, anti.detach(), ui)
                               for ui in u]
            else:
                logit_grads = [None if ui is None else estimators.ar_logit_grad(loss.detach(), ui) for ui in u]
        with torch.no_grad():
            for site, g in zip(self.sites, logit_grads, strict=True):
                if g is None:  # the gated layer did not run in this step (a skipped branch): no gradient
                    g = torch.zeros_like(site.gates.phi)
                phi = site.gates.phi
                grad = _all_reduce_mean(g) * self.gate_fn.logit_slope(phi, self.k)
                phi.grad = grad if phi.grad is None else phi.grad + grad
        return loss.detach().mean()

    def _antithetic_gates_differ(self, u: list[torch.Tensor | None]) -> bool:
        """Whether the ARM pair ``1[u < pi]`` and ``1[u > 1 - pi]`` differs at any gate (with saturated
        gates it often does not, and the antithetic pass would recompute the main pass's loss). Always
        true with ``sampling="sample"``, where DDP ranks could decide differently."""
        if self.sampling != "batch" or any(ui is None for ui in u):
            return True
        with torch.no_grad():
            differ = [estimators.antithetic_gates(ui, s.gates.prob()) for ui, s in zip(u, self.sites, strict=True)]
            return bool(torch.stack([(z1 != z2).any() for z1, z2 in differ]).any())

    def _check_loss(self, loss: torch.Tensor) -> None:
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"closure must return the loss as a tensor, got {type(loss).__name__}")
        if (self.sampling == "sample" or self.anti_fraction < 1) and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.model.modules()
        ):
            what = "sampling='sample'" if self.sampling == "sample" else "anti_fraction < 1"
            raise ValueError(
                f"{what} cannot be used while a BatchNorm of the model is in training mode: the batch "
                "statistics couple the examples, so per-example (or sub-batch) losses are biased; use "
                "sampling='batch' and anti_fraction=1 (the paper's setting) or put the BatchNorms in eval mode")
        kind = self.closure_kind
        if kind == "mean" and loss.dim() != 0:
            raise ValueError(f"closure must return a scalar loss with sampling='batch', got shape {tuple(loss.shape)}")
        if kind != "mean" and loss.dim() != 1:
            why = "sampling='sample'" if kind == "per_example" else "anti_fraction < 1"
            raise ValueError(f"closure must return per-example losses with {why}, got shape {tuple(loss.shape)}")

    @contextmanager
    def _phase(self, phase: str, keep_u: bool = False):
        for site in self.sites:
            site.gates.phase = phase
            if not keep_u:
                site.gates.u = None
        try:
            yield
        finally:
            for site in self.sites:
                site.gates.phase = None
                if phase != "main":
                    site.gates.u = None

    # -- expansion (Algorithm 1) ----------------------------------------------------------------
    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """In expand mode and stage 2: on a new best validation loss, every layer whose allocated
        units are all open (at least ``allocated`` units with ``phi >= 0``) gets its next hibernating
        units opened (``k*phi = fill``): ``expand_step`` of them, or ``ceil(expand_fraction *
        allocated)`` when that is more.

        It stops by itself: no improvement (plateau) means no event, and a layer with a closed
        allocated unit is not expanded. With ``expand_every`` set the checks come from
        :meth:`check_expansion` and this epoch-end call makes none. Returns the events (also kept in
        ``self.events``).
        """
        if self.mode != "expand" or self.stage != 2:
            return []
        if self.expand_every is not None and not self._checking:
            return []
        if val_loss is None:
            raise ValueError("NPN in expand mode needs end_epoch(val_loss=...) after each validation")
        if self.expand_trigger == "regularized":
            with torch.no_grad():
                val_loss = float(val_loss) + float(self.penalty())
        if not val_loss < self.best_loss:
            return []
        self.best_loss = float(val_loss)
        events = []
        for i, site in enumerate(self.sites):
            n_open = int((site.gates.phi >= 0).sum())  # every open unit counts, as the reference's test
            if self.allocated[i] >= site.n or n_open < self.allocated[i]:
                continue
            new = list(range(self.allocated[i], min(site.n, self.allocated[i] + self.expand_count(i))))
            with torch.no_grad():
                site.gates.phi[new] = self.fill / self.k
            self.allocated[i] += len(new)
            events.append({"epoch": self.epoch, "event": "expand", "layer": site.layer, "gate": site.name, "units": new,
                           "val_loss": float(val_loss)})
        self.events.extend(events)
        return events

    def expand_count(self, i: int) -> int:
        """Units the next expansion event opens at site ``i``: ``expand_step``, or ``ceil(expand_fraction
        * allocated)`` when that is more (before the cap at the site's width)."""
        return max(self.expand_step, math.ceil(self.expand_fraction * self.allocated[i]))

    def check_expansion(self, val_loss: float) -> list[dict[str, Any]]:
        """One expansion check now, within an epoch (for ``expand_every``; the loop calls it every
        ``expand_every`` steps with the loss on ``expand_val_batches`` validation batches).

        It runs :meth:`end_epoch`'s rule through :meth:`end_epoch` itself, so subclasses that act on
        expansion events there (:class:`PhysicalNPN` grows the model) follow.
        """
        self._checking = True
        try:
            return self.end_epoch(val_loss)
        finally:
            self._checking = False

    # -- reporting ------------------------------------------------------------------------------
    def eval_gates(self, site) -> torch.Tensor:
        phi = site.gates.phi.detach()
        if self.eval_gate == "binary":
            return (phi > 0).to(phi.dtype)
        pi = self.gate_fn.prob(phi, self.k)
        return pi * (pi >= 0.5).to(pi.dtype)

    def metrics(self) -> dict[str, Any]:
        return {"k": self.k, "stage": self.stage, **self.architecture()}

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "schedule": self.schedule.state_dict(),
            "allocated": list(self.allocated),
            "best_loss": self.best_loss,
            "events": list(self.events),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.allocated = list(state["allocated"])
        self.best_loss = float(state["best_loss"])
        self.events = list(state["events"])
        self.generator.set_state(state["generator"])
        self.set_epoch(state["epoch"])

    @classmethod
    def from_recipe(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, epochs: int,
                    steps_per_epoch: int, example_input: torch.Tensor | None = None, **options: Any) -> NPN:
        """Build from a recipe's ``method`` section; its ``stages`` must end within the run's ``epochs``."""
        if "stages" in options and options["stages"] is not None and options["stages"][1] > epochs:
            raise ValueError(f"method.stages {options['stages']} end after the run's {epochs} epochs")
        return super().from_recipe(model, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                   example_input=example_input, **options)


@contextmanager
def _frozen_norm_stats(model: nn.Module):
    """BatchNorm layers keep their mode (batch statistics in training) but do not update running
    statistics: the antithetic pass must see the same normalisation as the main pass, and must not
    count twice in the running averages."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(norms, saved, strict=True):
            m.track_running_stats = s


def _keep_out_of_ddp(model: nn.Module, gates: list[nn.Parameter]) -> None:
    """Tell DistributedDataParallel (wrapped after this) to leave the gate logits alone.

    Their gradient does not come from DDP's backward: the ARM/AR estimate is written by :meth:`NPN.backward`
    (averaged over ranks by :func:`_all_reduce_mean`) and the penalty's gradient is a function of the logits
    alone, identical on every rank. Left to DDP, a logit would be marked ready twice (penalty and
    estimate) or never (frozen stages, where it gets no gradient), and the reduction would fail.
    """
    ids = {id(p) for p in gates}
    names = [name for name, p in model.named_parameters() if id(p) in ids]
    previous = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, sorted(set(previous) | set(names)))


def _all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average a gate gradient over DDP ranks so every rank writes the same one (cheap: one float per
    gate; with ``sampling="batch"`` every rank drew the same ``u`` from the identically seeded generator)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= torch.distributed.get_world_size()
    return x
