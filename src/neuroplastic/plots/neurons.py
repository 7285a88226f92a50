"""The neuron map: an animation of every gated unit of an NPN run, coloured by gate probability.

Each gated layer is a panel holding a grid of tiles, one per unit (gate), coloured by its gate
probability ``pi`` on a 0..1 colormap whose 0 is black, so closed units are dark. The units of the
first convolution are drawn as images of their filters (its weights from ``checkpoint.pt``, the
weights at the end of the run) tinted by the same colour, because first-layer filters are the ones a
person can read. One frame per recorded snapshot (``snapshots/epoch_XXXXX.npz``, arrays ``pi/<gate>``),
with the epoch, stage, k and live parameters of that epoch in the title.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.animation import PillowWriter
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from neuroplastic.plots.rundata import RunData, Snapshot
from neuroplastic.plots.style import DPI, new_figure, pick_frames, stage_label

__all__ = ["plot_neuron_map", "first_conv_filters", "montage"]

PLOT = "neurons"
CMAP = colormaps["inferno"]
_BACKGROUND = np.array([0.93, 0.93, 0.93])  # empty grid slots: light grey, distinct from closed (black)
_UNIT_TILE = 4  # image cells per unit tile side; one more cell separates tiles
_HEADER_PX, _FOOTER_PX = 70, 80  # room for the title above and the colour bar below the panels
_PI_LEVELS, _FILTER_LEVELS = 32, 16  # colour levels of gate probabilities and filter shades


def montage(tiles: np.ndarray, cols: int, *, gap: int = 1, background: np.ndarray = _BACKGROUND) -> np.ndarray:
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


def _gates_outputs_of(gate: str, module: str) -> bool:
    """Whether gate ``gate`` (``"<layer>"`` or NPN's ``"<layer>:out"``) gates the outputs of ``module``."""
    layer, _, side = gate.partition(":")
    if side not in ("", "out"):
        return False
    return module == layer or module.endswith("." + layer) or layer.endswith("." + module)


def first_conv_filters(state: dict[str, Any], gates: dict[str, int]) -> tuple[str, np.ndarray] | None:
    """Find the gate of the model's first convolution and its filters as ``(n, kh, kw)`` grey images.

    The first convolution is the first 4-D ``...weight`` tensor of the state dict (parametrized
    weights, ``...weight.original``, count too). Its gate is the output gate of the same module, or
    else the first gate when that has exactly as many units as the convolution has output channels.
    Each filter is averaged over its input channels and scaled to 0..1 on its own. ``None`` when the
    model has no convolution or no gate matches it. Gate names follow NPN's ``"<layer>:<side>"``; only
    an ``out`` gate (or a bare layer name) gates a convolution's filters.
    """
    for key, value in state.items():
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != 4 or not (key.endswith(".weight") or key.endswith(".weight.original")):
            continue
        module = key.split(".parametrizations.")[0].removesuffix(".weight")
        named = [g for g in gates if _gates_outputs_of(g, module)]
        first = next(iter(gates), None)
        gate = named[0] if named else (first if first is not None and gates[first] == shape[0] else None)
        if gate is None or gates[gate] != shape[0]:
            return None
        weight = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value, float)
        grey = weight.mean(axis=1)
        low = grey.min(axis=(1, 2), keepdims=True)
        span = grey.max(axis=(1, 2), keepdims=True) - low
        return gate, (grey - low) / np.where(span > 0, span, 1.0)
    return None


def _gate_order(run: RunData, snaps: list[Snapshot]) -> list[str]:
    """Gate names in the history's ``layers`` order, then any other gate in order of appearance."""
    seen: list[str] = []
    for snap in snaps:
        seen += [name for name in snap.group("pi") if name not in seen]
    layers: list[str] = []
    for record in run.history:
        if isinstance(record.get("layers"), list):
            layers = [str(n) for n in record["layers"]]
    return [n for n in layers if n in seen] + [n for n in seen if n not in layers]


def _open_units(record: dict[str, Any], gate: str, pi: np.ndarray) -> int:
    """Open units of ``gate``: the history's ``arch`` count when recorded for it, else ``pi >= 0.5``."""
    layers, arch = record.get("layers"), record.get("arch")
    if isinstance(layers, list) and isinstance(arch, list) and gate in layers and len(arch) == len(layers):
        return int(arch[layers.index(gate)])
    return int((pi >= 0.5).sum())


def _frame_title(run: RunData, epoch: int) -> str:
    record = run.record_at(epoch)
    parts = [f"{run.name}", f"epoch {epoch}"]
    if "stage" in record:
        name = stage_label(record["stage"], npn=run.method_name == "npn" or "k" in record)
        parts.append(name if name.startswith("stage") else f"stage {name}")
    if "k" in record:
        parts.append(f"k = {record['k']:g}" if isinstance(record["k"], int | float) else f"k = {record['k']}")
    if isinstance(record.get("params"), int | float):
        parts.append(f"{int(record['params']):,} params")
    return "   ·   ".join(parts)


