"""Weight masks: the engine that holds and applies them, layer densities, drop/grow rules, schedules."""

from neuroplastic.masks.density import DISTRIBUTIONS, er, erk, kept_count, layer_densities, random_masks, uniform
from neuroplastic.masks.engine import MaskEngine, unwrap
from neuroplastic.masks.rules import (
    dense_gradients,
    drop_by_magnitude,
    global_magnitude_masks,
    grow_by_score,
    grow_random,
)
from neuroplastic.masks.schedules import Constant, CosineDecay, CubicDensity

__all__ = [
    "DISTRIBUTIONS",
    "Constant",
    "CosineDecay",
    "CubicDensity",
    "MaskEngine",
    "dense_gradients",
    "drop_by_magnitude",
    "er",
    "erk",
    "global_magnitude_masks",
    "grow_by_score",
    "grow_random",
    "kept_count",
    "layer_densities",
    "random_masks",
    "uniform",
    "unwrap",
]
