"""Layer densities against hand computations (ERK cap loop included) and exact-count random masks."""

import math

import pytest
import torch

from neuroplastic.masks.density import er, erk, kept_count, layer_densities, random_masks, uniform

SHAPES = {"c": (4, 1, 3, 3), "l1": (100, 400), "l2": (10, 100)}  # numel 36, 40000, 1000
NUMEL = {"c": 36, "l1": 40000, "l2": 1000}


def total_kept(d):
    return sum(d[n] * NUMEL[n] for n in d)


def test_erk_one_cap_hand_computed():
    # raw: c (4+1+3+3)/36 = 11/36, l1 500/40000, l2 110/1000. First eps = 4103.6 / (11+500+110) -> c > 1.
    # Then c is dense: rhs = 0.1*41000 - 0.9*36 = 4067.6, eps = 4067.6 / (500 + 110).
    d = erk(SHAPES, 0.1)
    eps = 4067.6 / 610
    assert d["c"] == 1.0
    assert d["l1"] == pytest.approx(eps * 500 / 40000, rel=1e-12)
    assert d["l2"] == pytest.approx(eps * 110 / 1000, rel=1e-12)
    assert total_kept(d) == pytest.approx(0.1 * 41036, rel=1e-12)


def test_erk_two_caps_hand_computed():
    # density 0.5: c capped first; then eps = (20500 - 18) / 610 gives l2 = 3.69 > 1, capped too;
    # finally rhs = 0.5*40000 - 0.5*1036 = 19482 and l1 = 19482 / 40000.
    d = erk(SHAPES, 0.5)
    assert d == pytest.approx({"c": 1.0, "l2": 1.0, "l1": 19482 / 40000}, rel=1e-12)
    assert total_kept(d) == pytest.approx(0.5 * 41036, rel=1e-12)


def test_er_ignores_kernel_and_uniform():
    # ER raw: c (4+1)/(4*1) = 1.25, l1 0.0125, l2 0.11; c capped, then the same eps as ERK
    d = er(SHAPES, 0.1)
    assert d["c"] == 1.0 and d["l1"] == pytest.approx(4067.6 / 610 * 0.0125, rel=1e-12)
    d = er({"c": (8, 8, 3, 3), "l": (10, 20)}, 0.2)  # raw 16/64 = .25, 30/200 = .15; no cap
    eps = 0.2 * (576 + 200) / (0.25 * 576 + 0.15 * 200)
    assert d == pytest.approx({"c": 0.25 * eps, "l": 0.15 * eps}, rel=1e-12)
    assert uniform(SHAPES, 0.3) == {"c": 0.3, "l1": 0.3, "l2": 0.3}
    assert layer_densities("erk", SHAPES, 0.1) == erk(SHAPES, 0.1)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, "0.5"])
def test_bad_density_is_an_error(bad):
    with pytest.raises(ValueError, match="density"):
        erk(SHAPES, bad)


def test_unknown_distribution_is_an_error():
    with pytest.raises(ValueError, match="uniform"):
        layer_densities("ERK-ish", SHAPES, 0.1)


def test_kept_count_rounds_half_up():
    assert kept_count(0.5, 5) == 3 and kept_count(0.3, 36) == 11 and kept_count(0.01, 10) == 0
    assert kept_count(1.0, 7) == 7


def test_random_masks_exact_counts_and_seeded():
    dens = erk(SHAPES, 0.1)
    m1 = random_masks(SHAPES, dens, torch.Generator().manual_seed(0))
    m2 = random_masks(SHAPES, dens, torch.Generator().manual_seed(0))
    m3 = random_masks(SHAPES, dens, torch.Generator().manual_seed(1))
    for n in SHAPES:
        assert m1[n].shape == SHAPES[n] and m1[n].dtype == torch.bool
        assert int(m1[n].sum()) == math.floor(dens[n] * NUMEL[n] + 0.5)
        assert torch.equal(m1[n], m2[n])
    assert not torch.equal(m1["l1"], m3["l1"])
