"""Which layers of a model live on the unit Lp sphere, and which exponent p each one gets.

The rule (after the LpSS reference, with its p-list misassignment fixed):

* candidates are the ``weight`` tensors of ``nn.Linear`` and ``nn.Conv1d/2d/3d`` modules;
* a weight needs at least 2 input channels per unit (``weight.shape[1] >= 2``): a first convolution of a
  grayscale image has one input per position and cannot be sparse along its inputs; depthwise
  convolutions drop out by the same rule;
* convolutions whose kernel is all ones (1x1 shortcut / downsample convolutions) are left free;
* the classifier, the last Linear/Conv module in ``model.modules()`` order, is left free;
* ``include`` patterns add layers back (they must be Linear/Conv), ``exclude`` patterns remove layers;
  both are :mod:`fnmatch` patterns over module names and each must match at least one layer.

The exponent is assigned by position among the **constrained** layers: the first ``n_first`` get
``p_first``, the rest ``p_rest``. (The reference assigns it by position among *all* conv/fc weights
before excluding the grayscale stem, so its stem silently consumes the first entry.)
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

import torch
from torch import nn

from neuroplastic.lp.geometry import check_p
from neuroplastic.metrics import WEIGHTED


def _patterns(value: Iterable[str] | str | None, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = list(value)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must be a list of module-name patterns (str), got {value!r}")
    return out


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv modules of ``model`` by name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WEIGHTED)}


def follows_rules(weight: torch.Tensor) -> bool:
    """Whether a Linear (2-D) or Conv (3-D to 5-D) weight qualifies by shape: >= 2 inputs, not a 1x1 conv."""
    if weight.dim() < 2 or weight.shape[1] < 2:
        return False
    return weight.dim() == 2 or any(k != 1 for k in weight.shape[2:])


def constrained_params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The same rules on a bare parameter list (no module names): the weights among ``params`` to constrain.

    Candidates are the 2-D to 5-D tensors, taken as Linear (2-D) and Conv weights; the last candidate,
    in the given order (``model.parameters()`` follows registration order), is the classifier.
    """
    candidates = [q for q in params if 2 <= q.dim() <= 5]
    return [q for q in candidates[:-1] if follows_rules(q)]


def constrained_layers(
    model: nn.Module,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> list[str]:
    """Names of the modules whose weight rows are constrained to the unit Lp sphere (see module doc)."""
    layers = weighted_layers(model)
    if not layers:
        raise ValueError("model has no Linear/Conv layer to constrain")
    classifier = list(layers)[-1]
    chosen = [name for name, m in layers.items() if name != classifier and follows_rules(m.weight)]
    for pattern in _patterns(include, "include"):
        hits = [n for n in layers if fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"include pattern {pattern!r} matches no Linear/Conv layer; layers: {list(layers)}")
        for n in hits:
            if layers[n].weight.dim() < 2 or layers[n].weight[0].numel() < 2:
                raise ValueError(f"include: layer {n!r} has fewer than 2 weights per unit and cannot be constrained")
        chosen.extend(n for n in hits if n not in chosen)
    for pattern in _patterns(exclude, "exclude"):
        hits = [n for n in layers if fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"exclude pattern {pattern!r} matches no Linear/Conv layer; layers: {list(layers)}")
        chosen = [n for n in chosen if n not in hits]
    order = list(layers)
    return sorted(chosen, key=order.index)


def assign_p(names: list[str], p_first: float, p_rest: float | None = None, n_first: int = 0) -> dict[str, float]:
    """Map each constrained layer to its exponent: ``p_first`` for the first ``n_first``, ``p_rest`` after.

    ``p_rest=None`` means every layer gets ``p_first`` (then ``n_first`` is irrelevant).
    """
    p_first = check_p(p_first, "p_first")
    p_rest = p_first if p_rest is None else check_p(p_rest, "p_rest")
    if isinstance(n_first, bool) or not isinstance(n_first, int) or n_first < 0:
        raise ValueError(f"n_first must be an int >= 0, got {n_first!r}")
    return {name: (p_first if i < n_first else p_rest) for i, name in enumerate(names)}
