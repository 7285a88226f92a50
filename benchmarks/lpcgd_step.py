"""Cost of LpCGD and of an LpSS topology update next to plain SGD, measured side by side on ``wrn_lpss``.

Prints seconds per call and ratios: ``optimizer.step()`` of SGD (momentum, Nesterov) vs LpCGD (p 1.2/1.07),
one forward+backward of a batch for scale, and one LpSS topology update. Run with
``OMP_NUM_THREADS=1 python benchmarks/lpcgd_step.py`` (add ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from neuroplastic.lp import LpCGD
from neuroplastic.methods.lpss import LpSS
from neuroplastic.models import get_model


def timed(fn, repeats: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def backward(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    sgd_model = get_model("wrn_lpss", num_classes=10, in_channels=1).to(device)
    lp_model = get_model("wrn_lpss", num_classes=10, in_channels=1).to(device)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    lpcgd = LpCGD.for_model(lp_model, lr=0.004, p_first=1.2, p_rest=1.07, momentum=0.9, nesterov=True)
    lpss = LpSS(lp_model, lpcgd, final_density=0.1, epochs=1, steps_per_epoch=1000)
    backward(sgd_model)
    backward(lp_model)
    t_fb = timed(lambda: backward(sgd_model), max(args.repeats // 4, 2), device)
    t_sgd = timed(sgd.step, args.repeats, device)
    t_lp = timed(lpcgd.step, args.repeats, device)
    t_topo = timed(lpss.update_topology, max(args.repeats // 4, 2), device)
    print(f"device {device}, batch {args.batch}, threads {torch.get_num_threads()}")
    print(f"forward+backward      {t_fb * 1e3:8.2f} ms")
    print(f"SGD step              {t_sgd * 1e3:8.2f} ms")
    print(
        f"LpCGD step            {t_lp * 1e3:8.2f} ms   = {t_lp / t_sgd:.1f} x SGD step, "
        f"{t_lp / t_fb:.3f} x forward+backward"
    )
    print(
        f"LpSS topology update  {t_topo * 1e3:8.2f} ms   = {t_topo / t_fb:.3f} x forward+backward "
        f"(once every `frequency` steps)"
    )


if __name__ == "__main__":
    main()
