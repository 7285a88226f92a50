"""Honest counts: weights (the paper's "params"), parameters, and forward FLOPs per example.

Conventions, used everywhere in the library and in ``results.json``:

* ``params`` counts the weights of ``nn.Linear`` and ``nn.Conv*`` layers only (biases, norm layers and
  gate logits excluded), as the NPN paper counts. :func:`count_parameters` counts every tensor.
* FLOPs are multiply-accumulates times two, per example, for Linear and Conv layers (bias adds and
  element-wise layers are not counted). Grouped convolutions count only the weights they use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neuroplastic.errors import BadInput

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_weights(model: nn.Module) -> int:
    """Number of weights of the Linear and Conv layers of ``model`` (biases excluded)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, WEIGHTED))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in all parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def layer_flops(model: nn.Module, example_input: torch.Tensor | Sequence[int]) -> dict[str, int]:
    """Dense forward FLOPs per example of each Linear/Conv layer, keyed by module name.

    ``example_input`` is a tensor with a batch dimension or a shape without one (e.g. ``(1, 28, 28)``).
    The model is run once in eval mode on a batch of one; its training mode is restored afterwards. A model
    that cannot take such an input raises :class:`~neuroplastic.errors.BadInput` naming the shape.
    """
    if not isinstance(example_input, torch.Tensor):
        shape = tuple(int(s) for s in example_input)
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        example_input = torch.zeros((1, *shape), device=device)
    x = example_input[:1]
    flops: dict[str, int] = {}
    hooks = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                positions = output.numel() // output.shape[-1]
                flops[name] = flops.get(name, 0) + 2 * positions * module.in_features * module.out_features
            else:
                per_position = module.weight[0].numel()  # in_channels/groups * kernel
                flops[name] = flops.get(name, 0) + 2 * output.numel() * per_position

        return hook

    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED):
            hooks.append(module.register_forward_hook(make_hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(x)
    except RuntimeError as err:  # e.g. a model built for another input size than the data's
        raise BadInput(f"an input of shape {tuple(x.shape[1:])} (one example) does not run through "
                       f"{type(model).__name__}: {str(err).splitlines()[0]}") from err
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return flops


def count_flops(model: nn.Module, example_input: torch.Tensor | Sequence[int]) -> int:
    """Total dense forward FLOPs per example of the Linear and Conv layers of ``model``."""
    return sum(layer_flops(model, example_input).values())
