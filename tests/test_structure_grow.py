import math

import pytest
import torch
from torch import nn

from neuroplastic.structure import group_of, trace_unit_groups
from neuroplastic.structure.growth import grow, insertion_src
from neuroplastic.structure.optim_surgery import remap_along
from neuroplastic.structure.surgery import unit_positions
from test_structure_trace import ZOO, make


def pick_group(model, x, seed):
    groups = [g for g in trace_unit_groups(model, x) if g.prunable]
    return groups[int(torch.randint(len(groups), (1,), generator=torch.Generator().manual_seed(seed)))]


def test_insertion_src_by_hand():
    assert insertion_src(5, [(2, 2)]).tolist() == [0, 1, -1, -1, 2, 3, 4]
    assert insertion_src(3, [(3, 1), (0, 2)]).tolist() == [-1, -1, 0, 1, 2, -1]
    with pytest.raises(ValueError, match="outside"):
        insertion_src(3, [(4, 1)])


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_grow_preserves_function_and_optimizer_state(name, opt_name):
    model, x = make(name, seed=2)
    group = pick_group(model, x, seed=len(name))
    model.train()
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x).square().mean().backward()
    opt.step()  # create state before growing
    names = [n for n, _ in model.named_parameters()]
    old_state = {
        n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for n, p in model.named_parameters()
    }
    old_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.eval()
    before = model(x)

    grow(model, group, 3, optimizer=opt)

    assert (model(x) - before).abs().max() <= 1e-6
    # the optimizer holds the new Parameter objects, in the same order
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]
    params = dict(model.named_parameters())
    assert list(params) == names
    # every grown tensor and its state = old values at the old slots, zeros at the new ones
    inserts = {}
    for ref in group.members:
        key = (ref.module, ref.dim)
        inserts.setdefault(key, []).append((ref.offset + group.size * ref.repeat, 3 * ref.repeat))
    grown = set()
    for (module, dim), where in inserts.items():
        for tensor_name in ("weight", "bias"):
            n = f"{module}.{tensor_name}"
            if n not in params or (dim == 1 and tensor_name == "bias"):
                continue
            axis = dim if tensor_name == "weight" else 0
            src = insertion_src(old_params[n].shape[axis], where)
            keep = src >= 0
            new_slots = params[n].index_select(axis, torch.nonzero(~keep).flatten())
            assert torch.equal(params[n].index_select(axis, torch.nonzero(keep).flatten()), old_params[n])
            if dim == 1:
                assert torch.all(new_slots == 0)
            for k, v in opt.state[params[n]].items():
                if k == "step":
                    assert torch.equal(torch.as_tensor(v), torch.as_tensor(old_state[n][k]))
                else:
                    assert torch.equal(v, remap_along(old_state[n][k], axis, src))
            grown.add(n)
    for n, p in params.items():
        if n not in grown:
            assert torch.equal(p, old_params[n])
            for k, v in opt.state[p].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(old_state[n][k]))
    assert grown  # something grew
    # training mode and both optimizers keep working
    model.train()
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()
    sizes = {g.name: g.size for g in trace_unit_groups(model, x)}
    assert sizes[group.name] == group.size + 3


def test_grow_lenet_conv2_exact_slots():
    """Hand-checked layout: conv2 grows 50 -> 52, fc1 gets 2 * 16 zero columns at the end."""
    model, x = make("lenet5")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(x).square().mean().backward()
    opt.step()
    old_w, old_fc1 = model.conv2.weight.detach().clone(), model.fc1.weight.detach().clone()
    old_buf = opt.state[model.fc1.weight]["momentum_buffer"].clone()
    before = model(x)
    grow(model, "conv2", 2, x, optimizer=opt)
    assert model.conv2.out_channels == 52 and model.fc1.in_features == 832
    assert torch.equal(model.conv2.weight[:50], old_w)
    bound = 1 / math.sqrt(20 * 25)  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert model.conv2.weight[50:].abs().max() <= bound and model.conv2.weight[50:].abs().max() > 0
    assert torch.equal(model.fc1.weight[:, :800], old_fc1) and torch.all(model.fc1.weight[:, 800:] == 0)
    buf = opt.state[model.fc1.weight]["momentum_buffer"]
    assert torch.equal(buf[:, :800], old_buf) and torch.all(buf[:, 800:] == 0)
    assert torch.equal(model(x), before)


