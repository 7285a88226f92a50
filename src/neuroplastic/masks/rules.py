"""Drop and grow rules: pure functions on tensors, with exact counts and deterministic ties.

Every rule returns a *new* boolean mask and never modifies its inputs. Ties are broken by flat index
(the lower index is dropped first and grown first), through stable sorts, so that the same inputs give the
same mask on every process and every run.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _count(n: int, available: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if n > available:
        raise ValueError(f"cannot {what} {n} entries: only {available} available")
    return n


def check_mask(mask: torch.Tensor, other: torch.Tensor, other_name: str = "weight") -> None:
    """A mask must be a bool tensor of the shape of the tensor it masks (``other``)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != other.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from {other_name} shape {tuple(other.shape)}")


def drop_by_magnitude(weight: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Deactivate the ``n`` active entries of smallest ``|weight|`` (ties: lower flat index first)."""
    check_mask(mask, weight, "weight")
    active = mask.flatten().nonzero().squeeze(1)
    n = _count(n, active.numel(), "drop")
    order = torch.sort(weight.detach().flatten()[active].abs(), stable=True).indices
    new = mask.clone().flatten()
    new[active[order[:n]]] = False
    return new.view_as(mask)


def dense_gradients(weights: Mapping[str, torch.Tensor], who: str) -> dict[str, torch.Tensor]:
    """The dense gradients of the masked layers' weights that a gradient-based growth scores with.

    Raises when a layer has none (``step()`` called after ``zero_grad()``), and when every layer's is
    all zero: a loop that zeroes gradients in place before the method's step would otherwise make every
    growth pick the lowest-index inactive positions, silently.
    """
    for name, weight in weights.items():
        if weight.grad is None:
            raise RuntimeError(f"{who} grows by the gradient of {name!r}, which has none: call step() after "
                               "backward() and optimizer.step(), before the next zero_grad()")
    grads = {name: weight.grad for name, weight in weights.items()}
    if grads and not any(bool(g.any()) for g in grads.values()):
        raise RuntimeError(f"{who} grows by the gradients of the masked layers, which are all zero at this update: "
                           "was zero_grad() called before step()? Call step() right after optimizer.step()")
    return grads


def grow_by_score(score: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Activate the ``n`` *inactive* entries of highest ``score`` (ties: lower flat index first).

    Only inactive positions are candidates, so exactly ``n`` new connections appear (no under-growth
    when scores are zero or tied, unlike sorting the whole tensor). NaN scores are an error.
    """
    check_mask(mask, score, "score")
    inactive = (~mask).flatten().nonzero().squeeze(1)
    n = _count(n, inactive.numel(), "grow")
    values = score.detach().flatten()[inactive]
    if torch.isnan(values).any():
        raise ValueError("score has NaN at inactive positions")
    order = torch.sort(values, descending=True, stable=True).indices
    new = mask.clone().flatten()
    new[inactive[order[:n]]] = True
    return new.view_as(mask)


def grow_random(mask: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Activate ``n`` inactive entries chosen uniformly at random with ``generator``."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    inactive = (~mask).flatten().nonzero().squeeze(1)
    n = _count(n, inactive.numel(), "grow")
    pick = torch.randperm(inactive.numel(), generator=generator, device=generator.device)[:n]
    new = mask.clone().flatten()
    new[inactive[pick.to(inactive.device)]] = True
    return new.view_as(mask)


def global_magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    density: float | None = None,
    *,
    count: int | None = None,
) -> dict[str, torch.Tensor]:
    """Keep the entries of largest ``|w|`` over all layers together, an exact total count.

    The kept total is ``count`` if given, else ``floor(density * total + 0.5)`` where ``total`` counts all
    entries of ``weights``. With ``masks``, only currently active entries are candidates (pruning never
    regrows), and the count may not exceed the number of active entries. Ties: earlier layer (in the order
    of ``weights``), then lower flat index, is kept first.
    """
    from neuroplastic.masks.density import kept_count

    if not weights:
        raise ValueError("weights is empty")
    names = list(weights)
    total = sum(weights[n].numel() for n in names)
    if (density is None) == (count is None):
        raise ValueError("give exactly one of density and count")
    if count is None:
        if not 0.0 <= float(density) <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {density!r}")
        count = kept_count(float(density), total)
    scores = []
    for n in names:
        s = weights[n].detach().abs().flatten().float()
        if masks is not None:
            check_mask(masks[n], weights[n], f"weight {n!r}")
            s = s.masked_fill(~masks[n].flatten(), -1.0)  # inactive below every |w| >= 0
        scores.append(s)
    flat = torch.cat(scores)
    candidates = int((flat >= 0).sum())
    count = _count(int(count), candidates, "keep")
    # descending stable sort keeps the earlier entry of equal scores first
    keep = torch.sort(flat, descending=True, stable=True).indices[:count]
    new_flat = torch.zeros_like(flat, dtype=torch.bool)
    new_flat[keep] = True
    out, start = {}, 0
    for n in names:
        size = weights[n].numel()
        out[n] = new_flat[start : start + size].view_as(weights[n])
        start += size
    return out
