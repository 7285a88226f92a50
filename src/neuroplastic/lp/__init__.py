"""Lp geometry and the LpCGD optimizer: weights whose units live on the unit Lp sphere (LpSS)."""

from neuroplastic.lp.geometry import (
    dual_exponent,
    from_dual,
    hoyer,
    layer_hoyer,
    lp_norm,
    mass_support,
    net_hoyer,
    project,
    to_dual,
)
from neuroplastic.lp.layers import assign_p, constrained_layers, constrained_params
from neuroplastic.lp.lpcgd import LpCGD, build_lpcgd

__all__ = [
    "LpCGD",
    "assign_p",
    "build_lpcgd",
    "constrained_layers",
    "constrained_params",
    "dual_exponent",
    "from_dual",
    "hoyer",
    "layer_hoyer",
    "lp_norm",
    "mass_support",
    "net_hoyer",
    "project",
    "to_dual",
]
