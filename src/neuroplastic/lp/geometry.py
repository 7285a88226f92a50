"""Row-wise Lp geometry of a weight tensor: norms, projection onto the unit Lp sphere, the dual map.

A *unit* is one output row of a weight: ``w[j]`` of a Linear weight, one filter ``w[j, :, ...]`` of a
Conv weight. Every function here works on each unit separately (dim 0), flattening the others.

For an exponent ``p > 1`` the dual exponent is ``q = p / (p - 1)``. The dual (mirror) map sends a
unit on the unit Lp sphere to a unit on the unit Lq sphere and back:

* ``to_dual(w, p)   = sign(w) |w|^(p-1)``         (``||w||_p = 1  =>  ||v||_q = 1``)
* ``from_dual(v, p) = sign(v) |v|^(1/(p-1))``     (``||v||_q = 1  =>  ||w||_p = 1``)

Near ``p = 1`` the exponent ``1/(p-1)`` is large (14.3 at ``p = 1.07``), which is why such weights are
sparse, and also why float32 needs care: a unit is divided by its largest magnitude before any power is
taken, so every powered number lies in ``[0, 1]`` (no overflow; underflow only of entries that are
negligible next to the row's maximum). Rows whose largest magnitude is ``<= eps`` are treated as zero
rows and stay zero.
"""

from __future__ import annotations

import math

import torch

#: default threshold below which a row counts as all-zero (far below any float32 gradient of interest)
EPS = 1e-30


def check_p(p: float, name: str = "p") -> float:
    """Return ``p`` as a float if it is a finite number > 1, else raise ValueError naming ``name``."""
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"{name} must be a number > 1, got {type(p).__name__} {p!r}")
    if not math.isfinite(p) or p <= 1:
        raise ValueError(f"{name} must be a finite number > 1 (the Lp sphere needs p > 1), got {p}")
    return float(p)


def dual_exponent(p: float) -> float:
    """The dual exponent ``q = p / (p - 1)`` of ``p > 1``."""
    p = check_p(p)
    return p / (p - 1.0)


