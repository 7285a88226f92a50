"""Trace a model into unit groups: the channels (features) that must live or die together.

A *unit group* is a set of units coupled by the graph: a conv's output channels, the BatchNorm that
normalises them, the residual additions that merge them with other branches, the depthwise convs that
carry them through, and the layers that read them (as input channels, as concatenation slices, or as
``H*W`` consecutive inputs of a Linear after a flatten).

The trace uses :func:`torch.fx.symbolic_trace` and :class:`~torch.fx.passes.shape_prop.ShapeProp` (no
dependency beyond torch). For every tensor in the graph it keeps a *channel map*: the list of groups laid
end to end along dimension 1, each with a repeat factor (1, or ``H*W`` after a flatten). Anything the
trace does not understand makes every group it touches non-prunable, with the reason recorded, so a
group is never silently wrong.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from neuroplastic.errors import BadInput
from neuroplastic.structure.groups import UnitGroup, UnitRef, group_of, groups_of

__all__ = ["trace_unit_groups", "UnitRef", "UnitGroup", "group_of", "groups_of"]

#: Modules whose output channel ``c`` depends only on input channel ``c`` (and which hold no
#: per-channel tensors), so they pass a channel map through unchanged.
PASSTHROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip

_F = torch.nn.functional
PASSTHROUGH_FUNCTIONS = {
    _F.relu, torch.relu, _F.relu6, _F.leaky_relu, _F.elu, _F.gelu, _F.silu, _F.mish, _F.hardswish,
    _F.hardsigmoid, _F.hardtanh, _F.softplus, torch.sigmoid, _F.sigmoid, torch.tanh, _F.tanh,
    _F.dropout, _F.dropout2d, _F.max_pool1d, _F.max_pool2d, _F.max_pool3d, _F.avg_pool1d,
    _F.avg_pool2d, _F.avg_pool3d, _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d,
    _F.adaptive_avg_pool3d, _F.adaptive_max_pool2d, torch.clone, torch.clamp,
}  # fmt: skip
PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float", "to", "detach", "clamp", "clamp_",
}  # fmt: skip
#: Element-wise binary operations: two tensor operands with channels couple them (merge groups).
BINARY_OPS = {operator.add, operator.iadd, operator.sub, operator.mul, operator.imul, operator.truediv,
              torch.add, torch.sub, torch.mul, torch.div}  # fmt: skip
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
FLATTEN_OPS = {torch.flatten, "flatten", "view", "reshape", torch.reshape}
REDUCE_METHODS = {"mean", "sum", "amax"}
HARMLESS_METHODS = {"size", "dim"}
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class _Seg:
    """One piece of a channel map: ``size`` units of raw group ``gid``, ``repeat`` entries each."""

    gid: int
    size: int
    repeat: int = 1


class _Groups:
    """Raw groups with union-find merging, their members and their non-prunable reasons."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.refs: list[list[UnitRef]] = []
        self.reasons: list[list[str]] = []

    def new(self, name: str, size: int, reason: str = "") -> int:
        self.parent.append(len(self.parent))
        self.names.append(name)
        self.sizes.append(size)
        self.refs.append([])
        self.reasons.append([reason] if reason else [])
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:  # the older group (created first) stays the root, so it names the merged group
            a, b = min(a, b), max(a, b)
            self.parent[b] = a
            self.refs[a] += self.refs[b]
            self.reasons[a] += self.reasons[b]

    def block(self, segs: list[_Seg], reason: str) -> None:
        for s in segs:
            root = self.find(s.gid)
            if reason not in self.reasons[root]:
                self.reasons[root].append(reason)

    def add_refs(self, segs: list[_Seg], module: str, dim: int, kind: str) -> None:
        offset = 0
        for s in segs:
            self.refs[self.find(s.gid)].append(UnitRef(module, dim, kind, offset, s.repeat))
            offset += s.size * s.repeat


class _Tracer(fx.Tracer):
    """A ``torch.fx`` tracer that keeps ``leaves`` as leaf modules and remembers the modules it is inside
    of, so that a failed trace can name the module whose forward blocked it."""

    def __init__(self, leaves: tuple[type[nn.Module], ...] = ()) -> None:
        super().__init__()
        self.leaves = leaves
        self.inside: list[str] = []  # qualified names of the modules being traced, outermost first

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> object:
        try:
            name = self.path_of_module(m)
        except NameError:  # a module that is not a submodule of the traced one
            name = type(m).__name__
        self.inside.append(name)
        result = super().call_module(m, forward, args, kwargs)
        self.inside.pop()  # left in place when the module's forward raised: the failure names it
        return result


