"""neuroplastic: neural networks that change their own capacity while they train."""

from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import count_flops, count_parameters, count_weights

__version__ = "0.1.0"

__all__ = ["CapacityMethod", "count_flops", "count_parameters", "count_weights", "__version__"]
