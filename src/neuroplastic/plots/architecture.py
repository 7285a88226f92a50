"""The architecture over epochs: open units per gated layer, live parameters, stages and events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from neuroplastic.plots.rundata import PlotDataError, RunData
from neuroplastic.plots.style import (
    WIDTH_PX,
    draw_layer_lines,
    draw_stages,
    epoch_axis,
    new_figure,
    save_png,
    stage_label,
    stage_spans,
)

__all__ = ["plot_architecture"]

PLOT = "arch"

# marker per event kind; kinds not listed get a diamond
_EVENT_MARKERS = {"expand": "^", "grow": "^", "shrink": "v", "close": "v", "prune": "v", "compact": "s"}


def plot_architecture(run: RunData, out_path: str | Path, *, width_px: int = WIDTH_PX, height_px: int = 620) -> Path:
    """Render how the run's capacity changed, epoch by epoch, into a PNG at ``out_path``.

    Top panel (runs with gated units: the history field ``arch``): open units of each gated layer,
    log scale, one line per layer (named by ``layers``), with the capacity events of ``events.jsonl``
    (``expand`` as up-triangles) marked on the line of their layer. Bottom panel (history field
    ``params``): live parameters, log scale, with validation accuracy on the right axis when recorded.
    Stages (history ``stage``, or recipe stage epochs) are shaded on both.

    Raises
    ------
    PlotDataError
        if the history records neither ``arch`` nor ``params``.
    """
    run.require_fields(["arch", "params"], PLOT, any_of=True)
    has_units, has_params = run.has_field("arch"), run.has_field("params")
    fig = new_figure(width_px, height_px)
    n_panels = int(has_units) + int(has_params)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    spans = stage_spans(run)
    panel = 0
    if has_units:
        _draw_units(axes[panel], run)
        panel += 1
    if has_params:
        _draw_params(axes[panel], run)
    for i, ax in enumerate(axes):
        draw_stages(ax, spans, label=i == 0)
        ax.grid(True, which="major", alpha=0.3)
    epoch_axis(axes[-1])
    fig.suptitle(architecture_title(run, spans), fontsize=12)
    fig.tight_layout()
    return save_png(fig, Path(out_path))


def architecture_title(run: RunData, spans: list[tuple[float, float, str]]) -> str:
    """The picture's title; it says so when an NPN run had no plastic stage (too few epochs for one)."""
    method = run.method_name
    title = f"{run.name}: architecture over training" + (f" ({method})" if method else "")
    names = [name for _, _, name in spans]
    if stage_label(3, True) in names and stage_label(2, True) not in names:
        title += ": no plastic epoch, so the gates could not change"
    return title


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain short numbers (30, 400k, 1.2M) rather than 3x10^1 or 4e+05."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:g}{suffix}"
        return f"{x:g}"


def _plain_log_axis(ax: Axes) -> None:
    """Log y axis with plain labels; minor ticks are labelled only when the range is short."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def _layer_names(run: RunData, count: int) -> list[str]:
    names: list[str] = []
    for record in run.history:
        if isinstance(record.get("layers"), list):
            names = [str(n) for n in record["layers"]]
    return names + [f"gate {i}" for i in range(len(names), count)]


def _units_matrix(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and an ``(epochs, layers)`` array of open units (NaN where a layer is not recorded)."""
    epochs, arch = run.series("arch")
    for i, row in enumerate(arch):
        if not isinstance(row, list) or not all(isinstance(v, int | float) for v in row):
            raise PlotDataError(
                f"the '{PLOT}' plot needs 'arch' to be a list of unit counts; epoch {epochs[i]:g} has {row!r}"
            )
    width = max(len(row) for row in arch)
    units = np.full((len(arch), width), np.nan)
    for i, row in enumerate(arch):
        units[i, : len(row)] = row
    return epochs, units


def _draw_units(ax: Axes, run: RunData) -> None:
    epochs, units = _units_matrix(run)
    names = _layer_names(run, units.shape[1])[: units.shape[1]]
    # a closed layer (0 units) cannot sit on a log axis: draw it at 0.8 (below 1) instead
    table = {name: np.where(units[:, j] > 0, units[:, j], 0.8) for j, name in enumerate(names)}
    colors = draw_layer_lines(ax, epochs, table)
    kinds = _draw_events(ax, run, epochs, units, names, colors)
    _plain_log_axis(ax)
    ax.margins(y=0.08)  # room for event markers on the top line
    ax.set_ylabel("open units")
    handles, labels = ax.get_legend_handles_labels()
    for kind in kinds:
        handles.append(Line2D([], [], ls="", marker=_EVENT_MARKERS.get(kind, "D"), color="0.2"))
        labels.append(f"{kind} event")
    if handles:
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)


def _draw_events(
    ax: Axes, run: RunData, epochs: np.ndarray, units: np.ndarray, names: list[str], colors: dict[str, Any]
) -> list[str]:
    """Mark each event that names a gated layer at (its epoch, that layer's open units then)."""
    kinds: list[str] = []
    for event in run.events:
        epoch = event.get("epoch")
        gates = _event_gates(event, names)
        if not gates or not isinstance(epoch, int | float) or not len(epochs):
            continue
        kind = str(event.get("event", "event"))
        row = int(np.argmin(np.abs(epochs - epoch)))
        for gate in gates:
            value = units[row, names.index(gate)]
            ax.plot(
                [epoch], [value if value > 0 else 0.8], ls="", marker=_EVENT_MARKERS.get(kind, "D"),
                ms=6, color=colors[gate], markeredgecolor="0.15", markeredgewidth=0.6, zorder=3,
            )
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _event_gates(event: dict[str, Any], names: list[str]) -> list[str]:
    """The gated layers an event is about: its ``gate`` if recorded, else its ``layer``.

    NPN names gates ``"<layer>:<side>"`` while its events name the ``layer``; an event of a layer
    with two gates (``fc1:in`` and ``fc1:out``) cannot be told apart and is marked on both.
    """
    for key in ("gate", "layer"):
        value = event.get(key)
        if value in names:
            return [value]
    layer = event.get("layer")
    if not isinstance(layer, str):
        return []
    return [name for name in names if name.partition(":")[0] == layer]


def _draw_params(ax: Axes, run: RunData) -> None:
    epochs, params = run.series("params")
    ax.plot(epochs, np.maximum(np.array(params, dtype=float), 1), color="k", lw=1.8, label="live params")
    if run.has_field("params_physical"):  # PhysicalNPN: the weights the model really holds
        held_epochs, held = run.series("params_physical")
        ax.plot(held_epochs, np.maximum(np.array(held, dtype=float), 1), color="k", lw=1.2, ls="--",
                label="params held")
    _plain_log_axis(ax)
    ax.set_ylabel("live params")
    handles, labels = ax.get_legend_handles_labels()
    if run.has_field("val_acc"):
        right = ax.twinx()
        acc_epochs, acc = run.series("val_acc")
        acc = np.array(acc, dtype=float)
        # accuracies are recorded as fractions (0-1); a history already in percent is shown as is
        percent = acc if np.nanmax(acc) > 1.0 else acc * 100
        (line,) = right.plot(acc_epochs, percent, color="tab:red", lw=1.2, alpha=0.8)
        right.set_ylabel("val accuracy (%)", color="tab:red")
        right.tick_params(axis="y", colors="tab:red")
        handles.append(line)
        labels.append("val accuracy")
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.13, 0.5), fontsize=8, frameon=False)
