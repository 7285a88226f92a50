"""The Hugging Face integration, judged by the plain loop's checks: NPN (sparse, stages, penalty) and
PhysicalNPN (shrinks during the run) through ``CapacityTrainer``, RigL and LpSS through a plain
``transformers.Trainer`` with ``CapacityCallback``, trained on real MNIST, end with the weights, records and
events of :func:`neuroplastic.train.fit` on the same batches, bit for bit; a run stopped and resumed from
its last checkpoint folder ends there too (a shrunk model is resized before its weights load); RigL masks a
tiny BERT built from a config; NPN gates a tiny BERT (MLP units, whole attention heads) without a torch.fx
trace and resumes; misuse fails with an error that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'neuroplastic[huggingface]')")
pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'neuroplastic[huggingface]')")

import transformers  # noqa: E402

import integration_setups as S  # noqa: E402
import neuroplastic  # noqa: E402
from huggingface_setups import Classify, Examples, arguments, train_hf  # noqa: E402
from neuroplastic.integrations.huggingface import STATE_FILE, CapacityCallback, CapacityTrainer  # noqa: E402


@pytest.mark.parametrize("name", S.METHODS)
def test_hf_trains_every_method_as_the_plain_loop(name, tmp_path):
    s = S.build(name, with_optimizer=False)  # RigL gets the Trainer's optimizer through bind_optimizers
    callback, trainer = train_hf(s, tmp_path / "hf")
    plain, history, events = S.plain_run(name, tmp_path)
    S.assert_same_weights(s.net, plain.net, atol=0)  # bit for bit
    assert S.same_records(callback.events) == S.same_records(events)
    for mine, theirs in zip(callback.history, history, strict=True):
        assert {k: mine[k] for k in theirs if k in mine and k not in ("val_loss", "seconds")} == \
            {k: theirs[k] for k in theirs if k in mine and k not in ("val_loss", "seconds")}
        assert abs(mine["val_loss"] - theirs["val_loss"]) < 1e-6  # the Trainer's eval_loss, the same batches
    S.check_invariants(s, callback.events)
    logged = [entry for entry in trainer.state.log_history if "capacity/params" in entry]
    assert [entry["capacity/params"] for entry in logged] == [r["params"] for r in callback.history]


def test_hf_step_wise_expansion_checks_the_evaluation_data(tmp_path):
    """NPN growing from 8 units, checked every 4 steps on 2 evaluation batches (CapacityTrainer evaluates
    them with the Trainer's compute_loss): the same expansions as the plain loop."""
    options = {"mode": "expand", "k": 1, "lam": 0.0, "init_active": 8, "expand_every": 4, "expand_val_batches": 2}
    s = S.build("npn", **options)
    callback, _ = train_hf(s, tmp_path / "hf")
    plain, _, events = S.plain_run("npn", tmp_path, **options)
    assert [e for e in callback.events if e["event"] == "expand"]
    assert S.same_records(callback.events) == S.same_records(events)
    S.assert_same_weights(s.net, plain.net, atol=0)


@pytest.mark.parametrize("name", sorted(S.OTHERS))
def test_hf_trains_the_other_methods_as_the_plain_loop(name, tmp_path):
    """Every other registered method. HardConcrete draws its gate noise from the global generator, which
    the Trainer's data loading draws from differently than the plain loop: it is checked by its records
    (the penalty shrank the expected L0 in both loops, by about as much) instead of bit for bit."""
    s = S.build(name, with_optimizer=False)
    callback, _ = train_hf(s, tmp_path / "hf")
    plain, history, events = S.plain_run(name, tmp_path)
    if name == "hard_concrete":
        mine = [r["expected_l0"] for r in callback.history]
        theirs = [r["expected_l0"] for r in history]
        assert mine[-1] < 0.9 * mine[0] and theirs[-1] < 0.9 * theirs[0]  # ~21,100 -> ~17,100 of 25,408
        assert abs(mine[-1] - theirs[-1]) < 0.01 * theirs[-1]
        return
    S.assert_same_weights(s.net, plain.net, atol=0)
    assert S.same_records(callback.events) == S.same_records(events)
    assert [r["params"] for r in callback.history][-1] == plain.method.architecture()["params"]


@pytest.mark.parametrize("name, stop, options", [("rigl", 2, {}), ("npn_physical", 3, {"stages": (1, 2)})])
def test_hf_resumes_from_a_checkpoint(name, stop, options, tmp_path):
    """Stopped after ``stop`` epochs and resumed with new objects from the last checkpoint folder: the run
    ends as the uninterrupted plain loop. PhysicalNPN stops after its shrink: the new run's full-size model
    is resized as the checkpoint's weights load, and the optimizer given to the Trainer follows."""
    out = tmp_path / "hf"
    first = S.build(name, with_optimizer=False, **options)
    train_hf(first, out, stop, save_strategy="epoch")
    assert (out / f"checkpoint-{stop * S.STEPS}" / STATE_FILE).is_file()
    resumed = S.build(name, with_optimizer=False, **options)
    callback, _ = train_hf(resumed, out, resume=True, save_strategy="epoch")
    plain, _, events = S.plain_run(name, tmp_path, **options)
    S.assert_same_weights(resumed.net, plain.net, atol=0)
    assert S.same_records(callback.events) == S.same_records(events)
    assert [r["epoch"] for r in callback.history] == list(range(S.EPOCHS))
    S.check_invariants(resumed, callback.events)


def test_hf_rigl_masks_a_tiny_bert_from_a_config(tmp_path):
    """Transformer blocks: RigL masks the attention and MLP projections of a 2-layer BERT built from a
    config (no download), trained by a plain Trainer on made-up token sequences."""
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    rigl = neuroplastic.RigL(model, None, density=0.5, epochs=2, steps_per_epoch=4, update_every=2,
                             include=["*attention.self.*", "*intermediate.dense", "*output.dense"])
    ids = torch.randint(0, 50, (64, 12), generator=torch.Generator().manual_seed(0))
    examples = [{"input_ids": row, "labels": int(row[0] % 2)} for row in ids]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=16,
                                          learning_rate=1e-3, report_to="none", use_cpu=True, disable_tqdm=True,
                                          logging_strategy="no", save_strategy="no")
    callback = CapacityCallback(rigl)
    transformers.Trainer(model=model, args=args, train_dataset=examples, callbacks=[callback]).train()
    assert [e["step"] for e in callback.events] == [2, 4]  # every 2 steps until 3/4 of the 8
    assert len(rigl.engine.masks) == 2 * 6  # q, k, v, attention output, intermediate, output per layer
    for name, mask in rigl.engine.masks.items():
        assert bool((rigl.engine.weight(name)[~mask] == 0).all()), name
    assert abs(rigl.engine.density() - 0.5) < 0.05


