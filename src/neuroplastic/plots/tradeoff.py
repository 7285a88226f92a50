"""Accuracy against density: the test accuracy of each run's selected model against the fraction of its
weights that are live, one line per series of runs (one method at several sparsities), with published
numbers beside them as dashed lines.

A run's density is ``params / params_dense`` of its ``results.json`` (contract 3 of
``docs/architecture.md``). Runs of one series at the same density (equal to three decimals: seeds, or the
few weights a controller lands off its target) make one point at their mean accuracy; every run is also
drawn as a small dot, so the spread over seeds shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FixedLocator, NullLocator

from neuroplastic.plots.rundata import PlotDataError, RunData, load_run
from neuroplastic.plots.style import WIDTH_PX, new_figure, save_png

__all__ = ["TradeoffPoint", "plot_tradeoff", "tradeoff_points"]

_NEEDED = ("test_accuracy", "params", "params_dense")


@dataclass(frozen=True)
class TradeoffPoint:
    """One point of a series: the runs at one density."""

    density: float  # mean live / dense weights of the runs
    accuracies: tuple[float, ...]  # each run's test accuracy (a fraction)

    @property
    def mean(self) -> float:
        """Mean test accuracy of the runs (a fraction)."""
        return float(np.mean(self.accuracies))


def _open(run: RunData | str | Path) -> RunData:
    return run if isinstance(run, RunData) else load_run(run)


def tradeoff_points(runs: Sequence[RunData | str | Path]) -> list[TradeoffPoint]:
    """The points of one series of runs (run folders or opened runs), by increasing density.

    Raises :class:`PlotDataError` naming the run whose ``results.json`` is missing or lacks
    ``test_accuracy``, ``params`` or ``params_dense``.
    """
    by_density: dict[float, list[tuple[float, float]]] = {}
    for run in map(_open, runs):
        results = run.results()
        if not results:
            raise PlotDataError(f"{run.path} has no results.json: the tradeoff plot needs each run's test "
                                "accuracy and live parameters (a run that finished writes it)")
        for result in results:
            missing = [key for key in _NEEDED if not isinstance(result.get(key), int | float)]
            if missing or result["params_dense"] <= 0:
                raise PlotDataError(f"{run.path / 'results.json'}: the tradeoff plot needs numbers "
                                    f"{', '.join(_NEEDED)} (params_dense > 0); missing or bad: "
                                    f"{', '.join(missing) or 'params_dense'}")
            density = result["params"] / result["params_dense"]
            by_density.setdefault(round(density, 3), []).append((density, float(result["test_accuracy"])))
    return [TradeoffPoint(float(np.mean([d for d, _ in members])), tuple(a for _, a in members))
            for _, members in sorted(by_density.items())]


def _count(points: list[TradeoffPoint]) -> str:
    runs = sum(len(p.accuracies) for p in points)
    return f"{runs} run{'s' if runs > 1 else ''}"


def _check_reference(reference: Mapping[str, Mapping[float, float]]) -> None:
    for label, points in reference.items():
        if not points:
            raise ValueError(f"reference {label!r} has no points")
        for density, accuracy in points.items():
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (density, accuracy)):
                raise ValueError(f"reference {label!r}: densities and accuracies must be numbers, got "
                                 f"{density!r}: {accuracy!r}")
            if not 0 < density <= 1:
                raise ValueError(f"reference {label!r}: density must be in (0, 1], got {density!r}")
            if not 0 <= accuracy <= 1:
                raise ValueError(f"reference {label!r}: accuracy must be a fraction in [0, 1] (0.9329 for "
                                 f"93.29%), got {accuracy!r} at density {density!r}")


def plot_tradeoff(
    series: Mapping[str, Sequence[RunData | str | Path]],
    out_path: str | Path,
    *,
    reference: Mapping[str, Mapping[float, float]] | None = None,
    title: str | None = None,
    width_px: int = WIDTH_PX,
    height_px: int = 540,
) -> Path:
    """Draw test accuracy (%) against the density of live weights (log axis) into one PNG.

    Parameters
    ----------
    series
        ``{label: runs}``: each label's runs (run folders or :class:`RunData`) make one line through the
        mean accuracy at each density, each run a dot.
    out_path
        The PNG to write.
    reference
        ``{label: {density: test accuracy}}``, accuracies as fractions: published numbers, drawn dashed.
    title
        The figure's title (default: none).
    """
    if not series:
        raise ValueError("series must name at least one series of runs, got none")
    for label, runs in series.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"series labels must be non-empty strings, got {label!r}")
        if isinstance(runs, str | Path) or not runs:
            raise ValueError(f"series {label!r} must be a non-empty list of runs, got {runs!r}")
    reference = dict(reference or {})
    _check_reference(reference)
    colours = colormaps["tab10"]
    fig = new_figure(width_px, height_px)
    ax = fig.subplots()
    ticks: set[float] = set()
    for index, (label, runs) in enumerate(series.items()):
        points = tradeoff_points(runs)
        colour = colours(index % 10)
        x = [p.density for p in points]
        ax.plot(x, [100 * p.mean for p in points], color=colour, marker="o", ms=6,
                label=f"{label} ({_count(points)})")
        for p in points:
            ax.scatter([p.density] * len(p.accuracies), [100 * a for a in p.accuracies], color=colour, s=14,
                       alpha=0.45, zorder=3)
        ticks.update(round(d, 3) for d in x)
    for offset, (label, points) in enumerate(reference.items()):
        xs = sorted(points)
        ax.plot(xs, [100 * points[d] for d in xs], color=colours((len(series) + offset) % 10), ls="--",
                marker="x", ms=7, label=label)
        ticks.update(round(d, 3) for d in xs)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{d:g}\n(s {1 - d:.2g})" for d in sorted(ticks)])
    ax.set(xlabel="density of live weights (live / dense; sparsity s = 1 - density), log axis",
           ylabel="test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(bottom=0.17, top=0.92 if title else 0.97, left=0.08, right=0.98)
    return save_png(fig, Path(out_path))
