import itertools

import pytest
import torch
from torch import nn

from neuroplastic.methods.npn import NPN, split_param_groups


def moons_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 2))


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.ReLU(), nn.Linear(8, 3),
    )


def test_default_placement_gates_all_but_classifier_after_bn():
    model = small_cnn()
    npn = NPN(model, k=7)
    assert [s.name for s in npn.sites] == ["0:out", "4:out", "9:out"]
    assert [s.hook_module for s in npn.sites] == ["1", "5", "9"]
    assert [s.weights_per_unit for s in npn.sites] == [9, 36, 24]


def test_all_open_eval_equals_ungated_model_and_training_runs():
    model = small_cnn()
    x = torch.randn(5, 1, 8, 8)
    y = torch.randint(0, 3, (5,))
    plain = small_cnn()
    npn = NPN(model, k=7, lam=1e-3, stages=(0, 10))
    weights, gates = split_param_groups(model)
    assert len(gates) == 3 and len(weights) == len(list(plain.parameters()))
    opt = torch.optim.Adam([{"params": weights}, {"params": gates}], lr=1e-2)
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))
    model.train()
    for _ in range(3):
        opt.zero_grad()
        loss = npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
        assert torch.isfinite(loss)
        assert all(g.grad is not None and torch.isfinite(g.grad).all() for g in gates)
        opt.step()
    npn.remove()
    assert not split_param_groups(model)[1]


def test_penalty_counts_by_hand():
    lin = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    npn = NPN(lin, k=1.0, lam={"0": 2.0, "2": 0.5}, gates={"0": "in", "2": "in"})
    assert [s.weights_per_unit for s in npn.sites] == [3, 2]  # an input feature feeds out_features weights
    with torch.no_grad():
        npn.sites[0].gates.phi.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
        npn.sites[1].gates.phi.copy_(torch.tensor([0.0, 0.0, 3.0]))
    pi0 = torch.sigmoid(torch.tensor([0.0, 1.0, -1.0, 2.0])).sum()
    pi1 = torch.sigmoid(torch.tensor([0.0, 0.0, 3.0])).sum()
    assert npn.penalty().item() == pytest.approx(2.0 * 3 * pi0.item() + 0.5 * 2 * pi1.item(), rel=1e-6)
    assert npn.expected_l0() == pytest.approx(3 * pi0.item() + 2 * pi1.item(), rel=1e-6)

    conv = nn.Sequential(nn.Conv2d(3, 5, (3, 2)), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    conv(torch.zeros(1, 3, 6, 6))
    npn = NPN(conv, k=1.0, lam=1.0, gates={"0": "out"})
    assert npn.sites[0].weights_per_unit == 3 * 3 * 2
    assert npn.penalty().item() == pytest.approx(18 * 5 * torch.sigmoid(torch.tensor(3.0)).item(), rel=1e-6)


def test_live_weights_follow_the_paper_count_for_moons_placement():
    model = moons_mlp()
    npn = NPN(model, k=7, gates={"0": "in", "2": "in"})
    with torch.no_grad():
        npn.sites[0].gates.phi[:60] = -1.0  # 40 inputs open
        npn.sites[1].gates.phi[:50] = -1.0  # 30 hidden open
    arch = npn.architecture()
    assert arch["arch"] == [40, 30]
    assert arch["params"] == 40 * 30 + 30 * 2  # the paper's l0*l1 + 2*l1
    assert arch["params_dense"] == 8160


def test_live_weights_propagate_closed_conv_channels_into_flattened_features():
    model = small_cnn()
    npn = NPN(model, k=7, gates={"0": "out", "4": "out", "9": "in"})
    with torch.no_grad():
        npn.sites[1].gates.phi[:2] = -1.0  # 4 of 6 conv channels open -> 16 of 24 fc inputs live
        npn.sites[2].gates.phi[-2:] = -1.0  # close 2 of the 4 flattened features of channel 5
    # conv1 4x1x9, conv2 4x4x9, fc1 (16 - 2) inputs x 8, fc2 8 x 3
    assert npn.live_weights() == 4 * 9 + 4 * 4 * 9 + 14 * 8 + 8 * 3
    with torch.no_grad():
        npn.sites[2].gates.phi[-4:] = -1.0  # all features of channel 5 closed: the channel is dead too
    assert npn.live_weights() == 4 * 9 + 3 * 4 * 9 + 12 * 8 + 8 * 3


def _counting_closure(model, x, y, counter):
    def closure():
        counter.append(1)
        return nn.functional.cross_entropy(model(x), y)

    return closure


@pytest.mark.parametrize("estimator, passes", [("arm", 2), ("ar", 1)])
def test_frozen_stages_are_one_pass_and_leave_gates_alone(estimator, passes):
    model = small_cnn()
    npn = NPN(model, k=7, lam=1e-2, stages=(1, 2), estimator=estimator)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    for epoch, expected_passes, frozen in [(0, 1, True), (1, passes, False), (2, 1, True)]:
        npn.set_epoch(epoch)
        model.zero_grad(set_to_none=True)
        calls = []
        npn.backward(_counting_closure(model, x, y, calls))
        assert len(calls) == expected_passes
        grads = [s.gates.phi.grad for s in npn.sites]
        assert all((g is None) == frozen for g in grads)
        assert npn.k == (5000.0 if frozen else 7.0)


def test_antithetic_pass_does_not_touch_batchnorm_running_stats():
    model = small_cnn()
    reference = small_cnn()
    npn = NPN(model, k=7, stages=None)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    torch.manual_seed(1)
    npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
    # one update of the running statistics, from the main pass
    bn, ref_bn = model[1], reference[1]
    assert int(bn.num_batches_tracked) == 1
    with torch.no_grad():
        ref_bn(reference[0](x))  # conv1 is ungated upstream: the main pass saw exactly this
    assert torch.allclose(bn.running_mean, ref_bn.running_mean, atol=1e-6)


def _exact_gate_grad(model, sites, x, y, k):
    """d E_z[loss] / d phi by enumerating every gate configuration."""
    phis = [s.gates.phi for s in sites]
    pis = [torch.sigmoid(k * p) for p in phis]
    n = [p.numel() for p in phis]
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=sum(n)):
        z = torch.tensor(bits)
        parts = torch.split(z, n)
        prob = torch.ones(())
        for zi, pi, s in zip(parts, pis, sites, strict=True):
            prob = prob * torch.prod(torch.where(zi > 0, pi, 1 - pi))
            s.gates.phase, s.gates.value_fn = "value", (lambda x, zi=zi: zi)
        with torch.no_grad():
            f = nn.functional.cross_entropy(model(x), y)
        total = total + prob * f
    for s in sites:
        s.gates.phase, s.gates.value_fn = None, None
    return torch.autograd.grad(total, phis)


