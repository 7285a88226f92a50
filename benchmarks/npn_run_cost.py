"""Whole-run cost of NPN against the dense run of the same epochs, measured side by side in one process.

Two (or more) recipes are prepared with the recipe runner and trained *interleaved, epoch by epoch*:
after each epoch of one run, the next run trains its own next epoch (each run resumes exactly from its
own checkpoint, so every run is the uninterrupted run). Both runs see the same machine conditions at
almost the same moments, so their ratio survives a machine shared with other jobs. Reported per run:
training + validation wall seconds (the runner's ``wall_seconds``), the seconds per stage (from
``history.jsonl``), the live weights and the test accuracy of the last epoch (``selection`` is forced to
``last``: this benchmark measures cost; model selection is the recipes' business). The first recipe is
the reference of the ratios.

Usage (the figures in docs/results.md)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/npn_run_cost.py \\
        --recipes dense-mnist-lenet5 npn-mnist-lenet5-sparse-100 --epochs 100 --data-dir ../shared/data \\
        --out runs/cost
    # at a fifth of the NPN recipe's budget (20 epochs, stages [1, 13]), each recipe with its own overrides:
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/npn_run_cost.py --recipes "dense-mnist-lenet5 epochs=20" \
        "npn-mnist-lenet5-sparse-100 epochs_scale=0.2" --data-dir ../shared/data --out runs/cost-20
    # --set KEY=VALUE overrides every run; --epochs-scale S scales every recipe's epochs
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from neuroplastic.recipes.runner import prepare
from neuroplastic.train.loop import fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", required=True,
                        help="'RECIPE [KEY=VALUE ...]' each (its own overrides); the first is the reference (dense)")
    parser.add_argument("--epochs", type=int, help="every run's epoch count (the NPN recipes' own stages stay)")
    parser.add_argument("--epochs-scale", type=float, help="scale every recipe's epochs instead of --epochs")
    parser.add_argument("--set", action="append", default=[], help="override KEY=VALUE for every run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/cost")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = ["selection=last", "select_from_epoch=0", *args.set]
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    if args.epochs_scale is not None:
        overrides.append(f"epochs_scale={args.epochs_scale}")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    runs = []
    for i, spec in enumerate(args.recipes):
        name, *own = spec.split()
        runs.append(prepare(name, [*overrides, *own], out=out / f"{i}-{name}", data_dir=args.data_dir))
    epochs = runs[0].recipe["epochs"]
    if any(p.recipe["epochs"] != epochs for p in runs):
        raise SystemExit(f"the runs differ in epochs: {[p.recipe['epochs'] for p in runs]}; pass --epochs")
    results = {}
    for epoch in range(epochs):
        for prep in runs:
            res = fit(prep.model, prep.method, prep.optimizers, prep.schedules, prep.loaders, epochs=epoch + 1,
                      run_dir=prep.run_dir, selection="last", snapshot_every=0, resume=True, progress=False,
                      tensorboard=False)
            results[prep.run_dir.name] = res
        ref = results[runs[0].run_dir.name].wall_seconds
        line = " | ".join(f"{name} {r.wall_seconds:.0f}s ({r.wall_seconds / ref:.2f}x)" for name, r in results.items())
        print(f"epoch {epoch + 1}/{epochs}: {line}", flush=True)
    summary = []
    for prep in runs:
        res = results[prep.run_dir.name]
        history = [json.loads(line) for line in (prep.run_dir / "history.jsonl").read_text().splitlines()]
        stage_seconds: dict[str, float] = {}
        for record in history:
            stage = str(record.get("stage", "-"))
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + record["seconds"]
        arch = prep.method.architecture()
        summary.append({"recipe": prep.recipe["name"], "epochs": epochs, "wall_seconds": res.wall_seconds,
                        "ratio": res.wall_seconds / results[runs[0].run_dir.name].wall_seconds,
                        "seconds_per_stage": stage_seconds, "params": arch["params"],
                        "params_dense": arch["params_dense"], "test_accuracy_last": res.test_accuracy})
    print(f"\n| recipe | epochs | wall s | ratio to {runs[0].recipe['name']} | s per stage | params | test acc |")
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        stages = ", ".join(f"{k}: {v:.0f}" for k, v in s["seconds_per_stage"].items())
        print(f"| {s['recipe']} | {s['epochs']} | {s['wall_seconds']:.0f} | {s['ratio']:.3f} | {stages} | "
              f"{s['params']:,} | {100 * s['test_accuracy_last']:.2f}% |")
    (out / "cost.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
