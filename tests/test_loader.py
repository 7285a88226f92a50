"""TensorLoader and the batch-wise augmentations, on small hand-built tensors."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
import torch.nn.functional as F

from neuroplastic.data import TensorLoader
from neuroplastic.data.augment import cutout, horizontal_flip, normalize, random_crop

IMAGE = torch.arange(9.0).view(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]


def _data(n: int = 10, c: int = 1, side: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n * c * side * side, dtype=torch.float32).view(n, c, side, side)
    return x, torch.arange(n)


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


# ---- augmentations on hand-built images ------------------------------------------------------------

@pytest.mark.parametrize(("top", "left", "expected"), [
    (1, 1, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),  # centre: no shift
    (0, 0, [[0, 0, 0], [0, 0, 1], [0, 3, 4]]),  # window at the padded top-left corner
    (2, 2, [[4, 5, 0], [7, 8, 0], [0, 0, 0]]),
    (0, 2, [[0, 0, 0], [1, 2, 0], [4, 5, 0]]),
])
def test_random_crop_zero_padding(top, left, expected):
    out = random_crop(IMAGE, torch.tensor([top]), torch.tensor([left]), padding=1)
    assert out[0, 0].tolist() == expected


def test_random_crop_reflect_padding():
    out = random_crop(IMAGE, torch.tensor([0]), torch.tensor([0]), padding=1, padding_mode="reflect")
    # reflection mirrors without repeating the edge: row -1 is row 1, column -1 is column 1
    assert out[0, 0].tolist() == [[4, 3, 4], [1, 0, 1], [4, 3, 4]]


def test_random_crop_offsets_are_per_example_and_per_channel_consistent():
    x = torch.stack([IMAGE[0].repeat(2, 1, 1), 10 + IMAGE[0].repeat(2, 1, 1)])  # 2 examples, 2 channels
    out = random_crop(x, torch.tensor([1, 2]), torch.tensor([1, 0]), padding=1)
    assert torch.equal(out[0], x[0])
    expected = F.pad(x[1:], (1, 1, 1, 1))[0, :, 2:5, 0:3]
    assert torch.equal(out[1], expected)


def test_horizontal_flip_only_flagged_examples():
    x = torch.cat([IMAGE, IMAGE])
    out = horizontal_flip(x, torch.tensor([True, False]))
    assert out[0, 0].tolist() == [[2, 1, 0], [5, 4, 3], [8, 7, 6]]
    assert torch.equal(out[1], IMAGE[0])


def test_cutout_square_and_clipping():
    x = torch.ones(2, 1, 5, 5)
    out = cutout(x, torch.tensor([2, 0]), torch.tensor([2, 0]), length=2)
    hole = (out[0, 0] == 0).nonzero().tolist()
    assert hole == [[1, 1], [1, 2], [2, 1], [2, 2]]  # rows/cols centre - 1 .. centre
    assert (out[1, 0] == 0).nonzero().tolist() == [[0, 0]]  # rows -1..0 clipped to row 0


def test_normalize_per_channel():
    x = torch.ones(1, 2, 2, 2)
    out = normalize(x, torch.tensor([0.5, 1.0]), torch.tensor([0.25, 2.0]))
    assert out[0, 0].unique().tolist() == [2.0] and out[0, 1].unique().tolist() == [0.0]


# ---- the loader ----------------------------------------------------------------------------------

def test_len_and_drop_last():
    x, y = _data(10)
    assert len(TensorLoader(x, y, 4)) == 3 and len(TensorLoader(x, y, 4, drop_last=True)) == 2
    assert [len(b[1]) for b in TensorLoader(x, y, 4)] == [4, 4, 2]
    assert [len(b[1]) for b in TensorLoader(x, y, 4, drop_last=True)] == [4, 4]


def test_ordered_loader_gives_the_split_in_order():
    x, y = _data(10)
    batches = _epoch(TensorLoader(x, y, 4))
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


def test_shuffle_is_a_permutation_and_changes_each_epoch():
    x, y = _data(50)
    loader = TensorLoader(x, y, 8, shuffle=True, seed=1)
    first, second = _epoch(loader), _epoch(loader)
    for epoch in (first, second):
        labels = torch.cat([b[1] for b in epoch])
        assert sorted(labels.tolist()) == list(range(50))
        assert torch.equal(torch.cat([b[0] for b in epoch]), x[labels])  # images travel with labels
    assert not _same(first, second)
    assert loader.epoch == 2


def test_same_seed_same_batches_different_seed_different():
    x, y = _data(40, side=6)
    options = dict(batch_size=8, shuffle=True, crop_padding=2, hflip=True, cutout=2)
    a = TensorLoader(x, y, seed=5, **options)
    b = TensorLoader(x, y, seed=5, **options)
    c = TensorLoader(x, y, seed=6, **options)
    epochs_a = [_epoch(a) for _ in range(2)]
    assert all(_same(ea, _epoch(b)) for ea in epochs_a)
    assert not _same(epochs_a[0], _epoch(c))


def test_loader_is_independent_of_the_global_rng():
    x, y = _data(20)
    torch.manual_seed(0)
    a = _epoch(TensorLoader(x, y, 4, shuffle=True, seed=2, hflip=True))
    torch.manual_seed(1)
    b = _epoch(TensorLoader(x, y, 4, shuffle=True, seed=2, hflip=True))
    assert _same(a, b)


def test_augmented_batches_are_shifted_or_mirrored_copies():
    x, y = _data(30, side=5)
    loader = TensorLoader(x, y, 7, shuffle=True, seed=0, crop_padding=1, hflip=True)
    padded = F.pad(x, (1, 1, 1, 1))
    flips = []
    for xb, yb in loader:
        for image, label in zip(xb, yb, strict=True):
            candidates = []
            for top, left in itertools.product(range(3), range(3)):
                window = padded[label, :, top:top + 5, left:left + 5]
                candidates.append((torch.equal(image, window), False))
                candidates.append((torch.equal(image, window.flip(-1)), True))
            matches = [flipped for ok, flipped in candidates if ok]
            assert matches, "output is not a shifted (and maybe mirrored) copy of its input"
            flips.append(matches[0])
    assert 5 < sum(flips) < 25  # about half mirrored


def test_normalisation_is_applied_per_batch():
    x = torch.rand(12, 3, 4, 4)
    loader = TensorLoader(x, torch.zeros(12), 5, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))
    xb = next(iter(loader))[0]
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    expected = (x[:5] - mean) / std
    assert torch.allclose(xb, expected)


def test_flat_features_can_be_shuffled_and_normalised():
    x = torch.randn(9, 100)
    loader = TensorLoader(x, torch.arange(9), 4, shuffle=True, mean=[0.0] * 100, std=[2.0] * 100)
    for xb, yb in loader:
        assert torch.allclose(xb, x[yb] / 2)


@pytest.mark.parametrize("stop_after", [0, 3, 5])
def test_resume_gives_identical_subsequent_batches(stop_after):
    """A state taken after ``stop_after`` batches of the second epoch resumes with the same batches."""
    x, y = _data(37, side=6)
    options = dict(batch_size=8, shuffle=True, seed=11, crop_padding=2, padding_mode="reflect", hflip=True,
                   cutout=3)
    reference = TensorLoader(x, y, **options)
    expected = [_epoch(reference) for _ in range(3)]

    original = TensorLoader(x, y, **options)
    _epoch(original)
    it = iter(original)
    for _ in range(stop_after):
        next(it)
    if stop_after == 5:  # the last batch was taken but the epoch's end not yet seen
        assert original.state_dict()["position"] == len(original)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # states survive a checkpoint file
    buffer.seek(0)
    resumed = TensorLoader(x, y, **{**options, "seed": 999})  # the state, not the seed, decides
    resumed.load_state_dict(torch.load(buffer))
    rest_of_epoch = _epoch(resumed)
    assert _same(rest_of_epoch, expected[1][stop_after:])
    assert _same(_epoch(resumed), expected[2])
    assert resumed.epoch == 3


def test_broken_off_epoch_counts_as_done():
    x, y = _data(20)
    loader = TensorLoader(x, y, 4, shuffle=True)
    next(iter(loader))
    assert loader.state_dict()["position"] == 1
    assert len(_epoch(loader)) == 5  # a fresh full epoch
    assert loader.epoch == 2


def test_load_state_dict_refuses_another_configuration():
    x, y = _data(20)
    state = TensorLoader(x, y, 4, shuffle=True).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(x, y, 5, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="num_examples"):
        TensorLoader(x[:10], y[:10], 4, shuffle=True).load_state_dict(state)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(batch_size=20, drop_last=True), "drop_last"),
    (dict(batch_size=2, padding_mode="edge", crop_padding=1), "padding_mode"),
    (dict(batch_size=2, crop_padding=-1), "crop_padding"),
    (dict(batch_size=2, crop_padding=4, padding_mode="reflect"), "reflect"),
    (dict(batch_size=2, mean=(0.5,)), "mean and std"),
    (dict(batch_size=2, mean=(0.5, 0.5), std=(1.0, 1.0)), "one value per channel"),
    (dict(batch_size=2, mean=(0.5,), std=(0.0,)), "std"),
])
def test_bad_arguments_are_refused(kwargs, match):
    x, y = _data(10)
    with pytest.raises(ValueError, match=match):
        TensorLoader(x, y, **kwargs)


def test_spatial_augmentation_needs_images():
    with pytest.raises(ValueError, match="NCHW"):
        TensorLoader(torch.zeros(4, 10), torch.zeros(4), 2, hflip=True)
    with pytest.raises(ValueError, match="same length"):
        TensorLoader(torch.zeros(4, 10), torch.zeros(3), 2)


def test_one_mean_and_std_apply_to_every_feature_of_vectors():
    """A data set with one normalisation constant (the moons vectors: mean 0, std 1) works with normalize on."""
    x, y = torch.arange(12.0).view(3, 4), torch.arange(3)
    (batch, _), = TensorLoader(x, y, 3, mean=(1.0,), std=(2.0,))
    assert torch.equal(batch, (x - 1.0) / 2.0)


def test_processes_share_each_batch_of_the_same_plan():
    x = torch.arange(21, dtype=torch.float32).view(21, 1)
    y = torch.arange(21)
    whole = TensorLoader(x, y, batch_size=4, shuffle=True, seed=3)
    shards = [TensorLoader(x, y, batch_size=4, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    batches = list(whole)
    parts = [list(s) for s in shards]
    # the last batch (1 example) is kept by one process, left out by two (one would get no example)
    assert len(whole) == 6 and len(shards[0]) == len(shards[1]) == 5
    for b, (xb, _) in enumerate(batches[:5]):
        together = torch.cat([parts[0][b][0], parts[1][b][0]])
        assert sorted(together.flatten().tolist()) == sorted(xb.flatten().tolist())
        assert torch.equal(parts[0][b][0], xb[0::2]) and torch.equal(parts[1][b][0], xb[1::2])
    assert len(parts[0]) == len(parts[1]) == 5
    with pytest.raises(ValueError, match="rank must be an int in"):
        TensorLoader(x, y, batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"batch_size \(1\) must be >= world_size \(2\)"):
        TensorLoader(x, y, batch_size=1, rank=0, world_size=2)
