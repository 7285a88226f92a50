"""Unit groups of a model, and real changes of its shape: compact (shrink a copy), select (shrink in
place), grow (add units in place), with the optimizer's state kept consistent. See docs/structure.md.
"""

from neuroplastic.structure.compact import compact, select_units
from neuroplastic.structure.trace import UnitGroup, UnitRef, group_of, groups_of, trace_unit_groups

__all__ = [
    "UnitGroup",
    "UnitRef",
    "compact",
    "group_of",
    "groups_of",
    "select_units",
    "trace_unit_groups",
]
