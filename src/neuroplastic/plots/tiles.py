"""How one gate vector is drawn in the neuron map: a grid of unit tiles coloured by gate probability.

Three kinds of panel, chosen from the model's weights in ``checkpoint.pt`` where it helps reading:

* plain: one flat tile per unit;
* filters: the first convolution's units drawn as their filters, tinted by the unit's colour;
* channel blocks: the in-gates of a Linear that reads a flattened convolution output (LeNet5's 800
  = 50 channels x 4 x 4 inputs of ``fc1``) drawn as one block of ``h x w`` features per channel, so
  that features closing channel by channel can be seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps

__all__ = ["CMAP", "Panel", "channel_blocks", "first_conv_filters", "montage", "plan_panels"]

CMAP = colormaps["inferno"]  # 0 is black: closed units are dark
BACKGROUND = np.array([0.93, 0.93, 0.93])  # empty grid slots: light grey, distinct from closed (black)
_UNIT_TILE = 4  # image cells per side of a plain unit tile; one more cell separates tiles
# a few dozen colour levels look the same as a continuum but compress far better in a GIF
# (a LeNet5 frame: 57 kB unquantized, 38 kB with 32 levels)
_PI_LEVELS, _FILTER_LEVELS = 32, 16


def montage(tiles: np.ndarray, cols: int, *, gap: int = 1, background: np.ndarray = BACKGROUND) -> np.ndarray:
    """Lay ``tiles`` (``(n, h, w, 3)``) out row by row on a grid ``cols`` wide, ``gap`` cells apart.

    Slots past the last tile are filled with ``background``. Returns an ``(H, W, 3)`` image.
    """
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must have shape (n, h, w, 3), got {tiles.shape}")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    n, h, w, _ = tiles.shape
    rows = max(1, math.ceil(n / cols))
    grid = np.empty((rows * cols, h + gap, w + gap, 3), dtype=np.float32)
    grid[:] = background
    grid[:n, :h, :w] = tiles
    image = grid.reshape(rows, cols, h + gap, w + gap, 3).transpose(0, 2, 1, 3, 4)
    image = image.reshape(rows * (h + gap), cols * (w + gap), 3)
    return image[: image.shape[0] - gap, : image.shape[1] - gap]


def _split(gate: str) -> tuple[str, str]:
    """``"fc1:in"`` -> ``("fc1", "in")``; a bare layer name gates its outputs."""
    layer, _, side = gate.partition(":")
    return layer, side or "out"


def _same_module(module: str, layer: str) -> bool:
    return module == layer or module.endswith("." + layer) or layer.endswith("." + module)


def _is_weight(key: str) -> bool:
    # parametrized weights (masks, ``torch.nn.utils.parametrize``) are stored as ``weight.original``
    return key.endswith((".weight", ".weight.original"))


def _module_of(key: str) -> str:
    return key.split(".parametrizations.")[0].removesuffix(".weight")


def _weights(state: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """``(module name, weight shape)`` of every weight tensor, in state-dict (registration) order."""
    return [(_module_of(key), tuple(getattr(v, "shape", ()))) for key, v in state.items() if _is_weight(key)]


def first_conv_filters(state: dict[str, Any], gates: dict[str, int]) -> tuple[str, np.ndarray] | None:
    """Find the gate of the model's first convolution and its filters as ``(n, kh, kw)`` grey images.

    The first convolution is the first 4-D ``...weight`` tensor of the state dict (parametrized
    weights, ``...weight.original``, count too). Its gate is the output gate of the same module
    (``"<layer>:out"`` or the bare layer name), or else the first gate when that has exactly as many
    units as the convolution has output channels. Each filter is averaged over its input channels and
    scaled to 0..1 on its own. ``None`` when the model has no convolution or no gate matches it.
    """
    convs = [(key, value) for key, value in state.items() if _is_weight(key) and len(getattr(value, "shape", ())) == 4]
    if not convs:
        return None
    key, value = convs[0]
    module = _module_of(key)
    named = [g for g in gates if _split(g)[1] == "out" and _same_module(module, _split(g)[0])]
    first = next(iter(gates), None)
    gate = named[0] if named else (first if first is not None and gates[first] == value.shape[0] else None)
    if gate is None or gates[gate] != value.shape[0]:
        return None
    weight = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value, float)
    grey = weight.mean(axis=1)
    low = grey.min(axis=(1, 2), keepdims=True)
    span = grey.max(axis=(1, 2), keepdims=True) - low
    return gate, (grey - low) / np.where(span > 0, span, 1.0)


def channel_blocks(state: dict[str, Any], gate: str, size: int) -> tuple[int, int, int] | None:
    """``(channels, h, w)`` when ``gate`` gates the inputs of a Linear reading a flattened conv output.

    The Linear must have ``size`` inputs, and the convolution registered last before it ``c`` output
    channels with ``size = c * s * s`` (square feature maps); ``None`` otherwise.
    """
    layer, side = _split(gate)
    if side != "in":
        return None
    weights = _weights(state)
    index = next((i for i, (m, shape) in enumerate(weights) if _same_module(m, layer)), None)
    if index is None or len(weights[index][1]) != 2 or weights[index][1][1] != size:
        return None
    convs = [shape for _, shape in weights[:index] if len(shape) == 4]
    if not convs or size % convs[-1][0]:
        return None
    channels = convs[-1][0]
    side_len = math.isqrt(size // channels)
    return (channels, side_len, side_len) if side_len * side_len * channels == size else None


@dataclass(frozen=True)
class Panel:
    """How one gate vector is drawn: ``size`` units as plain tiles, filter images or channel blocks."""

    gate: str
    size: int
    filters: np.ndarray | None = None  # (n, kh, kw) in 0..1
    blocks: tuple[int, int, int] | None = None  # (channels, h, w)

    @property
    def kind(self) -> str:
        """A note for the panel title: how its units are laid out."""
        if self.filters is not None:
            return " filters"
        if self.blocks is not None:
            c, h, w = self.blocks
            return f" ({c} ch x {h}x{w})"
        return ""

    def image(self, pi: np.ndarray | None) -> np.ndarray:
        """The panel's RGB image for gate probabilities ``pi`` (``None``: not recorded this frame).

        The grid always has ``size`` slots, so it stays the same from frame to frame; slots without
        a probability are background.
        """
        values = np.full(self.size, np.nan)
        if pi is not None:
            n = min(len(pi), self.size)
            values[:n] = np.round(np.clip(pi[:n], 0.0, 1.0) * (_PI_LEVELS - 1)) / (_PI_LEVELS - 1)
        colours = np.where(np.isnan(values)[:, None], BACKGROUND, CMAP(np.nan_to_num(values))[:, :3])
        if self.blocks is not None:
            c, h, w = self.blocks
            return montage(colours.reshape(c, h, w, 3).astype(np.float32), max(1, math.ceil(math.sqrt(c))))
        if self.filters is not None:
            count = min(self.size, len(self.filters))
            shade = np.round(self.filters[:count] * (_FILTER_LEVELS - 1)) / (_FILTER_LEVELS - 1)
            tiles = np.broadcast_to(colours[:, None, None, :], (self.size, *self.filters.shape[1:], 3)).copy()
            # empty slots stay flat background; units past the checkpoint's filters (grown) stay flat
            shown = ~np.isnan(values[:count])
            tiles[:count][shown] *= 0.2 + 0.8 * shade[shown][:, :, :, None]
        else:
            tiles = np.broadcast_to(colours[:, None, None, :], (self.size, _UNIT_TILE, _UNIT_TILE, 3))
        return montage(tiles.astype(np.float32), max(1, math.ceil(math.sqrt(self.size))))


def plan_panels(gates: dict[str, int], state: dict[str, Any] | None) -> list[Panel]:
    """One :class:`Panel` per gate (``{name: units}``, in drawing order), using ``state`` when given."""
    found = first_conv_filters(state, gates) if state is not None else None
    panels = []
    for gate, size in gates.items():
        filters = found[1] if found is not None and found[0] == gate else None
        blocks = channel_blocks(state, gate, size) if state is not None and filters is None else None
        panels.append(Panel(gate, size, filters, blocks))
    return panels
