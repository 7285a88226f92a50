"""The one interface every capacity-changing method implements: the method protocol.

A training loop (ours in :mod:`neuroplastic.train`, the Lightning and Hugging Face callbacks, or a user's
own loop) drives any method the same way::

    method.bind_optimizers(optimizers, schedules) # once, after the optimizers exist
    method.set_epoch(epoch)
    for x, y in loader:
        optimizer.zero_grad()
        loss = method.backward(closure)           # closure as method.closure_kind says
        optimizer.step()
        method.step()
    method.end_epoch(val_loss=validation_loss)

Every hook and capability is declared here with a default that is right for a method that does not use
it, so a loop never inspects signatures or probes attributes: it calls the hooks and reads the
capabilities. What each one is for:

======================  ==========================================================================
``closure_kind``        what :meth:`backward`'s closure returns (``"mean"``, ``"per_example"``,
                        ``"indexed"``); :func:`neuroplastic.train.training_closure` builds each kind
``takes_optimizer``     the constructor takes the weights optimizer after the model (mask methods zero
                        its state on dropped weights; LpSS needs its LpCGD): build the optimizer first
``resizes_model``       the model's parameters are replaced during training (PhysicalNPN): wrappers that
                        hold parameters (DDP) must be rebuilt after an epoch that changed ``params``
``expand_every``        step-wise expansion: every that many steps the loop evaluates the validation
                        loss and calls :meth:`check_expansion` (None: no step-wise checks)
``mode``                ``"sparse"`` / ``"expand"`` for methods that do either, else None
``owns_backward``       :meth:`backward` does more than ``closure().backward()`` (NPN's second ARM pass,
                        a penalty added to the loss): a framework loop that back-propagates the loss
                        itself (Lightning's automatic optimization, the Hugging Face ``Trainer``'s
                        ``training_step``) must hand the step to :meth:`backward` instead
======================  ==========================================================================

Methods that need more than one forward pass per step (NPN's ARM estimator) own the backward step,
as :class:`torch.optim.LBFGS` owns its closure; the others inherit the plain ``loss.backward()``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

#: closure kinds a method can ask for (see :attr:`CapacityMethod.closure_kind`)
CLOSURE_KINDS = ("mean", "per_example", "indexed")
#: constructor parameters that are not recipe options: the model and optimizer, and what the runner supplies
_NOT_OPTIONS = frozenset({"self", "model", "optimizer", "epochs", "steps_per_epoch"})


class CapacityMethod:
    """Base class: a policy that changes which units or connections of ``model`` are live.

    Subclasses override the hooks they need; every hook has a default that is right for a method that
    does not use it (see the module docstring for the capabilities). ``CapacityMethod(model)`` itself
    is the dense baseline: it changes nothing.
    """

    #: short name used in results files and logs (``"npn"``, ``"rigl"``, ...); the recipe name
    name: str = "dense"
    #: what :meth:`backward`'s closure must return: ``"mean"`` (the mean loss of the batch),
    #: ``"per_example"`` (one loss per example) or ``"indexed"`` (``closure(index=None)``: per-example losses
    #: of the examples at ``index``, all of them when None)
    closure_kind: str = "mean"
    #: the constructor is ``Class(model, optimizer, ...)``: the weights optimizer is built first
    takes_optimizer: ClassVar[bool] = False
    #: the model's parameters are replaced during training (rebuild wrappers such as DDP afterwards)
    resizes_model: ClassVar[bool] = False
    #: step-wise expansion: training steps between :meth:`check_expansion` calls (None: none)
    expand_every: int | None = None
    #: validation batches (the first ones) a step-wise check evaluates (None: all)
    expand_val_batches: int | None = None
    #: ``"sparse"`` or ``"expand"`` for methods that do either; None otherwise
    mode: str | None = None
    #: :meth:`backward` is not the plain ``closure().backward()``: loops must call it for the step
    owns_backward: ClassVar[bool] = False
    #: the run's length arguments :meth:`from_recipe` passes to constructors that take them
    from_runner: ClassVar[tuple[str, ...]] = ("epochs", "steps_per_epoch")

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.epoch = 0

    # -- the training-loop hooks ---------------------------------------------------------------
    def bind_optimizers(self, optimizers: Sequence[torch.optim.Optimizer], schedules: Sequence[Any] = ()) -> None:
        """Tell the method the optimizers training the model and their per-step LR schedules, once they
        exist (methods that replace parameters keep the optimizers consistent; learning-rate rewinding
        moves a schedule back). The default ignores them."""

    def set_epoch(self, epoch: int) -> None:
        """Tell the method which epoch starts (drives stage and density schedules)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def backward(self, closure: Callable[..., torch.Tensor]) -> torch.Tensor:
        """Evaluate ``closure`` (which returns the scalar training loss), back-propagate, return it.

        The returned tensor is detached. The default is one forward and one backward pass.
        """
        loss = closure()
        loss.backward()
        return loss.detach()

    def step(self) -> None:
        """Call once after every ``optimizer.step()`` (masks are re-applied, topology updated)."""

    def check_expansion(self, val_loss: float) -> list[dict[str, Any]]:
        """Step-wise expansion check (when :attr:`expand_every` is set); returns its events."""
        return []

    def end_epoch(self, val_loss: float | None = None) -> list[dict[str, Any]]:
        """Call after each validation; returns the capacity events it caused (may be empty)."""
        return []

    # -- what the method adds to the model -------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters the method added to the model (gate logits), e.g. for their own optimizer
        or learning rate; the default has none."""
        return []

    # -- reporting -----------------------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        """The live architecture: at least ``{"params": live weights, "params_dense": all weights}``."""
        from neuroplastic.metrics import count_weights

        n = count_weights(self.model)
        return {"params": n, "params_dense": n}

    def metrics(self) -> dict[str, Any]:
        """Scalars (and small lists) worth one line of the training history per epoch."""
        return {}

    def snapshot(self) -> dict[str, np.ndarray]:
        """Arrays worth saving every few epochs for pictures (gate probabilities, densities); none by default."""
        return {}

    def live_flops(self, input_shape: Sequence[int]) -> int:
        """Forward FLOPs per example of the live network (closed units and masked weights cost nothing);
        the default counts the dense model."""
        from neuroplastic.metrics import count_flops

        return count_flops(self.model, tuple(input_shape))

    def compact(self, example_input: torch.Tensor) -> nn.Module | None:
        """A plain ``nn.Module`` without the dead units (methods that remove units), else None."""
        return None

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state (schedules, counters, RNG); model and optimizer tensors are saved apart."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.epoch = int(state["epoch"])

    # -- construction from a recipe ------------------------------------------------------------
    @classmethod
    def constructor_parameters(cls) -> dict[str, inspect.Parameter]:
        """The named parameters of the constructor: ``cls.__init__``'s, and, while an ``__init__`` passes
        ``**kw`` on, those of the next base class that defines one."""
        params: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            passes_on = False
            for name, par in inspect.signature(klass.__init__).parameters.items():
                if par.kind is par.VAR_KEYWORD:
                    passes_on = True
                elif par.kind is not par.VAR_POSITIONAL and name != "self":
                    params.setdefault(name, par)
            if not passes_on or klass is CapacityMethod:
                break
        return params

    @classmethod
    def option_names(cls) -> dict[str, inspect.Parameter]:
        """The recipe options of ``cls``: its constructor parameters (:meth:`constructor_parameters`)
        without the model, the optimizer and ``epochs`` / ``steps_per_epoch`` (the runner gives those)."""
        return {name: par for name, par in cls.constructor_parameters().items() if name not in _NOT_OPTIONS}

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
    ) -> CapacityMethod:
        """Build from a recipe's ``method`` options (unknown options are an error naming the allowed ones).

        ``optimizer`` goes to methods with :attr:`takes_optimizer`; ``epochs`` and ``steps_per_epoch``
        to constructors that take them; ``example_input`` (a batch of the data's shape) to constructors
        that take it, unless the options give ``example_input`` or ``input_shape`` themselves.
        """
        allowed = cls.option_names()
        unknown = set(options) - set(allowed)
        if unknown:
            raise ValueError(f"unknown options for method {cls.name!r}: {sorted(unknown)}; allowed: {sorted(allowed)}")
        params = cls.constructor_parameters()
        kwargs = dict(options)
        for key, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if key in params and key in cls.from_runner:
                kwargs[key] = value
        own_example = {"example_input", "input_shape"} & set(options)
        if example_input is not None and "example_input" in allowed and not own_example:
            kwargs["example_input"] = example_input
        if cls.takes_optimizer:
            if optimizer is None:
                raise ValueError(f"method {cls.name!r} needs the weights optimizer (build it first)")
            return cls(model, optimizer, **kwargs)
        return cls(model, **kwargs)
