"""Batch-wise image augmentations on NCHW tensors, with their random parameters given explicitly.

Each function takes the per-example random draws as tensors (offsets, flags, centres), so the
randomness is decided elsewhere (by :class:`~neuroplastic.data.loader.TensorLoader`'s own generator)
and the functions are plain, vectorised and testable on hand-built inputs. No per-example Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuroplastic.errors import BadInput

PADDING_MODES = ("zeros", "reflect")


def random_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int,
                padding_mode: str = "zeros") -> torch.Tensor:
    """Pad every image by ``padding`` on each side, then crop it back to its size at its own offset.

    Example ``i`` of the result is ``padded[i, :, top[i]:top[i]+H, left[i]:left[i]+W]``, where
    ``top`` and ``left`` are integers in ``[0, 2 * padding]`` (``padding`` means no shift).
    ``padding_mode`` is ``"zeros"`` (constant 0) or ``"reflect"`` (mirror without repeating the edge).
    """
    if padding_mode not in PADDING_MODES:
        raise BadInput(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding == 0:
        return x
    n, _, h, w = x.shape
    mode = "constant" if padding_mode == "zeros" else "reflect"
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    # every h x w window of the padded images, as a view: n x c x (2p+1) x (2p+1) x h x w
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    # pick each example's own window; indices on dims 0, 2, 3 put the batch dim first: n x c x h x w
    return windows[torch.arange(n, device=x.device), :, top, left]


def horizontal_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flip`` flag (bool, one per example) is set."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(x: torch.Tensor, center_y: torch.Tensor, center_x: torch.Tensor, length: int) -> torch.Tensor:
    """Set to zero a ``length`` x ``length`` square per image, centred at (``center_y``, ``center_x``).

    The square spans rows ``center_y - length // 2`` to ``center_y - length // 2 + length - 1`` (and the
    same for columns), clipped to the image, as in DeVries & Taylor's Cutout.
    """
    if length <= 0:
        return x
    n, _, h, w = x.shape
    y0 = (center_y - length // 2).view(n, 1)
    x0 = (center_x - length // 2).view(n, 1)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= y0) & (rows < y0 + length)  # n x h
    in_cols = (cols >= x0) & (cols < x0 + length)  # n x w
    hole = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)
    return x.masked_fill(hole, 0.0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dimension 1); ``mean`` and ``std`` hold one value per channel."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / std.view(shape)
