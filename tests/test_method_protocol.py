"""The method protocol (``CapacityMethod``): the same contract checks over every method of the registry.

A new method class in the package fails ``test_every_method_class_is_registered`` until it is in the
registry, and from then on runs every check here.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
from torch import nn

import neuroplastic.methods
from neuroplastic.lp import LpCGD
from neuroplastic.methods.base import CLOSURE_KINDS, CapacityMethod
from neuroplastic.metrics import count_flops
from neuroplastic.recipes.option_types import check_method_options
from neuroplastic.recipes.registry import METHODS, method_class
from neuroplastic.train.step import train_step, training_criterion

EPOCHS, STEPS = 2, 3
INPUT = (16,)
OPTIONS = {
    "dense": {},
    "npn": {"lam": 1e-3},
    "npn_physical": {"mode": "sparse", "lam": 1e-3},
    "hard_concrete": {"lam": 1e-3},
    "static": {"density": 0.5},
    "set": {"density": 0.5, "update_every": 1},
    "rigl": {"density": 0.5, "update_every": 1},
    "gmp": {"final_density": 0.5, "update_every": 1},
    "granet": {"final_density": 0.5, "update_every": 1},
    "imp": {"rounds": 1, "epochs_per_round": 1, "final_density": 0.5},
    "lpss": {"final_density": 0.5, "update_every": 1, "begin": 0.0},
}
#: bases that only share machinery: not methods a recipe names
ABSTRACT = {"MaskMethod", "UnitGateMethod"}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _build(name: str, model: nn.Module):
    cls = method_class(name)
    optimizer = None
    if cls.takes_optimizer:
        optimizer = (LpCGD.for_model(model, lr=0.05, p_first=1.3) if name == "lpss"
                     else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    method = cls.from_recipe(model, optimizer, epochs=EPOCHS, steps_per_epoch=STEPS,
                             example_input=torch.zeros(2, *INPUT), **OPTIONS[name])
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method.bind_optimizers([optimizer], [])
    return method, optimizer


def _train(model, method, optimizer, epochs=EPOCHS):
    gen = torch.Generator().manual_seed(1)
    criterion = training_criterion(method.closure_kind)
    for epoch in range(epochs):
        method.set_epoch(epoch)
        for _ in range(STEPS):
            x, y = torch.randn(8, *INPUT, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            loss, out = train_step(model, method, [method_optimizer(method, optimizer)], [], x, y, criterion)
            assert loss.dim() == 0 and out.shape == (8, 3)
        events = method.end_epoch(val_loss=1.0)
        assert isinstance(events, list) and all(isinstance(e, dict) for e in events)


def method_optimizer(method, optimizer):
    return method.optimizers[0] if getattr(method, "optimizers", None) else optimizer


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b or (a != a and b != b)  # NaN equals NaN here


def test_every_method_class_is_registered():
    for info in pkgutil.iter_modules(neuroplastic.methods.__path__):
        importlib.import_module(f"neuroplastic.methods.{info.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = {c for c in subclasses(CapacityMethod) if c.__module__.startswith("neuroplastic.")}
    registered = {method_class(name) for name in METHODS}
    missing = {c.__name__ for c in ours - registered} - ABSTRACT
    assert not missing, f"method classes without a registry name: {sorted(missing)}"
    assert set(OPTIONS) == set(METHODS)  # every registered method runs the checks below


@pytest.mark.parametrize("name", sorted(METHODS))
def test_declared_capabilities(name):
    cls = method_class(name)
    assert cls.closure_kind in CLOSURE_KINDS or isinstance(inspect.getattr_static(cls, "closure_kind"), property)
    assert isinstance(cls.takes_optimizer, bool) and isinstance(cls.resizes_model, bool)
    # a loop may back-propagate the loss itself exactly when backward() is the plain one
    assert cls.owns_backward is (cls.backward is not CapacityMethod.backward)
    options = cls.option_names()
    assert not {"self", "model", "optimizer", "epochs", "steps_per_epoch"} & set(options)
    assert set(OPTIONS[name]) <= set(options)
    check_method_options(cls, OPTIONS[name])  # the recipe type check understands the annotations
    model = _net()
    with pytest.raises(ValueError, match=rf"unknown options for method {cls.name!r}: \['no_such_option'\]"):
        cls.from_recipe(model, None, epochs=EPOCHS, steps_per_epoch=STEPS, no_such_option=1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_hook_runs_and_reports_what_it_declares(name):
    model = _net()
    dense_flops = count_flops(model, INPUT)
    dense_weights = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    method, optimizer = _build(name, model)
    assert method.closure_kind in CLOSURE_KINDS
    gates = method.gate_parameters()
    model_params = {id(p) for p in model.parameters()}
    assert all(isinstance(p, nn.Parameter) and id(p) in model_params for p in gates)
    _train(model, method, optimizer)
    assert method.check_expansion(1.0) == [] or method.expand_every is not None or name.startswith("npn")
    arch = method.architecture()
    assert isinstance(arch["params"], int) and 0 < arch["params"] <= arch["params_dense"] == dense_weights
    assert isinstance(method.metrics(), dict)
    for key, value in method.snapshot().items():
        assert isinstance(key, str) and isinstance(np.asarray(value), np.ndarray)
    flops = method.live_flops(INPUT)
    assert isinstance(flops, int) and 0 < flops <= dense_flops
    if arch["params"] < arch["params_dense"]:  # fewer live weights cost fewer FLOPs (LpSS once counted dense)
        assert flops < dense_flops, (arch, flops, dense_flops)
    x = torch.randn(5, *INPUT)
    small = method.compact(x)
    if small is not None:  # a plain model computing what the method's model computes in evaluation mode
        model.eval()
        small.eval()
        torch.testing.assert_close(small(x), model(x))
        assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_dict_round_trip(name):
    model = _net()
    initial = copy.deepcopy(model)
    method, optimizer = _build(name, model)
    _train(model, method, optimizer, epochs=1)
    state = copy.deepcopy(method.state_dict())
    twin_model = copy.deepcopy(initial)
    twin, twin_optimizer = _build(name, twin_model)
    twin.load_state_dict(copy.deepcopy(state))
    twin_model.load_state_dict(model.state_dict())
    assert _same(twin.state_dict(), state)
    assert twin.architecture()["params"] == method.architecture()["params"]
