"""Iterative magnitude pruning with weight or learning-rate rewinding on real MNIST (LeNet5-Caffe).

A plain loop around :class:`~neuroplastic.methods.rewind.IterativePruning` (the recipe runner does not
rewind LR schedules). Round 0 trains ``--epochs-per-round`` epochs dense; each of ``--rounds`` rounds then
prunes globally by magnitude towards ``--final-density`` and rewinds (weights and optimizer state, or
only the LR schedule) to ``--rewind-epoch``, and retrains. The model is selected by validation accuracy
among the epochs of the last round (at the final density); the test set is evaluated once. Run::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/mnist_dst.py --rewind weights --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from neuroplastic.data import load_dataset
from neuroplastic.methods.rewind import IterativePruning
from neuroplastic.models import get_model
from neuroplastic.train.loop import evaluate
from neuroplastic.train.optim import build_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewind", choices=["weights", "lr"], required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--final-density", type=float, default=0.05)
    parser.add_argument("--epochs-per-round", type=int, default=3)
    parser.add_argument("--rewind-epoch", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    splits = load_dataset("mnist", data_dir=args.data_dir, val_size=5000, seed=args.seed)
    train = splits.train_loader(128, seed=args.seed)
    val, test = splits.eval_loader("val"), splits.eval_loader("test")
    model = get_model("lenet5_caffe")
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    # within a round: x0.1 for its last epoch; rewinding puts the schedule back to --rewind-epoch
    schedule = {"name": "multistep", "milestones": [args.epochs_per_round - 1], "gamma": 0.1}
    sched = build_schedule(opt, schedule, epochs=args.epochs_per_round, steps_per_epoch=len(train))
    imp = IterativePruning(
        model,
        opt,
        rounds=args.rounds,
        final_density=args.final_density,
        rewind=args.rewind,
        rewind_epoch=args.rewind_epoch,
        epochs_per_round=args.epochs_per_round,
        steps_per_epoch=len(train),
        scheduler=sched,
        seed=args.seed,
    )
    best = None
    t0 = time.perf_counter()
    for epoch in range(imp.total_epochs):
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        model.train()
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
            imp.step()
        last_round = imp.round == imp.rounds
        _, val_acc = evaluate(model, val)
        lr = opt.param_groups[0]["lr"]
        print(f"epoch {epoch} round {imp.round} density {imp.engine.density():.4f} val {val_acc:.4f} lr {lr:.4g}")
        if last_round and (best is None or val_acc > best[0]):
            best = (val_acc, epoch, copy.deepcopy(model.state_dict()))
        for event in imp.end_epoch():
            print(f"  prune round {event['round']}: density {event['density']:.4f}, rewind {event['rewind']}")
    model.load_state_dict(best[2])
    _, test_acc = evaluate(model, test)
    print(
        f"rewind={args.rewind} rounds={args.rounds} epochs={imp.total_epochs} seed={args.seed}: "
        f"test {test_acc:.4f} (val {best[0]:.4f}, epoch {best[1]}), density {imp.engine.density():.4f}, "
        f"params {imp.architecture()['params']}, {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
