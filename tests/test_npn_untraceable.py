"""NPN on a model ``torch.fx`` cannot trace (its forward branches on a tensor value): per-layer gates are
placed with one warning that names the line that blocked the trace, train through the stages with the L0
penalty (ARM backward) and expand; ``architecture()`` counts each gated layer on its own; ``plain_model()``
exports without a trace; block gates (``"in:<n>"``) gate blocks of features; the features that need the
trace (``gates="groups"``, ``compact()``, ``PhysicalNPN``) fail saying which module and line blocked it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplastic.errors import BadInput
from neuroplastic.methods.gated import npn_optimizer
from neuroplastic.methods.npn import NPN
from neuroplastic.methods.npn_physical import PhysicalNPN


class Branchy(nn.Module):
    """8 -> 16 -> 16 -> 3, with a data-dependent branch in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if h.sum() > 0:  # blocks torch.fx
            h = h * 1.5
        return self.out(torch.relu(self.fc2(h)))


class Block(nn.Module):
    """A submodule that cannot be traced: the failure must name it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.mean() > 0 else x


def data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def build(**options) -> tuple[Branchy, NPN]:
    torch.manual_seed(0)
    model = Branchy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        npn = NPN(model, **options)
    blocked = [w for w in caught if "torch.fx cannot trace Branchy" in str(w.message)]
    assert len(blocked) == 1, [str(w.message) for w in caught]  # one warning, not one per site
    assert "test_npn_untraceable.py:" in str(blocked[0].message) and "if h.sum() > 0:" in str(blocked[0].message)
    return model, npn


def train(model: nn.Module, npn: NPN, epochs: int, gate_lr: float = 0.1) -> list[dict]:
    x, y = data()
    val_x, val_y = data(64)
    optimizer = npn_optimizer(model, lr=1e-2, gate_lr=gate_lr)
    events = []
    for epoch in range(epochs):
        npn.set_epoch(epoch)
        model.train()
        for i in range(0, len(y), 32):
            optimizer.zero_grad()
            npn.backward(lambda i=i: F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]))
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(val_x), val_y))
        events += npn.end_epoch(val_loss=val_loss)
    return events


def test_branchy_model_sparsifies_with_per_layer_gates_through_the_stages():
    model, npn = build(k=7, lam=1e-3, gates={"fc1": "out", "fc2": "out", "out": "in"}, stages=(1, 4))
    start = [s.gates.phi.detach().clone() for s in npn.sites]
    train(model, npn, epochs=1)
    assert all(torch.equal(s.gates.phi, p) for s, p in zip(npn.sites, start, strict=True))  # frozen stage
    train(model, npn, epochs=5)  # epochs 0-4 again: frozen, plastic (1-3), hardened (4)
    assert npn.k == pytest.approx(npn.schedule.k_frozen)  # hardened
    assert not any(torch.equal(s.gates.phi, p) for s, p in zip(npn.sites, start, strict=True))  # gates learned
    arch = npn.architecture()
    assert arch["layers"] == ["fc1:out", "fc2:out", "out:in"]
    assert all(0 < a <= 16 for a in arch["arch"]) and sum(a < 16 for a in arch["arch"]) >= 2, arch  # units closed
    a1, a2, a3 = arch["arch"]
    # no links without the trace: each layer counts its own gates only (fc2 reads all 16 of fc1's units)
    assert arch["params"] == a1 * 8 + a2 * 16 + a3 * 3 < arch["params_dense"] == 8 * 16 + 16 * 16 + 16 * 3
    # the export without a trace: gates baked into a full-width copy, equal in evaluation mode
    plain = npn.plain_model()
    assert not any(n.endswith("phi") for n, _ in plain.named_parameters())
    model.eval()
    probe = data(32)[0]
    assert torch.allclose(plain(probe), model(probe), atol=1e-6)
    closed = npn.sites[0].gates.phi <= 0
    assert bool((plain.fc1.weight[closed] == 0).all()) and bool((plain.fc1.bias[closed] == 0).all())


def test_branchy_model_expands_with_per_layer_gates():
    model, npn = build(mode="expand", k=1, lam=0.0, gates={"fc1": "out", "fc2": "in"}, init_active=4, stages=None)
    assert npn.architecture()["arch"] == [4, 4]
    events = train(model, npn, epochs=4, gate_lr=1e-3)
    assert [e for e in events if e["event"] == "expand"]
    assert sum(npn.architecture()["arch"]) > 8


def test_block_gates_gate_whole_blocks_of_input_features():
    """``"in:4"`` on ``out``: 4 gates, each over 4 consecutive input features; a closed block's weights
    are irrelevant to the output, the others are not."""
    model, npn = build(gates={"out": "in:4"}, stages=None)
    site = npn.sites[0]
    assert (site.name, site.n, site.weights_per_unit) == ("out:in:4", 4, 4 * 3)
    with torch.no_grad():
        site.gates.phi[1] = -1.0  # close features 4..7
    model.eval()
    x = data(16)[0]
    before = model(x)
    with torch.no_grad():
        model.out.weight[:, 4:8] += 5.0
    assert torch.equal(model(x), before)
    with torch.no_grad():
        model.out.weight[:, 8] += 5.0
    assert not torch.allclose(model(x), before)
    assert npn.architecture()["params"] == 8 * 16 + 16 * 16 + 12 * 3
    with pytest.raises(ValueError, match=r"cannot gate 'out' in blocks of 5: its 16 input units are not a multiple"):
        NPN(Branchy(), gates={"out": "in:5"})


def test_trace_only_features_say_which_module_and_line_blocked_them():
    model, npn = build(gates={"fc1": "out"}, stages=None)
    with pytest.raises(BadInput, match=r"compact\(\) needs a torch.fx trace .*blocked in Branchy.forward at "
                                       r"test_npn_untraceable.py:\d+ \(forward\): if h.sum\(\) > 0:.*plain_model\(\)"):
        npn.compact(data(4)[0])
    with pytest.raises(BadInput, match=r"blocked in Branchy.forward .*if h.sum\(\) > 0:.*per-layer gates"):
        NPN(Branchy(), gates="groups", example_input=data(4)[0])
    with pytest.raises(BadInput, match=r"blocked in Branchy.forward .*PhysicalNPN"):
        PhysicalNPN(Branchy(), mode="sparse", gates={"fc1": "out"}, example_input=data(4)[0])
    nested = nn.Sequential(nn.Linear(8, 8), Block(), nn.Linear(8, 3))
    with pytest.raises(BadInput, match=r"blocked in module '1' at test_npn_untraceable.py:\d+ \(forward\): return "
                                       r"self.fc\(x\) if x.mean\(\) > 0 else x"):
        NPN(nested, gates="groups", example_input=data(4)[0])