def test_hf_misuse_says_what_to_do(tmp_path):
    data = S.mnist()
    s = S.build("npn")
    common = {"model": Classify(s.net), "train_dataset": Examples(data.train_x, data.train_y),
              "optimizers": (s.optimizers[0], s.schedules[0])}
    plain = transformers.Trainer(**common, args=arguments(tmp_path, 1, eval_strategy="no"),
                                 callbacks=[CapacityCallback(s.method)])
    with pytest.raises(ValueError, match=r"'npn' runs its own backward pass .*huggingface.CapacityTrainer"):
        plain.train()
    accumulating = CapacityTrainer(**common, args=arguments(tmp_path, 1, eval_strategy="no",
                                                            gradient_accumulation_steps=2), method=s.method)
    with pytest.raises(ValueError, match=r"does not support gradient_accumulation_steps=2 \(must be 1\)"):
        accumulating.train()
    expand = S.build("npn", mode="expand", k=1, init_active=8, stages=None)  # plastic from epoch 0
    no_eval = CapacityTrainer(**{**common, "model": Classify(expand.net), "optimizers": (expand.optimizers[0],
                                                                                          expand.schedules[0])},
                              args=arguments(tmp_path, 1, eval_strategy="no"), method=expand.method)
    with pytest.raises(ValueError, match=r"needs end_epoch\(val_loss=...\).*eval_strategy='epoch'"):
        no_eval.train()
    other = S.build("rigl")  # a method built on another network than the Trainer trains
    with pytest.raises(ValueError, match=r"'rigl' method's model is not part of the Trainer's model"):
        transformers.Trainer(**common, args=arguments(tmp_path, 1, eval_strategy="no"),
                             callbacks=[CapacityCallback(other.method)])