def _panel_image(pi: np.ndarray | None, size: int, filters: np.ndarray | None) -> np.ndarray:
    """One panel: ``size`` slots; units with a gate probability get a tile (a filter image if given)."""
    cols = max(1, math.ceil(math.sqrt(size)))
    n = 0 if pi is None else min(len(pi), size)
    # a few dozen colour levels look the same as a continuum but compress far better in a GIF
    # (a LeNet5 frame: 57 kB unquantized, 38 kB with 32 levels)
    levels = np.round(np.clip(pi[:n], 0.0, 1.0) * (_PI_LEVELS - 1)) / (_PI_LEVELS - 1) if n else np.zeros(0)
    colours = CMAP(levels)[:, :3] if n else np.zeros((0, 3))
    if filters is not None:
        count = min(n, len(filters))
        shade = np.round(filters[:count] * (_FILTER_LEVELS - 1)) / (_FILTER_LEVELS - 1)
        tiles = colours[:count, None, None, :] * (0.2 + 0.8 * shade[:, :, :, None])
        # units beyond the checkpoint's filters (a grown layer) fall back to flat tiles
        flat = np.broadcast_to(colours[count:, None, None, :], (n - count, *filters.shape[1:], 3))
        tiles = np.concatenate([tiles, flat])
    else:
        tiles = np.broadcast_to(colours[:, None, None, :], (n, _UNIT_TILE, _UNIT_TILE, 3))
    # empty slots up to ``size`` keep the grid the same from frame to frame
    blank = np.broadcast_to(_BACKGROUND, (size - n, *tiles.shape[1:]))
    return montage(np.concatenate([tiles, blank]).astype(np.float32), cols)


def plot_neuron_map(
    run: RunData,
    out_path: str | Path,
    *,
    max_frames: int = 40,
    fps: float = 3.0,
    width_px: int = 800,
    filters: bool = True,
) -> Path:
    """Render the neuron-map animation of an NPN run into a GIF at ``out_path``.

    Parameters
    ----------
    run:
        an opened run folder (:func:`~neuroplastic.plots.rundata.load_run`).
    max_frames:
        at most this many frames, evenly chosen among the snapshots (first and last always kept).
    fps:
        frames per second of the GIF.
    width_px:
        width of the GIF; the height follows from the number of gated layers.
    filters:
        draw the first convolution's units as its filters (needs ``checkpoint.pt``; without one a
        :class:`RuntimeWarning` says so and they are drawn as plain tiles).

    Raises
    ------
    PlotDataError
        if the run has no snapshots with ``pi/<gate>`` arrays.
    """
    if not isinstance(fps, int | float) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    snaps = run.snapshots(PLOT, "pi")
    snaps = [snaps[i] for i in pick_frames(len(snaps), max_frames)]
    gates = _gate_order(run, snaps)
    sizes = {g: max(len(s.group("pi").get(g, ())) for s in snaps) for g in gates}
    found = None
    if filters:
        if (run.path / "checkpoint.pt").is_file():
            found = first_conv_filters(run.model_state(PLOT), sizes)
        else:
            warnings.warn(
                f"{run.path / 'checkpoint.pt'} does not exist: first-layer filters drawn as plain tiles",
                RuntimeWarning,
                stacklevel=2,
            )
    filter_gate, filter_images = found if found is not None else (None, None)

    ncols = len(gates) if len(gates) <= 3 else math.ceil(math.sqrt(len(gates)))
    nrows = math.ceil(len(gates) / ncols)
    panel_px = width_px / ncols
    height_px = 2 * round((nrows * panel_px * 0.92 + _HEADER_PX + _FOOTER_PX) / 2)
    fig = new_figure(width_px, height_px)
    fig.subplots_adjust(
        left=0.02, right=0.98, top=1 - _HEADER_PX / height_px, bottom=_FOOTER_PX / height_px, wspace=0.08, hspace=0.2
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    title = fig.suptitle("", fontsize=11)
    images, labels = [], []
    for ax, gate in zip(axes, gates, strict=False):
        shown = filter_images if gate == filter_gate else None
        images.append(ax.imshow(_panel_image(None, sizes[gate], shown), interpolation="nearest"))
        labels.append(ax.set_title("", fontsize=9))
    bar = fig.add_axes((0.25, 0.35 * _FOOTER_PX / height_px, 0.5, 0.18 * _FOOTER_PX / height_px))
    fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), cax=bar, orientation="horizontal")
    bar.set_xlabel("gate probability (dark = closed)", fontsize=9)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(out_path), dpi=DPI):
        for snap in snaps:
            pis = snap.group("pi")
            record = run.record_at(snap.epoch)
            for gate, image, label in zip(gates, images, labels, strict=True):
                pi = pis.get(gate)
                shown = filter_images if gate == filter_gate else None
                image.set_data(_panel_image(pi, sizes[gate], shown))
                kind = " filters" if shown is not None else ""
                count = "not recorded" if pi is None else f"{_open_units(record, gate, pi)}/{len(pi)} open"
                label.set_text(f"{gate}{kind}: {count}")
            title.set_text(_frame_title(run, snap.epoch))
            writer.grab_frame()
    return out_path
