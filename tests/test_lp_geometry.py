"""Row-wise Lp geometry: norms, projection, the dual map, Hoyer sparsity."""

import math

import pytest
import torch

from neuroplastic.lp.geometry import (
    check_p,
    dual_exponent,
    from_dual,
    hoyer,
    layer_hoyer,
    lp_norm,
    mass_support,
    net_hoyer,
    normalize,
    project,
    to_dual,
)

PS = [1.07, 1.15, 1.2, 1.5, 2.0, 3.0]


@pytest.mark.parametrize("p", [1.0, *PS])
def test_lp_norm_matches_torch_on_rows(p):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    expected = torch.linalg.vector_norm(x.reshape(5, -1), ord=p, dim=1)
    torch.testing.assert_close(lp_norm(x, p), expected, rtol=1e-12, atol=0)


def test_normalize_is_stable_where_the_naive_formula_overflows():
    # q = 15.3 (p = 1.07): 1e30 ** 15.3 is inf in float32, so a naive sum of powers fails
    q = dual_exponent(1.07)
    x = torch.tensor([[1e30, 5e29, 0.0, -2e29]], dtype=torch.float32)
    assert not torch.isfinite(x.abs().pow(q).sum())
    y = normalize(x, q)
    expected = normalize(x.double() / 1e30, q).float()
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)
    assert abs(float(lp_norm(y, q)) - 1) < 1e-6


@pytest.mark.parametrize("p", PS)
def test_project_puts_every_unit_on_the_sphere_and_keeps_zero_rows(p):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 4, 3, 3, generator=g)
    w[2] = 0.0
    out = project(w, p)
    norms = lp_norm(out, p)
    assert norms[2] == 0 and torch.all(out[2] == 0)
    keep = torch.arange(6) != 2
    torch.testing.assert_close(norms[keep], torch.ones(5), rtol=0, atol=1e-6)
    # projection only rescales each unit
    ratio = out[0] / w[0]
    torch.testing.assert_close(ratio, ratio.flatten()[0].expand_as(ratio))


@pytest.mark.parametrize("p", PS)
def test_dual_map_round_trips_and_lands_on_the_dual_sphere(p):
    q = dual_exponent(p)
    g = torch.Generator().manual_seed(2)
    w = project(torch.randn(4, 7, generator=g, dtype=torch.float64), p)
    v = to_dual(w, p)
    torch.testing.assert_close(lp_norm(v, q), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    # closed form on the sphere: v = sign(w)|w|^(p-1), and back
    torch.testing.assert_close(v, torch.sign(w) * w.abs().pow(p - 1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(from_dual(v, p), w, rtol=1e-10, atol=1e-14)
    v2 = normalize(torch.randn(4, 7, generator=g, dtype=torch.float64), q)
    torch.testing.assert_close(to_dual(from_dual(v2, p), p), v2, rtol=1e-9, atol=1e-12)
    # float32: the weight -> dual -> weight direction is exact to float precision
    w32 = w.float()
    torch.testing.assert_close(from_dual(to_dual(w32, p), p), w32, rtol=1e-4, atol=1e-6)


def test_from_dual_hand_example():
    # p = 1.5 -> exponent 2; v = [0.5, -0.5] scaled onto the L3 sphere -> w = [2^(-2/3), -2^(-2/3)]
    w = from_dual(torch.tensor([[0.5, -0.5]]), 1.5)
    a = 2 ** (-2 / 3)
    torch.testing.assert_close(w, torch.tensor([[a, -a]]))


def test_hoyer_hand_values():
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([1.0, 0.0, 2 - math.sqrt(2), 1.0])
    torch.testing.assert_close(hoyer(x), expected)
    assert layer_hoyer(x) == pytest.approx(float(expected.mean()))


def test_mass_support_hand_values():
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [10.0, 1.0, 0.0, 0.0]])
    # squares 16+9 (of 25), 1+1+1+1, none, 100+1 (100/101 = 0.9901 of the mass in the first)
    assert mass_support(x).tolist() == [2, 4, 0, 1]
    assert mass_support(x, 0.5).tolist() == [1, 2, 0, 1]  # a share exactly at the bound counts as reached
    assert mass_support(x, 1.0).tolist() == [2, 4, 0, 2]
    assert mass_support(x.reshape(4, 2, 2)).tolist() == [2, 4, 0, 1]  # conv-shaped: units are dim 0
    with pytest.raises(ValueError, match="mass"):
        mass_support(x, 0.0)


def test_net_hoyer_weights_layers_by_size():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # Hoyer 1, 4 weights
    b = torch.ones(3, 4)  # Hoyer 0, 12 weights
    assert net_hoyer({"a": a, "b": b}) == pytest.approx(4 / 16)


def test_hoyer_needs_two_entries_per_unit():
    with pytest.raises(ValueError, match="at least 2 entries"):
        hoyer(torch.ones(3, 1))
    with pytest.raises(ValueError, match="at least one weight"):
        net_hoyer({})


@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0, float("nan"), float("inf")])
def test_bad_p_is_refused(bad):
    with pytest.raises(ValueError, match="p must be"):
        check_p(bad)
    with pytest.raises(ValueError, match="p must be"):
        to_dual(torch.ones(2, 2), bad)


@pytest.mark.parametrize("bad", ["1.2", True, None])
def test_p_of_wrong_type_is_refused(bad):
    with pytest.raises(TypeError, match="p must be a number"):
        check_p(bad)
