"""NPN expansion beyond Algorithm 1's one-unit-per-epoch: proportional growth, step-wise checks driven by
the training loop, the regularised trigger, the ``fill=0`` fix, and resuming all of it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN
from neuroplastic.models import get_model
from neuroplastic.train import fit
from train_fakes import FakeLoader

GATES = {"0": "in", "2": "in"}


def moons_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 2))


def _expand(**kw) -> NPN:
    options = dict(mode="expand", k=1.0, gates=GATES, init_active=[4, 3], stages=(1, 50)) | kw
    npn = NPN(moons_mlp(), **options)
    npn.set_epoch(1)
    return npn


def _units(events):
    return [(e["layer"], e["units"]) for e in events]


def test_proportional_growth_opens_a_fraction_of_the_allocated_width():
    npn = _expand(expand_fraction=0.5)
    # ceil(0.5 * 4) = 2 and ceil(0.5 * 3) = 2 units
    assert _units(npn.end_epoch(val_loss=1.0)) == [("0", [4, 5]), ("2", [3, 4])]
    # then ceil(0.5 * 6) = 3 and ceil(0.5 * 5) = 3
    assert _units(npn.end_epoch(val_loss=0.9)) == [("0", [6, 7, 8]), ("2", [5, 6, 7])]
    assert npn.allocated == [9, 8]
    assert npn.architecture()["arch"] == [9, 8]


def test_expand_step_is_the_floor_of_proportional_growth():
    npn = _expand(expand_fraction=0.1, expand_step=2)  # ceil(0.4) = ceil(0.3) = 1 < 2
    assert _units(npn.end_epoch(val_loss=1.0)) == [("0", [4, 5]), ("2", [3, 4])]


def test_a_unit_opened_at_fill_zero_does_not_block_its_layer():
    npn = _expand(fill=0.0)
    assert _units(npn.end_epoch(val_loss=1.0)) == [("0", [4]), ("2", [3])]
    assert float(npn.sites[0].gates.phi[4].detach()) == 0.0  # pi = 0.5: sampled open half the time
    # the next event opens the next units although the new ones sit exactly at phi = 0
    assert _units(npn.end_epoch(val_loss=0.9)) == [("0", [5]), ("2", [4])]
    with torch.no_grad():
        npn.sites[1].gates.phi[4] = -1e-3  # pushed below 0 by training: closed, the layer waits
    assert _units(npn.end_epoch(val_loss=0.8)) == [("0", [6])]


def test_regularized_trigger_adds_the_penalty_at_the_current_k():
    lam = [1e-3, 1e-2]
    plain, reg = _expand(lam=lam), _expand(lam=lam, expand_trigger="regularized")
    p0 = float(reg.penalty().detach())
    assert p0 > 0
    assert len(plain.end_epoch(val_loss=1.0)) == len(reg.end_epoch(val_loss=1.0)) == 2
    assert reg.best_loss == pytest.approx(1.0 + p0)
    growth = float(reg.penalty().detach()) - p0  # the opened units cost penalty
    assert growth > 0.002
    # the plain loss improves by 0.001, less than the penalty the last event added: only plain expands
    assert len(plain.end_epoch(val_loss=0.999)) == 2
    assert reg.end_epoch(val_loss=0.999) == []


def test_with_expand_every_the_epoch_end_makes_no_check_and_check_expansion_does():
    npn = _expand(expand_every=5)
    assert npn.end_epoch(val_loss=1.0) == []
    assert _units(npn.check_expansion(1.0)) == [("0", [4]), ("2", [3])]
    assert npn.check_expansion(1.0) == []  # plateau
    npn.set_epoch(0)
    assert npn.check_expansion(0.1) == []  # stage 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fill": -0.5}, "fill must be"),
        ({"fill": math.nan}, "fill must be"),
        ({"expand_fraction": 1.5}, "expand_fraction must be"),
        ({"expand_every": 0}, "expand_every must be"),
        ({"expand_every": 2.5}, "expand_every must be"),
        ({"expand_val_batches": 0}, "expand_val_batches must be"),
        ({"expand_trigger": "val_acc"}, "expand_trigger must be"),
    ],
)
def test_bad_expansion_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _expand(**kwargs)


def test_physical_growth_follows_step_wise_checks():
    torch.manual_seed(0)
    model = get_model("mlp", in_features=100, hidden=[80], num_classes=2)
    x = torch.zeros(2, 100)
    p = PhysicalNPN(model, example_input=x, k=1.0, gates={"fc1": "in", "fc2": "in"}, init_active=[3, 3],
                    stages=(0, 50), expand_every=3, optimizers=[])
    widths = p.physical_widths()
    events = []
    for i in range(3):
        events += p.check_expansion(1.0 - 0.1 * i)
    assert [e["units"] for e in events if e["event"] == "expand" and e["layer"] == "fc2"] == [[3], [4], [5]]
    assert any(e["event"] == "grow" for e in events)
    assert p.physical_widths()[1] > widths[1] and p.allocated[1] == 6
    assert p.physical_widths()[1] >= 6


# -- the training loop drives the checks -------------------------------------------------------------


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 100, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _fit(tmp, epochs: int, resume: bool = False, **npn_kw):
    model = moons_mlp()
    x, y = _data()
    loaders = {"train": FakeLoader(x[:64], y[:64], batch_size=16, seed=0),
               "val": FakeLoader(x[64:], y[64:], batch_size=8, shuffle=False)}
    options = dict(mode="expand", k=1.0, gates=GATES, init_active=[3, 3], stages=(1, 50), seed=0) | npn_kw
    npn = NPN(model, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    calls: list[tuple[int, float, float]] = []  # (epoch, loss given, loss on the first validation batch)
    check = npn.check_expansion
    xv, yv = x[64:72], y[64:72]

    def spy(val_loss):
        model.eval()
        with torch.no_grad():
            first = float(nn.functional.cross_entropy(model(xv), yv))
        model.train()
        calls.append((npn.epoch, val_loss, first))
        return check(val_loss)

    npn.check_expansion = spy
    res = fit(model, npn, [opt], [], loaders, epochs=epochs, run_dir=tmp, resume=resume, progress=False,
              tensorboard=False, snapshot_every=0)
    return model, npn, res, calls, loaders


def test_fit_checks_every_expand_every_steps_on_the_first_validation_batches(tmp_path):
    # 4 training steps per epoch; checks after global steps 3, 6, 9, 12, 15: epochs 0, 1, 2, 2, 3
    model, npn, res, calls, loaders = _fit(tmp_path, epochs=4, expand_every=3, expand_val_batches=1)
    assert [c[0] for c in calls] == [0, 1, 2, 2, 3]
    # the loss given is the mean over the first validation batch only
    assert all(given == pytest.approx(first, rel=1e-6) for _, given, first in calls)
    # stage 1 (epoch 0) makes no event; the first stage-2 check has a new best loss: an event at step 6
    expands = [e for e in res.events if e["event"] == "expand"]
    assert expands and expands[0]["step"] == 6 and expands[0]["epoch"] == 1
    assert all(e["step"] % 3 == 0 for e in expands)
    on_disk = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert on_disk == res.events
    assert sum(len(e["units"]) for e in expands if e["layer"] == "2") == npn.allocated[1] - 3


def test_fit_with_expand_every_resumes_to_the_uninterrupted_result(tmp_path):
    model_a, npn_a, res_a, _, _ = _fit(tmp_path / "a", epochs=5, expand_every=3, expand_fraction=0.3)
    _fit(tmp_path / "b", epochs=2, expand_every=3, expand_fraction=0.3)  # stops after epoch 1: a checkpoint
    model_b, npn_b, res_b, calls_b, _ = _fit(tmp_path / "b", epochs=5, resume=True, expand_every=3,
                                             expand_fraction=0.3)
    assert [c[0] for c in calls_b] == [2, 2, 3, 4]  # steps 9, 12, 15, 18 only
    assert npn_b.allocated == npn_a.allocated and npn_b.best_loss == npn_a.best_loss
    assert [(e["step"], e["layer"], e["units"]) for e in res_b.events] == \
        [(e["step"], e["layer"], e["units"]) for e in res_a.events]
    assert len(res_a.events) >= 2
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
