"""neuroplastic: neural networks that change their own capacity while they train.

Methods (one interface, :class:`CapacityMethod`): :class:`NPN` and :class:`HardConcrete` gate units;
the dynamic-sparse-training family masks connections; structure tools compact a model to a smaller
dense one and grow it without changing what it computes. See README.md and docs/.
"""

from neuroplastic.data import DatasetNotFoundError, DataSplits, TensorLoader, load_dataset
from neuroplastic.lp import LpCGD
from neuroplastic.masks import MaskEngine
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.methods.dst import GMP, SET, GraNet, RigL, Static
from neuroplastic.methods.gated import npn_optimizer, split_param_groups
from neuroplastic.methods.hard_concrete import HardConcrete
from neuroplastic.methods.lpss import LpSS
from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN
from neuroplastic.methods.rewind import IterativePruning
from neuroplastic.metrics import count_flops, count_parameters, count_weights
from neuroplastic.models import get_model, list_models
from neuroplastic.structure import compact, grow, load_compact, save_compact, select_units, trace_unit_groups
from neuroplastic.train import evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "GMP",
    "NPN",
    "PhysicalNPN",
    "SET",
    "GraNet",
    "IterativePruning",
    "LpCGD",
    "LpSS",
    "MaskEngine",
    "RigL",
    "Static",
    "CapacityMethod",
    "DataSplits",
    "DatasetNotFoundError",
    "HardConcrete",
    "TensorLoader",
    "__version__",
    "compact",
    "evaluate",
    "fit",
    "count_flops",
    "count_parameters",
    "count_weights",
    "get_model",
    "grow",
    "list_models",
    "load_compact",
    "load_dataset",
    "npn_optimizer",
    "save_compact",
    "select_units",
    "split_param_groups",
    "trace_unit_groups",
]
