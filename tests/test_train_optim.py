import pytest
import torch

from neuroplastic.train.optim import build_optimizer, build_schedule


def _lrs(spec, epochs, steps_per_epoch, n_steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], spec)
    sched = build_schedule(opt, spec.get("schedule"), epochs=epochs, steps_per_epoch=steps_per_epoch)
    out = []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_in_epochs():
    spec = {"name": "sgd", "lr": 1.0, "momentum": 0.9, "schedule": {"name": "multistep", "milestones": [2, 3]}}
    lrs = _lrs(spec, epochs=4, steps_per_epoch=2, n_steps=8)
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_piecewise_interpolates_multipliers():
    spec = {"name": "sgd", "lr": 0.5, "schedule": {"name": "piecewise", "knots": [0, 2, 4], "values": [0, 2, 0]}}
    lrs = _lrs(spec, epochs=4, steps_per_epoch=2, n_steps=8)
    assert lrs == pytest.approx([0.5 * v for v in [0, 0.5, 1, 1.5, 2, 1.5, 1, 0.5]])


def test_step_and_cosine():
    spec = {"name": "adam", "lr": 1.0, "schedule": {"name": "step", "step_size": 1, "gamma": 0.5}}
    assert _lrs(spec, 3, 1, 3) == pytest.approx([1, 0.5, 0.25])
    spec = {"name": "adam", "lr": 1.0, "schedule": {"name": "cosine"}}
    assert _lrs(spec, 2, 1, 3) == pytest.approx([1, 0.5, 0.0], abs=1e-12)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "rmsprop", "lr": 1}, "optimizer name"),
        ({"name": "sgd"}, "needs an 'lr'"),
        ({"name": "sgd", "lr": 1, "betas": [0.9, 0.9]}, "unknown keys"),
    ],
)
def test_bad_optimizer_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], spec)


def test_bad_schedule_specs():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], {"name": "sgd", "lr": 1})
    with pytest.raises(ValueError, match="schedule name"):
        build_schedule(opt, {"name": "poly"}, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="unknown keys"):
        build_schedule(opt, {"name": "multistep", "milestones": [1], "foo": 1}, epochs=1, steps_per_epoch=1)
