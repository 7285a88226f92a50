"""NPN's compaction of a Hugging Face BERT, which torch.fx cannot trace: ``npn.compact(batch,
groups=bert_unit_groups(bert))`` slices closed MLP units and closed attention heads out of a 3-layer BERT
built from a config (no download). The gates are set by hand: layer 0 closes 2 of its 4 heads and 8 of its
24 MLP units, layer 1 every head, layer 2 one head and every MLP unit. The compact model computes the gated
model's evaluation logits, is smaller by exactly the closed units' tensors, keeps the right rows and
columns, and reloads from ``save_compact`` into a freshly built full-size BERT."""

from __future__ import annotations

import warnings

import pytest
import torch

import neuroplastic
from neuroplastic.errors import BadInput
from neuroplastic.structure import bert_unit_groups, load_compact, save_compact

transformers = pytest.importorskip("transformers")

LAYERS, HIDDEN, HEADS, HEAD_DIM, UNITS = 3, 32, 4, 8, 24
CLOSED_HEADS = {0: [1, 3], 1: [0, 1, 2, 3], 2: [0]}
CLOSED_UNITS = {0: list(range(0, UNITS, 3)), 1: [], 2: list(range(UNITS))}


def config(hidden_act: str = "gelu") -> transformers.BertConfig:
    return transformers.BertConfig(vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, intermediate_size=UNITS, max_position_embeddings=16,
                                   num_labels=3, hidden_act=hidden_act)


def layer(i: int) -> str:
    return f"bert.encoder.layer.{i}"


def gated_bert(hidden_act: str = "gelu") -> tuple[torch.nn.Module, neuroplastic.NPN]:
    """The BERT with one out-gate per MLP unit and one in-gate per head, closed as the module docstring says."""
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config(hidden_act))
    gates = {}
    for i in range(LAYERS):
        gates[f"{layer(i)}.intermediate.dense"] = "out"
        gates[f"{layer(i)}.attention.output.dense"] = f"in:{HEAD_DIM}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.fx cannot trace BertForSequenceClassification
        npn = neuroplastic.NPN(bert, gates=gates)
    sites = {s.layer: s for s in npn.sites}
    with torch.no_grad():
        for i in range(LAYERS):
            sites[f"{layer(i)}.attention.output.dense"].gates.phi[CLOSED_HEADS[i]] = -1.0
            sites[f"{layer(i)}.intermediate.dense"].gates.phi[CLOSED_UNITS[i]] = -1.0
    bert.eval()
    return bert, npn


def batch(seed: int, n: int = 6, length: int = 12) -> dict[str, torch.Tensor]:
    """Random tokens; every other sequence padded after a random length (attention mask 0 there)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    for row in range(0, n, 2):
        mask[row, int(torch.randint(3, length, (1,), generator=g)):] = 0
    return {"input_ids": torch.randint(0, 50, (n, length), generator=g), "attention_mask": mask}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("hidden_act", ["gelu", "sigmoid"])
def test_compact_bert_computes_the_gated_evaluation_logits(hidden_act):
    """With sigmoid, a closed MLP unit reads sigmoid(0) = 0.5 at output.dense: its share is folded into that
    layer's bias; with gelu it reads 0."""
    bert, npn = gated_bert(hidden_act)
    small = npn.compact(batch(0), groups=bert_unit_groups(bert))
    plain = npn.plain_model().eval()
    assert not any("npn_" in name for name in small.state_dict())
    assert type(small) is type(bert) and not small.training
    with torch.no_grad():
        for seed in (1, 2):
            x = batch(seed)
            gated = bert(**x).logits
            assert torch.allclose(small(**x).logits, gated, atol=1e-5, rtol=0)
            assert torch.allclose(plain(**x).logits, gated, atol=1e-5, rtol=0)
    assert len(npn.sites) == 2 * LAYERS and npn.sites[0].gates.phi.numel() == UNITS  # the gated model is untouched
    full, cut = (m.get_submodule(f"{layer(2)}.output.dense") for m in (plain, small))  # every unit closed
    shift = 0.5 * full.weight.sum(dim=1) if hidden_act == "sigmoid" else 0.0
    assert torch.allclose(cut.bias, full.bias + shift, atol=1e-6, rtol=0)