@pytest.mark.parametrize("estimator", ["arm", "ar"])
def test_npn_gate_gradient_is_unbiased_against_enumeration(estimator):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2))
    npn = NPN(model, k=2.0, gates={"0": "in", "2": "in"}, estimator=estimator, seed=5)
    with torch.no_grad():
        npn.sites[0].gates.phi.copy_(torch.tensor([0.3, -0.4, 0.1]))
        npn.sites[1].gates.phi.copy_(torch.tensor([0.2, -0.1]))
    x, y = torch.randn(6, 3) * 2, torch.randint(0, 2, (6,))
    exact = torch.cat(_exact_gate_grad(model, npn.sites, x, y, 2.0))
    draws = []
    for _ in range(1500):
        model.zero_grad(set_to_none=True)
        npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
        draws.append(torch.cat([s.gates.phi.grad for s in npn.sites]))
    draws = torch.stack(draws)
    mean, err = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    assert torch.all((mean - exact).abs() < 5 * err + 1e-4), (mean, exact, err)


def test_expansion_rule_on_scripted_validation_losses():
    model = moons_mlp()
    npn = NPN(model, mode="expand", k=1.0, gates={"0": "in", "2": "in"}, init_active=[3, 3], stages=(1, 8))
    npn.set_epoch(0)
    assert npn.end_epoch(val_loss=0.1) == []  # stage 1: no expansion
    npn.set_epoch(1)
    events = npn.end_epoch(val_loss=1.0)
    assert [(e["layer"], e["units"]) for e in events] == [("0", [3]), ("2", [3])]
    assert npn.architecture()["arch"] == [4, 4]
    npn.set_epoch(2)
    assert npn.end_epoch(val_loss=1.0) == []  # plateau: not lower than at the last expansion
    with torch.no_grad():
        npn.sites[1].gates.phi[0] = -1.0  # an allocated unit closed: that layer stops growing
    npn.set_epoch(3)
    events = npn.end_epoch(val_loss=0.5)
    assert [(e["layer"], e["units"]) for e in events] == [("0", [4])]
    assert npn.allocated == [5, 4]
    npn.set_epoch(8)
    assert npn.end_epoch(val_loss=0.01) == []  # stage 3
    state = npn.state_dict()
    other = NPN(moons_mlp(), mode="expand", k=1.0, gates={"0": "in", "2": "in"}, init_active=[3, 3], stages=(1, 8))
    other.load_state_dict(state)
    assert other.allocated == [5, 4] and other.best_loss == 0.5 and other.k == 5000.0


