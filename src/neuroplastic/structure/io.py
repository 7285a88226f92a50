"""Save, reload and export compacted (or grown) models without pickling any class.

A compacted model has the class of the original but other tensor shapes, so its state dict does not
load into a freshly built instance. :func:`save_compact` stores the state dict beside the shape
attributes of every resized layer; :func:`load_compact` resizes a freshly built full-size instance of
the same architecture (the *template*) to those shapes and loads the tensors. The file holds only
tensors, strings, ints and bools, so ``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from neuroplastic.files import write_atomic
from neuroplastic.structure.trace import NORMS

__all__ = ["save_compact", "load_compact", "export_onnx"]

FORMAT = "neuroplastic.compact"
VERSION = 1
#: the shape attributes that resizing changes, per layer type
SHAPE_ATTRIBUTES = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Conv3d: ("in_channels", "out_channels", "groups"),
}


def _attributes(module: nn.Module) -> tuple[str, ...]:
    if isinstance(module, NORMS):
        return ("num_features",)
    for kind, names in SHAPE_ATTRIBUTES.items():
        if isinstance(module, kind):
            return names
    return ()


def save_compact(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s tensors and the shape attributes of its Linear, conv and BatchNorm layers."""
    shapes = {
        name: {attr: int(getattr(module, attr)) for attr in _attributes(module)}
        for name, module in model.named_modules()
        if _attributes(module)
    }
    payload = {"format": FORMAT, "version": VERSION, "shapes": shapes, "state_dict": model.state_dict()}
    write_atomic(path, lambda f: torch.save(payload, f))


def load_compact(template: nn.Module | Callable[[], nn.Module], path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_compact` into ``template`` (resized in place, returned).

    The arguments come in :func:`save_compact`'s order: the model, then the file.

    ``template`` is a freshly built instance of the saved model's class, at any size (usually the
    original full size), or a function without arguments that builds one; its tensors are replaced by
    tensors of the saved shapes, on the template's device, then the saved values are loaded strictly.
    The file does not name the class to build: importing and calling code named in a file would undo
    the safety of ``weights_only=True``.
    """
    if isinstance(template, str | os.PathLike) and not isinstance(path, str | os.PathLike):
        raise TypeError("load_compact takes (template, path), in save_compact's (model, path) order; "
                        f"got the path {os.fspath(template)!r} first")
    if not isinstance(template, nn.Module):
        if not callable(template):
            raise TypeError(f"template must be an nn.Module or a function building one, got {type(template)}")
        template = template()
        if not isinstance(template, nn.Module):
            raise TypeError(f"the template function returned a {type(template).__name__}, not an nn.Module")
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a file written by save_compact")
    if payload.get("version") != VERSION:
        version = payload.get("version")
        raise ValueError(f"{os.fspath(path)!r} has format version {version}, expected {VERSION}")
    modules = dict(template.named_modules())
    missing = sorted(set(payload["shapes"]) - set(modules))
    if missing:
        raise ValueError(f"template has no modules {missing}: it is not the architecture that was saved")
    state: dict[str, torch.Tensor] = payload["state_dict"]
    with torch.no_grad():
        for key, value in state.items():
            owner, _, name = key.rpartition(".")
            module = modules.get(owner)
            if module is None:
                raise ValueError(f"template has no module {owner!r} for tensor {key!r}")
            current = getattr(module, name, None)
            if current is not None and current.shape == value.shape:
                continue
            like = current if current is not None else next(iter(template.parameters()), value)
            fresh = torch.empty(value.shape, dtype=value.dtype, device=like.device)
            if name in module._buffers:
                module._buffers[name] = fresh
            else:  # a parameter, or a bias that folding added to a layer built without one
                setattr(module, name, nn.Parameter(fresh, requires_grad=value.dtype.is_floating_point))
        for name, attrs in payload["shapes"].items():
            for attr, value in attrs.items():
                setattr(modules[name], attr, value)
    template.load_state_dict(state, strict=True)
    return template


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    exporter: str = "torchscript",
) -> None:
    """Export ``model`` (in eval mode) to ONNX at ``path``, with a dynamic batch dimension.

    ``exporter``: ``"torchscript"`` (``torch.onnx.export(..., dynamo=False)``; needs only ``onnx``) or
    ``"dynamo"`` (the ``torch.export``-based exporter, the default of torch >= 2.9; needs ``onnxscript``).
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    try:
        import onnx  # noqa: F401

        if exporter == "dynamo":
            import onnxscript  # noqa: F401
    except ImportError as err:
        extra = "onnx onnxscript" if exporter == "dynamo" else "onnx"
        raise ImportError(f"export_onnx with exporter={exporter!r} needs: pip install {extra}") from err
    was_training = model.training
    model.eval()
    try:
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                model, (example_input,), path, dynamo=True, dynamic_shapes=({0: batch},),
                input_names=["input"], output_names=["output"],
            )  # fmt: skip
        else:
            torch.onnx.export(
                model, (example_input,), path, dynamo=False, input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )  # fmt: skip
    finally:
        model.train(was_training)