def test_compact_bert_removes_exactly_the_closed_heads_and_units():
    """Heads and units removed, a layer with none open keeping one (its outgoing weights zero); the kept rows
    and columns are the hand-computed blocks of the full model."""
    bert, npn = gated_bert()
    plain = npn.plain_model()
    small = npn.compact(batch(0), groups=bert_unit_groups(bert))
    widths = {g.name: g.size for g in bert_unit_groups(small)}
    assert widths == {f"{layer(0)}.intermediate.dense": 16, f"{layer(0)}.attention.self": 2,
                      f"{layer(1)}.intermediate.dense": 24, f"{layer(1)}.attention.self": 1,
                      f"{layer(2)}.intermediate.dense": 1, f"{layer(2)}.attention.self": 3}
    per_head = 3 * (HEAD_DIM * HIDDEN + HEAD_DIM) + HIDDEN * HEAD_DIM  # q, k, v rows and biases; output columns
    per_unit = HIDDEN + 1 + HIDDEN  # intermediate row and bias; output column
    removed_heads = 2 + 3 + 1  # layer 1 keeps one head of its four closed ones
    removed_units = 8 + 0 + 23  # so does layer 2 with its MLP
    assert count(plain) - count(small) == removed_heads * per_head + removed_units * per_unit == 8303

    def sub(i: int, path: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        name = f"{layer(i)}.{path}"
        return plain.get_submodule(name), small.get_submodule(name)

    rows = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])  # layer 0 keeps heads 0 and 2
    for projection in ("query", "key", "value"):
        full, cut = sub(0, f"attention.self.{projection}")
        assert torch.equal(cut.weight, full.weight[rows]) and torch.equal(cut.bias, full.bias[rows])
    full, cut = sub(0, "attention.output.dense")
    assert torch.equal(cut.weight, full.weight[:, rows]) and torch.equal(cut.bias, full.bias)
    rows = torch.arange(8, 32)  # layer 2 keeps heads 1, 2, 3
    assert torch.equal(sub(2, "attention.self.value")[1].weight, sub(2, "attention.self.value")[0].weight[rows])
    assert torch.equal(sub(2, "attention.output.dense")[1].weight, sub(2, "attention.output.dense")[0].weight[:, rows])
    full, cut = sub(1, "attention.self.query")  # layer 1: head 0 stays as a placeholder that nothing reads
    assert torch.equal(cut.weight, full.weight[:8])
    assert sub(1, "attention.output.dense")[1].weight.shape == (HIDDEN, HEAD_DIM)
    assert not sub(1, "attention.output.dense")[1].weight.any()
    units = torch.tensor([u for u in range(UNITS) if u % 3])  # layer 0's open MLP units
    full, cut = sub(0, "intermediate.dense")
    assert torch.equal(cut.weight, full.weight[units]) and torch.equal(cut.bias, full.bias[units])
    assert torch.equal(sub(0, "output.dense")[1].weight, sub(0, "output.dense")[0].weight[:, units])
    full, cut = sub(2, "output.dense")  # layer 2: one unit, read by nothing
    assert cut.weight.shape == (HIDDEN, 1) and not cut.weight.any() and torch.equal(cut.bias, full.bias)
    assert small.get_submodule(f"{layer(0)}.intermediate.dense").out_features == 16


def test_compacted_bert_saves_and_loads_into_a_full_size_bert(tmp_path):
    bert, npn = gated_bert()
    small = npn.compact(batch(0), groups=bert_unit_groups(bert))
    save_compact(small, tmp_path / "small.pt")
    loaded = load_compact(transformers.BertForSequenceClassification(config()), tmp_path / "small.pt").eval()
    assert count(loaded) == count(small)
    x = batch(3)
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, small(**x).logits)


def test_gates_the_declared_groups_do_not_cover_are_refused():
    """A per-feature in-gate on the attention output (not per head) cannot be compacted with the declared head
    groups; a model without BERT-style blocks has no groups; without groups the trace is needed."""
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        npn = neuroplastic.NPN(bert, gates={f"{layer(0)}.attention.output.dense": "in"})
    with pytest.raises(BadInput, match=r"gate site 'bert.encoder.layer.0.attention.output.dense:in' \(32 units\) is "
                                       r"not covered by the declared groups: .*the groups allow "
                                       r"'bert.encoder.layer.0.attention.output.dense': 'in:8'"):
        npn.compact(batch(0), groups=bert_unit_groups(bert))
    with pytest.raises(BadInput, match=r"compact\(\) needs a torch.fx trace .*groups=.*bert_unit_groups"):
        npn.compact(batch(0))
    with pytest.raises(BadInput, match=r"bert_unit_groups found no BERT-style block in Sequential"):
        bert_unit_groups(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("kind", ["Roberta", "Electra"])
def test_models_built_like_bert_compact_the_same_way(kind):
    """RoBERTa and ELECTRA blocks have BERT's module names: bert_unit_groups finds them and the compact model
    computes the gated logits, with every other head and MLP unit gone."""
    options = {"vocab_size": 50, "hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": HEADS,
               "intermediate_size": UNITS, "max_position_embeddings": 40, "num_labels": 2}
    torch.manual_seed(0)
    model = getattr(transformers, f"{kind}ForSequenceClassification")(getattr(transformers, f"{kind}Config")(**options))
    groups = bert_unit_groups(model)
    gates = {}
    for group in groups:  # out-gates on the MLP units, one in-gate per head on the attention output
        if group.name.endswith("intermediate.dense"):
            gates[group.name] = "out"
        else:
            gates[group.consumers[0].module] = f"in:{HEAD_DIM}"
    assert len(gates) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        npn = neuroplastic.NPN(model, gates=gates)
    with torch.no_grad():
        for site in npn.sites:
            site.gates.phi[::2] = -1.0
    model.eval()
    x = batch(4)
    x["input_ids"] = x["input_ids"].clamp(min=3)  # clear of RoBERTa's padding token
    small = npn.compact(x, groups=groups)
    assert [g.size for g in bert_unit_groups(small)] == [g.size // 2 for g in groups]
    with torch.no_grad():
        assert torch.allclose(small(**x).logits, model(**x).logits, atol=1e-5, rtol=0)
