"""What the Lightning and Hugging Face integration tests share: a few hundred real MNIST images, one small
MLP, the four method families built the same way for every loop, the plain-loop reference run
(:func:`neuroplastic.train.fit` on the same batches in the same order) and the checks of each method's
invariants, so that every framework is judged by the same checks as the plain loop."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import neuroplastic
from doc_blocks import DOCS, python_blocks
from neuroplastic.data import DatasetNotFoundError
from neuroplastic.recipes.registry import method_class
from neuroplastic.train import build_schedule, fit
from shared_data import SHARED

INTEGRATIONS = DOCS / "integrations.md"
N_TRAIN, N_VAL, BATCH, EPOCHS = 256, 128, 32, 4
STEPS = N_TRAIN // BATCH  # optimizer steps per epoch
HIDDEN = 32
METHODS = ("npn", "npn_physical", "rigl", "lpss")
#: the other registered methods, with options for this run (built through the registry, as a recipe does)
OTHERS = {
    "dense": {},
    "hard_concrete": {"lam": 1e-4},
    "static": {"density": 0.3},
    "set": {"density": 0.3, "update_every": 4},
    "gmp": {"final_density": 0.3, "update_every": 4},
    "granet": {"final_density": 0.3, "update_every": 4},
    "imp": {"rounds": 1, "epochs_per_round": EPOCHS // 2, "final_density": 0.5},
}


@dataclass
class Mnist:
    """Flattened MNIST images: ``N_TRAIN`` to train on, ``N_VAL`` to validate on."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


_CACHE: dict[str, Mnist] = {}


def mnist() -> Mnist:
    """The first images of the real MNIST training set (skips the test when the data is missing)."""
    if "mnist" not in _CACHE:
        try:
            splits = neuroplastic.load_dataset("mnist", data_dir=SHARED, val_size=N_VAL, seed=0, download=False)
        except DatasetNotFoundError as err:
            pytest.skip(f"MNIST not available: {err}")
        _CACHE["mnist"] = Mnist(splits.train_x[:N_TRAIN].flatten(1), splits.train_y[:N_TRAIN],
                                splits.val_x.flatten(1), splits.val_y)
    return _CACHE["mnist"]


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH) -> torch.utils.data.DataLoader:
    """The batches every loop sees, in this order, every epoch (a DataLoader without shuffling, whose
    iterators draw from the global generator as the frameworks' do); a process of an N-process run loads
    ``BATCH // N`` examples per step, so that the N processes together take one ``BATCH``."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False)


@dataclass
class Setup:
    """One method on a fresh seeded network, with its optimizers and per-step LR schedules."""

    name: str
    net: nn.Module
    method: Any
    optimizers: list[torch.optim.Optimizer]
    schedules: list[Any]


def net() -> nn.Module:
    torch.manual_seed(0)
    return neuroplastic.get_model("mlp", in_features=784, hidden=[HIDDEN], num_classes=10)


def optimizers_for(name: str, model: nn.Module) -> list[torch.optim.Optimizer]:
    """The weights optimizer of ``name`` on the model's current parameters (after the gates exist; inside
    a framework's ``configure_optimizers`` too). LpSS builds its own LpCGD with the method."""
    if name in ("npn", "npn_physical"):
        return [neuroplastic.npn_optimizer(model, lr=2e-3, gate_lr=0.1)]
    if name == "rigl":
        return [torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)]
    raise ValueError(f"{name!r} builds its optimizer with the method")


def schedules_for(optimizers: list[torch.optim.Optimizer]) -> list[Any]:
    """One per-step cosine schedule per optimizer."""
    return [build_schedule(o, {"name": "cosine"}, epochs=EPOCHS, steps_per_epoch=STEPS) for o in optimizers]


