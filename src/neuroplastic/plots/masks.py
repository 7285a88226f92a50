"""Mask methods (Static, SET, RigL, GMP, GraNet): density per layer and exploration over epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuroplastic.plots.rundata import RunData
from neuroplastic.plots.style import (
    WIDTH_PX,
    draw_layer_lines,
    draw_stages,
    epoch_axis,
    new_figure,
    save_png,
    stage_spans,
)

__all__ = ["plot_mask_density"]

PLOT = "masks"


def plot_mask_density(run: RunData, out_path: str | Path, *, width_px: int = WIDTH_PX, height_px: int = 620) -> Path:
    """Render per-layer density and the exploration rate of a mask run into a PNG at ``out_path``.

    Top panel: the history's ``layer_density`` (one line per layer) and the overall ``density``
    (thick dashed black). Bottom panel: ``exploration_rate`` (the fraction of weights that have been
    live at least once, as the method records it), or a note when the run did not record it.

    Raises
    ------
    PlotDataError
        if the history records neither ``layer_density`` nor ``density``.
    """
    run.require_fields(["layer_density", "density"], PLOT, any_of=True)
    fig = new_figure(width_px, height_px)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    if run.has_field("layer_density"):
        epochs, table = run.dict_series("layer_density", PLOT)
        draw_layer_lines(top, epochs, table)
    if run.has_field("density"):
        epochs, density = run.series("density")
        top.plot(epochs, np.array(density, dtype=float), color="k", lw=2.2, ls="--", label="whole network")
    top.set_ylabel("density (fraction kept)")
    top.set_ylim(0, 1.02)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)

    if run.has_field("exploration_rate"):
        epochs, rate = run.series("exploration_rate")
        bottom.plot(epochs, np.array(rate, dtype=float), color="tab:purple", lw=1.8)
    else:
        bottom.text(0.5, 0.5, "exploration_rate not recorded by this run", transform=bottom.transAxes,
                    ha="center", va="center", color="0.4")
    bottom.set_ylabel("exploration rate")
    epoch_axis(bottom)
    spans = stage_spans(run)
    for i, ax in enumerate((top, bottom)):
        draw_stages(ax, spans, label=i == 0)
        ax.grid(True, alpha=0.3)
    method = run.method_name
    fig.suptitle(f"{run.name}: mask density and exploration" + (f" ({method})" if method else ""), fontsize=12)
    fig.tight_layout()
    return save_png(fig, Path(out_path))
