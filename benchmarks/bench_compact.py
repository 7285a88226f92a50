"""Inference time of a compacted model / the full-size model with its closed units zeroed (CPU).

Two cases, measured side by side in one run (interleaved repeats, median time):

* LeNet5-Caffe at the NPN paper's sparsified architecture 7-9-109-30: conv1 keeps 7 of 20 channels,
  conv2 9 of 50, fc1 30 of 500 outputs. Compaction works per unit group, so fc1 reads the 9 * 16 = 144
  flattened inputs of the kept conv2 channels (the paper gated 109 single features).
* ResNet-20 (the zoo's CIFAR model, 1x1 projection shortcuts) with half of the units of every prunable group closed.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_compact.py [--repeats 30] [--seed 0]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from neuroplastic.metrics import count_flops, count_weights
from neuroplastic.models import get_model
from neuroplastic.structure import compact, group_of, trace_unit_groups
from neuroplastic.structure.surgery import unit_positions


@torch.no_grad()
def close(model: nn.Module, group, keep: torch.Tensor) -> None:
    """Zero the closed units of ``group``: their BatchNorm affine terms, else the producer rows."""
    closed = torch.ones(group.size, dtype=torch.bool)
    closed[keep] = False
    units = torch.nonzero(closed).flatten()
    modules = dict(model.named_modules())
    norms = [r for r in group.producers if r.kind == "norm"]
    for ref in norms or group.producers:
        for name in ("weight", "bias"):
            t = getattr(modules[ref.module], name)
            if t is not None:
                t.index_fill_(0, unit_positions(ref, units), 0.0)


@torch.no_grad()
def timed(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per forward pass of each model, repeats interleaved so load hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        for _ in range(3):
            m(x)
    for _ in range(repeats):
        for k, m in models.items():
            start = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def lenet_case(seed: int) -> tuple[nn.Module, dict, torch.Tensor]:
    torch.manual_seed(seed)
    model = get_model("lenet5_caffe").eval()
    x = torch.randn(2, 1, 28, 28)
    groups = trace_unit_groups(model, x)
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for name, n in (("conv1", 7), ("conv2", 9), ("fc1", 30)):
        g = group_of(groups, name)
        keep[name] = torch.sort(torch.randperm(g.size, generator=gen)[:n]).values
        close(model, g, keep[name])
    return model, keep, x


def resnet_case(seed: int) -> tuple[nn.Module, dict, torch.Tensor]:
    torch.manual_seed(seed)
    model = get_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in trace_unit_groups(model, x):
        if g.prunable:
            keep[g.name] = torch.sort(torch.randperm(g.size, generator=gen)[: g.size // 2]).values
            close(model, g, keep[g.name])
    return model, keep, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads 1, seed {args.seed}, repeats {args.repeats}")
    header = f"{'model':<22}{'batch':>6}{'weights':>18}{'FLOPs ratio':>13}{'time full ms':>14}"
    print(header + f"{'time compact ms':>17}{'time ratio':>12}{'max|diff|':>11}")
    for label, build, batches, shape in (
        ("LeNet5 7-9-(144)-30", lenet_case, (1, 256), (1, 28, 28)),
        ("ResNet-20 half closed", resnet_case, (1, 64), (3, 32, 32)),
    ):
        model, keep, x = build(args.seed)
        small = compact(model, keep, x)
        flops_ratio = count_flops(small, shape) / count_flops(model, shape)
        weights = f"{count_weights(model)}->{count_weights(small)}"
        for batch in batches:
            xb = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(args.seed))
            with torch.no_grad():
                diff = float((model(xb) - small(xb)).abs().max())
            t = timed({"full": model, "compact": small}, xb, args.repeats)
            print(
                f"{label:<22}{batch:>6}{weights:>18}{flops_ratio:>13.3f}{t['full'] * 1e3:>14.3f}"
                f"{t['compact'] * 1e3:>17.3f}{t['compact'] / t['full']:>12.3f}{diff:>11.1e}"
            )


if __name__ == "__main__":
    main()
