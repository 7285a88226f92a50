"""Unit gates: gate functions, the ARM/AR estimators, gate sites on a model, the stage scheduler."""

from neuroplastic.gates.estimators import antithetic_gates, ar_logit_grad, arm_logit_grad
from neuroplastic.gates.functions import GateFunction, HardSigmoid, Sigmoid, gate_function
from neuroplastic.gates.sites import GateSite, UnitGates, default_placement
from neuroplastic.gates.stages import K_FROZEN, StageSchedule

__all__ = [
    "K_FROZEN",
    "GateFunction",
    "GateSite",
    "HardSigmoid",
    "Sigmoid",
    "StageSchedule",
    "UnitGates",
    "antithetic_gates",
    "ar_logit_grad",
    "arm_logit_grad",
    "default_placement",
    "gate_function",
]
