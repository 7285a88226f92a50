"""What a recorded PhysicalNPN LeNet5 run cost relative to a dense run of the same epochs, from step times.

A run on a shared machine cannot be compared with another run by wall time (other jobs come and go).
This benchmark replays the *shape* of a finished run instead: for every epoch it reads from the run's
``history.jsonl`` the stage and the widths the model held (``physical_arch``), builds LeNet5-Caffe at
those widths with the run's gates, and times its training step (frozen stages: one pass; plastic: ARM,
with the run's ``anti_fraction``) interleaved with the dense model's plain step in one process. The run's
cost relative to the dense run is then ``sum over epochs of step(epoch) / (epochs * dense step)``
(validation passes and data loading, which shrink too, are left out). Distinct widths are timed once.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/npn_run_step_cost.py RUN_DIR [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from bench_npn_step import step_fn  # the same timed step (benchmarks/ is on the path when run as a script)
from neuroplastic.methods.npn import NPN
from neuroplastic.models import get_model
from neuroplastic.structure import select_units, trace_unit_groups


def model_at(widths: list[int], method: dict, stage: int, x: torch.Tensor):
    """LeNet5-Caffe cut to ``widths`` (conv1 out, conv2 out, fc1 in, fc2 in) with the run's gates."""
    torch.manual_seed(0)
    model = get_model("lenet5_caffe")
    c1, c2, _, out = widths
    select_units(model, {"conv1": range(c1), "conv2": range(c2), "fc1": range(out)},
                 groups=trace_unit_groups(model, x[:2]))
    stages = method["stages"]
    npn = NPN(model, mode="sparse", k=method["k"], lam=method["lam"], gates=method["gates"], stages=stages,
              anti_fraction=method.get("anti_fraction", 1.0))
    npn.set_epoch({1: 0, 2: stages[0], 3: stages[1]}[stage])
    return model, npn, torch.optim.Adam(model.parameters(), lr=1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = yaml.safe_load((args.run_dir / "recipe.yaml").read_text())
    history = [json.loads(line) for line in (args.run_dir / "history.jsonl").read_text().splitlines()]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(recipe["data"]["batch_size"], 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (len(x),), generator=gen)
    shapes = sorted({(r["stage"], tuple(r["physical_arch"])) for r in history})
    torch.manual_seed(0)
    dense = get_model("lenet5_caffe")
    steps = {"dense": step_fn(dense, None, torch.optim.Adam(dense.parameters(), lr=1e-3), x, y)}
    for stage, widths in shapes:
        steps[(stage, widths)] = step_fn(*model_at(list(widths), recipe["method"], stage, x), x, y)
    ratios: dict = {key: [] for key in steps if key != "dense"}
    for r in range(args.repeats + 1):
        times = {}
        for key, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[key] = time.perf_counter() - start
        if r > 0:  # the first repeat warms up
            for key in ratios:
                ratios[key].append(times[key] / times["dense"])
    ratio = {key: statistics.median(v) for key, v in ratios.items()}
    per_stage: dict[int, list[float]] = {}
    for record in history:
        per_stage.setdefault(record["stage"], []).append(ratio[(record["stage"], tuple(record["physical_arch"]))])
    total = sum(sum(v) for v in per_stage.values()) / len(history)
    print(f"{args.run_dir}: {len(history)} epochs, {len(shapes)} distinct (stage, widths), "
          f"{args.repeats} interleaved repeats, {torch.get_num_threads()} thread(s)")
    for stage, values in sorted(per_stage.items()):
        print(f"  stage {stage}: {len(values)} epochs, step / dense step: mean {statistics.mean(values):.3f} "
              f"(first {values[0]:.3f}, last {values[-1]:.3f})")
    print(f"whole run / dense run of the same epochs (training steps): {total:.3f}")


if __name__ == "__main__":
    main()
