import pytest
import torch
from torch import nn

from neuroplastic.metrics import count_parameters
from neuroplastic.structure import compact, group_of, select_units, trace_unit_groups
from neuroplastic.structure.surgery import unit_positions
from test_structure_trace import MLP, ZOO, LeNet5Caffe, make


@torch.no_grad()
def close_units(model: nn.Module, group, units: torch.Tensor) -> None:
    """Make ``units`` of ``group`` read as exactly zero: zero their BatchNorm weight and bias, or,
    in a group without BatchNorm, the producers' weight rows and biases."""
    modules = dict(model.named_modules())
    norms = [r for r in group.producers if r.kind == "norm"]
    for ref in norms or group.producers:
        pos = unit_positions(ref, units)
        for name in ("weight", "bias"):
            t = getattr(modules[ref.module], name)
            if t is not None:
                t.index_fill_(0, pos, 0.0)


def random_closing(model, x, seed):
    """Close a random subset of units in a random half of the prunable groups; return keep."""
    gen = torch.Generator().manual_seed(seed)
    groups = [g for g in trace_unit_groups(model, x) if g.prunable]
    keep = {}
    for i in torch.randperm(len(groups), generator=gen)[: max(1, len(groups) // 2)].tolist():
        g = groups[i]
        open_ = torch.rand(g.size, generator=gen) < 0.5
        open_[torch.randint(g.size, (1,), generator=gen)] = True  # at least one unit stays
        close_units(model, g, torch.nonzero(~open_).flatten())
        keep[g.name] = torch.nonzero(open_).flatten()
    return keep


@pytest.mark.parametrize("name", sorted(ZOO))
def test_compact_equals_closed_model_and_is_smaller(name):
    model, x = make(name)
    keep = random_closing(model, x, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = compact(model, keep, x)
    assert (model(x) - small(x)).abs().max() <= 1e-5
    assert count_parameters(small) < count_parameters(model)
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    # attributes follow the tensors: a freshly traced compact model has the kept sizes
    sizes = {g.name: g.size for g in trace_unit_groups(small, x)}
    for gname, kept in keep.items():
        assert sizes[gname] == len(kept)


def test_compact_lenet_hand_checked_shapes():
    model, x = make("lenet5")
    groups = trace_unit_groups(model, x)
    conv2 = group_of(groups, "conv2")
    assert [(r.module, r.offset, r.repeat) for r in conv2.consumers] == [("fc1", 0, 16)]
    close_units(model, conv2, torch.arange(3, 50))
    close_units(model, group_of(groups, "conv1"), torch.arange(7, 20))
    small = compact(model, {"conv1": range(7), "conv2": [0, 1, 2]}, x)
    assert small.conv1.weight.shape == (7, 1, 5, 5) and small.conv1.out_channels == 7
    assert small.conv2.weight.shape == (3, 7, 5, 5) and small.conv2.in_channels == 7
    assert small.fc1.weight.shape == (500, 48) and small.fc1.in_features == 48
    # fc1 keeps exactly the first 3 * 16 columns (channel c -> columns 16c .. 16c+15)
    assert torch.equal(small.fc1.weight, model.fc1.weight[:, :48])
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_compact_densenet_slices_concat_readers_at_their_offsets():
    model, x = make("densenet")
    groups = trace_unit_groups(model, x)
    g = group_of(groups, "dense.0.conv")  # 6 channels at offset 10 of every later concat
    close_units(model, g, torch.tensor([1, 4]))
    small = compact(model, {g.name: [0, 2, 3, 5]}, x)
    kept = torch.tensor([*range(10), 10, 12, 13, 15, *range(16, 28)])
    assert torch.equal(small.trans_bn.running_mean, model.trans_bn.running_mean[kept])
    assert torch.equal(small.trans_conv.weight, model.trans_conv.weight[:, kept])
    assert torch.equal(small.dense[2].conv.weight, model.dense[2].conv.weight[:, kept[:-6]])
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_compact_mobilenet_depthwise_groups_follow():
    model, x = make("mobilenetv2")
    g = group_of(trace_unit_groups(model, x), "blocks.0.conv.0")
    close_units(model, g, torch.arange(10, 32))
    small = compact(model, {g.name: range(10)}, x)
    dw = small.blocks[0].conv[3]
    assert dw.groups == dw.in_channels == dw.out_channels == 10 and dw.weight.shape == (10, 1, 3, 3)
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_compact_with_gate_hooks_after_batchnorm():
    """NPN-style gates (a 0/1 factor per unit after the BatchNorm) are what makes units removable."""
    model, x = make("resnet20")
    groups = trace_unit_groups(model, x)
    g = group_of(groups, "conv1")  # the first stage's residual stream
    gate = (torch.arange(16) % 3 != 0).float()
    modules = dict(model.named_modules())
    hooks = [
        modules[r.module].register_forward_hook(lambda m, i, o: o * gate[None, :, None, None])
        for r in g.producers
        if r.kind == "norm"
    ]
    gated_out = model(x)
    small = compact(model, {g.name: gate.bool()}, x)
    for h in hooks:
        h.remove()
    for m in small.modules():  # the copy carries the hooks too: drop them
        m._forward_hooks.clear()
    assert small.conv1.out_channels == int(gate.sum())
    assert (gated_out - small(x)).abs().max() <= 1e-5


def test_compact_refuses_units_that_are_not_zero():
    model, x = make("vgg_bn")
    with pytest.raises(ValueError, match="not zero"):
        compact(model, {"features.0": [0, 1]}, x)


def test_fold_constants_into_linear_consumer():
    model, x = make("mlp")
    with torch.no_grad():  # units 4.. of fc1 output relu(bias): constant, not zero
        model.fc1.weight[4:] = 0
        model.fc1.bias[4:] = torch.rand(28) + 0.1
    with pytest.raises(ValueError, match="fold_constants"):
        compact(model, {"fc1": range(4)}, x)
    small = compact(model, {"fc1": range(4)}, x, fold_constants=True)
    assert small.fc2.in_features == 4
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_fold_refused_for_zero_padded_conv_consumer():
    model, x = make("vgg_bn")
    with torch.no_grad():  # channel 0 of features.0 reads relu(bn bias) > 0: a constant
        model.features[0].weight[0] = 0
        model.features[0].bias[0] = 0
        model.features[1].bias[0] = 1.0
    with pytest.raises(ValueError, match="zero-pads"):
        compact(model, {"features.0": range(1, 8)}, x, fold_constants=True)


def test_group_emptied_keeps_one_placeholder_unit():
    model, x = make("lenet5")
    groups = trace_unit_groups(model, x)
    close_units(model, group_of(groups, "fc1"), torch.arange(500))
    small = compact(model, {"fc1": []}, x)
    assert small.fc1.out_features == 1 and torch.all(small.fc2.weight == 0)
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_bad_keep_is_rejected_with_clear_errors():
    model, x = make("mlp")
    with pytest.raises(ValueError, match="keep names 'nope', which is neither a group nor a layer producing one"):
        compact(model, {"nope": [0]}, x)
    with pytest.raises(ValueError, match="not prunable"):
        compact(model, {"fc3": [0]}, x)
    with pytest.raises(ValueError, match="outside"):
        compact(model, {"fc1": [40]}, x)
    with pytest.raises(ValueError, match="repeats"):
        compact(model, {"fc1": [1, 1]}, x)
    with pytest.raises(TypeError, match="integer"):
        compact(model, {"fc1": [0.5]}, x)
    with pytest.raises(ValueError, match="at least one unit"):
        select_units(model, {"fc1": []}, x)


def test_select_units_in_place_slices_optimizer_state():
    torch.manual_seed(0)
    model, x = MLP(), torch.randn(8, 20)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(x).square().mean().backward()
    opt.step()
    old_buf = opt.state[model.fc1.weight]["momentum_buffer"].clone()
    old_fc2 = opt.state[model.fc2.weight]["momentum_buffer"].clone()
    select_units(model, {"fc1": [1, 5, 9]}, x, optimizer=opt)
    assert model.fc1.weight.shape == (3, 20) and model.fc2.weight.shape == (24, 3)
    assert torch.equal(opt.state[model.fc1.weight]["momentum_buffer"], old_buf[[1, 5, 9]])
    assert torch.equal(opt.state[model.fc2.weight]["momentum_buffer"], old_fc2[:, [1, 5, 9]])
    assert opt.param_groups[0]["params"][0] is model.fc1.weight
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()  # still works with the new tensors


def test_unsupported_ops_block_their_groups():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2)
            self.c, self.ln = nn.Conv2d(8, 6, 1), nn.Linear(4, 4)

        def forward(self, x):
            y = self.b(self.a(x))
            z = self.c(y)[:, :4]  # channel slicing (ResNet option-A style) is not understood
            return self.ln(z.mean((2, 3)))

    model, x = Odd(), torch.randn(2, 3, 5, 5)
    groups = {g.name: g for g in trace_unit_groups(model, x)}
    assert not groups["a"].prunable and "grouped conv 'b'" in groups["a"].reason
    assert not groups["c"].prunable and "not understood" in groups["c"].reason
    with pytest.raises(ValueError, match="not prunable"):
        compact(model, {"c": [0, 1]}, x)


def test_shared_module_blocks_its_groups():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.mid, self.out = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.mid(self.mid(self.fc(x))))

    groups = {g.name: g for g in trace_unit_groups(Shared(), torch.randn(2, 4))}
    assert not groups["fc"].prunable and "called more than once" in groups["fc"].reason


def test_lenet_keeps_original_untouched_type():
    model, x = LeNet5Caffe().eval(), torch.randn(2, 1, 28, 28)
    small = compact(model, {}, x)
    assert type(small) is LeNet5Caffe and small is not model
    assert torch.equal(small(x), model(x))


def attach_gate(model: nn.Module, group, open_: torch.Tensor) -> list:
    """NPN-style gate: multiply each gate site's slice of the group by the 0/1 vector ``open_``."""
    modules = dict(model.named_modules())
    hooks = []
    for ref in group.gate_sites():
        factor = open_.float().repeat_interleave(ref.repeat)
        lo, hi = ref.offset, ref.offset + len(factor)

        def hook(m, inputs, out, lo=lo, hi=hi, factor=factor):
            out = out.clone()
            shape = (1, -1) + (1,) * (out.dim() - 2)
            out[:, lo:hi] = out[:, lo:hi] * factor.view(shape)
            return out

        hooks.append(modules[ref.module].register_forward_hook(hook))
    return hooks


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gated_groups_compact_exactly(name):
    """The NPN flow: gate every prunable group at its gate sites, compact with the open masks."""
    model, x = make(name, seed=5)
    gen = torch.Generator().manual_seed(5)
    keep, hooks = {}, []
    for g in trace_unit_groups(model, x):
        if g.prunable:
            open_ = torch.rand(g.size, generator=gen) < 0.6
            open_[0] = True
            keep[g.name] = open_
            hooks += attach_gate(model, g, open_)
    gated = model(x)
    small = compact(model, keep, x)
    for h in hooks:
        h.remove()
    for m in small.modules():
        m._forward_hooks.clear()
    assert (gated - small(x)).abs().max() <= 1e-5
    assert count_parameters(small) < count_parameters(model)


class Gate(nn.Module):
    """A stand-in for a gate module placed in the graph: multiplies channels by a 0/1 buffer."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("open", torch.ones(n))

    def forward(self, x):
        return x * self.open.view(1, -1, 1, 1)


class SEGated(nn.Module):
    """Squeeze-and-excitation (x * sigmoid(fc(pool(x)))) couples x's channels with the excite conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.gate = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), Gate(8)
        self.squeeze, self.excite = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.out = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = torch.relu(self.gate(self.bn(self.conv(x))))
        s = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.out(x * s).mean((2, 3))


def test_passthrough_gate_module_and_squeeze_excitation():
    model, x = SEGated().eval(), torch.randn(3, 3, 6, 6)
    with pytest.raises(ValueError, match="not prunable"):  # without passthrough the gate is opaque
        compact(model, {"conv": [0]}, x, groups=trace_unit_groups(model, x))
    groups = trace_unit_groups(model, x, passthrough=(Gate,))
    g = group_of(groups, "conv")
    assert {r.module for r in g.producers} == {"conv", "bn", "excite"}
    assert {r.module for r in g.consumers} == {"squeeze", "out"}
    model.gate.open[[1, 4, 6]] = 0
    small = compact(model, {"conv": model.gate.open.bool()}, x, groups=groups)
    small.gate = nn.Identity()  # the gate is not part of the compact model
    assert small.excite.out_channels == 5 and small.squeeze.in_channels == 5
    assert (model(x) - small(x)).abs().max() <= 1e-5


def test_keep_from_layer_masks_per_layer_gates_on_resnet():
    """The paper's placement: one gate per conv (after its BN); a stream unit goes only if all
    convs writing the stream close it. Units kept but closed in some writer stay closed through that
    writer's BN (gates baked in: BN weight and bias zeroed), since the compact model has no gates."""
    from neuroplastic.structure import keep_from_layer_masks

    model, x = make("resnet20", seed=9)
    groups = trace_unit_groups(model, x)
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(9)
    masks = {}
    for g in groups:
        if not g.prunable:
            continue
        writers = [r.module for r in g.producers if r.kind == "conv"]
        shared_closed = torch.rand(g.size, generator=gen) < 0.5  # closed in every writer
        for w in writers:
            masks[w] = ~shared_closed | (torch.rand(g.size, generator=gen) < 0.3)  # some open here only
            bn = modules[w.replace("conv", "bn") if "shortcut" not in w else w[:-1] + "1"]
            with torch.no_grad():  # bake the gate: a closed unit is zero after this BN
                bn.weight.mul_(masks[w])
                bn.bias.mul_(masks[w])
    keep = keep_from_layer_masks(groups, masks)
    stream = group_of(groups, "conv1")  # the stem and three residual branches write it
    expected = masks["conv1"] | masks["layers.0.conv2"] | masks["layers.1.conv2"] | masks["layers.2.conv2"]
    assert torch.equal(keep[stream.name], expected) and not bool(expected.all())
    small = compact(model, keep, x)
    assert (model(x) - small(x)).abs().max() <= 1e-5
    assert small.conv1.out_channels == int(expected.sum())
    with pytest.raises(ValueError, match="bool mask of length 16"):
        keep_from_layer_masks(groups, {**masks, "conv1": torch.ones(3, dtype=torch.bool)})
    partial = {k: v for k, v in masks.items() if k != "layers.0.conv2"}
    assert stream.name not in keep_from_layer_masks(groups, partial)  # an ungated writer keeps all


def test_keep_by_any_layer_writing_a_stream_and_without_example_when_groups_are_given():
    model, x = make("resnet20")
    model.eval()
    groups = trace_unit_groups(model, x)
    stream = next(g for g in groups if g.name == "conv1")  # the first stage's residual stream
    assert "layers.1.conv2" in [r.module for r in stream.producers]
    kept = torch.arange(0, stream.size, 2)
    with torch.no_grad():  # close the other units where the stream is written: compaction is then exact
        for ref in stream.producers:
            module = dict(model.named_modules())[ref.module]
            closed = torch.ones(stream.size, dtype=torch.bool)
            closed[kept] = False
            for tensor in (module.weight, getattr(module, "bias", None)):
                if tensor is not None:
                    tensor[closed] = 0.0
    by_group = compact(model, {"conv1": kept}, x)
    by_layer = compact(model, {"layers.1.conv2": kept}, x)
    unchecked = compact(model, {"layers.1.bn2": kept}, groups=groups)
    for small in (by_layer, unchecked):
        assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), by_group.state_dict().values(),
                                                     strict=True))
    torch.testing.assert_close(by_layer.eval()(x), model(x))
    with pytest.raises(ValueError, match="names group 'conv1' twice"):
        compact(model, {"conv1": kept, "layers.0.conv2": kept}, x)
    with pytest.raises(ValueError, match="needs example_input"):
        compact(model, {"conv1": kept})
    with pytest.raises(ValueError, match="fold_constants needs example_input"):
        compact(model, {"conv1": kept}, groups=groups, fold_constants=True)