def build(name: str, *, with_optimizer: bool = True, **options: Any) -> Setup:
    """``name`` on a fresh network; ``options`` change the method's. ``with_optimizer=False`` builds a mask
    method without its optimizer (as a framework that builds the optimizer later: ``bind_optimizers`` hands
    it over)."""
    model = net()
    if name in ("npn", "npn_physical"):
        kwargs = {"mode": "sparse", "k": 7, "lam": 1e-4, "stages": (1, 3), **options}
        if name == "npn":
            method = neuroplastic.NPN(model, **kwargs)
        else:
            method = neuroplastic.PhysicalNPN(model, **kwargs, example_input=mnist().val_x[:2])
        optimizers = optimizers_for(name, model)
    elif name == "rigl":
        optimizers = optimizers_for(name, model)
        method = neuroplastic.RigL(model, optimizers[0] if with_optimizer else None, density=0.3, epochs=EPOCHS,
                                   steps_per_epoch=STEPS, update_every=4, seed=1, **options)
    elif name == "lpss":
        optimizers = [neuroplastic.LpCGD.for_model(model, lr=0.05, p_first=1.3, p_rest=1.15)]
        method = neuroplastic.LpSS(model, optimizers[0], final_density=0.5, epochs=EPOCHS, steps_per_epoch=STEPS,
                                   begin=0.0, end=0.75, update_every=4, init_density=0.8, seed=1, **options)
    elif name in OTHERS:
        cls = method_class(name)
        build_kwargs = {"epochs": EPOCHS, "steps_per_epoch": STEPS, "example_input": mnist().val_x[:2],
                        **OTHERS[name], **options}
        if cls.takes_optimizer:  # mask methods: the optimizer first
            optimizers = optimizers_for("rigl", model)
            method = cls.from_recipe(model, optimizers[0], **build_kwargs)
        else:  # gates first, then the optimizer that trains them
            method = cls.from_recipe(model, **build_kwargs)
            optimizers = ([neuroplastic.npn_optimizer(model, lr=2e-3, gate_lr=0.1)] if method.gate_parameters()
                          else optimizers_for("rigl", model))
    else:
        raise ValueError(f"no setup for {name!r}")
    if method.resizes_model:
        method.bind_optimizers(optimizers)
    return Setup(name, model, method, optimizers, schedules_for(optimizers))


