"""The neuron map: an animation of every gated unit of an NPN run, coloured by gate probability.

Each gated layer is a panel holding a grid of tiles, one per unit (gate), coloured by its gate
probability ``pi`` on a 0..1 colormap whose 0 is black, so closed units are dark. The units of the
first convolution are drawn as images of their filters (its weights from ``checkpoint.pt``, the
weights at the end of the run) tinted by the same colour, because first-layer filters are the ones a
person can read; the in-gates of a Linear reading a flattened convolution are grouped by channel
(:mod:`neuroplastic.plots.tiles`). One frame per recorded snapshot (``snapshots/epoch_XXXXX.npz``,
arrays ``pi/<gate>``), with the epoch, stage, k and live parameters of that epoch in the title.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from neuroplastic.plots.rundata import RunData, Snapshot
from neuroplastic.plots.style import DPI, new_figure, pick_frames, stage_label
from neuroplastic.plots.tiles import CMAP, plan_panels

__all__ = ["plot_neuron_map"]

PLOT = "neurons"
_HEADER_PX, _FOOTER_PX = 70, 80  # room for the title above and the colour bar below the panels


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


def plot_neuron_map(
    run: RunData,
    out_path: str | Path,
    *,
    max_frames: int = 40,
    fps: float = 3.0,
    width_px: int = 800,
    use_checkpoint: bool = True,
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
    use_checkpoint:
        read ``checkpoint.pt`` to draw the first convolution's units as its filters and the in-gates
        of a Linear reading a flattened convolution as channel blocks (see :mod:`.tiles`); without a
        checkpoint a :class:`RuntimeWarning` says so and every panel is plain tiles.

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
    state = None
    if use_checkpoint:
        if (run.path / "checkpoint.pt").is_file():
            state = run.model_state(PLOT)
        else:
            warnings.warn(
                f"{run.path / 'checkpoint.pt'} does not exist: first-layer filters and channel blocks "
                "drawn as plain tiles",
                RuntimeWarning,
                stacklevel=2,
            )
    panels = plan_panels(sizes, state)

    ncols = len(gates) if len(gates) <= 3 else math.ceil(math.sqrt(len(gates)))
    nrows = math.ceil(len(gates) / ncols)
    compact = ncols > 3
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
    for ax, panel in zip(axes, panels, strict=False):
        images.append(ax.imshow(panel.image(None), interpolation="nearest"))
        labels.append(ax.set_title("", fontsize=6.5 if compact else 9))
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
            for panel, image, label in zip(panels, images, labels, strict=True):
                pi = pis.get(panel.gate)
                image.set_data(panel.image(pi))
                if compact:  # many small panels: short titles
                    count = "-" if pi is None else f"{_open_units(record, panel.gate, pi)}/{len(pi)}"
                    label.set_text(f"{panel.gate.removesuffix(':out')} {count}")
                else:
                    count = "not recorded" if pi is None else f"{_open_units(record, panel.gate, pi)}/{len(pi)} open"
                    label.set_text(f"{panel.gate}{panel.kind}: {count}")
            title.set_text(_frame_title(run, snap.epoch))
            writer.grab_frame()
        # hold the final architecture about two seconds before the GIF loops: Pillow merges identical
        # consecutive frames into one longer frame, so the frame count stays one per snapshot
        for _ in range(max(0, round(2 * fps) - 1)):
            writer.grab_frame()
    return out_path
