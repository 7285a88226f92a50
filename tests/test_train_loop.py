import json
import logging
import re

import numpy as np
import pytest
import torch

from neuroplastic.methods.base import CapacityMethod
from neuroplastic.train import build_optimizer, build_schedule, evaluate, fit
from train_fakes import FakeLoader, NoisyMethod, blobs, tiny_mlp

CONTRACT_FIELDS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def _setup(seed: int = 0, kill_at_step: int | None = None, epochs: int = 5):
    torch.manual_seed(seed)
    model = tiny_mlp()
    x, y = blobs(96, seed=1)
    loaders = {
        "train": FakeLoader(x[:64], y[:64], batch_size=16, seed=seed),
        "val": FakeLoader(x[64:80], y[64:80], batch_size=16, shuffle=False),
        "test": FakeLoader(x[80:], y[80:], batch_size=16, shuffle=False),
    }
    spec = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": {"name": "cosine"}}
    opt = build_optimizer(model.parameters(), spec)
    sched = build_schedule(opt, spec["schedule"], epochs=epochs, steps_per_epoch=len(loaders["train"]))
    method = NoisyMethod(model, seed=seed, kill_at_step=kill_at_step)
    return model, method, [opt], [sched], loaders


def _run(tmp, resume=False, kill_at_step=None, epochs=5, **kw):
    model, method, opts, scheds, loaders = _setup(kill_at_step=kill_at_step, epochs=epochs)
    res = fit(model, method, opts, scheds, loaders, epochs=epochs, run_dir=tmp, resume=resume, progress=False, **kw)
    return model, res


def _strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_resume_after_kill_is_identical_to_uninterrupted(tmp_path):
    model_a, res_a = _run(tmp_path / "a")
    # kill in the middle of epoch 3 (4 steps per epoch): the checkpoint holds epochs 0-2
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", kill_at_step=3 * 4 + 2)
    assert len((tmp_path / "b" / "history.jsonl").read_text().splitlines()) == 3
    model_b, res_b = _run(tmp_path / "b", resume=True)
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert _strip(res_a.history) == _strip(res_b.history)
    assert res_a.selected_epoch == res_b.selected_epoch
    assert res_a.test_accuracy == res_b.test_accuracy
    on_disk = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert _strip(on_disk) == _strip(res_a.history)
    events_b = (tmp_path / "b" / "events.jsonl").read_text().splitlines()
    assert events_b == (tmp_path / "a" / "events.jsonl").read_text().splitlines()
    assert len(events_b) == 5


def test_lost_method_state_would_change_the_result(tmp_path):
    """The resume test above can fail: resuming without the method's generator gives other weights."""
    model_a, _ = _run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", kill_at_step=10)
    model, method, opts, scheds, loaders = _setup()
    method.load_state_dict = lambda state: None  # forget the method state on resume
    fit(model, method, opts, scheds, loaders, epochs=5, run_dir=tmp_path / "b", resume=True, progress=False)
    assert not torch.equal(model[0].weight, model_a[0].weight)


def test_history_lines_carry_contract_fields_and_method_metrics(tmp_path):
    _, res = _run(tmp_path, snapshot_every=2)
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3, 4]
    for r in lines:
        assert CONTRACT_FIELDS <= set(r)
        assert r["arch"] == [3, 2] and isinstance(r["lr"], list) and len(r["lr"]) == 1
    assert lines[0]["lr"][0] == pytest.approx(0.1)  # lr at the start of the epoch
    assert lines[-1]["steps"] == 20
    # snapshots after epochs 1, 3 and the last one (4), float16
    names = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert names == ["epoch_00001.npz", "epoch_00003.npz", "epoch_00004.npz"]
    with np.load(tmp_path / "snapshots" / "epoch_00004.npz") as z:
        assert z["w/first"].dtype == np.float16 and z["w/first"].shape == (16, 6)


def test_selection_uses_validation_and_never_test(tmp_path):
    _, res = _run(tmp_path / "best")
    vals = [(r["val_acc"], -r["val_loss"]) for r in res.history]
    assert res.selected_epoch == max(range(5), key=lambda e: (vals[e], -e))
    _, res_last = _run(tmp_path / "last", selection="last")
    assert res_last.selected_epoch == 4
    _, res_after = _run(tmp_path / "after", select_from_epoch=3)
    assert res_after.selected_epoch >= 3


