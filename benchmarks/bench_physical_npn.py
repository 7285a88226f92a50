"""Training-step time of physically-sized NPN expansion / the simulated pre-allocated expansion.

LeNet5-Caffe (20-50-800-500) with the paper's expand placement (out-gates on conv1 and conv2, in-gates
on fc1's 800 flattened features and fc2's 500 inputs), from 3-3-48-3 open units, in the plastic stage
(ARM: two forward passes, one backward). *Simulated*: :class:`NPN` on the full-size network.
*Physical*: :class:`PhysicalNPN` with ``--reserve`` hibernating units per group. Both run the same
step (``npn.backward`` + Adam step) on the same batch; repeats are interleaved, the median is reported.
The two are timed at the start (3-3-48-3) and again after ``--events`` expansion events (every site
expanded each time, as on a steadily improving validation loss), and the time of an ``end_epoch``
that grows the model is printed.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_physical_npn.py [--repeats 30]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN
from neuroplastic.models import get_model

OPTIONS = dict(mode="expand", k=1.0, gates={"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"},
               lam=[1.7e-4, 8.3e-6, 1.7e-6, 1.7e-4], init_active=[3, 3, 48, 3], stages=(0, 1000), fill=0.5)


def build(physical: bool, x: torch.Tensor, reserve: int, seed: int):
    torch.manual_seed(seed)
    model = get_model("lenet5_caffe").train()
    if physical:
        npn = PhysicalNPN(model, reserve=reserve, example_input=x[:2], **OPTIONS)
    else:
        npn = NPN(model, **OPTIONS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if physical:
        npn.bind_optimizers(opt)
    return model, npn, opt


def step(run, x, y) -> None:
    model, npn, opt = run
    opt.zero_grad()
    npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
    opt.step()


def time_steps(runs: dict, x, y, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats + 3):
        for k, run in runs.items():
            start = time.perf_counter()
            step(run, x, y)
            if r >= 3:  # warm-up steps are not timed
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def report(label: str, runs: dict, t: dict[str, float]) -> None:
    arch = runs["physical"][1].architecture()
    print(f"{label}: open {'-'.join(map(str, arch['arch']))}, physical "
          f"{'-'.join(map(str, arch['physical_arch']))} ({arch['params_physical']} weights held, "
          f"{arch['params_dense']} simulated)")
    print(f"  simulated {t['simulated'] * 1e3:8.3f} ms/step   physical {t['physical'] * 1e3:8.3f} ms/step   "
          f"ratio physical / simulated {t['physical'] / t['simulated']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--reserve", type=int, default=2)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(10, (args.batch,))
    runs = {"simulated": build(False, x, args.reserve, args.seed), "physical": build(True, x, args.reserve, args.seed)}
    print(f"torch {torch.__version__}, threads 1, seed {args.seed}, batch {args.batch}, repeats {args.repeats}, "
          f"reserve {args.reserve}")
    report("start", runs, time_steps(runs, x, y, args.repeats))
    grow_times = []
    for event in range(args.events):
        for _, npn, _ in runs.values():
            npn.set_epoch(event)
            with torch.no_grad():  # keep every allocated unit open, so every site expands each event
                for site, n in zip(npn.sites, npn.allocated, strict=True):
                    site.gates.phi[:n] = site.gates.phi[:n].clamp(min=0.5)
            start = time.perf_counter()
            events = npn.end_epoch(val_loss=1000.0 - event)
            if npn is runs["physical"][1] and any(e["event"] == "grow" for e in events):
                grow_times.append(time.perf_counter() - start)
    report(f"after {args.events} expansion events", runs, time_steps(runs, x, y, args.repeats))
    print(f"end_epoch with growth: {statistics.median(grow_times) * 1e3:.2f} ms (median of {len(grow_times)})")


if __name__ == "__main__":
    main()
