"""``neuroplastic plot RUN_DIR``: every picture a run folder's records allow, without re-running it.

``neuroplastic plot RUN_DIR RUN_DIR ... --out DIR`` compares several runs instead (``DIR/compare.png``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuroplastic.plots.architecture import plot_architecture
from neuroplastic.plots.compare import plot_compare
from neuroplastic.plots.lp import plot_lp_hoyer, plot_lp_weights
from neuroplastic.plots.masks import plot_mask_density
from neuroplastic.plots.neurons import plot_neuron_map
from neuroplastic.plots.rundata import PlotDataError, RunData, load_run

__all__ = ["PLOT_NAMES", "available_plots", "main", "plot_run"]


@dataclass(frozen=True)
class _Picture:
    """One output file of a plot name: how to draw it and whether the run recorded what it needs."""

    filename: str
    draw: Callable[[RunData, Path], Path]
    recorded: Callable[[RunData], bool]


_PICTURES: dict[str, list[_Picture]] = {
    "arch": [
        _Picture("architecture.png", plot_architecture, lambda r: r.has_field("arch") or r.has_field("params")),
    ],
    "neurons": [_Picture("neuron_map.gif", plot_neuron_map, lambda r: r.has_snapshot_prefix("pi"))],
    "masks": [
        _Picture(
            "mask_density.png", plot_mask_density, lambda r: r.has_field("layer_density") or r.has_field("density")
        ),
    ],
    "lp": [
        _Picture("lp_weights.png", plot_lp_weights, lambda r: r.has_snapshot_prefix("absw")),
        _Picture("lp_hoyer.png", plot_lp_hoyer, lambda r: r.has_field("hoyer") or r.has_field("hoyer_net")),
    ],
}

#: the plot names ``--what`` accepts
PLOT_NAMES: tuple[str, ...] = tuple(_PICTURES)


def available_plots(run: RunData) -> list[str]:
    """The plot names for which the run recorded at least part of what they need."""
    return [name for name, pictures in _PICTURES.items() if any(p.recorded(run) for p in pictures)]


def plot_run(
    run_dir: str | Path, out_dir: str | Path | None = None, what: list[str] | None = None
) -> tuple[list[Path], list[PlotDataError]]:
    """Render plots of a run folder into ``out_dir`` (default ``RUN_DIR/plots``).

    With ``what=None`` every picture the run recorded data for is made. With explicit names, every
    picture of those names is attempted, and each one whose data is missing is returned as an error
    (the others are still made).

    Returns
    -------
    (written paths, errors)

    Raises
    ------
    ValueError
        for an unknown plot name.
    PlotDataError
        if the run folder cannot be opened, or (``what=None``) the run recorded nothing to plot.
    """
    if what is not None:
        unknown = [name for name in what if name not in _PICTURES]
        if unknown or not what:
            raise ValueError(f"what must name plots among {', '.join(PLOT_NAMES)}; got {what!r}")
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "plots"
    if what is None:
        pictures = [p for pictures in _PICTURES.values() for p in pictures if p.recorded(run)]
        if not pictures:
            raise PlotDataError(
                f"nothing to plot in {run.path}: its history has no 'arch', 'params', 'layer_density', "
                "'density', 'hoyer' or 'hoyer_net' field and its snapshots no 'pi/' or 'absw/' arrays"
            )
    else:
        pictures = [p for name in dict.fromkeys(what) for p in _PICTURES[name]]
    written, errors = [], []
    for picture in pictures:
        try:
            written.append(picture.draw(run, out / picture.filename))
        except PlotDataError as err:
            errors.append(err)
    return written, errors


def _parse_what(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _PICTURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown plot(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(PLOT_NAMES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``neuroplastic plot``."""
    parser = argparse.ArgumentParser(
        prog="neuroplastic plot",
        description="Draw pictures of a run's plasticity from its run folder (history, events, snapshots).",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="+",
        help="a run folder written by `neuroplastic run`; several: compare them in DIR/compare.png",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="where to write the pictures (default RUN_DIR/plots; required when comparing runs)",
    )
    parser.add_argument(
        "--what", type=_parse_what, default=None, metavar="NAMES",
        help=f"comma-separated plots among {','.join(PLOT_NAMES)} (default: every plot the run has data for)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuroplastic plot``; returns the process exit status (0 ok, 1 data missing in a run
    folder, 2 bad input: usage, or a run folder that does not exist)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse exits on --help and on usage errors; report the status instead
        return int(stop.code or 0)
    missing = [d for d in args.run_dir if not Path(d).is_dir()]
    if missing:  # bad input (a wrong path), not missing data in a run
        print(f"neuroplastic plot: error: run folder {missing[0]} does not exist (or is not a folder)", file=sys.stderr)
        return 2
    try:
        if len(args.run_dir) > 1:
            if args.out is None or args.what is not None:
                print(
                    "neuroplastic plot: error: comparing several runs needs --out DIR and takes no --what "
                    f"(got --out {args.out!r}, --what {args.what!r})",
                    file=sys.stderr,
                )
                return 2
            written = [plot_compare([load_run(d) for d in args.run_dir], Path(args.out) / "compare.png")]
            errors = []
        else:
            written, errors = plot_run(args.run_dir[0], args.out, args.what)
    except PlotDataError as err:
        print(f"neuroplastic plot: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    for err in errors:
        print(f"neuroplastic plot: error: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
