"""Which weighted layer reads which layer's units, for counting live weights across gate sites.

A *link* ``producer -> consumer`` says that ``consumer``'s input features are ``producer``'s output
units, passed on through element-wise and spatial ops only (BatchNorm, activations, pooling, dropout,
flatten: one channel becomes ``repeat`` consecutive flattened features). Residual additions and
concatenations end a chain: there no link is made, which can only over-count live weights, never
under-count them. The full dependency analysis (residual and concat groups) is in
:mod:`neuroplastic.structure`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

from neuroplastic.gates.sites import GATEABLE, model_graph
from neuroplastic.structure.trace import TraceFailure

_PASS_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
    nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
    nn.Dropout2d, nn.Identity, nn.Flatten,
)
_PASS_FUNCTIONS = {
    torch.relu, torch.nn.functional.relu, torch.flatten, torch.nn.functional.max_pool2d,
    torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.dropout,
    torch.tanh, torch.sigmoid, torch.nn.functional.gelu, torch.nn.functional.silu,
}
_PASS_METHODS = {"relu", "flatten", "view", "reshape", "contiguous", "tanh", "sigmoid"}


@dataclass(frozen=True)
class Link:
    """``consumer`` input feature ``i`` is ``producer`` output unit ``i // repeat``."""

    producer: str
    consumer: str
    repeat: int


def chain_links(model: nn.Module, graph: torch.fx.Graph | TraceFailure | None = None) -> list[Link]:
    """All producer -> consumer links of ``model``, found in its ``torch.fx`` ``graph``
    (:func:`~neuroplastic.gates.sites.model_graph`, traced here when None). A model that cannot be traced
    (``graph`` is a :class:`TraceFailure`) has none: every gate then only closes its own layer's units,
    which can over-count live weights, never under-count them."""
    if graph is None:
        graph = model_graph(model)
    if isinstance(graph, TraceFailure):
        return []
    modules = dict(model.named_modules())
    links: list[Link] = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), GATEABLE):
            continue
        producer = modules[str(node.target)]
        width = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
        consumers = _reached_consumers(node, modules)
        if consumers is None:
            continue
        for name in consumers:
            consumer = modules[name]
            n_in = consumer.in_channels if isinstance(consumer, nn.Conv2d) else consumer.in_features
            if isinstance(consumer, nn.Conv2d) and consumer.groups != 1:
                continue
            if n_in % width == 0:
                links.append(Link(str(node.target), name, n_in // width))
    return links


def _reached_consumers(start: torch.fx.Node, modules: dict[str, nn.Module]) -> list[str] | None:
    """Weighted layers reached from ``start`` through pass-through ops; None if anything else is met."""
    found: list[str] = []
    stack = list(start.users)
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module":
            module = modules.get(str(node.target))
            if isinstance(module, GATEABLE):
                found.append(str(node.target))
                continue
            if isinstance(module, _PASS_MODULES):
                stack.extend(node.users)
                continue
        elif node.op == "call_function" and node.target in _PASS_FUNCTIONS and node.args[0] is not None:
            stack.extend(node.users)
            continue
        elif node.op == "call_method" and node.target in _PASS_METHODS:
            stack.extend(node.users)
            continue
        elif node.op == "call_function" and node.target in (operator.getitem,):
            return None
        return None
    return found
