"""Per-layer densities (uniform, ER, ERK) and random masks with exact counts.

All functions take ``shapes = {layer name: weight shape}`` (as :meth:`MaskEngine.shapes` returns) and a
target overall ``density`` in (0, 1], and return ``{layer name: density}``.

ER and ERK (Mocanu et al. 2018; Evci et al. 2020, "RigL") give each layer a density proportional to a raw
score, scaled by one factor ``eps`` so that the total number of kept weights equals ``density`` times the
total. A layer whose scaled density would exceed 1 is made dense and ``eps`` is solved again for the
others, until no layer exceeds 1 (the loop of the RigL code, reference §3.4).

* ER raw score: ``(n_in + n_out) / (n_in * n_out)`` with ``n_out = shape[0]`` and ``n_in = shape[1]`` for
  every layer type (kernel sizes ignored).
* ERK raw score: ``sum(shape) / prod(shape)``, i.e. ``(n_out + n_in + kh + kw) / (n_out n_in kh kw)`` for a
  2-D conv and ``(n_in + n_out) / (n_in n_out)`` for a Linear.

Rounding: :func:`random_masks` keeps exactly ``floor(density_l * numel_l + 0.5)`` entries of layer ``l``
(round half up), so the overall count can differ from ``density * total`` by at most half a weight per
layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

DISTRIBUTIONS = ("uniform", "er", "erk")

Shapes = Mapping[str, Sequence[int]]


def _check(shapes: Shapes, density: float) -> None:
    if not shapes:
        raise ValueError("shapes is empty: no layer to give a density")
    if not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")


def uniform(shapes: Shapes, density: float) -> dict[str, float]:
    """Every layer at ``density``."""
    _check(shapes, density)
    return {n: float(density) for n in shapes}


def _scaled(shapes: Shapes, density: float, raw: Callable[[Sequence[int]], float]) -> dict[str, float]:
    """Densities ``eps * raw(shape)``, with the layers that would exceed 1 capped at 1 (loop until none)."""
    _check(shapes, density)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    score = {n: raw(s) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        # kept weights of the sparse layers = target total minus the dense layers' full counts
        rhs = sum(density * numel[n] for n in sparse) - sum((1.0 - density) * numel[n] for n in dense)
        eps = rhs / sum(score[n] * numel[n] for n in sparse)
        top = max(eps * score[n] for n in sparse)
        if top <= 1.0 or len(sparse) == 1:
            break
        # every layer tied at the maximum becomes dense, as in the RigL code
        dense |= {n for n in sparse if math.isclose(eps * score[n], top, rel_tol=1e-12)}
    return {n: 1.0 if n in dense else min(1.0, eps * score[n]) for n in shapes}


def er(shapes: Shapes, density: float) -> dict[str, float]:
    """Erdős–Rényi densities: raw score ``(n_in + n_out) / (n_in n_out)`` (kernel size ignored)."""
    for n, s in shapes.items():
        if len(s) < 2:
            raise ValueError(f"ER needs weights with at least 2 dimensions; {n!r} has shape {tuple(s)}")
    return _scaled(shapes, density, lambda s: (s[0] + s[1]) / (s[0] * s[1]))


def erk(shapes: Shapes, density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities: raw score ``sum(shape) / prod(shape)``."""
    return _scaled(shapes, density, lambda s: sum(s) / math.prod(s))


def layer_densities(distribution: str, shapes: Shapes, density: float) -> dict[str, float]:
    """Dispatch on ``distribution`` (one of ``uniform``, ``er``, ``erk``)."""
    funcs = {"uniform": uniform, "er": er, "erk": erk}
    if distribution not in funcs:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    return funcs[distribution](shapes, density)


def kept_count(density: float, numel: int) -> int:
    """Number of entries kept at ``density``: ``floor(density * numel + 0.5)`` (round half up)."""
    return min(numel, max(0, math.floor(density * numel + 0.5)))


def random_masks(
    shapes: Shapes,
    densities: Mapping[str, float],
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Uniformly random boolean masks with exactly :func:`kept_count` active entries per layer.

    The permutations are drawn from ``generator`` (on its device) in the order of ``shapes``, so the
    same seed gives the same masks on every process.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    missing = set(shapes) - set(densities)
    if missing:
        raise ValueError(f"densities lacks layers {sorted(missing)}")
    masks = {}
    for name, shape in shapes.items():
        d = densities[name]
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"density of layer {name!r} must be in [0, 1], got {d}")
        n = math.prod(shape)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        flat = torch.zeros(n, dtype=torch.bool, device=generator.device)
        flat[perm[: kept_count(d, n)]] = True
        masks[name] = flat.view(*shape).to(device if device is not None else generator.device)
    return masks
