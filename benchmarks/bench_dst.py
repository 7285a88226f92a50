"""Cost of the mask methods: training-step time relative to a plain dense step, and one mask update.

For each method (Static, SET, RigL, GMP, GraNet) on LeNet5-Caffe (MNIST-shaped input, batch 128):

* ``step / dense``: median time of one training step (zero_grad, forward, backward, optimizer step,
  ``method.step()`` with no topology update due) over the median time of the same step without a method.
  The overhead is ``MaskEngine.apply`` (weights and momentum masked).
* ``update / dense``: median time of one topology update (``method.update`` at an update step: drop and
  grow for SET/RigL/GraNet, a global prune for GMP/GraNet) over the dense step time.

Dense and method steps are interleaved round by round (in a rotating order) so that machine load
and cache effects affect them alike. Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_dst.py [--repeats 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from neuroplastic.methods.dst import GMP, SET, GraNet, RigL, Static
from neuroplastic.models import get_model

EPOCHS, STEPS_PER_EPOCH = 10, 100  # schedules span 1000 steps; the timed steps (< 100) are never update steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(name: str, device: torch.device):
    torch.manual_seed(0)
    model = get_model("lenet5_caffe").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    common = {"epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH}
    method = {
        "dense": lambda: None,
        "static": lambda: Static(model, opt, density=0.05, **common),
        "set": lambda: SET(model, opt, density=0.05, update_every=1000, **common),
        "rigl": lambda: RigL(model, opt, density=0.05, update_every=1000, **common),
        "gmp": lambda: GMP(model, opt, final_density=0.05, final_prune_epoch=5, update_every=500, **common),
        "granet": lambda: GraNet(model, opt, final_density=0.05, final_prune_epoch=5, update_every=500, **common),
    }[name]()
    return model, opt, method


def train_step(model, opt, method, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    if method is not None:
        method.step()


def time_update(name: str, method, saved_masks, device: torch.device) -> float:
    """Seconds of one topology update: drop-and-grow 30% per layer (SET, RigL); the scheduled prune at
    step 500 of 1000 from the initial masks (GMP), followed by GraNet's drop-and-grow (GraNet)."""
    if saved_masks is not None:
        method.engine.load_state_dict(saved_masks)  # not timed
    _sync(device)
    t0 = time.perf_counter()
    if name in ("set", "rigl"):
        method.drop_and_grow(0.3)
    else:
        method.update(500)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per method")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.randn(args.batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    names = ["dense", "static", "set", "rigl", "gmp", "granet"]
    runs = {n: build(n, device) for n in names}
    for n in names:  # warm-up (allocations, optimizer state, first update paths)
        for _ in range(3):
            train_step(*runs[n], x, y)
    # GMP/GraNet prune from their initial masks each time (a prune to the current target is a no-op)
    saved = {n: runs[n][2].engine.state_dict() for n in ("gmp", "granet")}
    step_times: dict[str, list[float]] = {n: [] for n in names}
    apply_times: list[float] = []
    update_times: dict[str, list[float]] = {n: [] for n in names if n not in ("dense", "static")}
    for r in range(args.repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no method always runs first
            model, opt, method = runs[n]
            _sync(device)
            t0 = time.perf_counter()
            train_step(model, opt, method, x, y)
            _sync(device)
            step_times[n].append(time.perf_counter() - t0)
            if n in update_times:
                update_times[n].append(time_update(n, method, saved.get(n), device))
            if n == "static":  # the per-step overhead on its own: masks applied to weights and momentum
                _sync(device)
                t0 = time.perf_counter()
                method.engine.apply()
                _sync(device)
                apply_times.append(time.perf_counter() - t0)
    dense = statistics.median(step_times["dense"])
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, repeats {args.repeats}")
    print(f"dense step: {dense * 1e3:.2f} ms (median)")
    print(f"MaskEngine.apply alone / dense step: {statistics.median(apply_times) / dense:.4f}")
    print(f"{'method':8s} {'step/dense':>11s} {'update/dense':>13s}")
    for n in names[1:]:
        ratio = statistics.median(step_times[n]) / dense
        upd = f"{statistics.median(update_times[n]) / dense:13.2f}" if n in update_times else f"{'-':>13s}"
        print(f"{n:8s} {ratio:11.3f} {upd}")


if __name__ == "__main__":
    main()
