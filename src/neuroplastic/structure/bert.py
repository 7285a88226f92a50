"""Unit groups of BERT-style transformer blocks, declared from module names instead of traced.

``torch.fx`` cannot trace Hugging Face models, so :func:`~neuroplastic.structure.trace_unit_groups` does not
find their groups; the layout of a BERT-style block is known, though, and :func:`bert_unit_groups` declares
it. Two kinds of units per block:

* the MLP's intermediate units: rows (and bias) of ``<block>.intermediate.dense`` produce them, the columns
  of ``<block>.output.dense`` read them;
* the attention heads: head ``h`` is the block of ``head_dim`` rows ``h * head_dim ...`` of
  ``<attention>.self.query``, ``.key`` and ``.value`` (the group's producers, ``repeat=head_dim``), read by
  the same block of columns of ``<attention>.output.dense``. Heads are independent in the attention, whose
  forward infers their number from the width (``view(..., -1, head_dim)``), so removing a head's rows and
  columns removes the head; ``head_dim`` and the softmax scaling stay.

The module names are those of Hugging Face's BERT and the models built like it (RoBERTa, ELECTRA,
XLM-RoBERTa, CamemBERT ...). With these groups, :func:`~neuroplastic.structure.compact` and
``NPN.compact(x, groups=...)`` need no trace. The attention modules' ``num_attention_heads`` and
``all_head_size`` and the model's config keep describing the full-size model (the forward does not read
them); call :func:`bert_unit_groups` on a compacted model to read its widths.
"""

from __future__ import annotations

from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.structure.groups import UnitGroup, UnitRef

__all__ = ["bert_unit_groups"]


def _linear(modules: dict[str, nn.Module], name: str) -> nn.Linear | None:
    module = modules.get(name)
    return module if isinstance(module, nn.Linear) else None


def _mlp_group(modules: dict[str, nn.Module], block: str) -> UnitGroup | None:
    """The intermediate units of the MLP of ``block`` (a ``BertLayer``), or None if it has no such MLP."""
    producer = _linear(modules, f"{block}intermediate.dense")
    consumer = _linear(modules, f"{block}output.dense")
    if producer is None or consumer is None:
        return None
    name = f"{block}intermediate.dense"
    if producer.out_features != consumer.in_features:
        raise BadInput(f"bert_unit_groups: {name!r} writes {producer.out_features} units but "
                       f"'{block}output.dense' reads {consumer.in_features}; not a BERT-style MLP")
    return UnitGroup(name, producer.out_features, producers=[UnitRef(name, 0, "linear")],
                     consumers=[UnitRef(f"{block}output.dense", 1, "linear")])


def _head_group(modules: dict[str, nn.Module], attention: str) -> UnitGroup | None:
    """The heads of ``attention`` (a ``BertAttention``: ``self.query/key/value`` and ``output.dense``), or
    None if it is not one."""
    projections = [_linear(modules, f"{attention}self.{p}") for p in ("query", "key", "value")]
    consumer = _linear(modules, f"{attention}output.dense")
    if any(p is None for p in projections) or consumer is None:
        return None
    name = f"{attention}self"
    head_dim = getattr(modules[name], "attention_head_size", None)
    widths = {p.out_features for p in projections}
    if not isinstance(head_dim, int) or head_dim < 1:
        raise BadInput(f"bert_unit_groups: {name!r} has no attention_head_size (got {head_dim!r}); the heads need "
                       "it to be found")
    if len(widths) != 1 or consumer.in_features not in widths or consumer.in_features % head_dim:
        raise BadInput(f"bert_unit_groups: the query, key, value widths {[p.out_features for p in projections]} of "
                       f"{name!r} and the {consumer.in_features} inputs of '{attention}output.dense' are not one "
                       f"width made of heads of {head_dim}")
    producers = [UnitRef(f"{name}.{p}", 0, "linear", repeat=head_dim) for p in ("query", "key", "value")]
    return UnitGroup(name, consumer.in_features // head_dim, producers=producers,
                     consumers=[UnitRef(f"{attention}output.dense", 1, "linear", repeat=head_dim)])


def bert_unit_groups(model: nn.Module) -> list[UnitGroup]:
    """The MLP units and attention heads of every BERT-style block of ``model``, as unit groups (see the
    module docstring), in module order.

    Group names: ``"<block>.intermediate.dense"`` (MLP units) and ``"<attention>.self"`` (heads), e.g.
    ``"bert.encoder.layer.0.intermediate.dense"`` and ``"bert.encoder.layer.0.attention.self"``; a group's
    ``size`` is the current width (units, heads). Gate them with NPN per layer: ``"out"`` on
    ``*.intermediate.dense`` (or ``"in"`` on ``*.output.dense``) and ``"in:<head_dim>"`` on
    ``*.attention.output.dense`` (or ``"out:<head_dim>"`` on query, key and value).

    Raises :class:`~neuroplastic.errors.BadInput` when ``model`` has no such block, or one whose widths do
    not fit together.
    """
    if not isinstance(model, nn.Module):
        raise BadInput(f"bert_unit_groups takes the model (an nn.Module), got {type(model).__name__}")
    modules = dict(model.named_modules())
    groups: list[UnitGroup] = []
    for name in modules:
        prefix = f"{name}." if name else ""
        for build in (_head_group, _mlp_group):
            group = build(modules, prefix)
            if group is not None:
                groups.append(group)
    if not groups:
        raise BadInput(f"bert_unit_groups found no BERT-style block in {type(model).__name__}: it looks for "
                       "Linear layers '<block>.intermediate.dense' -> '<block>.output.dense' (MLP units) and "
                       "'<attention>.self.query/key/value' -> '<attention>.output.dense' (heads); declare the "
                       "UnitGroups of another architecture by hand")
    return groups
