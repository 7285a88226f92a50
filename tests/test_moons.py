
import numpy as np
import pytest
import torch

from neuroplastic.data.moons import load_vat_moons, make_moons_2d, moons_splits
from shared_data import VAT


def test_generated_moons_follow_the_paper_distribution():
    points, y = make_moons_2d(4000, noise=0.0, rng=np.random.default_rng(1))
    assert (y == 0).sum() == (y == 1).sum() == 2000
    centre0, centre1 = np.array([-0.5, 0.25]), np.array([0.5, -0.25])
    assert np.allclose(np.linalg.norm(points[y == 0] - centre0, axis=1), 1.0)
    assert np.allclose(np.linalg.norm(points[y == 1] - centre1, axis=1), 1.0)
    angle0 = np.degrees(np.arctan2(*(points[y == 0] - centre0).T[::-1])) % 360
    assert angle0.min() >= 90 - 1e-6


def test_splits_are_seeded_embedded_and_disjoint():
    a, b = moons_splits(seed=3), moons_splits(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(moons_splits(seed=4).x_train, a.x_train)
    assert a.x_train.shape == (500, 100) and a.x_val.shape == (200, 100) and a.x_test.shape == (500, 100)
    assert torch.allclose(a.basis @ a.basis.T, torch.eye(2), atol=1e-5)
    # the points lie in the span of the basis: projecting and embedding again is the identity
    assert torch.allclose(a.embed(a.to_2d(a.x_test)), a.x_test, atol=1e-5)


@pytest.mark.skipif(not VAT.is_file(), reason=f"the paper's moons file is not at {VAT}")
def test_vat_file_loads_with_a_validation_split_carved_from_train():
    s = load_vat_moons(VAT, n_val=100)
    assert s.x_train.shape == (400, 100) and s.x_val.shape == (100, 100) and s.x_test.shape == (500, 100)
    assert int(s.y_test.sum()) == 250
    points = s.to_2d(s.x_test)
    assert points.abs().max() < 2.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        make_moons_2d(3)
    with pytest.raises(FileNotFoundError, match="syndata_1.pkl"):
        load_vat_moons("/nonexistent/file.pkl")


def test_load_dataset_serves_moons():
    from neuroplastic.data import load_dataset

    s = load_dataset("moons", val_size=200, seed=1)
    direct = moons_splits(seed=1, n_val=200)
    assert torch.equal(s.train_x, direct.x_train) and torch.equal(s.test_y, direct.y_test)
    assert s.input_shape == (100,) and s.num_classes == 2 and len(s.val_y) == 200
    assert load_dataset("moons", val_size=0, seed=1).val_x is None
    with pytest.raises(ValueError, match="even"):
        load_dataset("moons", val_size=3)
    if VAT.is_file():
        vat = load_dataset("moons-vat", data_dir=VAT.parents[1], val_size=100, seed=0)
        assert len(vat.train_y) == 400 and len(vat.test_y) == 500