def _rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 1:
        raise ValueError(f"expected a tensor with at least one dimension (units on dim 0), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _row_max(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest magnitude of each row (as a column) with zero rows replaced by 1, and the zero-row flag."""
    m = rows.abs().amax(dim=1, keepdim=True)
    zero = m <= eps
    return torch.where(zero, torch.ones_like(m), m), zero


def lp_norm(x: torch.Tensor, p: float, eps: float = EPS) -> torch.Tensor:
    """The Lp norm of every unit (row) of ``x``, shape ``(x.shape[0],)``; stable for any ``p >= 1``."""
    if not (p >= 1):
        raise ValueError(f"p must be >= 1 for a norm, got {p}")
    rows = _rows(x)
    m, zero = _row_max(rows, eps)
    scaled = (rows / m).abs().pow(p).sum(dim=1, keepdim=True).pow(1.0 / p)
    return torch.where(zero, torch.zeros_like(m), m * scaled).squeeze(1)


def normalize(x: torch.Tensor, p: float, eps: float = EPS) -> torch.Tensor:
    """``x`` with every unit divided by its Lp norm (zero rows stay zero); same shape as ``x``."""
    if not (p >= 1):
        raise ValueError(f"p must be >= 1 for a norm, got {p}")
    rows = _rows(x)
    m, zero = _row_max(rows, eps)
    y = rows / m  # |y| <= 1, the row maximum is exactly 1: no overflow when powering
    y = y / y.abs().pow(p).sum(dim=1, keepdim=True).pow(1.0 / p)
    return torch.where(zero, torch.zeros_like(y), y).reshape(x.shape)


def project(w: torch.Tensor, p: float, eps: float = EPS) -> torch.Tensor:
    """Project every unit of ``w`` onto the unit Lp sphere (``w_j / ||w_j||_p``); alias of :func:`normalize`."""
    return normalize(w, check_p(p), eps)


def to_dual(w: torch.Tensor, p: float, eps: float = EPS) -> torch.Tensor:
    """The dual (feature) vector ``sign(w)|w|^(p-1)`` of each unit, scaled onto the unit Lq sphere.

    For a unit already on the Lp sphere the scaling is the identity (``||v||_q = ||w||_p^(p-1) = 1``);
    for any other unit it makes the result the dual of ``w / ||w||_p``.
    """
    p = check_p(p)
    q = p / (p - 1.0)
    rows = _rows(w)
    m, _ = _row_max(rows, eps)
    v = torch.sign(rows) * (rows.abs() / m).pow(p - 1.0)
    return normalize(v, q, eps).reshape(w.shape)


def from_dual(v: torch.Tensor, p: float, eps: float = EPS) -> torch.Tensor:
    """The weight ``sign(v)|v|^(1/(p-1))`` of each dual unit, scaled onto the unit Lp sphere.

    Exactly the map back when ``||v_j||_q = 1``; computed as ``(|v|/max|v|)^(1/(p-1))`` followed by an
    Lp normalisation so that float32 neither overflows nor loses the row to underflow.
    """
    p = check_p(p)
    rows = _rows(v)
    m, _ = _row_max(rows, eps)
    w = torch.sign(rows) * (rows.abs() / m).pow(1.0 / (p - 1.0))
    return normalize(w, p, eps).reshape(v.shape)


def hoyer(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Hoyer sparsity ``(sqrt(d) - ||x_j||_1/||x_j||_2) / (sqrt(d) - 1)`` of every unit, shape ``(units,)``.

    0 for a unit whose entries all have the same magnitude, 1 for a unit with one non-zero entry. An
    all-zero unit (``d`` zeros) is counted as 1, maximally sparse. Needs ``d >= 2`` entries per unit.
    """
    rows = _rows(x)
    d = rows.shape[1]
    if d < 2:
        raise ValueError(f"Hoyer sparsity needs at least 2 entries per unit, got {d} (shape {tuple(x.shape)})")
    l1 = lp_norm(rows, 1.0, eps)
    l2 = lp_norm(rows, 2.0, eps)
    ratio = torch.where(l2 > 0, l1 / torch.where(l2 > 0, l2, torch.ones_like(l2)), torch.ones_like(l2))
    root = math.sqrt(d)
    return ((root - ratio) / (root - 1.0)).clamp(0.0, 1.0)


def layer_hoyer(w: torch.Tensor) -> float:
    """Mean Hoyer sparsity of the units of one weight tensor."""
    return float(hoyer(w.detach()).mean())


def mass_support(x: torch.Tensor, mass: float = 0.99) -> torch.Tensor:
    """Per unit, the fewest entries whose squares make up ``mass`` of the unit's squared L2 norm.

    Shape ``(units,)``, int64. It counts the weights a unit really uses: at p near 1 most active
    weights of a unit are tiny, so a mask's live count overstates the capacity in use. An all-zero unit
    counts 0.
    """
    if isinstance(mass, bool) or not isinstance(mass, int | float) or not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be a number in (0, 1], got {mass!r}")
    squares = _rows(x.detach()).double().pow(2)
    ordered, _ = squares.sort(dim=1, descending=True)
    total = ordered.sum(dim=1, keepdim=True)
    # entries before the one whose cumulative share first reaches `mass`, plus that one
    below = (ordered.cumsum(dim=1) < mass * total * (1.0 - 1e-12)).sum(dim=1)
    return torch.where(total.squeeze(1) > 0, below + 1, torch.zeros_like(below))


def net_hoyer(weights: dict[str, torch.Tensor]) -> float:
    """Hoyer sparsity of a net: the layers' mean unit Hoyer sparsity weighted by each layer's numel."""
    if not weights:
        raise ValueError("net_hoyer needs at least one weight tensor, got none")
    total = sum(w.numel() for w in weights.values())
    return float(sum(layer_hoyer(w) * w.numel() for w in weights.values()) / total)
