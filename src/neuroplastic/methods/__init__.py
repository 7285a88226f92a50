"""Capacity-changing methods, one small class each, all with the :class:`CapacityMethod` interface."""

from neuroplastic.methods.base import CapacityMethod

__all__ = ["CapacityMethod"]
