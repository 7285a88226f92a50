"""Drop and grow rules on 8-element tensors, masks computed by hand (jaxpruner style)."""

import pytest
import torch

from neuroplastic.masks.rules import drop_by_magnitude, global_magnitude_masks, grow_by_score, grow_random


def b(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


W = torch.tensor([0.5, -0.1, 0.3, 0.0, -0.9, 0.2, 0.05, -0.3])
M = b(1, 1, 1, 0, 1, 1, 0, 1)


def test_drop_by_magnitude_hand_computed():
    # active |w|: 0:.5 1:.1 2:.3 4:.9 5:.2 7:.3 -> the two smallest are 1 and 5
    assert torch.equal(drop_by_magnitude(W, M, 2), b(1, 0, 1, 0, 1, 0, 0, 1))
    # the third smallest is a tie (.3 at 2 and 7): the lower index goes first
    assert torch.equal(drop_by_magnitude(W, M, 3), b(1, 0, 0, 0, 1, 0, 0, 1))
    # inactive entries (3: |w|=0, 6: .05) are never counted as drops
    assert torch.equal(drop_by_magnitude(W, M, 0), M)
    assert int(drop_by_magnitude(W, M, 6).sum()) == 0
    assert torch.equal(M, b(1, 1, 1, 0, 1, 1, 0, 1)), "input mask must not be modified"


def test_drop_by_magnitude_rejects_bad_counts():
    with pytest.raises(ValueError, match="only 6 available"):
        drop_by_magnitude(W, M, 7)
    with pytest.raises(ValueError, match="non-negative"):
        drop_by_magnitude(W, M, -1)
    with pytest.raises(TypeError, match="bool"):
        drop_by_magnitude(W, M.float(), 1)


def test_grow_by_score_hand_computed_never_picks_active():
    mask = b(1, 0, 0, 0, 1, 0, 0, 1)
    score = torch.tensor([9.0, 0.0, 0.0, 5.0, 9.0, 0.0, -1.0, 0.0])
    assert torch.equal(grow_by_score(score, mask, 1), b(1, 0, 0, 1, 1, 0, 0, 1))
    # after index 3, zeros tie at 1, 2, 5: lower indices first; active 0, 4, 7 (score 9/0) never picked
    assert torch.equal(grow_by_score(score, mask, 3), b(1, 1, 1, 1, 1, 0, 0, 1))
    assert torch.equal(grow_by_score(score, mask, 5), b(1, 1, 1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="only 5 available"):
        grow_by_score(score, mask, 6)


def test_grow_by_score_all_zero_scores_still_grows_exactly_n():
    # the sparse_learning under-growth bug: sorting all positions picks active ones when scores tie at 0
    mask = b(1, 1, 1, 1, 0, 0, 0, 0)
    new = grow_by_score(torch.zeros(8), mask, 3)
    assert int(new.sum()) == 7
    assert torch.equal(new, b(1, 1, 1, 1, 1, 1, 1, 0))


def test_grow_by_score_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        grow_by_score(torch.tensor([float("nan")] * 8), b(1, 0, 0, 0, 0, 0, 0, 0), 1)


def test_grow_random_exact_inactive_and_seeded():
    mask = b(1, 0, 1, 0, 0, 1, 0, 0)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(3)
        new = grow_random(mask, 3, g)
        assert int(new.sum()) == 6
        assert torch.all(new[mask]), "active entries stay active"
        outs.append(new)
    assert torch.equal(outs[0], outs[1]), "same seed, same growth"
    # all 5 choose 3 = 10 subsets are reachable: many seeds give more than one outcome
    seen = {tuple(grow_random(mask, 3, torch.Generator().manual_seed(s)).tolist()) for s in range(40)}
    assert len(seen) > 3


def test_global_magnitude_masks_hand_computed():
    w = {"a": torch.tensor([0.1, 0.5, -0.7, 0.2]), "b": torch.tensor([0.3, -0.05, 0.6, 0.0])}
    out = global_magnitude_masks(w, None, 0.5)  # keep 4 of 8: .7 .6 .5 .3
    assert torch.equal(out["a"], b(0, 1, 1, 0)) and torch.equal(out["b"], b(1, 0, 1, 0))
    masks = {"a": b(1, 0, 1, 1), "b": b(1, 1, 1, 1)}  # a[1] (.5) is pruned already and must stay pruned
    out = global_magnitude_masks(w, masks, 0.5)  # .7 .6 .3 .2
    assert torch.equal(out["a"], b(0, 0, 1, 1)) and torch.equal(out["b"], b(1, 0, 1, 0))
    with pytest.raises(ValueError, match="only 7 available"):
        global_magnitude_masks(w, masks, count=8)


def test_global_magnitude_masks_ties_and_exact_count():
    w = {"a": torch.tensor([0.3, 0.1]), "b": torch.tensor([0.3, 0.1])}
    out = global_magnitude_masks(w, None, count=1)
    assert out["a"].tolist() == [True, False] and out["b"].tolist() == [False, False]
    w = {"x": torch.randn(7, 5), "y": torch.randn(3, 3, 2, 2)}
    for d in (0.0, 0.1, 0.37, 1.0):
        out = global_magnitude_masks(w, None, d)
        assert sum(int(m.sum()) for m in out.values()) == int(d * 71 + 0.5)
