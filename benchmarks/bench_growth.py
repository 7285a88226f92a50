"""Training-step time of a physically-sized LeNet5 / the simulated full-size one, early in expansion.

An NPN expand run of LeNet5-Caffe starts from 3-3-48-3 open units (conv1, conv2, fc1 inputs, fc1
outputs). The *simulated* network holds all 20-50-800-500 units and multiplies the closed ones by a 0
gate; the *physical* network holds only the open units plus a reserve of ``--reserve`` hibernating units
per group (built with ``select_units``) and calls ``grow`` when the reserve is used up. Both do the same
SGD-momentum step (forward, backward, step) on the same batch; repeats are interleaved and the median is
reported. Also printed: the cost of one ``grow`` call (conv2 + its fc1 columns + optimizer state).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_growth.py [--batch 100] [--repeats 30]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from bench_compact import LeNet5Caffe
from neuroplastic.structure import grow, select_units, trace_unit_groups


def gated(model: LeNet5Caffe, open_units: dict[str, int]) -> nn.Module:
    """Simulated mode: 0/1 gates after conv1, conv2 and fc1 (the first ``n`` units open)."""
    for name, n in open_units.items():
        module = getattr(model, name)
        size = module.weight.shape[0]
        shape = (1, size, 1, 1) if isinstance(module, nn.Conv2d) else (1, size)
        gate = (torch.arange(size) < n).float().view(shape)
        module.register_forward_hook(lambda m, i, o, g=gate: o * g)
    return model


def step_time(models, x, y, repeats: int) -> dict[str, float]:
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(repeats + 3):
        for k, m in models.items():
            start = time.perf_counter()
            opts[k].zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opts[k].step()
            if r >= 3:  # warm-up steps are not timed
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--reserve", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(10, (args.batch,))
    open_units = {"conv1": 3, "conv2": 3, "fc1": 3}
    simulated = gated(LeNet5Caffe(), open_units).train()
    physical = LeNet5Caffe().train()
    keep = {k: range(n + args.reserve) for k, n in open_units.items()}
    select_units(physical, keep, x[:2])
    c1, c2, f1 = (getattr(physical, k).weight.shape[0] for k in open_units)
    widths = f"{c1}-{c2}-{c2 * 16}-{f1}"
    print(f"torch {torch.__version__}, threads 1, seed {args.seed}, batch {args.batch}, "
          f"repeats {args.repeats}")  # fmt: skip
    t = step_time({"simulated": simulated, "physical": physical}, x, y, args.repeats)
    print(f"simulated 20-50-800-500 (3-3-48-3 open): {t['simulated'] * 1e3:8.3f} ms/step")
    print(f"physical  {widths} (3-3-48-3 open + reserve {args.reserve}): {t['physical'] * 1e3:8.3f} ms/step")
    print(f"step time ratio physical / simulated: {t['physical'] / t['simulated']:.3f}")

    opt = torch.optim.Adam(physical.parameters(), lr=1e-3)
    nn.functional.cross_entropy(physical(x), y).backward()
    opt.step()
    grow_times, trace_times = [], []
    for _ in range(10):  # grow the reserve of conv2 by 2 units, ten times
        start = time.perf_counter()
        group = next(g for g in trace_unit_groups(physical, x[:2]) if g.name == "conv2")
        trace_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        grow(physical, group, 2, optimizer=opt)
        grow_times.append(time.perf_counter() - start)
    print(
        f"grow(conv2, 2) with Adam state: {statistics.median(grow_times) * 1e3:.3f} ms per call, "
        f"trace_unit_groups before it: {statistics.median(trace_times) * 1e3:.3f} ms (medians of 10)"
    )


if __name__ == "__main__":
    main()
