"""Physically-sized vs simulated NPN expansion on the moons recipe: final accuracy and live params.

Runs the shipped recipe ``npn-moons-expand`` through the recipe runner at ``--scale`` of its epochs,
once as :class:`NPN` (simulated, pre-allocated 100-80-2) and once as :class:`PhysicalNPN`
(``method.name=neuroplastic.methods.npn_physical:PhysicalNPN``), for each seed, and prints one line per
run plus the means. The two runs of a seed start from the same weights but draw different gate noise
(the physical gates are fewer), so they agree in distribution, not run by run.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/physical_npn_moons.py [--scale 0.2] [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from neuroplastic.recipes.runner import execute, prepare

PHYSICAL = ["method.name=neuroplastic.methods.npn_physical:PhysicalNPN"]


def run(seed: int, scale: float, physical: bool, reserve: int) -> dict:
    """One moons expand run; returns the runner's result (test accuracy, live params, arch ...)."""
    overrides = [f"epochs_scale={scale}", f"seed={seed}"]
    if physical:
        overrides += [*PHYSICAL, f"method.reserve={reserve}"]
    with tempfile.TemporaryDirectory() as folder:
        return execute(prepare("npn-moons-expand", overrides, out=f"{folder}/run"), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reserve", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads 1, npn-moons-expand epochs_scale {args.scale}, "
          f"seeds {args.seeds}, reserve {args.reserve}")
    summary: dict[str, list[tuple[float, int]]] = {"simulated": [], "physical": []}
    for seed in args.seeds:
        for label in summary:
            start = time.perf_counter()
            result = run(seed, args.scale, label == "physical", args.reserve)
            summary[label].append((result["test_accuracy"], result["params"]))
            print(f"seed {seed} {label:9s} test acc {result['test_accuracy']:.3f}  live params "
                  f"{result['params']:5d}  arch {result['arch']}  {time.perf_counter() - start:5.1f} s", flush=True)
    for label, rows in summary.items():
        print(f"mean {label:9s} test acc {statistics.mean(r[0] for r in rows):.3f}  live params "
              f"{statistics.mean(r[1] for r in rows):7.1f}")


if __name__ == "__main__":
    main()
