"""LpSS: how the weight magnitudes of each layer sharpen, and Hoyer sparsity over epochs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from neuroplastic.plots.rundata import RunData, Snapshot
from neuroplastic.plots.style import (
    WIDTH_PX,
    draw_layer_lines,
    draw_stages,
    epoch_axis,
    new_figure,
    pick_frames,
    save_png,
    stage_spans,
)

__all__ = ["plot_lp_weights", "plot_lp_hoyer"]

PLOT = "lp"
#: at most this many layer panels in the histogram figure (evenly chosen through the network)
MAX_LAYER_PANELS = 12


def _p_label(snap: Snapshot, layer: str) -> str:
    p = snap.group("p").get(layer)
    if p is None or p.size == 0:
        return f"epoch {snap.epoch}"
    value = float(np.mean(p))
    return f"epoch {snap.epoch}, p = {value:.3g}"


def _log_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins + 1`` log-spaced edges over the positive ``values`` (at most 12 decades below the largest)."""
    positive = values[values > 0]
    if not positive.size:
        return np.geomspace(1e-3, 1.0, bins + 1)
    high = float(positive.max())
    low = max(float(positive.min()), high * 1e-12)
    if low >= high:
        low, high = high / 2, high * 2
    return np.geomspace(low, high, bins + 1)


def plot_lp_weights(
    run: RunData, out_path: str | Path, *, max_snapshots: int = 4, bins: int = 40, width_px: int = WIDTH_PX
) -> Path:
    """Histograms of ``|w|`` per layer from a few snapshots, labelled with each layer's ``p`` then.

    Reads ``absw/<layer>`` (a sample of the layer's weight magnitudes) and ``p/<layer>`` from up to
    ``max_snapshots`` snapshots evenly spread over the run (first and last kept), one panel per layer
    (at most ``MAX_LAYER_PANELS``, evenly chosen). The ``|w|`` axis is logarithmic, because as p nears 1
    most weights of a unit are crushed towards zero by orders of magnitude; the share of exact zeros
    (masked weights) is given in the legend.

    Raises
    ------
    PlotDataError
        if the run has no snapshots with ``absw/<layer>`` arrays.
    """
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    if not isinstance(max_snapshots, int) or max_snapshots < 1:
        raise ValueError(f"max_snapshots must be an int >= 1, got {max_snapshots!r}")
    snaps = run.snapshots(PLOT, "absw")
    # one snapshot: the last (the trained weights); more: spread over the run
    snaps = snaps[-1:] if max_snapshots == 1 else [snaps[i] for i in pick_frames(len(snaps), max_snapshots)]
    layers: list[str] = []
    for snap in snaps:
        layers += [name for name in snap.group("absw") if name not in layers]
    shown = [layers[i] for i in pick_frames(len(layers), MAX_LAYER_PANELS)]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    height_px = 2 * round((nrows * 250 + 90) / 2)
    fig = new_figure(width_px, height_px)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = colormaps["viridis"]
    for ax, layer in zip(axes, shown, strict=False):
        samples = [(snap, np.abs(snap.group("absw").get(layer, np.zeros(0))).ravel()) for snap in snaps]
        edges = _log_edges(np.concatenate([values for _, values in samples]), bins)
        for i, (snap, values) in enumerate(samples):
            if not values.size:
                continue
            # a log axis cannot show exact zeros (masked weights, or float16 underflow below 6e-8):
            # their share goes into the label
            zero = float(np.mean(values == 0))
            ax.hist(values[values > 0], bins=edges, weights=np.full(int((values > 0).sum()), 1 / values.size),
                    histtype="step", lw=1.5, color=colours(i / max(1, len(samples) - 1) * 0.9),
                    label=_p_label(snap, layer) + (f", {zero:.1%} zero" if zero > 0 else ""))
        ax.set_xscale("log")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("|w|", fontsize=8)
        ax.set_ylabel("fraction of weights", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    note = "" if len(shown) == len(layers) else f", {len(shown)} of {len(layers)} layers"
    fig.suptitle(f"{run.name}: weight magnitudes per layer{note}", fontsize=12)
    fig.tight_layout()
    return save_png(fig, Path(out_path))


def plot_lp_hoyer(run: RunData, out_path: str | Path, *, width_px: int = WIDTH_PX, height_px: int = 560) -> Path:
    """Hoyer sparsity per layer (``hoyer``) and of the whole network (``hoyer_net``) over epochs.

    A second panel shows the mask ``density`` when the run records it (run folders written before the
    option rename record ``mask_sparsity``, drawn as ``1 - mask_sparsity``).

    Raises
    ------
    PlotDataError
        if the history records neither ``hoyer`` nor ``hoyer_net``.
    """
    run.require_fields(["hoyer", "hoyer_net"], PLOT, any_of=True)
    fig = new_figure(width_px, height_px)
    density_key = next((k for k in ("density", "mask_sparsity") if run.has_field(k)), None)
    has_mask = density_key is not None
    axes = fig.subplots(2 if has_mask else 1, 1, sharex=True, squeeze=False)[:, 0]
    top = axes[0]
    if run.has_field("hoyer"):
        epochs, table = run.dict_series("hoyer", PLOT)
        draw_layer_lines(top, epochs, table)
    if run.has_field("hoyer_net"):
        epochs, net = run.series("hoyer_net")
        top.plot(epochs, np.array(net, dtype=float), color="k", lw=2.2, ls="--", label="whole network")
    top.set_ylabel("Hoyer sparsity")
    top.set_ylim(-0.02, 1.02)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if has_mask:
        epochs, values = run.series(density_key)
        density = np.array(values, dtype=float)
        if density_key == "mask_sparsity":
            density = 1.0 - density
        axes[1].plot(epochs, density, color="tab:green", lw=1.8)
        axes[1].set_ylabel("mask density")
    spans = stage_spans(run)
    for i, ax in enumerate(axes):
        draw_stages(ax, spans, label=i == 0)
        ax.grid(True, alpha=0.3)
    epoch_axis(axes[-1])
    fig.suptitle(f"{run.name}: Hoyer sparsity over training", fontsize=12)
    fig.tight_layout()
    return save_png(fig, Path(out_path))
