"""Two CPU processes under DistributedDataParallel (gloo): masks stay identical on both ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from neuroplastic.methods.dst import SET, GraNet, RigL

WORLD = 2
STEPS = 12
METHODS = ("rigl", "granet", "set")


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for method_name in METHODS:
            _run(rank, method_name, out_dir)
        dist.barrier()  # both ranks done before either tears the group down
    finally:
        dist.barrier()  # no rank tears the group down while the other still talks to it
        dist.destroy_process_group()


def _run(rank: int, method_name: str, out_dir: str) -> None:
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    common = {"epochs": 2, "steps_per_epoch": STEPS // 2, "update_every": 2, "seed": 7}
    if method_name == "granet":
        method = GraNet(ddp, opt, final_density=0.2, init_density=0.6, final_prune_epoch=1, **common)
    else:
        method = {"rigl": RigL, "set": SET}[method_name](ddp, opt, density=0.3, **common)
    gen = torch.Generator().manual_seed(rank)  # different data on each rank
    identical = []
    for _ in range(STEPS):
        x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        method.step()
        flat = torch.cat([m.flatten() for m in method.engine.masks.values()]).to(torch.uint8)
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        identical.append(bool(torch.equal(gathered[0], gathered[1])))
    changed = sum(e["event"] == "drop_and_grow" for e in method.end_epoch())
    torch.save(
        {"identical": identical, "updates": changed, "density": method.engine.density()},
        os.path.join(out_dir, f"{method_name}{rank}.pt"),
    )


def test_masks_identical_across_ranks(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    # one spawn for all methods: starting processes dominates the cost
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name in METHODS:
        results = [torch.load(tmp_path / f"{name}{r}.pt") for r in range(WORLD)]
        for r in results:
            assert len(r["identical"]) == STEPS and all(r["identical"]), name
            assert r["updates"] >= 3, f"{name}: the topology must change for the test to mean anything"
        assert results[0]["density"] == results[1]["density"]
