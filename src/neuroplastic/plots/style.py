"""Shared drawing helpers: headless figures of an exact pixel size, stage bands, frame selection.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so plotting
needs no display, leaves no global figure state behind and always renders with the Agg canvas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from neuroplastic.plots.rundata import RunData

__all__ = [
    "DPI", "WIDTH_PX", "draw_layer_lines", "draw_stages", "epoch_axis", "new_figure", "pick_frames", "save_png",
    "stage_label", "stage_spans",
]

#: with more layers than this, lines are coloured by depth and named by a note instead of a legend
MAX_LEGEND_LAYERS = 10

#: pixels per inch of every picture; sizes below are in pixels
DPI = 100
#: default width: readable in a README without scaling
WIDTH_PX = 960

# light, distinct fills for consecutive stages (pre-train / plastic / harden, or any other labels)
_STAGE_FILLS = ["#dbe9f6", "#fde5cc", "#dff0d8", "#eadcf0", "#f5f5c8"]


def new_figure(width_px: int = WIDTH_PX, height_px: int = 540) -> Figure:
    """A blank figure that saves to exactly ``width_px`` x ``height_px`` pixels."""
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if not isinstance(value, int) or value < 100:
            raise ValueError(f"{name} must be an int >= 100, got {value!r}")
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at its own size (no tight bounding box, so the pixel size is exact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def pick_frames(count: int, max_frames: int) -> list[int]:
    """Indices of at most ``max_frames`` of ``count`` frames, evenly spread, first and last kept."""
    if not isinstance(max_frames, int) or max_frames < 2:
        raise ValueError(f"max_frames must be an int >= 2, got {max_frames!r}")
    if count <= max_frames:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, max_frames)})


def stage_spans(run: RunData) -> list[tuple[float, float, str]]:
    """``(start, end, label)`` epoch spans of the run's stages.

    Taken from the history's ``stage`` field (a new span wherever it changes); when the history has no
    ``stage``, from the recipe's ``method.stage_epochs`` (or ``method.stages``): the epochs at which each
    stage after the first starts. Empty when neither is recorded.
    """
    epochs, stages = run.series("stage")
    # NPN numbers its stages 1, 2, 3 and records its ``k``: name them as the paper does
    npn = run.method_name == "npn" or run.has_field("k")
    if len(stages):
        spans: list[tuple[float, float, str]] = []
        start = 0
        for i in range(1, len(stages) + 1):
            if i == len(stages) or stages[i] != stages[start]:
                spans.append((epochs[start] - 0.5, epochs[i - 1] + 0.5, stage_label(stages[start], npn)))
                start = i
        return spans
    boundaries = _recipe_stage_epochs(run.recipe)
    if not boundaries:
        return []
    all_epochs, _ = run.series("epoch")
    first = float(all_epochs.min()) if len(all_epochs) else 0.0
    last = float(all_epochs.max()) if len(all_epochs) else float(boundaries[-1])
    # clip to the recorded epochs: a run stopped early shows only the stages it reached
    edges = [first - 0.5, *[min(max(b - 0.5, first - 0.5), last + 0.5) for b in boundaries], last + 0.5]
    return [
        (edges[i], edges[i + 1], stage_label(i + 1, npn)) for i in range(len(edges) - 1) if edges[i + 1] > edges[i]
    ]


_NPN_STAGES = {1: "1: pre-train", 2: "2: plastic", 3: "3: harden"}


def stage_label(stage: Any, npn: bool) -> str:
    """A stage's name for pictures: NPN's ``1``/``2``/``3`` become ``1: pre-train`` ... ``3: harden``."""
    if npn and stage in _NPN_STAGES:
        return _NPN_STAGES[stage]
    return f"stage {stage}" if isinstance(stage, int | float) else str(stage)


def _recipe_stage_epochs(recipe: dict[str, Any]) -> list[float]:
    method = recipe.get("method")
    if not isinstance(method, dict):
        return []
    for key in ("stages", "stage_epochs"):
        value = method.get(key)
        if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
            return sorted(float(v) for v in value)
    return []


def epoch_axis(ax: Axes) -> None:
    """Label ``ax``'s x axis as epochs (numbered from 0, as in history.jsonl), with whole-epoch ticks only:
    a run of a few epochs shows 0, 1, 2, not 0.25 steps."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_stages(ax: Axes, spans: list[tuple[float, float, str]], *, label: bool = True) -> None:
    """Shade each stage span and draw a dashed line at each boundary; name the stages at the top."""
    for i, (start, end, name) in enumerate(spans):
        ax.axvspan(start, end, color=_STAGE_FILLS[i % len(_STAGE_FILLS)], alpha=0.7, lw=0, zorder=0)
        if i > 0:
            ax.axvline(start, color="0.35", ls="--", lw=1, zorder=1)
        if label:
            # above the axes, where no data line can run through the name
            ax.text(
                (start + end) / 2, 1.01, name, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="0.3", clip_on=False,
            )


def draw_layer_lines(ax: Axes, epochs: np.ndarray, table: dict[str, np.ndarray]) -> dict[str, Any]:
    """One line per layer; a legend names up to ``MAX_LEGEND_LAYERS`` layers, beyond that colour = depth.

    Returns the colour of each layer's line.
    """
    many = len(table) > MAX_LEGEND_LAYERS
    depth = colormaps["viridis"]
    colours = {}
    for i, (name, values) in enumerate(table.items()):
        colour = depth(i / max(1, len(table) - 1)) if many else None
        (line,) = ax.plot(epochs, values, lw=1.0 if many else 1.4, color=colour, label=None if many else name)
        colours[name] = line.get_color()
    if many:
        ax.text(
            0.01, 0.02, f"{len(table)} layers, coloured by depth (first dark, last yellow)",
            transform=ax.transAxes, fontsize=8, color="0.3", va="bottom",
        )
    return colours