def test_docs_huggingface_examples_run(monkeypatch, tmp_path):
    """docs/integrations.md's Hugging Face examples, as written, on real MNIST: NPN prunes, its compacted
    model is saved and loads back; RigL reaches its density in a plain Trainer."""
    scope = S.run_doc_section("Hugging Face", monkeypatch, tmp_path)
    npn = scope["npn"]
    assert npn.architecture()["arch"][0] < 100
    small = neuroplastic.load_compact(lambda: neuroplastic.get_model("mlp", in_features=784, hidden=[100],
                                                                     num_classes=10), "small.pt")
    assert neuroplastic.count_weights(small) == npn.architecture()["params"]
    assert (tmp_path / "npn-run" / "checkpoint-120" / STATE_FILE).is_file()
    assert scope["rigl"].engine.density() == pytest.approx(0.1, abs=1e-3)


# -- NPN on a transformer (torch.fx cannot trace it: per-layer gates) -----------------------------------------
def tiny_bert_npn(seed: int = 0) -> tuple[nn.Module, neuroplastic.NPN, list[dict]]:
    """A 2-layer BERT from a config with NPN out-gates on the MLPs' intermediate units and one in-gate per
    attention head; made-up token sequences whose label is the first token's parity."""
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(seed)
    bert = transformers.BertForSequenceClassification(config)
    gates = {}
    for i in range(2):
        gates[f"bert.encoder.layer.{i}.intermediate.dense"] = "out"
        gates[f"bert.encoder.layer.{i}.attention.output.dense"] = "in:16"
    with pytest.warns(UserWarning, match=r"cannot trace BertForSequenceClassification: blocked in "
                                         r"BertForSequenceClassification.forward"):
        npn = neuroplastic.NPN(bert, k=7, lam={n: 1e-4 if s == "out" else 1e-5 for n, s in gates.items()},
                               gates=gates, stages=(1, 4))
    ids = torch.randint(0, 100, (128, 16), generator=torch.Generator().manual_seed(0))
    return bert, npn, [{"input_ids": row, "labels": int(row[0] % 2)} for row in ids]


