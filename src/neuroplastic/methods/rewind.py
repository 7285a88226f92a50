"""Iterative magnitude pruning with weight rewinding or learning-rate rewinding.

Training is split into rounds. Round 0 trains ``epochs_per_round`` epochs from a dense start. At its end
the smallest-magnitude weights are pruned (globally or per layer) and the network is rewound:

* ``rewind="weights"`` (Frankle et al., lottery tickets with rewinding): the surviving weights, every other
  parameter and buffer, and the optimizer state go back to their values after ``rewind_epoch`` epochs of
  round 0 (``rewind_epoch=0``: the initialisation), then the masks are applied.
* ``rewind="lr"`` (Renda et al. 2020): the weights are kept; only the learning-rate schedule goes back.

In both cases the next round trains ``epochs_per_round - rewind_epoch`` epochs with the learning rates of
epochs ``rewind_epoch .. epochs_per_round`` of the original schedule. Give the per-step LR scheduler (a
``LambdaLR``, as :mod:`neuroplastic.train.optim` builds) as ``scheduler`` and it is rewound for you; or read
the ``lr_restart_step`` of the round's event. After ``rounds`` prunings the last round trains at the final
density; :attr:`total_epochs` is the length of the whole run. The density after round ``r`` (1-based) is
``final_density ** (r / rounds)`` (or ``density_per_round ** r``), with exact counts.

Loop::

    imp = IterativePruning(model, opt, rounds=3, final_density=0.2, rewind="weights", rewind_epoch=1,
                           epochs_per_round=10, steps_per_epoch=len(loader), scheduler=sched)
    for epoch in range(imp.total_epochs):
        for x, y in loader:
            ...; opt.step(); sched.step(); imp.step()
        events = imp.end_epoch()        # prunes and rewinds at the end of a round
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from neuroplastic.checks import check_choice, check_fraction, check_int
from neuroplastic.masks import kept_count
from neuroplastic.methods.dst import DISTRIBUTIONS
from neuroplastic.methods.mask_method import MaskMethod

REWIND_MODES = ("weights", "lr")


class IterativePruning(MaskMethod):
    """Iterative magnitude pruning in rounds, with weight rewinding or learning-rate rewinding."""

    name = "imp"
    from_runner = ("steps_per_epoch",)  # the length of the run follows from the rounds

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        rounds: int,
        epochs_per_round: int,
        steps_per_epoch: int,
        final_density: float | None = None,
        density_per_round: float | None = None,
        rewind: str = "weights",
        rewind_epoch: int = 0,
        distribution: str = "global",
        scheduler: LambdaLR | None = None,
        **kw: Any,
    ) -> None:
        self.rounds = check_int("rounds", rounds, low=1)
        self.epochs_per_round = check_int("epochs_per_round", epochs_per_round, low=1)
        if (final_density is None) == (density_per_round is None):
            raise ValueError("give exactly one of final_density and density_per_round")
        if final_density is not None:
            self.final_density = check_fraction("final_density", final_density, low_open=True)
        else:
            self.final_density = check_fraction("density_per_round", density_per_round, low_open=True) ** self.rounds
        check_choice("rewind", rewind, REWIND_MODES)
        if not 0 <= check_int("rewind_epoch", rewind_epoch) < self.epochs_per_round:
            raise ValueError(f"rewind_epoch must be in [0, epochs_per_round={epochs_per_round}), got {rewind_epoch}")
        check_choice("distribution", distribution, DISTRIBUTIONS)
        if scheduler is not None and not isinstance(scheduler, LambdaLR):
            raise TypeError(f"scheduler must be a per-step LambdaLR (closed form of the step), got {type(scheduler)}")
        if optimizer is None:
            raise ValueError("IterativePruning needs the optimizer (its state is rewound and masked)")
        self.rewind, self.rewind_epoch, self.distribution = rewind, rewind_epoch, distribution
        self.scheduler = scheduler
        self.total_epochs = self.epochs_per_round + self.rounds * (self.epochs_per_round - rewind_epoch)
        super().__init__(model, optimizer, epochs=self.total_epochs, steps_per_epoch=steps_per_epoch, **kw)
        self.round = 0
        self.epochs_done = 0  # epochs finished in the current round
        self._rewind_point: dict[str, Any] | None = None
        if rewind_epoch == 0:
            self._save_rewind_point()

    def bind_optimizers(self, optimizers: Any, schedules: Any = ()) -> None:
        """Take the per-step ``LambdaLR`` of this method's optimizer from ``schedules`` (when no
        ``scheduler`` was given), so that every round restarts it at the rewind epoch."""
        super().bind_optimizers(optimizers, schedules)
        if self.scheduler is None:
            mine = [s for s in schedules if isinstance(s, LambdaLR) and s.optimizer is self.engine.optimizer]
            if len(mine) > 1:
                raise ValueError(f"{len(mine)} LR schedules drive this method's optimizer; give scheduler= yourself")
            self.scheduler = mine[0] if mine else None

    def _save_rewind_point(self) -> None:
        self._rewind_point = {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.engine.optimizer.state_dict()),
        }

    def round_length(self, round_index: int) -> int:
        """Epochs of round ``round_index`` (round 0 is the full schedule, later ones start at the rewind)."""
        return self.epochs_per_round if round_index == 0 else self.epochs_per_round - self.rewind_epoch

    def density_after(self, round_index: int) -> float:
        """Target density after the ``round_index``-th pruning (1-based; 0 is dense)."""
        return self.final_density ** (round_index / self.rounds)

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """Count the epoch; save the rewind point, or prune and rewind at the end of a round."""
        events = super().end_epoch(val_loss)
        self.epochs_done += 1
        if self.round == 0 and self.epochs_done == self.rewind_epoch:
            self._save_rewind_point()
        if self.epochs_done == self.round_length(self.round) and self.round < self.rounds:
            events.append(self.end_round())
        return events

    def end_round(self) -> dict[str, Any]:
        """Prune to the next round's density, rewind weights or LR, and start the next round."""
        self.round += 1
        self.epochs_done = 0
        target = self.density_after(self.round)
        if self.distribution == "global":
            self.prune_global(kept_count(target, sum(self.engine.numel().values())))
        else:
            self.prune_layers({n: kept_count(target, m.numel()) for n, m in self.engine.masks.items()})
        if self.rewind == "weights":
            self.model.load_state_dict(self._rewind_point["model"])
            # a copy: the optimizer keeps the tensors it loads and updates them in place, which would
            # overwrite the rewind point (every later rewind would restore the previous round's state)
            self.engine.optimizer.load_state_dict(copy.deepcopy(self._rewind_point["optimizer"]))
            self.engine.apply()
        restart = self.rewind_epoch * self.steps_per_epoch
        if self.scheduler is not None:
            # LambdaLR computes the LR from last_epoch in closed form: put it back to the rewind step
            self.scheduler.last_epoch = restart - 1
            self.scheduler.step()
        return {
            "event": "prune_round",
            "round": self.round,
            "step": self.global_step,
            "density": self.engine.density(),
            "target_density": target,
            "rewind": self.rewind,
            "lr_restart_step": restart,
        }

    def state_dict(self) -> dict[str, Any]:
        """Adds the round counters and the rewind point (model and optimizer states) to the mask state."""
        return {
            **super().state_dict(),
            "round": self.round,
            "epochs_done": self.epochs_done,
            "rewind_point": self._rewind_point,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        self.round, self.epochs_done = int(state["round"]), int(state["epochs_done"])
        self._rewind_point = state["rewind_point"]

    @classmethod
    def from_recipe(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        epochs: int,
        steps_per_epoch: int,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> IterativePruning:
        """Build from recipe options; the recipe's ``epochs`` must equal the run's :attr:`total_epochs`."""
        method = super().from_recipe(model, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                     example_input=example_input, **options)
        if epochs != method.total_epochs:
            raise ValueError(
                f"epochs ({epochs}) must equal epochs_per_round + rounds * (epochs_per_round - rewind_epoch) "
                f"= {method.total_epochs}"
            )
        return method
