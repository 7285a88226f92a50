"""Two CPU processes under DistributedDataParallel (gloo): NPN gates stay identical on both ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from neuroplastic.methods.npn import NPN

WORLD = 2
STEPS = 8


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP broadcasts rank 0's
        model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        npn = NPN(model, k=2.0, lam=1e-3, stages=None, seed=3)  # gates first, then wrap
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.Adam(ddp.parameters(), lr=0.05)
        gen = torch.Generator().manual_seed(rank)  # different data on each rank
        identical, moved = [], []
        start = npn.sites[0].gates.phi.detach().clone()
        for _ in range(STEPS):
            x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            opt.zero_grad()
            npn.backward(lambda x=x, y=y: nn.functional.cross_entropy(ddp(x), y))
            opt.step()
            flat = torch.cat([p.detach().flatten() for p in model.parameters()])
            gathered = [torch.empty_like(flat) for _ in range(WORLD)]
            dist.all_gather(gathered, flat)
            identical.append(bool(torch.equal(gathered[0], gathered[1])))
        moved.append(float((npn.sites[0].gates.phi.detach() - start).abs().max()))
        torch.save({"identical": identical, "moved": moved}, os.path.join(out_dir, f"npn{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears the group down while the other still talks to it
        dist.destroy_process_group()


def test_gates_and_weights_identical_across_ranks(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        r = torch.load(tmp_path / f"npn{rank}.pt")
        assert len(r["identical"]) == STEPS and all(r["identical"])
        assert r["moved"][0] > 0.01, "the gates must move for the test to mean anything"
