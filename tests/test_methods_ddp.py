"""Every gated method and LpSS under DistributedDataParallel (two CPU processes, gloo): through the
stages, the penalty and a physical shrink, parameters and method state stay identical on both ranks.

(The mask methods have their own DDP test, tests/test_dst_ddp.py.)
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from neuroplastic.lp import LpCGD
from neuroplastic.recipes.registry import method_class
from neuroplastic.train.step import Wrapped, training_closure, training_criterion

WORLD = 2
EPOCHS, STEPS = 3, 4
CASES = {  # case -> (method name, options)
    # stages (1, 2): one pre-training epoch (gates frozen open, no logit gradient), one plastic, one hard
    "npn": ("npn", {"k": 2.0, "lam": 5e-3, "stages": [1, 2], "seed": 3}),
    "npn_physical": ("npn_physical", {"mode": "sparse", "k": 20.0, "lam": 2e-3, "stages": [1, 2], "seed": 3}),
    # expansion on every epoch's (improving) validation loss; PhysicalNPN grows for real past its reserve
    "npn_expand": ("npn", {"mode": "expand", "k": 1.0, "init_active": 2, "seed": 3}),
    "npn_physical_expand": ("npn_physical", {"mode": "expand", "k": 1.0, "init_active": 2, "reserve": 1, "seed": 3}),
    "hard_concrete": ("hard_concrete", {"lam": 5e-3}),
    "lpss": ("lpss", {"final_density": 0.5, "update_every": 2, "begin": 0.0}),
}


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, 3))


def _flat(model: nn.Module) -> torch.Tensor:
    # parameters only: BatchNorm's running statistics follow each rank's batches until DDP broadcasts
    # rank 0's at the next forward
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _worker(rank: int, case: str, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP broadcasts rank 0's
        model = _net()
        name, options = CASES[case]
        cls = method_class(name)
        if cls.takes_optimizer:  # the optimizer (LpCGD's dual state) starts from rank 0's broadcast weights
            ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = LpCGD.for_model(model, lr=0.05, p_first=1.3) if name == "lpss" else None
        method = cls.from_recipe(model, optimizer, epochs=EPOCHS, steps_per_epoch=STEPS,
                                 example_input=torch.zeros(2, 10), **options)
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        method.bind_optimizers([optimizer], [])
        if not cls.takes_optimizer:  # gated methods add their gates to the model: wrap after them, and
            ddp = Wrapped(model, nn.parallel.DistributedDataParallel)  # again after a resize
        criterion = training_criterion(method.closure_kind)
        gen = torch.Generator().manual_seed(rank)  # different data on each rank
        identical, params = [], []
        for epoch in range(EPOCHS):
            method.set_epoch(epoch)
            for _ in range(STEPS):
                x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 3, (8,), generator=gen)
                optimizer = method.optimizers[0] if getattr(method, "optimizers", None) else optimizer
                optimizer.zero_grad(set_to_none=True)
                method.backward(training_closure(ddp, criterion, x, y))
                optimizer.step()
                method.step()
                flat = _flat(model)
                gathered = [torch.empty_like(flat) for _ in range(WORLD)]
                dist.all_gather(gathered, flat)
                identical.append(bool(torch.equal(gathered[0], gathered[1])))
            method.end_epoch(val_loss=1.0 / (epoch + 1))  # improving: expansion decisions on every rank
            params.append(method.architecture()["params"])
        torch.save({"identical": identical, "params": params, "numel": sum(p.numel() for p in model.parameters())},
                   os.path.join(out_dir, f"{case}{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears the group down while the other still talks to it
        dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_method_state_identical_across_ranks(case, tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(case, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"{case}{rank}.pt") for rank in range(WORLD)]
    for r in results:
        assert len(r["identical"]) == EPOCHS * STEPS and all(r["identical"]), r["identical"]
    assert results[0]["params"] == results[1]["params"]
    full = sum(p.numel() for p in _net().parameters()) + 16 + 12  # weights, biases, BN and the gates
    if case.startswith("npn") and case.endswith("expand"):  # units were opened (and grown) on both ranks
        assert results[0]["params"][-1] > results[0]["params"][0]
    if case == "npn_physical_expand":  # started physically small, grew for real
        assert results[0]["numel"] == results[1]["numel"] < full
    if case == "npn_physical":  # the hardening stage removed the closed units for real, on both ranks
        assert 0 < results[0]["params"][-1] < results[0]["params"][0]
        assert results[0]["numel"] == results[1]["numel"] < full