@dataclass(frozen=True)
class TraceFailure:
    """Why ``torch.fx`` could not trace a model: the innermost module being traced (``""`` for the model's
    own forward), the user-code line it stopped at (when known) and the error."""

    model: str
    module: str
    line: str
    error: str

    def __str__(self) -> str:
        where = f"module {self.module!r}" if self.module else f"{self.model}.forward"
        line = f" at {self.line}" if self.line else ""
        return f"torch.fx cannot trace {self.model}: blocked in {where}{line}: {self.error}"


def fx_trace(model: nn.Module, leaves: tuple[type[nn.Module], ...] = ()) -> fx.Graph | TraceFailure:
    """Trace ``model`` with ``torch.fx`` (``leaves``: extra leaf module types), or say what blocked it.

    A forward that branches on tensor values (``if x.sum() > 0:``), calls into C code with a proxy or
    takes ``**kwargs`` (many Hugging Face models) cannot be traced; the :class:`TraceFailure` names the
    module and the source line of the model's code where the trace stopped.
    """
    tracer = _Tracer(leaves)
    try:
        return tracer.trace(model)
    except Exception as err:  # noqa: BLE001 - any failure of the tracer is reported, not raised
        return TraceFailure(type(model).__name__, tracer.inside[-1] if tracer.inside else "",
                            _user_line(err), f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def _user_line(err: BaseException) -> str:
    """``file:line (function): source`` of the innermost traceback frame outside torch and this package's
    tracing code (the model's own code), or ``""``."""
    import linecache
    import os.path
    import traceback

    skip = (os.path.dirname(torch.__file__), __file__)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    source = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return f"{os.path.basename(f.filename)}:{f.lineno} ({f.name}): {source}"


def _numel(node: fx.Node) -> int:
    shape = _shape(node)
    if shape is None:
        return 0
    count = 1
    for d in shape:
        count *= d
    return count


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def trace_unit_groups(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    passthrough: tuple[type[nn.Module], ...] = (),
) -> list[UnitGroup]:
    """Find the unit groups of ``model`` (see the module docstring).

    Parameters
    ----------
    model : the network; traced with ``torch.fx`` (its Python control flow must not depend on data).
    example_input : one input batch (or a tuple of inputs); used once, in eval mode and without
        gradients, to learn every tensor's shape (the ``H*W`` of a flatten).
    passthrough : extra module types treated as channel-wise with no per-channel tensors (for
        instance gate modules that multiply each unit by a factor); they are traced as leaves.

    Returns
    -------
    The groups in order of creation: network inputs first, then one per producing layer, residual
    branches merged into the group of their first producer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError("example_input must be a tensor or a tuple of tensors")
    leaves = PASSTHROUGH_MODULES + tuple(passthrough)
    graph = fx_trace(model, leaves)
    if isinstance(graph, TraceFailure):
        raise BadInput(f"{graph}. Unit groups need this trace (compaction, gates='groups', PhysicalNPN): make "
                       "the forward traceable (no Python branching on tensor values), or use per-layer gates "
                       "(gates={layer: 'out' | 'in'}), which train without it (docs/npn.md)")
    gm = fx.GraphModule(model, graph)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except RuntimeError as err:  # ShapeProp wraps the failing layer's error (e.g. a shape mismatch)
        reason = str(err.__cause__ or err).splitlines()[0]
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise BadInput(f"example_input of shape {shapes} does not run through {type(model).__name__}: "
                       f"{reason}") from err
    finally:
        model.train(was_training)
    return _build_groups(gm, leaves)


def _build_groups(gm: fx.GraphModule, passthrough: tuple[type[nn.Module], ...]) -> list[UnitGroup]:
    groups = _Groups()
    maps: dict[fx.Node, list[_Seg]] = {}
    calls: dict[str, list[list[_Seg]]] = {}
    modules = dict(gm.named_modules())

    def tensor_args(node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in maps else None)
        return found

    def opaque(node: fx.Node, why: str) -> None:
        # every group that reaches this node becomes non-prunable; the output gets a blocked group
        for arg in tensor_args(node):
            groups.block(maps[arg], why)
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            maps[node] = [_Seg(groups.new(node.name, shape[1], why), shape[1])]

    def merge(node: fx.Node, operands: list[list[_Seg]]) -> None:
        first = operands[0]
        for other in operands[1:]:
            same = len(other) == len(first) and all(
                a.size == b.size and a.repeat == b.repeat for a, b in zip(first, other, strict=True)
            )
            if not same:
                for segs in operands:
                    groups.block(segs, f"operands of '{node.name}' split their channels differently")
                break
            for a, b in zip(first, other, strict=True):
                groups.union(a.gid, b.gid)
        maps[node] = first

    for node in gm.graph.nodes:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                maps[node] = [_Seg(groups.new(node.name, shape[1], "network input"), shape[1])]
            continue
        if node.op == "output":
            for arg in tensor_args(node):
                groups.block(maps[arg], "reaches the model output")
            continue
        if node.op == "get_attr":
            if shape is not None and len(shape) >= 2:
                why = f"tensor '{node.target}' is used outside its module"
                maps[node] = [_Seg(groups.new(node.name, shape[1], why), shape[1])]
            continue
        args = tensor_args(node)
        stray = [a.name for a in node.all_input_nodes if a not in maps and _numel(a) > 1]
        if stray and args:
            # a per-channel tensor the trace cannot follow (a parameter used outside its module,
            # a constant built in forward) would have to be sliced too
            opaque(node, f"'{node.name}' combines channels with tensors {stray} the trace cannot follow")
            continue
        if not args:
            continue  # computed from constants only: carries no channels
        if node.op == "call_module":
            module = modules[node.target]
            _module_node(node, module, args, maps, groups, opaque, passthrough)
            # input and output groups of each call, to block them if the module is shared
            calls.setdefault(node.target, []).append(maps[args[0]] + maps.get(node, []))
        elif node.op == "call_function" or node.op == "call_method":
            _function_node(node, args, maps, opaque, merge)
        else:
            opaque(node, f"operation '{node.op}' of '{node.name}' is not understood")
        if node in maps:
            total = sum(s.size * s.repeat for s in maps[node])
            if shape is None or len(shape) < 2 or total != shape[1]:
                opaque(node, f"channel bookkeeping disagrees with the shape of '{node.name}'")

    for target, segs_per_call in calls.items():
        has_tensors = any(True for _ in modules[target].parameters(recurse=False)) or any(
            True for _ in modules[target].buffers(recurse=False)
        )
        if len(segs_per_call) > 1 and has_tensors:
            for segs in segs_per_call:
                groups.block(segs, f"module '{target}' is called more than once")
    return _collect(groups)


Maps = dict[fx.Node, list[_Seg]]
Opaque = Callable[[fx.Node, str], None]
Merge = Callable[[fx.Node, list[list[_Seg]]], None]


def _module_node(
    node: fx.Node, module: nn.Module, args: list[fx.Node], maps: Maps, groups: _Groups, opaque: Opaque,
    passthrough: tuple[type[nn.Module], ...],
) -> None:  # fmt: skip
    x = maps[args[0]]
    in_shape = _shape(args[0])
    name = str(node.target)
    if len(args) != 1:
        opaque(node, f"module '{name}' takes several tensors")
    elif isinstance(module, nn.Linear):
        if in_shape is None or len(in_shape) != 2:
            opaque(node, f"Linear '{name}' reads a tensor of shape {in_shape}; only (batch, features)")
            return
        groups.add_refs(x, name, 1, "linear")
        g = groups.new(name, module.out_features)
        groups.refs[g].append(UnitRef(name, 0, "linear"))
        maps[node] = [_Seg(g, module.out_features)]
    elif isinstance(module, CONVS):
        if module.groups == 1:
            if any(s.repeat != 1 for s in x):
                opaque(node, f"conv '{name}' reads a flattened tensor")
                return
            groups.add_refs(x, name, 1, "conv")
            g = groups.new(name, module.out_channels)
            groups.refs[g].append(UnitRef(name, 0, "conv"))
            maps[node] = [_Seg(g, module.out_channels)]
        elif module.groups == module.in_channels == module.out_channels:
            groups.add_refs(x, name, 0, "depthwise")
            maps[node] = x
        else:
            opaque(node, f"grouped conv '{name}' (groups={module.groups}) is not supported")
    elif isinstance(module, NORMS):
        groups.add_refs(x, name, 0, "norm")
        maps[node] = x
    elif isinstance(module, nn.Flatten):
        _flatten(node, args[0], maps, opaque)
    elif isinstance(module, passthrough):
        maps[node] = x
    else:
        opaque(node, f"module '{name}' of type {type(module).__name__} is not understood")


def _function_node(node: fx.Node, args: list[fx.Node], maps: Maps, opaque: Opaque, merge: Merge) -> None:
    target = node.target
    x = maps[args[0]]
    if target in PASSTHROUGH_FUNCTIONS or target in PASSTHROUGH_METHODS:
        if len(args) == 1:
            maps[node] = x
        else:
            opaque(node, f"'{node.name}' takes several tensors")
    elif target in BINARY_OPS or target in BINARY_METHODS:
        operands = [maps[a] for a in args]
        shapes = [_shape(a) for a in args]
        out = _shape(node)
        # an operand broadcast along the channel dimension does not carry channels
        if any(s is None or len(s) < 2 or out is None or s[1] != out[1] for s in shapes):
            opaque(node, f"'{node.name}' broadcasts along the channel dimension")
        else:
            merge(node, operands)
    elif target is torch.cat:
        _concat(node, args, maps, opaque, merge)
    elif target in FLATTEN_OPS:
        if len(args) == 1:
            _flatten(node, args[0], maps, opaque)
        else:
            opaque(node, f"'{node.name}' reshapes with a tensor argument")
    elif target in REDUCE_METHODS or target in (torch.mean, torch.sum):
        in_shape = _shape(args[0])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        # only a reduction over spatial dimensions (2, 3, ...) keeps the channels apart
        spatial = (
            isinstance(dims, (tuple, list)) and in_shape is not None and len(dims) > 0
            and all(isinstance(d, int) and (d % len(in_shape)) >= 2 for d in dims)
        )  # fmt: skip
        if spatial and len(args) == 1 and all(s.repeat == 1 for s in x):
            maps[node] = x
        else:
            opaque(node, f"reduction '{node.name}' mixes channels")
    elif target in HARMLESS_METHODS or (target is getattr and node.args[1] in ("shape", "ndim")):
        pass  # reads only the shape
    else:
        opaque(node, f"operation {getattr(target, '__name__', target)!s} of '{node.name}' is not understood")


def _flatten(node: fx.Node, arg: fx.Node, maps: Maps, opaque: Opaque) -> None:
    in_shape, out = _shape(arg), _shape(node)
    x = maps[arg]
    if in_shape is None or out is None:
        opaque(node, f"'{node.name}' has unknown shapes")
    elif out == in_shape:
        maps[node] = x
    elif len(out) == 2 and len(in_shape) > 2 and out[0] == in_shape[0] and all(s.repeat == 1 for s in x):
        positions = 1
        for d in in_shape[2:]:
            positions *= d
        maps[node] = [_Seg(s.gid, s.size, positions) for s in x]
    else:
        opaque(node, f"reshape '{node.name}' from {in_shape} to {out} is not a flatten")


def _concat(node: fx.Node, args: list[fx.Node], maps: Maps, opaque: Opaque, merge: Merge) -> None:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = _shape(node)
    if not isinstance(tensors, (list, tuple)) or not all(t in maps for t in tensors) or out is None:
        opaque(node, f"concatenation '{node.name}' of tensors without channels")
        return
    dim = dim + len(out) if dim < 0 else dim
    if dim == 1:
        maps[node] = [seg for t in tensors for seg in maps[t]]
    elif dim >= 2:
        merge(node, [maps[t] for t in tensors])  # channel c of the output is channel c of each input
    else:
        opaque(node, f"concatenation '{node.name}' along dimension {dim}")


def _collect(groups: _Groups) -> list[UnitGroup]:
    result = []
    for g in range(len(groups.parent)):
        if groups.find(g) != g:
            continue
        reasons = groups.reasons[g]
        refs = groups.refs[g]
        result.append(
            UnitGroup(
                name=groups.names[g],
                size=groups.sizes[g],
                producers=[r for r in refs if r.dim == 0],
                consumers=[r for r in refs if r.dim == 1],
                prunable=not reasons,
                reason="; ".join(reasons),
            )
        )
    return result
