"""LpSS's own topology pieces: the row-wise threshold drop, the growth score, the grow-fraction controller."""

import pytest
import torch

from neuroplastic.lp.topology import (
    GrowController,
    adapted_threshold,
    growth_score,
    relative_magnitude,
    threshold_drop,
)


def test_threshold_drop_hand_computed():
    w = torch.tensor([[4.0, 1.0, 0.5, 3.0], [0.0, 2.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, False]])
    # row 0: active mean (4 + 1 + 0.5) / 3 = 1.833, threshold 0.917: 0.5 goes, inactive 3.0 stays out
    # row 1: active mean 2, threshold 1: both stay
    keep = threshold_drop(w, mask, 0.5)
    assert keep.tolist() == [[True, True, False, False], [False, True, True, False]]
    assert torch.equal(threshold_drop(w, mask, 0.0), mask)  # h = 0 drops nothing
    assert mask.tolist() == [[True, True, True, False], [False, True, True, False]]  # input untouched


def test_threshold_drop_never_revives_an_empty_row():
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mask = torch.tensor([[False, False, False], [True, True, False]])
    assert threshold_drop(w, mask, 0.2).tolist() == [[False, False, False], [True, True, False]]


def test_threshold_drop_works_per_conv_filter():
    w = torch.ones(2, 2, 2, 2)
    w[0, 0, 0, 0] = 0.01
    w[1] = 0.01  # a uniformly small filter keeps everything: the threshold is relative to its own mean
    keep = threshold_drop(w, torch.ones_like(w, dtype=torch.bool), 0.5)
    assert int((~keep).sum()) == 1 and not keep[0, 0, 0, 0]


def test_threshold_drop_bad_input():
    w = torch.ones(2, 3)
    with pytest.raises(TypeError, match="bool"):
        threshold_drop(w, torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="shape"):
        threshold_drop(w, torch.ones(3, 2, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="h must be a finite number >= 0"):
        threshold_drop(w, torch.ones(2, 3, dtype=torch.bool), -0.5)


def test_relative_magnitude_and_adapted_threshold_hand_computed():
    w = torch.tensor([[4.0, 1.0, 0.5, 3.0], [0.0, 2.0, -6.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, False]])
    # row means of the active entries: 11/6 and 4
    r = relative_magnitude(w, mask)
    torch.testing.assert_close(r, torch.tensor([[24 / 11, 6 / 11, 3 / 11, 18 / 11], [0.0, 0.5, 1.5, 0.0]]))
    # active ratios sorted: 3/11, 1/2, 6/11, 3/2, 24/11
    h = adapted_threshold([w], [mask], 3)
    assert 6 / 11 < h < 6 / 11 + 1e-6
    assert int((mask & ~threshold_drop(w, mask, h)).sum()) == 3
    h = adapted_threshold([w[:1], w[1:]], [mask[:1], mask[1:]], 4)  # over several layers together
    assert 1.5 < h < 1.5 + 1e-6  # above 1: an entry above its row's mean goes too
    assert threshold_drop(w, mask, h).tolist() == [[True, False, False, False], [False, False, False, False]]
    assert adapted_threshold([w], [mask], 0) == 0.0
    assert adapted_threshold([w], [mask], 99) > 24 / 11  # more than exist: all active entries
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert relative_magnitude(torch.ones(2, 2), empty).isinf().all()  # no active entry: never dropped


def test_growth_score_is_the_row_normalised_gradient():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-6.0, 8.0]])
    torch.testing.assert_close(growth_score(g, "signed_reference"), torch.tensor([[0.6, 0.8], [0, 0], [-0.6, 0.8]]))
    torch.testing.assert_close(growth_score(g), torch.tensor([[0.6, 0.8], [0, 0], [0.6, 0.8]]))
    with pytest.raises(ValueError, match="grow_score must be one of"):
        growth_score(g, "signed")


def test_reference_controller_hand_computed():
    c = GrowController(0.8, initial=0.95, gain=0.1)
    assert c.grow_fraction == 0.95
    assert c.fraction_for(100, 0.1, 1000) == 0.95  # the reference mode looks only at past updates
    # 0.6 < 0.8 * (1 - 0.1) = 0.72: grow less
    assert c.update(0.6, 0.2) == pytest.approx(0.9 * 0.75)
    # 0.75 >= 0.72: grow more
    assert c.update(0.75, 0.2) == pytest.approx(1.1 * 0.75 / 0.8)
    assert c.update(0.75, 0.0) == pytest.approx(0.9 * 0.75 / 0.8)  # h = 0: the band closes on the target


def test_exact_controller_hand_computed():
    c = GrowController(0.8, mode="exact")
    assert c.fraction_for(100, 0.78, 1000) == pytest.approx(0.8)  # 100 dropped, 20 too many active: grow 80
    assert c.fraction_for(100, 0.70, 1000) == 0.0  # 100 too many active: grow nothing
    assert c.fraction_for(100, 0.85, 1000) == pytest.approx(1.5)  # 50 too few active: grow 150
    assert c.fraction_for(0, 0.7, 1000) == pytest.approx(1.5)  # nothing dropped: unchanged
    assert c.update(0.5, 0.2) == pytest.approx(1.5)


def test_controller_state_round_trip_and_bad_input():
    c = GrowController(0.9, 0.95, 0.2)
    c.update(0.5, 0.1)
    d = GrowController(0.5)
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == c.state_dict()
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"target_sparsity must be a number in \(0, 1\)"):
            GrowController(bad)
    with pytest.raises(TypeError, match="target_sparsity"):
        GrowController("0.9")
    with pytest.raises(ValueError, match="grow_fraction_d"):
        GrowController(0.9, gain=1.0)
    with pytest.raises(ValueError, match="controller must be one of"):
        GrowController(0.9, mode="pid")
