"""Reduced-budget CPU run of a shipped LpSS Fashion-MNIST recipe (or its baselines) on a training subset.

The recipe runner trains on the whole training split; on a shared 2-core CPU one epoch of the WRN takes
minutes, so this script runs the very same recipe through :func:`neuroplastic.recipes.runner.prepare` /
``execute`` with only the data cut down: a seeded random subset of ``--train-size`` training images and
``--val-size`` validation images (the test set is whole). Everything else (model, LpCGD or SGD,
piecewise LR, LpSS or Static) comes from the recipe plus the ``--set`` overrides, e.g.::

    OMP_NUM_THREADS=1 python benchmarks/fashion_lpss.py lpss-fashion-s90 --train-size 55000 --val-size 5000 \
        --set epochs_scale=0.06 --set data.batch_size=64 --set method.frequency=10 \
        --set optim.weights.unconstrained_lr=0.2 --out runs/full-s90-1

(the reduced-budget run of docs/results.md; ``--train-size 55000 --val-size 5000`` keeps whole splits)

prints the run's result object (``results.json`` in ``--out``) and the final mask sparsity.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

import neuroplastic.data as data
from neuroplastic.recipes import runner


def subset_loader(train_size: int, val_size: int, seed: int):
    """A ``load_dataset`` that keeps a seeded random subset of the training and validation splits."""
    full = data.load_dataset

    def load(*args, **kwargs):
        splits = full(*args, **kwargs)
        g = torch.Generator().manual_seed(seed)
        tr = torch.randperm(len(splits.train_y), generator=g)[:train_size].to(splits.train_y.device)
        va = torch.randperm(len(splits.val_y), generator=g)[:val_size].to(splits.val_y.device)
        return dataclasses.replace(
            splits,
            train_x=splits.train_x[tr],
            train_y=splits.train_y[tr],
            val_x=splits.val_x[va],
            val_y=splits.val_y[va],
        )

    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], help="recipe override KEY=VALUE (repeatable)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # the runner imports load_dataset from neuroplastic.data when it loads the data: swap in the subset
    data.load_dataset = subset_loader(args.train_size, args.val_size, seed=0)
    t0 = time.perf_counter()
    prep = runner.prepare(args.recipe, args.set, out=args.out, data_dir=args.data_dir)
    result = runner.execute(prep, progress=False)
    metrics = prep.method.metrics()
    keep = ("hoyer_net", "density", "params")
    print(
        json.dumps(
            {
                **result,
                **{k: metrics[k] for k in keep if k in metrics},
                "train_size": args.train_size,
                "val_size": args.val_size,
                "total_seconds": time.perf_counter() - t0,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
