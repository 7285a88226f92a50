"""Several runs side by side: validation accuracy and training loss per epoch on shared axes.

Runs of the same recipe (the same ``recipe.yaml`` but for the seed: one recipe under several seeds) share
a colour and one legend entry, which gives how many runs it has and, where the runs wrote
``results.json``, the mean test accuracy of the model each selected and its live parameters. Runs of one
recipe name whose settings differ (overrides such as ``method.final_density=0.5``) are separate entries,
named by the settings that set them apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from neuroplastic.plots.rundata import RunData
from neuroplastic.plots.style import WIDTH_PX, epoch_axis, new_figure, save_png

__all__ = ["plot_compare"]


def _settings(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The recipe as dotted keys (``method.final_density``), without the seed and the description."""
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        if not prefix and key in ("seed", "description"):
            continue
        if isinstance(value, dict):
            flat.update(_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _group(runs: list[RunData]) -> dict[str, list[RunData]]:
    """``{legend name: runs}``: runs whose recipes differ only in the seed together, named by the recipe and
    the overrides they were started with; groups that would still share a name get the settings that set
    them apart (runs whose recipe.yaml does not say how it was resolved)."""
    by_settings: dict[str, list[RunData]] = {}
    for run in runs:
        key = json.dumps(_settings(run.recipe), sort_keys=True, default=str) if run.recipe else str(run.path)
        by_settings.setdefault(key, []).append(run)
    named = [(" ".join([members[0].name, *members[0].overrides]), members) for members in by_settings.values()]
    groups: dict[str, list[RunData]] = {}
    for name, members in named:
        mine = _settings(members[0].recipe)
        rivals = [_settings(other[0].recipe) for same, other in named if same == name and other is not members]
        differing = sorted({k for rival in rivals for k in mine.keys() | rival.keys() if mine.get(k) != rival.get(k)})
        groups[" ".join([name] + [f"{k}={mine.get(k)}" for k in differing])] = members
    return groups


def _legend(name: str, runs: list[RunData]) -> str:
    results = [r for run in runs for r in run.results()]
    tests = [r["test_accuracy"] for r in results if isinstance(r.get("test_accuracy"), int | float)]
    params = sorted({r["params"] for r in results if isinstance(r.get("params"), int)})
    parts = [f"{len(runs)} run{'s' if len(runs) > 1 else ''}"]
    if tests:
        parts.append(f"test {100 * float(np.mean(tests)):.2f}%" + (" mean" if len(tests) > 1 else ""))
    if params:
        span = f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}-{params[-1]:,}"
        parts.append(f"{span} params")
    return f"{name} ({', '.join(parts)})"


def plot_compare(
    runs: list[RunData], out_path: str | Path, *, width_px: int = WIDTH_PX, height_px: int = 480
) -> Path:
    """Draw validation accuracy (left) and training loss (right) per epoch of ``runs`` into one PNG.

    Every run must have recorded ``val_acc``; ``train_loss`` is drawn where recorded. Raises
    :class:`PlotDataError` naming the run that lacks ``val_acc``, and ``ValueError`` for fewer than two runs.
    """
    if len(runs) < 2:
        raise ValueError(f"plot_compare needs at least 2 runs, got {len(runs)}")
    for run in runs:
        run.require_fields(["val_acc"], "compare")
    groups = _group(runs)
    colours = colormaps["tab10"]
    fig = new_figure(width_px, height_px)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for index, (name, members) in enumerate(groups.items()):
        colour = colours(index % 10)
        for position, run in enumerate(members):
            label = _legend(name, members) if position == 0 else None
            epochs, values = run.series("val_acc")
            acc_ax.plot(epochs, 100 * np.asarray(values, dtype=float), color=colour, marker="o", ms=3, label=label)
            if run.has_field("train_loss"):
                epochs, values = run.series("train_loss")
                loss_ax.plot(epochs, np.asarray(values, dtype=float), color=colour, marker="o", ms=3)
    acc_ax.set(ylabel="validation accuracy (%)", title="validation accuracy")
    loss_ax.set(ylabel="training loss", title="training loss")
    epoch_axis(acc_ax)
    epoch_axis(loss_ax)
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=1, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.12 + 0.045 * len(groups), wspace=0.25, top=0.92, left=0.07, right=0.98)
    return save_png(fig, Path(out_path))