def test_soft_reference_eval_gate():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    npn = NPN(model, k=1.0, gates={"1": "in"}, eval_gate="soft_reference")
    with torch.no_grad():
        npn.sites[0].gates.phi.copy_(torch.tensor([1.0, -1.0]))
    model.eval()
    x = torch.ones(1, 2)
    h = model[0](x) * torch.tensor([torch.sigmoid(torch.tensor(1.0)).item(), 0.0])
    assert torch.allclose(model(x), model[1].__class__.forward(model[1], h))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "grow"}, "mode must be"),
        ({"estimator": "reinforce"}, "estimator must be"),
        ({"lam": {"nope": 1.0}}, "unknown gated layers"),
        ({"lam": [1.0, 2.0, 3.0]}, "entries"),
        ({"mode": "expand"}, "init_active"),
        ({"init_active": 500}, "init_active"),
        ({"gates": {"0": "sideways"}}, "side"),
        ({"gates": ["1"]}, "not a Linear/Conv2d"),
        ({"eval_gate": "fuzzy"}, "eval_gate"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NPN(moons_mlp(), **kwargs)


def test_per_sample_sampling_needs_per_example_losses():
    model = moons_mlp()
    npn = NPN(model, k=7, sampling="sample", stages=None)
    x, y = torch.randn(4, 100), torch.randint(0, 2, (4,))
    npn.backward(lambda: nn.functional.cross_entropy(model(x), y, reduction="none"))
    assert npn.sites[0].gates.phi.grad.shape == (80,)
    with pytest.raises(ValueError, match="per-example"):
        npn.backward(lambda: nn.functional.cross_entropy(model(x), y))


def test_arm_skips_the_antithetic_pass_when_both_gate_samples_agree():
    model = small_cnn()
    npn = NPN(model, k=7, stages=None)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    with torch.no_grad():
        for site in npn.sites:
            site.gates.phi.fill_(10.0)  # pi = 1 - 4e-31: 1[u < pi] = 1[u > 1 - pi] = 1 for every u
            site.gates.phi[0] = -10.0   # and a closed unit: both samples 0
    calls = []
    npn.backward(_counting_closure(model, x, y, calls))
    assert len(calls) == 1
    assert all(torch.equal(s.gates.phi.grad, torch.zeros_like(s.gates.phi)) for s in npn.sites)
    with torch.no_grad():
        npn.sites[1].gates.phi[1] = 0.0  # pi = 1/2: the two samples of this gate always differ
    model.zero_grad(set_to_none=True)
    calls = []
    npn.backward(_counting_closure(model, x, y, calls))
    assert len(calls) == 2


class _Skip(nn.Module):
    """A model whose second (gated) layer runs only when asked: a skipped branch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.branch, self.head = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        self.use_branch = True

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.use_branch:
            h = torch.relu(self.branch(h))
        return self.head(h)


@pytest.mark.parametrize("estimator", ["arm", "ar"])
def test_a_gated_layer_skipped_in_a_step_gets_a_zero_gate_gradient(estimator):
    model = _Skip()
    npn = NPN(model, k=7, gates=["fc1", "branch"], estimator=estimator)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    model.use_branch = False
    npn.backward(lambda: nn.functional.cross_entropy(model(x), y))
    assert torch.equal(model.branch.npn_out.phi.grad, torch.zeros(6))
    assert model.fc1.npn_out.phi.grad is not None and model.fc1.npn_out.phi.grad.shape == (6,)


def test_training_forward_outside_backward_draws_gates_from_the_seeded_generator():
    outs = []
    for _ in range(2):
        model = moons_mlp()
        NPN(model, k=7, gates=["0"], seed=3)
        torch.manual_seed(0)
        global_state = torch.get_rng_state()
        x = torch.ones(4, 100)
        with torch.no_grad():
            outs.append(model(x))  # training mode: a Bernoulli(pi) sample per forward
        assert torch.equal(torch.get_rng_state(), global_state)  # the global stream is untouched
        torch.manual_seed(123)  # a different global seed must not change the draw
    assert torch.equal(outs[0], outs[1])


def test_per_sample_gates_refuse_batchnorm_in_training_mode():
    model = small_cnn()
    npn = NPN(model, k=7, sampling="sample", stages=(0, 10))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))

    def closure():
        return nn.functional.cross_entropy(model(x), y, reduction="none")

    with pytest.raises(ValueError, match="sampling='sample' cannot be used while a BatchNorm"):
        npn.backward(closure)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    npn.backward(closure)  # BatchNorm in eval mode: examples are independent again
    assert model[0].npn_out.phi.grad is not None


def test_anti_fraction_gate_gradient_is_unbiased_against_enumeration():
    """Both ARM terms on a random half of the batch: still the exact gradient in expectation."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2))
    npn = NPN(model, k=2.0, gates={"0": "in", "2": "in"}, anti_fraction=0.5, seed=5)
    assert npn.closure_kind == "indexed"
    with torch.no_grad():
        npn.sites[0].gates.phi.copy_(torch.tensor([0.3, -0.4, 0.1]))
        npn.sites[1].gates.phi.copy_(torch.tensor([0.2, -0.1]))
    x, y = torch.randn(6, 3) * 2, torch.randint(0, 2, (6,))
    exact = torch.cat(_exact_gate_grad(model, npn.sites, x, y, 2.0))
    sizes = []

    def closure(index=None):
        xi, yi = (x, y) if index is None else (x[index], y[index])
        sizes.append(len(yi))
        return nn.functional.cross_entropy(model(xi), yi, reduction="none")

    draws = []
    for _ in range(2500):
        model.zero_grad(set_to_none=True)
        npn.backward(closure)
        draws.append(torch.cat([s.gates.phi.grad for s in npn.sites]))
    assert set(sizes) == {6, 3}  # the main pass on the batch, the antithetic pass on half of it
    draws = torch.stack(draws)
    mean, err = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    assert torch.all((mean - exact).abs() < 5 * err + 1e-4), (mean, exact, err)


def test_anti_fraction_options_and_closure_contract():
    with pytest.raises(ValueError, match="anti_fraction must be"):
        NPN(moons_mlp(), anti_fraction=0)
    with pytest.raises(ValueError, match="estimator='arm'"):
        NPN(moons_mlp(), anti_fraction=0.5, estimator="ar")
    model = moons_mlp()
    npn = NPN(model, k=7, anti_fraction=0.25, stages=None)
    x, y = torch.randn(8, 100), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="per-example losses with anti_fraction"):
        npn.backward(lambda index=None: nn.functional.cross_entropy(model(x), y))
    cnn = small_cnn()
    npn = NPN(cnn, k=7, anti_fraction=0.5, stages=None)
    with pytest.raises(ValueError, match="anti_fraction < 1 cannot be used while a BatchNorm"):
        npn.backward(lambda index=None: nn.functional.cross_entropy(cnn(torch.randn(4, 1, 8, 8)),
                                                                    torch.zeros(4, dtype=torch.long), reduction="none"))


def test_fit_drives_an_indexed_closure(tmp_path):
    from neuroplastic.train import fit

    model = moons_mlp()
    npn = NPN(model, k=7, lam=1e-3, anti_fraction=0.5, stages=(1, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 100, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(4)]
    res = fit(model, npn, [opt], [], {"train": data, "val": data[:1]}, epochs=4, run_dir=tmp_path, progress=False,
              tensorboard=False)
    assert len(res.history) == 4 and all(r["train_loss"] > 0 for r in res.history)
    assert npn.sites[0].gates.phi.grad is None  # hardening: frozen gates get no gradient
