"""Pictures of plasticity drawn from a run folder's records (history, events, snapshots, checkpoint).

Nothing is re-run: every function reads what training wrote (see contract 2 in
``docs/architecture.md``) and writes PNG or GIF files, headless. ``neuroplastic plot RUN_DIR`` calls
:func:`plot_run`; the functions below draw one picture each from a run opened with :func:`load_run`.
"""

from neuroplastic.plots.architecture import plot_architecture
from neuroplastic.plots.cli import PLOT_NAMES, available_plots, plot_run
from neuroplastic.plots.compare import plot_compare
from neuroplastic.plots.lp import plot_lp_hoyer, plot_lp_weights
from neuroplastic.plots.masks import plot_mask_density
from neuroplastic.plots.neurons import plot_neuron_map
from neuroplastic.plots.rundata import PlotDataError, RunData, load_run
from neuroplastic.plots.tradeoff import TradeoffPoint, plot_tradeoff, tradeoff_points

__all__ = [
    "PLOT_NAMES",
    "PlotDataError",
    "RunData",
    "TradeoffPoint",
    "available_plots",
    "load_run",
    "plot_architecture",
    "plot_compare",
    "plot_lp_hoyer",
    "plot_lp_weights",
    "plot_mask_density",
    "plot_neuron_map",
    "plot_run",
    "plot_tradeoff",
    "tradeoff_points",
]