def train_bert(bert: nn.Module, npn: neuroplastic.NPN, tokens: list[dict], out: Path, epochs: int,
               resume: bool | None = None) -> CapacityTrainer:
    optimizer = neuroplastic.npn_optimizer(bert, lr=1e-3, gate_lr=0.1)
    args = transformers.TrainingArguments(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=32,
                                          save_strategy="epoch", report_to="none", use_cpu=True, disable_tqdm=True,
                                          logging_strategy="no", lr_scheduler_type="constant")
    trainer = CapacityTrainer(model=bert, args=args, train_dataset=tokens, method=npn, optimizers=(optimizer, None))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_hf_npn_gates_a_tiny_bert_and_resumes(tmp_path):
    """Per-layer gates on a model torch.fx cannot trace, through CapacityTrainer's ARM backward, stages and
    penalty: gate logits learn, MLP units close; stopped after 2 epochs and resumed from the checkpoint (the
    gate logits are model weights, the method state is in the folder), the run ends as the uninterrupted one."""
    bert, npn, tokens = tiny_bert_npn()
    start = [s.gates.phi.detach().clone() for s in npn.sites]
    trainer = train_bert(bert, npn, tokens, tmp_path / "whole", 5)
    arch = npn.architecture()
    assert 0 < arch["arch"][0] < 64 and 0 < arch["arch"][2] < 64, arch  # MLP units closed, not all
    assert arch["arch"][1] <= 2 and arch["arch"][3] <= 2 and arch["params"] < arch["params_dense"]
    assert all(not torch.equal(s.gates.phi, p) for s, p in zip(npn.sites, start, strict=True))
    assert npn.stage == 3 and [r["stage"] for r in trainer.capacity.history] == [1, 2, 2, 2, 3]
    resumed_bert, resumed, _ = tiny_bert_npn()
    train_bert(resumed_bert, resumed, tokens, tmp_path / "part", 2)
    assert (tmp_path / "part" / "checkpoint-8" / STATE_FILE).is_file()
    resumed_bert, resumed, _ = tiny_bert_npn()
    train_bert(resumed_bert, resumed, tokens, tmp_path / "part", 5, resume=True)
    assert resumed.architecture() == arch
    assert resumed.generator.get_state().equal(npn.generator.get_state())
    for (name, mine), theirs in zip(resumed_bert.state_dict().items(), bert.state_dict().values(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6), name


def test_hf_head_gates_close_whole_attention_heads():
    """An in-gate on the attention output projection in blocks of the head size gates whole heads: with
    head 0 of layer 0 closed, that head's value weights do not change the output; head 1's do."""
    bert, npn, tokens = tiny_bert_npn()
    site = next(s for s in npn.sites if s.name == "bert.encoder.layer.0.attention.output.dense:in:16")
    assert (site.n, site.weights_per_unit) == (2, 16 * 32)
    with torch.no_grad():
        site.gates.phi[0] = -1.0
    bert.eval()
    ids = torch.stack([t["input_ids"] for t in tokens[:4]])
    before = bert(input_ids=ids).logits
    value = bert.bert.encoder.layer[0].attention.self.value
    with torch.no_grad():
        value.weight[:16] += torch.randn(16, 32)  # head 0's value rows
    assert torch.equal(bert(input_ids=ids).logits, before)
    with torch.no_grad():
        value.weight[16:] += torch.randn(16, 32)  # head 1's
    assert not torch.allclose(bert(input_ids=ids).logits, before)


def test_docs_npn_on_a_transformer_runs(monkeypatch, tmp_path):
    """docs/integrations.md's NPN-on-BERT example, as written: MLP units close, the method state is in the
    checkpoints, the exported full-width model loads with from_pretrained, and the compact one (closed units
    sliced out through bert_unit_groups) with load_compact; both compute what the gated model computes in
    evaluation mode."""
    scope = S.run_doc_section("NPN on a Hugging Face transformer", monkeypatch, tmp_path)
    npn, bert = scope["npn"], scope["bert"]
    assert sum(npn.architecture()["arch"]) < 2 * (64 + 2)
    assert (tmp_path / "bert-npn" / "checkpoint-20" / STATE_FILE).is_file()
    loaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "bert-npn-plain")
    assert not any("npn_" in name for name in loaded.state_dict())
    bert.eval()
    loaded.eval()
    ids = torch.stack([t["input_ids"] for t in scope["tokens"][:8]])
    assert torch.allclose(loaded(input_ids=ids).logits, bert(input_ids=ids).logits, atol=1e-5)
    small = scope["small"].eval()  # as load_compact rebuilt it from bert-npn-small.pt
    widths = [g.size for g in neuroplastic.structure.bert_unit_groups(small)]
    assert widths == [max(n, 1) for n in npn.architecture()["arch"]]  # the open units and heads, per layer
    assert neuroplastic.count_parameters(small) < neuroplastic.count_parameters(loaded)
    assert torch.allclose(small(input_ids=ids).logits, bert(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(neuroplastic.errors.BadInput, match=r"compact\(\) needs a torch.fx trace .*plain_model"):
        npn.compact(ids)
