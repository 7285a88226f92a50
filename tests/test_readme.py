"""The README's python blocks, pasted as they are: the NPN loop prunes a small model on real MNIST data, the
PhysicalNPN loop trains a model that shrank, and the mask-method block builds what it says."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import neuroplastic
from doc_blocks import README, python_blocks
from neuroplastic.data import DatasetNotFoundError
from shared_data import SHARED

DATA = SHARED


def readme_snippet(section: str) -> str:
    """The first ``python`` code block under the README heading ``section``."""
    return python_blocks(README, section)[0]


def mnist_loop_scope(n_train: int = 4000) -> dict:
    """What an NPN loop snippet expects to exist: a 784-100-10 MLP, ``n_train`` real MNIST images as
    ``train_set`` and its ``loader``, a criterion, ``evaluate(model)`` (the validation loss), ``epochs``
    and an ``example_batch``."""
    try:
        splits = neuroplastic.load_dataset("mnist", data_dir=DATA, val_size=1000, seed=0, download=False)
    except DatasetNotFoundError as err:
        pytest.skip(f"MNIST not available: {err}")
    torch.manual_seed(0)
    train_set = torch.utils.data.TensorDataset(splits.train_x[:n_train].flatten(1), splits.train_y[:n_train])
    val_x, val_y = splits.val_x.flatten(1), splits.val_y
    criterion = nn.CrossEntropyLoss()

    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            loss = float(criterion(model(val_x), val_y))
        model.train()
        return loss

    return {
        "model": neuroplastic.get_model("mlp", in_features=784, hidden=[100], num_classes=10),
        "train_set": train_set,
        "loader": torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True),
        "criterion": criterion,
        "evaluate": evaluate,
        "epochs": 10,
        "example_batch": val_x[:8],
    }


def test_readme_npn_loop_prunes_mnist_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes small.pt
    torch.set_num_threads(1)
    code = readme_snippet("In your own training loop")
    scope = mnist_loop_scope()
    t0 = time.perf_counter()
    exec(compile(code, "README.md", "exec"), scope)
    seconds = time.perf_counter() - t0
    hidden = scope["npn"].architecture()["arch"][0]
    assert hidden < 100, f"the README loop closed no hidden unit ({hidden}/100 open)"
    small = neuroplastic.load_compact(lambda: neuroplastic.get_model("mlp", in_features=784, hidden=[100],
                                                                     num_classes=10), "small.pt")
    assert small.eval()(scope["example_batch"]).shape == (8, 10)
    assert neuroplastic.count_weights(small) == scope["npn"].architecture()["params"]
    assert seconds < 60, seconds  # ~10 s on a quiet 2-core machine


def test_readme_physical_loop_trains_a_model_that_shrank():
    torch.set_num_threads(1)
    code = readme_snippet("Train at the thinned size")
    scope = {**mnist_loop_scope(), "neuroplastic": neuroplastic}  # imported by the section's first snippet
    exec(compile(code, "README.md", "exec"), scope)
    npn, model = scope["npn"], scope["model"]
    hidden = model.fc1.out_features
    assert hidden < 100 and npn.physical_widths() == [hidden] and model.fc2.in_features == hidden
    assert npn.architecture()["params_physical"] < npn.architecture()["params_dense"]
    assert any(e["event"] == "remove" for e in npn.events)


def test_readme_loop_with_one_lr_for_gates_prunes_nothing(tmp_path, monkeypatch):
    """Why the snippet needs ``npn_optimizer``: the same loop with gate logits at the weights' 1e-3."""
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    code = readme_snippet("In your own training loop")
    code = code.replace("gate_lr=1e-2", "gate_lr=1e-3")
    assert "gate_lr=1e-3" in code
    code = code.split("print(")[0]  # training only
    scope = mnist_loop_scope()
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["npn"].architecture()["arch"][0] == 100


def test_readme_mask_method_block_builds_what_it_says():
    """The README's mask-method block (the third of "In your own training loop"), on the LpSS recipes' WRN:
    RigL at density 0.05 on the SGD optimizer, then LpSS with LpCGD at p 1.3 / 1.15 and the adaptive
    recipe's switches (the block shows the two as alternatives; both are built on the same model here)."""
    from neuroplastic.lp import LpCGD

    code = python_blocks(README, "In your own training loop")[2]
    model = neuroplastic.get_model("wrn_lpss", num_classes=10, in_channels=1)
    scope = {"model": model, "torch": torch, "neuroplastic": neuroplastic, "epochs": 5, "loader": range(10)}
    exec(compile(code, "README.md", "exec"), scope)
    rigl, lpss = scope["rigl"], scope["lpss"]
    numel = rigl.engine.numel()
    assert abs(rigl.engine.density() - 0.05) <= len(numel) / sum(numel.values())  # each layer rounds
    assert isinstance(lpss.optimizer, LpCGD) and lpss.optimizer is scope["optimizer"]
    assert list(lpss.optimizer.layer_p.values()) == [1.3] * 4 + [1.15] * 12
    assert lpss.final_density == 0.1 and lpss.controller.mode == "exact"
    assert lpss.adapt_threshold is True and lpss.target_ramp == 0.5


@pytest.mark.parametrize("kwargs, match", [({"lr": 0}, "lr must be"), ({"gate_lr": -1.0}, "gate_lr must be")])
def test_npn_optimizer_bad_input(kwargs, match):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    neuroplastic.NPN(model)
    with pytest.raises(ValueError, match=match):
        neuroplastic.npn_optimizer(model, **kwargs)


def test_npn_optimizer_needs_gates_and_puts_them_in_their_own_group():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no gate logits"):
        neuroplastic.npn_optimizer(model)
    neuroplastic.NPN(model)
    opt = neuroplastic.npn_optimizer(model, lr=1e-3, gate_lr=0.05, optimizer=torch.optim.SGD, momentum=0.9,
                                     weight_decay=1e-4)
    weights, gates = opt.param_groups
    assert [p.shape for p in gates["params"]] == [torch.Size([3])]
    assert (gates["lr"], gates["weight_decay"], gates["momentum"]) == (0.05, 0.0, 0)
    assert (weights["lr"], weights["weight_decay"], weights["momentum"]) == (1e-3, 1e-4, 0.9)
