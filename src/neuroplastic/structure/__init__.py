"""Unit groups of a model, and real changes of its shape: compact (shrink a copy), select (shrink in
place), grow (add units in place), with the optimizer's state kept consistent; saving, reloading and
ONNX export of the resized models; the unit groups of BERT-style transformers, declared for models
``torch.fx`` cannot trace. See docs/structure.md.
"""

from neuroplastic.structure.bert import bert_unit_groups
from neuroplastic.structure.compaction import check_groups, compact, keep_from_layer_masks, select_units
from neuroplastic.structure.growth import grow
from neuroplastic.structure.io import export_onnx, load_compact, save_compact
from neuroplastic.structure.trace import UnitGroup, UnitRef, group_of, groups_of, trace_unit_groups

__all__ = [
    "UnitGroup",
    "UnitRef",
    "bert_unit_groups",
    "check_groups",
    "compact",
    "export_onnx",
    "group_of",
    "groups_of",
    "grow",
    "keep_from_layer_masks",
    "load_compact",
    "save_compact",
    "select_units",
    "trace_unit_groups",
]
