"""A short ``neuroplastic run`` of every method family on the NPN paper's moons points (the real file in
shared/data): a shipped recipe with overrides, a few epochs that take a second or two. The fault tests
kill and resume them; the torchrun tests run them on two processes."""

from __future__ import annotations

from pathlib import Path

import yaml

ON_MOONS = ["data.name=moons-vat", "data.val_size=100", "data.normalize=false", "model.name=mlp"]

# IterativePruning is not in the registry: a recipe names it by its path. 4 + 2 * (4 - 1) = 10 epochs.
IMP_RECIPE = {
    "name": "imp-moons", "description": "IterativePruning with weight rewinding on the moons MLP", "seed": 1,
    "epochs": 10, "selection": "last",
    "data": {"name": "moons-vat", "val_size": 100, "batch_size": 32, "normalize": False},
    "model": {"name": "mlp"},
    "method": {"name": "neuroplastic.methods.rewind:IterativePruning", "rounds": 2, "epochs_per_round": 4,
               "final_density": 0.25, "rewind": "weights", "rewind_epoch": 1},
    "optim": {"weights": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
}

# family -> (recipe, overrides, when to kill: "checkpoint" = while checkpoint.pt.tmp is being written)
FAMILIES = {
    # 10 epochs, stages [3, 5]
    "npn": ("npn-moons-vat-sparse", ["epochs_scale=0.005"], "checkpoint"),
    # plastic units below 0.45 leave after one epoch: the model shrinks during the run (gates at lr 0.1, so
    # that they move in 2 plastic epochs: removals at epochs 4 and 5)
    "npn_physical": ("npn-moons-vat-sparse", ["epochs_scale=0.005", "method.name=npn_physical",
                                              "method.remove_after=1", "method.remove_below=0.45",
                                              "optim.gates.lr=0.1"], "random"),
    # 8 epochs of 50 steps: drop-and-grow updates at steps 100, 200 and 300
    "rigl": ("dst-mnist-lenet5-rigl", [*ON_MOONS, "data.batch_size=8", "method.input_shape=[100]"], "random"),
    # 10 epochs of 13 steps, topology updates from step 26
    "lpss": ("lpss-fashion-s80", [*ON_MOONS, "epochs_scale=0.2", "data.batch_size=32", "data.augment.crop_padding=0",
                                  "data.augment.flip=false", "data.augment.cutout=0", "method.input_shape=[100]"],
             "random"),
    "imp": (None, [], "checkpoint"),
}


def recipe_ref(family: str, tmp_path: Path) -> str:
    """The recipe of ``family`` as ``neuroplastic run`` takes it: a shipped name, or a file written in
    ``tmp_path``."""
    ref = FAMILIES[family][0]
    if ref is None:
        path = tmp_path / "imp-moons.yaml"
        path.write_text(yaml.safe_dump(IMP_RECIPE))
        return str(path)
    return ref