def test_grow_densenet_inserts_in_the_middle_of_concat_readers():
    model, x = make("densenet")
    g = group_of(trace_unit_groups(model, x), "dense.0.conv")  # channels 10..15 of later concats
    old = model.trans_bn.running_var.clone()
    before = model(x)
    grow(model, g, 2)
    assert model.trans_bn.num_features == 30
    # two default channels inserted after the group's last channel (index 15)
    assert torch.equal(model.trans_bn.running_var, torch.cat([old[:16], torch.ones(2), old[16:]]))
    assert torch.all(model.trans_conv.weight[:, 16:18] == 0)
    assert (model(x) - before).abs().max() <= 1e-6
    new = group_of(trace_unit_groups(model, x), "dense.0.conv")
    assert new.size == 8
    assert [r.offset for r in new.consumers] == [10, 10, 10]


def test_grow_residual_stream_consistently():
    model, x = make("resnet20")
    g = group_of(trace_unit_groups(model, x), "layers.3.conv2")  # stage 2 stream, with projection
    before = model(x)
    grow(model, g, 4)
    for ref in g.members:
        module = dict(model.named_modules())[ref.module]
        assert (module.weight.shape[ref.dim] if ref.kind != "norm" else module.num_features) == 36
    assert (model(x) - before).abs().max() <= 1e-6
    assert torch.all(model.linear.weight[:, :0] == 0)  # the classifier reads stage 3, untouched
    assert model.layers[3].bn2.weight[32:].eq(1).all() and model.layers[3].bn2.bias[32:].eq(0).all()


def test_grow_custom_init_and_errors():
    model, x = make("mlp")
    grow(model, "fc2", 2, x, init=nn.init.ones_)
    assert torch.all(model.fc2.weight[24:] == 1)
    g = group_of(trace_unit_groups(model, x), "fc1")
    with pytest.raises(ValueError, match="positive int"):
        grow(model, g, 0)
    with pytest.raises(ValueError, match="cannot grow"):
        grow(model, "fc3", 1, x)
    with pytest.raises(ValueError, match="needs example_input"):
        grow(model, "fc1", 1)
    with pytest.raises(ValueError, match="unknown"):
        grow(model, "nope", 1, x)


def test_unit_positions_with_repeat_by_hand():
    from neuroplastic.structure import UnitRef

    ref = UnitRef("fc1", 1, "linear", offset=4, repeat=3)
    assert unit_positions(ref, torch.tensor([0, 2])).tolist() == [4, 5, 6, 10, 11, 12]


def test_resize_tensor_for_gate_logits_with_adam_state():
    from neuroplastic.structure.surgery import resize_tensor

    gate = nn.Module()
    gate.logits = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    gate.register_buffer("count", torch.tensor([5.0, 6.0, 7.0]))
    opt = torch.optim.Adam(gate.parameters(), lr=0.1)
    gate.logits.square().sum().backward()
    opt.step()
    m = opt.state[gate.logits]["exp_avg"].clone()
    resize_tensor(gate, "logits", torch.tensor([0, 1, 2, -1, -1]), optimizer=opt, fill=-4.0)
    resize_tensor(gate, "count", torch.tensor([2, 0]))
    assert gate.logits.shape == (5,) and gate.logits[3:].eq(-4.0).all()
    assert torch.equal(opt.state[gate.logits]["exp_avg"], torch.cat([m, torch.zeros(2)]))
    assert gate.count.tolist() == [7.0, 5.0] and "count" in dict(gate.named_buffers())
    opt.step()
    with pytest.raises(TypeError, match="not a parameter or buffer"):
        resize_tensor(gate, "training", torch.tensor([0]))
    with pytest.raises(ValueError, match="refers to slot 9"):
        resize_tensor(gate, "logits", torch.tensor([9]))


