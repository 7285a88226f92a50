"""The Lightning integration, judged by the plain loop's checks: NPN (sparse, stages, penalty), PhysicalNPN
(shrinks during the run), RigL and LpSS trained on real MNIST through ``lightning.Trainer`` end with the
weights, records and events of :func:`neuroplastic.train.fit` on the same batches, bit for bit; a run stopped
and resumed with ``Trainer.fit(ckpt_path=...)`` ends there too (a shrunk model is resized before its weights
load); misuse fails with an error that says what to do."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning", reason="Lightning is not installed (pip install 'neuroplastic[lightning]')")

import lightning as L  # noqa: E402

import integration_setups as S  # noqa: E402
from lightning_setups import Classifier  # noqa: E402
from neuroplastic.integrations.lightning import CapacityCallback  # noqa: E402


def trainer(epochs: int, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     **{"enable_checkpointing": False, **kwargs})


def fit_lightning(s: S.Setup, epochs: int = S.EPOCHS, *, make_optimizers=None, ckpt_path=None, callbacks=(),
                  **kwargs) -> CapacityCallback:
    """Train ``s`` through Lightning on the shared batches; returns the callback."""
    data = S.mnist()
    make = make_optimizers or (lambda net: (s.optimizers, s.schedules))
    module = Classifier(s.net, make, manual=s.method.owns_backward)
    callback = CapacityCallback(s.method)
    trainer(epochs, [callback, *callbacks], **kwargs).fit(
        module, S.loader(data.train_x, data.train_y), S.loader(data.val_x, data.val_y), ckpt_path=ckpt_path)
    return callback


@pytest.mark.parametrize("name", S.METHODS)
def test_lightning_trains_every_method_as_the_plain_loop(name, tmp_path):
    # the mask method is built without its optimizer: Lightning builds it, bind_optimizers hands it over
    s = S.build(name, with_optimizer=False)
    callback = fit_lightning(s)
    plain, history, events = S.plain_run(name, tmp_path)
    S.assert_same_weights(s.net, plain.net, atol=0)  # bit for bit
    assert S.same_records(callback.events) == S.same_records(events)
    assert [r["epoch"] for r in callback.history] == list(range(S.EPOCHS))
    for mine, theirs in zip(callback.history, history, strict=True):
        assert {k: mine[k] for k in theirs if k in mine and k not in ("val_loss", "seconds")} == \
            {k: theirs[k] for k in theirs if k in mine and k not in ("val_loss", "seconds")}
    S.check_invariants(s, callback.events)
    assert callback.history[-1]["params"] == s.method.architecture()["params"]


@pytest.mark.parametrize("name", sorted(S.OTHERS))
def test_lightning_trains_the_other_methods_as_the_plain_loop(name, tmp_path):
    """Every other registered method (HardConcrete draws its gate noise from the global generator: the
    same draws in both loops)."""
    s = S.build(name, with_optimizer=False)
    callback = fit_lightning(s)
    plain, _, events = S.plain_run(name, tmp_path)
    S.assert_same_weights(s.net, plain.net, atol=0)
    assert S.same_records(callback.events) == S.same_records(events)
    assert [r["params"] for r in callback.history][-1] == plain.method.architecture()["params"]


def test_lightning_logs_the_method_metrics(tmp_path):
    s = S.build("npn")
    data = S.mnist()
    module = Classifier(s.net, lambda net: (s.optimizers, s.schedules), manual=True)
    run = trainer(2, [CapacityCallback(s.method)])
    run.fit(module, S.loader(data.train_x, data.train_y), S.loader(data.val_x, data.val_y))
    logged = run.callback_metrics
    arch = s.method.architecture()
    assert float(logged["capacity/params"]) == arch["params"]
    assert float(logged["capacity/arch/fc1:out"]) == arch["arch"][0]
    assert float(logged["capacity/stage"]) == 2


def test_lightning_step_wise_expansion_checks_the_validation_loader(tmp_path):
    """NPN growing from 8 units, checked every 4 steps on 2 validation batches: the same expansions as
    the plain loop (both evaluate those batches with ``neuroplastic.train.evaluate``)."""
    options = {"mode": "expand", "k": 1, "lam": 0.0, "init_active": 8, "expand_every": 4, "expand_val_batches": 2}
    s = S.build("npn", **options)
    callback = fit_lightning(s)
    plain, _, events = S.plain_run("npn", tmp_path, **options)
    expands = [e for e in callback.events if e["event"] == "expand"]
    assert expands and all(e["step"] % 4 == 0 for e in expands)
    assert S.same_records(callback.events) == S.same_records(events)
    S.assert_same_weights(s.net, plain.net, atol=0)


@pytest.mark.parametrize("name, stop, options", [("rigl", 2, {}), ("npn_physical", 3, {"stages": (1, 2)})])
def test_lightning_resumes_from_a_checkpoint(name, stop, options, tmp_path):
    """Stopped after ``stop`` epochs and resumed from its last checkpoint with new objects: the run ends
    as the uninterrupted plain loop. PhysicalNPN stops after its shrink: the full-size model of the new
    run is resized by the checkpoint before the weights load, and its optimizer is built on the small one."""
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)

    def make(net):  # configure_optimizers: on the module's parameters of now (after a resize)
        optimizers = S.optimizers_for(name, net)
        return optimizers, S.schedules_for(optimizers)

    first = S.build(name, with_optimizer=False, **options)
    fit_lightning(first, stop, make_optimizers=make, callbacks=[checkpoints], enable_checkpointing=True)
    if name == "npn_physical":
        assert first.method.physical_widths()[0] < S.HIDDEN  # the checkpoint holds the shrunk model
    resumed = S.build(name, with_optimizer=False, **options)
    callback = fit_lightning(resumed, make_optimizers=make, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    plain, _, events = S.plain_run(name, tmp_path, **options)
    S.assert_same_weights(resumed.net, plain.net, atol=0)
    assert S.same_records(callback.events) == S.same_records(events)
    assert [r["epoch"] for r in callback.history] == list(range(S.EPOCHS))
    S.check_invariants(resumed, callback.events)


def test_lightning_misuse_says_what_to_do():
    data = S.mnist()
    s = S.build("npn")
    automatic = Classifier(s.net, lambda net: (s.optimizers, s.schedules), manual=False)
    with pytest.raises(ValueError, match=r"runs its own backward pass .*self\.automatic_optimization = False"):
        trainer(1, [CapacityCallback(s.method)]).fit(automatic, S.loader(data.train_x, data.train_y))
    with pytest.raises(ValueError, match=r"capacity_step needs exactly one CapacityCallback.*found 0"):
        trainer(1, []).fit(Classifier(s.net, lambda net: (s.optimizers, s.schedules), manual=True),
                           S.loader(data.train_x, data.train_y))
    other = S.build("rigl")  # a method built on another network than the module trains
    with pytest.raises(ValueError, match=r"'rigl' method's model is not part of the LightningModule"):
        trainer(1, [CapacityCallback(other.method)]).fit(automatic, S.loader(data.train_x, data.train_y))
    with pytest.raises(TypeError, match="method must be a neuroplastic CapacityMethod"):
        CapacityCallback(torch.nn.Linear(2, 2))


def test_docs_lightning_examples_run(monkeypatch, tmp_path):
    """docs/integrations.md's Lightning examples, as written, on real MNIST."""
    scope = S.run_doc_section("Lightning", monkeypatch, tmp_path)
    assert scope["npn"].architecture()["arch"][0] < 100  # closed hidden units
    assert [r["epoch"] for r in scope["callback"].history] == list(range(scope["epochs"]))
    assert scope["rigl"].engine.density() == pytest.approx(0.1, abs=1e-3)
