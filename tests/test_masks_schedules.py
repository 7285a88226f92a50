"""Drop-fraction and density schedules against their closed forms."""

import math

import pytest

from neuroplastic.masks.schedules import Constant, CosineDecay, CubicDensity


def test_cosine_decay_closed_form_and_stop():
    s = CosineDecay(0.5, 0.005, 1000)
    assert s(0) == 0.5 and s(1000) == pytest.approx(0.005) and s(5000) == pytest.approx(0.005)
    assert s(500) == pytest.approx((0.5 + 0.005) / 2)
    assert s(250) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    r = CosineDecay(0.3, 0.0, 750, stop_step=750)
    assert r(749) > 0 and r(750) == 0.0 and r(10_000) == 0.0
    assert Constant(0.3, stop_step=10)(9) == 0.3 and Constant(0.3, stop_step=10)(10) == 0.0


def test_cubic_density_closed_form_reaches_final():
    s = CubicDensity(1.0, 0.05, start_step=100, end_step=1100, update_every=300)
    assert s(0) == 1.0 and s(100) == 1.0
    for t in (250, 400, 700, 1000):
        assert s(t) == pytest.approx(0.05 + 0.95 * (1 - (t - 100) / 1000) ** 3, rel=1e-12)
    assert s(1100) == 0.05 and s(5000) == 0.05
    # updates every 300 steps from 100, and at 1100 although 1000 is not a multiple of 300
    assert [t for t in range(0, 2000) if s.is_update_step(t)] == [100, 400, 700, 1000, 1100]
    vals = [s(t) for t in range(100, 1101)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False)), "monotone non-increasing"


def test_schedule_state_dict_round_trip_and_validation():
    s = CubicDensity(0.5, 0.1, 0, 10, 2)
    t = CubicDensity(1.0, 0.9, 5, 6, 1)
    t.load_state_dict(s.state_dict())
    assert [t(i) for i in range(12)] == [s(i) for i in range(12)]
    c = CosineDecay(0.1, 0.0, 5)
    c.load_state_dict(CosineDecay(0.5, 0.005, 100, stop_step=50).state_dict())
    assert c(50) == 0.0 and c(0) == 0.5
    with pytest.raises(ValueError, match="final_density"):
        CubicDensity(0.1, 0.5, 0, 10, 1)
    with pytest.raises(ValueError, match="end_step"):
        CubicDensity(1.0, 0.5, 10, 5, 1)
    with pytest.raises(ValueError, match="update_every"):
        CubicDensity(1.0, 0.5, 0, 5, 0)
    with pytest.raises(ValueError, match="initial"):
        CosineDecay(1.5, 0.0, 10)