class _WreckLastEpoch(NoisyMethod):
    """Adds large noise to the first layer during the last epoch, so the best epoch is an earlier one."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.scale = 3.0 if epoch == 4 else 0.0

    def step(self) -> None:
        super().step()
        with torch.no_grad():
            self.model[0].weight.add_(self.scale * torch.randn(self.model[0].weight.shape, generator=self.generator))


def test_selected_model_is_the_one_tested(tmp_path):
    model, _, opts, scheds, loaders = _setup()
    res = fit(model, _WreckLastEpoch(model), opts, scheds, loaders, epochs=5, run_dir=tmp_path, progress=False)
    best = res.history[res.selected_epoch]
    assert res.selected_epoch != 4, "the wrecked last epoch must not be the best (else this test proves nothing)"
    assert best["val_acc"] == max(r["val_acc"] for r in res.history) > res.history[4]["val_acc"]
    val_loss, val_acc = evaluate(model, loaders["val"])  # the model fit returns is the selected one
    assert (val_acc, res.val_accuracy) == (best["val_acc"], best["val_acc"])
    assert val_loss == pytest.approx(best["val_loss"]) and res.val_loss == pytest.approx(best["val_loss"])
    assert res.test_accuracy == evaluate(model, loaders["test"])[1]


def test_epochs_are_numbered_from_0_in_printed_lines_and_bars(tmp_path, capsys):
    model, method, opts, scheds, loaders = _setup(epochs=2)
    fit(model, method, opts, scheds, loaders, epochs=2, run_dir=tmp_path, progress=True)
    err = "".join(capsys.readouterr())  # summary lines on stdout (tqdm.write), bars on stderr
    assert "epoch 0: train loss" in err and "epoch 1: train loss" in err  # the summary lines
    assert "epoch 0 (0-1)" in err and "epoch 1 (0-1)" in err  # the epoch's own bar
    assert "epoch 2" not in err and not re.search(r"epoch \d+/", err)  # no "epoch 1/2" counting from 1
    assert [json.loads(s)["epoch"] for s in (tmp_path / "history.jsonl").read_text().splitlines()] == [0, 1]


def test_missing_tensorboard_is_not_reported_as_a_problem(tmp_path, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with caplog.at_level(logging.INFO):
        _run(tmp_path / "a", epochs=1)
    assert not [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    with caplog.at_level(logging.DEBUG, logger="neuroplastic.train.records"):
        _run(tmp_path / "b", epochs=1)
    (record,) = [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert record.levelno == logging.DEBUG and "optional extra neuroplastic[tensorboard]" in record.getMessage()


def test_plain_method_and_bad_arguments(tmp_path):
    model, _, opts, scheds, loaders = _setup()
    with pytest.raises(ValueError, match="selection"):
        fit(model, CapacityMethod(model), opts, scheds, loaders, epochs=2, run_dir=tmp_path, selection="test")
    with pytest.raises(ValueError, match="epochs"):
        fit(model, CapacityMethod(model), opts, scheds, loaders, epochs=0, run_dir=tmp_path)
    with pytest.raises(ValueError, match="'val'"):
        fit(model, CapacityMethod(model), opts, scheds, {"train": loaders["train"]}, epochs=1, run_dir=tmp_path)
    res = fit(model, CapacityMethod(model), opts, scheds, loaders, epochs=2, run_dir=tmp_path, progress=False)
    assert res.test_accuracy is not None and not (tmp_path / "snapshots").exists()  # nothing to snapshot


def test_checkpoint_every_resumes_from_the_last_written_checkpoint(tmp_path):
    model_a, res_a = _run(tmp_path / "a")
    # checkpoints after epochs 1 and 3 (and the last); killed in epoch 3: the checkpoint holds epochs 0-1
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", kill_at_step=3 * 4 + 2, checkpoint_every=2)
    assert len((tmp_path / "b" / "history.jsonl").read_text().splitlines()) == 3
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    model_b, res_b = _run(tmp_path / "b", resume=True, checkpoint_every=2)
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert _strip(res_a.history) == _strip(res_b.history)
    on_disk = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert _strip(on_disk) == _strip(res_a.history)
    with pytest.raises(ValueError, match="checkpoint_every must be"):
        _run(tmp_path / "c", checkpoint_every=0)


class _NaNAfter(CapacityMethod):
    """Turns the first layer's weights to NaN after optimizer step ``at`` (a diverging run)."""

    def __init__(self, model, at: int):
        super().__init__(model)
        self.at, self.steps = at, 0

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.at:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))


def test_a_loss_that_turns_nan_stops_the_run_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    from neuroplastic.train.epoch import NonFiniteLoss

    model, _, opts, scheds, loaders = _setup()
    method = _NaNAfter(model, at=2 * 4 + 1)  # 4 steps per epoch: the loss of step 10 (epoch 2) is NaN
    with pytest.raises(NonFiniteLoss, match=r"not finite at step 10 \(epoch 2, steps 9\.\.12\)"):
        fit(model, method, opts, scheds, loaders, epochs=5, run_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1 and len((tmp_path / "history.jsonl").read_text().splitlines()) == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_a_full_disk_names_the_epoch_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import neuroplastic.train.checkpoint as checkpoint

    real, calls = checkpoint.save_atomic, []

    def full_disk_on_the_third_save(obj, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(obj, path)

    monkeypatch.setattr(checkpoint, "save_atomic", full_disk_on_the_third_save)
    with pytest.raises(OSError, match=r"cannot write the run folder .* after epoch 2 \(step 12\): .*No space left "
                                      r"on device; the checkpoint of epoch 1 is kept"):
        _run(tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(checkpoint, "save_atomic", real)
    _, resumed = _run(tmp_path, resume=True)  # space again: the run continues from epoch 2
    _, whole = _run(tmp_path / "whole")
    assert _strip(resumed.history) == _strip(whole.history)