def test_gate_sites_are_norms_else_producers():
    model, x = make("densenet")
    groups = trace_unit_groups(model, x)
    stem = group_of(groups, "stem")  # no BatchNorm right after the stem: the concat readers' BNs
    assert [(r.module, r.offset) for r in stem.gate_sites()] == [
        ("dense.0.bn", 0),
        ("dense.1.bn", 0),
        ("dense.2.bn", 0),
        ("trans_bn", 0),
    ]
    model, x = make("lenet5")
    assert [r.module for r in group_of(trace_unit_groups(model, x), "conv2").gate_sites()] == ["conv2"]


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "densenet", "mobilenetv2"])
def test_compact_undoes_grow_exactly(name):
    """grow then compact(keep = the old units) gives back the original tensors bit for bit."""
    from neuroplastic.structure import compact

    model, x = make(name, seed=7)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    group = pick_group(model, x, seed=7)
    grow(model, group, 3)
    keep = {group.name: range(group.size)}  # the new units read non-zero values, with zero weights
    small = compact(model, keep, x)
    restored = small.state_dict()
    assert list(restored) == list(original)
    for k, v in original.items():
        assert torch.equal(restored[k], v), k


def test_grow_through_a_depthwise_conv():
    model, x = make("mobilenetv2")
    before = model(x)
    grow(model, "blocks.0.conv.0", 5, x)  # expand conv -> BN -> depthwise -> BN -> project conv
    block = model.blocks[0].conv
    assert block[0].out_channels == 37 and block[1].num_features == 37 and block[4].num_features == 37
    assert block[3].groups == block[3].in_channels == block[3].out_channels == 37
    assert block[3].weight.shape == (37, 1, 3, 3) and block[6].in_channels == 37
    bound = 1 / 3  # depthwise fan_in = 1 * 3 * 3
    assert 0 < block[3].weight[32:].abs().max() <= bound
    assert torch.all(block[6].weight[:, 32:] == 0)
    assert (model(x) - before).abs().max() <= 1e-6


def test_physical_training_matches_simulated_gated_training():
    """Physically-sized mode (select_units, then grow) follows the same trajectory as the full-size
    model whose closed units are gated to zero, step for step (SGD with momentum)."""
    import copy

    from neuroplastic.structure import select_units

    torch.manual_seed(0)
    model, x = make("mlp")
    xs, ys = torch.randn(6, 16, 20), torch.randn(6, 16, 5)
    open_ = torch.zeros(32, dtype=torch.bool)
    open_[:10] = True
    simulated = model
    gate = open_.float()
    simulated.fc1.register_forward_hook(lambda m, i, o: o * gate)
    physical = copy.deepcopy(model)
    physical.fc1._forward_hooks.clear()
    select_units(physical, {"fc1": torch.arange(10)}, x)
    opt_s = torch.optim.SGD(simulated.parameters(), lr=0.1, momentum=0.9)
    opt_p = torch.optim.SGD(physical.parameters(), lr=0.1, momentum=0.9)

    def step(i):
        for m, o in ((simulated, opt_s), (physical, opt_p)):
            o.zero_grad()
            (m(xs[i]) - ys[i]).square().mean().backward()
            o.step()

    def same(width):
        idx = torch.arange(width)
        assert torch.allclose(physical.fc1.weight, simulated.fc1.weight[idx], atol=1e-6)
        assert torch.allclose(physical.fc1.bias, simulated.fc1.bias[idx], atol=1e-6)
        assert torch.allclose(physical.fc2.weight, simulated.fc2.weight[:, idx], atol=1e-6)
        assert torch.allclose(physical.fc3.weight, simulated.fc3.weight, atol=1e-6)

    for i in range(3):
        step(i)
    same(10)
    # expansion: open units 10..13 in the simulated model, grow 4 units in the physical one
    grow(physical, "fc1", 4, x, optimizer=opt_p)
    with torch.no_grad():
        simulated.fc1.weight[10:14] = physical.fc1.weight[10:14]
        simulated.fc1.bias[10:14] = physical.fc1.bias[10:14]
        simulated.fc2.weight[:, 10:14] = 0  # closed units never got gradient: their state is zero
    assert torch.all(opt_s.state[simulated.fc2.weight]["momentum_buffer"][:, 10:14] == 0)
    gate[10:14] = 1
    for i in range(3, 6):
        step(i)
    same(14)
