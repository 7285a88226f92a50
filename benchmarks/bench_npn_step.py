"""Cost of one NPN training step relative to the plain (ungated) step.

LeNet5-Caffe from the model zoo on random MNIST-shaped batches (1x28x28, batch 128), Adam, with the gate
placement of ``recipes/npn-mnist-lenet5-sparse.yaml`` ({conv1: out, conv2: out, fc1: in, fc2: in}, its
lambdas, ``stages=(100, 350)``). A step is ``zero_grad`` + forward/backward (``npn.backward`` for the
gated models) + ``Adam.step``. Timed side by side in one process: every repeat runs ``--steps`` steps of
each configuration in turn, and the reported ratio is the median over repeats of (configuration / plain)
from the same repeat, so slow drifts of a shared machine cancel; the ratio of the fastest repeats is
printed too (less sensitive to other jobs on the machine).

Configurations: *plain* (no gates), *frozen* (stages 1 and 3: deterministic gates ``1[phi > 0]``),
*plastic ARM* (two passes), *plastic ARM, anti 1/4* (``anti_fraction=0.25``: both ARM terms on a
random quarter of the batch), *plastic AR* (one pass). The breakdown rows time the parts of a step alone
(same repeats): a no-grad forward of the plain model (what the antithetic pass costs at most), the
penalty forward + backward, gate sampling (``u`` and ``pi`` for every site) and the phi-gradient write,
and the gated forward + backward minus the plain one (the cost of applying the gates).

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_npn_step.py [--threads N] [--repeats 30]``
(``--threads 0`` uses all cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from neuroplastic.gates import estimators
from neuroplastic.methods.npn import NPN
from neuroplastic.models import get_model

GATES = {"conv1": "out", "conv2": "out", "fc1": "in", "fc2": "in"}
LAM = [0.0001666667, 8.3333e-06, 1.6667e-06, 0.0001666667]
STAGES = (100, 350)


def build(
    estimator: str | None, epoch: int, seed: int = 0, **options
) -> tuple[nn.Module, NPN | None, torch.optim.Optimizer]:
    """The model (same initial weights for every configuration), its NPN (None for plain) and Adam."""
    torch.manual_seed(seed)
    model = get_model("lenet5_caffe").train()
    npn = None
    if estimator is not None:
        npn = NPN(model, mode="sparse", k=7, lam=LAM, gates=GATES, stages=STAGES, estimator=estimator, **options)
        npn.set_epoch(epoch)
    return model, npn, torch.optim.Adam(model.parameters(), lr=1e-3)


def step_fn(model: nn.Module, npn: NPN | None, opt: torch.optim.Optimizer, x, y) -> Callable[[], None]:
    per_example = npn is not None and npn.closure_kind != "mean"

    def closure(index=None):  # as fit builds it: per-example losses (of the examples at index) when asked
        xi, yi = (x, y) if index is None else (x[index], y[index])
        return nn.functional.cross_entropy(model(xi), yi, reduction="none" if per_example else "mean")

    def step() -> None:
        opt.zero_grad()
        if npn is None:
            closure().backward()
        else:
            npn.backward(closure)
        opt.step()

    return step


def parts(x, y) -> dict[str, Callable[[], None]]:
    """Pieces of the plastic step, timed alone."""
    plain, _, _ = build(None, 0)
    gated, npn, _ = build("arm", STAGES[0])
    sites = npn.sites

    def nograd_forward() -> None:
        with torch.no_grad():
            plain(x)

    def plain_fwd_bwd() -> None:
        nn.functional.cross_entropy(plain(x), y).backward()

    def gated_fwd_bwd() -> None:
        with npn._phase("main"):
            nn.functional.cross_entropy(gated(x), y).backward()

    def penalty() -> None:
        npn.penalty().backward()

    def sample_and_write() -> None:
        with torch.no_grad():
            for s in sites:
                pi = s.gates.prob()
                u = torch.rand(pi.shape, generator=npn.generator)
                z1, z2 = estimators.antithetic_gates(u, pi)
                g = estimators.arm_logit_grad(torch.tensor(1.0), torch.tensor(1.1), u)
                phi = s.gates.phi
                phi.grad = g * npn.gate_fn.logit_slope(phi, npn.k)

    return {"no-grad forward (plain)": nograd_forward, "plain fwd+bwd": plain_fwd_bwd,
            "gated fwd+bwd (main pass)": gated_fwd_bwd, "penalty fwd+bwd": penalty,
            "sampling + phi-grad write": sample_and_write}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: all cores)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--steps", type=int, default=2, help="steps per configuration per repeat")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    configs = {
        "plain": (None, 0, {}),
        "NPN frozen (stage 1/3)": ("arm", 0, {}),
        "NPN plastic ARM": ("arm", STAGES[0], {}),
        "NPN plastic ARM, anti 1/4": ("arm", STAGES[0], {"anti_fraction": 0.25}),
        "NPN plastic AR": ("ar", STAGES[0], {}),
    }
    steps = {name: step_fn(*build(est, epoch, **opts), x, y) for name, (est, epoch, opts) in configs.items()}
    pieces = parts(x, y)
    timed = {**steps, **pieces}
    times: dict[str, list[float]] = {k: [] for k in timed}
    for r in range(args.repeats + 1):
        for name, fn in timed.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            if r > 0:  # the first repeat warms up
                times[name].append((time.perf_counter() - start) / args.steps)
    plain = times["plain"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"{args.repeats} repeats x {args.steps} steps; ratio: median over repeats of (time / plain time "
          "of the same repeat); min ratio: fastest repeat / fastest plain repeat")
    print(f"{'step':<30} {'ms':>8} {'ratio':>7} {'min ratio':>9}")
    for title, names in (("", steps), ("breakdown (parts timed alone)", pieces)):
        if title:
            print(title)
        for name in names:
            ratio = statistics.median(t / p for t, p in zip(times[name], plain, strict=True))
            print(f"{name:<30} {statistics.median(times[name]) * 1e3:8.2f} {ratio:7.3f} "
                  f"{min(times[name]) / min(plain):9.3f}")

if __name__ == "__main__":
    main()