def plain_run(name: str, tmp_path: Path, **options: Any) -> tuple[Setup, list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference: :func:`neuroplastic.train.fit` on the same batches; returns the setup and the
    run's history and events records."""
    s = build(name, **options)
    s.method.bind_optimizers(s.optimizers, s.schedules)
    data = mnist()
    run_dir = tmp_path / f"plain-{name}"
    result = fit(s.net, s.method, s.optimizers, s.schedules,
                 {"train": loader(data.train_x, data.train_y), "val": loader(data.val_x, data.val_y)},
                 epochs=EPOCHS, run_dir=run_dir, selection="last", progress=False, tensorboard=False,
                 snapshot_every=0)
    return s, result.history, result.events


def same_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as JSON gives them back (tuples become lists), for comparing with a run folder's."""
    return json.loads(json.dumps(records))


def assert_same_weights(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    """Same parameter and buffer names, shapes and values (within ``atol``)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape, key
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=atol, msg=key)


def check_invariants(s: Setup, events: list[dict[str, Any]], epochs: int = EPOCHS) -> None:
    """What must hold after ``epochs`` epochs of ``s`` through any loop."""
    method = s.method
    if s.name in ("npn", "npn_physical"):
        arch = method.architecture()["arch"]
        assert arch[0] < HIDDEN, f"no hidden unit closed ({arch})"
        phi = method.sites[0].gates.phi.detach()
        assert int((phi > 0).sum()) == arch[0]  # the evaluation gates are the open units
    if s.name == "npn_physical":
        removes = [e for e in events if e["event"] == "remove"]
        assert removes and removes[0]["epoch"] == method.schedule.stages[1]  # when the hardening stage began
        layers = [m for m in s.net.modules() if isinstance(m, nn.Linear)]
        assert layers[0].out_features == layers[1].in_features == method.physical_widths()[0] < HIDDEN
        assert bool((method.sites[0].gates.phi > 0).all())  # only open units are left
    if s.name in ("rigl", "lpss"):
        engine = method.engine
        for name, mask in engine.masks.items():
            assert bool((engine.weight(name)[~mask] == 0).all()), name  # masked weights are exact zeros
    if s.name == "rigl":
        updates = [e for e in events if e["event"] == "drop_and_grow"]
        assert [e["step"] for e in updates] == [4, 8, 12, 16, 20]  # every 4 steps until 3/4 of the run
        assert method.engine.nnz() == build("rigl").method.engine.nnz()  # every layer keeps its exact count
    if s.name == "lpss":
        updates = [e for e in events if e["event"] == "lpss_update"]
        assert updates and all(e["dropped"] >= 0 for e in updates)
        assert abs(updates[-1]["density"] - method.engine.density()) < 1e-12


def run_doc_section(section: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Run every ``python`` block under docs/integrations.md's ``## section``, in order, in one scope (in
    ``tmp_path``, with the real data as ``$NEUROPLASTIC_DATA``); returns the scope."""
    mnist()  # skips without the data
    monkeypatch.setenv("NEUROPLASTIC_DATA", str(SHARED))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"__name__": "docs"}
    for block in python_blocks(INTEGRATIONS, section):
        exec(compile(block, str(INTEGRATIONS), "exec"), scope)
    return scope


def assert_close_records(a: Any, b: Any, tol: float, path: str = "") -> None:
    """Records and tensors equal, floating-point numbers within ``tol`` (relative and absolute)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for key in a:
            assert_close_records(a[key], b[key], tol, f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_records(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, path
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=0, atol=tol, msg=path)
        else:
            assert torch.equal(a, b), path
    elif isinstance(a, float) and a != b:
        assert abs(a - b) <= tol * max(1.0, abs(a)), (path, a, b)
    elif isinstance(a, float):
        pass  # equal (inf too)
    else:
        assert a == b, (path, a, b)


def check_processes(two: Path, one: Path, name: str, tol: float = 1e-4) -> dict[str, Any]:
    """Run ``name`` of a 2-process run (folder ``two``: ``<name>-<rank>.pt`` as the DDP scripts write them)
    against the same run on one process (folder ``one``): both processes end with exactly the same
    parameters, method state, records and events, and as the one process up to the order of
    floating-point sums (numbers within ``tol``, the same architecture). Returns process 0's."""
    rank0, rank1, single = (torch.load(folder / f"{name}-{rank}.pt", weights_only=False)
                            for folder, rank in ((two, 0), (two, 1), (one, 0)))
    assert_close_records(rank0, rank1, 0.0)  # exactly
    assert_close_records(rank0["state"], single["state"], tol, "state")
    assert rank0["architecture"] == single["architecture"]
    assert_close_records(rank0["history"], single["history"], tol, "history")
    assert_close_records(rank0["events"], single["events"], tol, "events")
    return rank0


def check_capacity_events(name: str, rank0: dict[str, Any]) -> None:
    """What a DDP script's run ``name`` (``<name>-0.pt``, as :func:`check_processes` returns it) must have
    done to the network besides agreeing across processes: closed units, real shrinking and growth,
    topology updates."""
    kinds = {e["event"] for e in rank0["events"]}
    if name == "npn":
        assert rank0["architecture"]["arch"][0] < HIDDEN
    if name == "npn_expand":
        assert "expand" in kinds
    if name == "npn_physical":  # shrunk for real on both processes, the DDP wrapper built again
        assert "remove" in kinds and rank0["state"]["fc1.weight"].shape[0] < HIDDEN
    if name == "npn_physical_expand":  # grew for real past its reserve, then removed the unused units
        assert {"expand", "grow", "remove"} <= kinds
        assert 8 < rank0["state"]["fc1.weight"].shape[0] < HIDDEN
    if name in ("rigl", "rigl_resume", "set", "granet", "gmp", "lpss"):
        assert rank0["events"], "no topology update"
