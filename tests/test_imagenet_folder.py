"""The ImageNet folder reader and its streaming loader, on a tiny folder of JPEGs written here; the
ImageNet recipes resolve and build (they are not trained here)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuroplastic.data import ImageFolderLoader, load_dataset, load_image_folder, scan_image_folder
from neuroplastic.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop_box
from neuroplastic.errors import BadInput, DataFileError, DatasetNotFoundError
from neuroplastic.models import get_model
from neuroplastic.recipes import prepare, resolve
from neuroplastic.train.step import train_step, training_criterion

CLASSES = ("cat", "ant", "bee")  # written in this order; labels follow the sorted names: ant 0, bee 1, cat 2
SIZES = ((40, 30), (30, 50), (64, 64), (50, 36))  # (width, height), varied aspect ratios
SMALL = {"crop_size": 16, "resize_size": 20}  # small images keep the tests fast


def _write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """ROOT/imagenet/{train,val}/<class>/*.JPEG: 3 classes, 4 training and 2 test images each, plus a
    file that is not an image (ignored)."""
    root = tmp_path / "imagenet"
    seed = 0
    for split, count in (("train", 4), ("val", 2)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for k in range(count):
                seed += 1
                _write_jpeg(root / split / name / f"{name}_{k}.JPEG", *SIZES[(k + seed) % len(SIZES)], seed)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def _batches(loader, n=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader:
        out.append(batch)
        if n is not None and len(out) == n:
            break
    return out


def _train_loader(folder: Path, **options) -> ImageFolderLoader:
    paths, labels, _ = scan_image_folder(folder / "train")
    kwargs = {"batch_size": 4, "shuffle": True, "seed": 3, "train": True, **SMALL, **options}
    return ImageFolderLoader(paths, labels, **kwargs)


def test_labels_follow_the_sorted_class_folders(folder):
    paths, labels, classes = scan_image_folder(folder / "train")
    assert classes == ["ant", "bee", "cat"]
    assert len(paths) == 12 and not any(p.endswith(".txt") for p in paths)
    assert [classes[int(y)] for y in labels] == [Path(p).parent.name for p in paths]
    assert labels.dtype == torch.int64 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_load_dataset_gives_splits_and_loaders_of_the_right_shapes(folder):
    splits = load_dataset("imagenet", data_dir=folder.parent, val_size=3, seed=0)
    assert (splits.num_classes, splits.input_shape) == (3, (3, 224, 224))
    assert (len(splits.train[0]), len(splits.val[0]), len(splits.test[0])) == (9, 3, 6)
    assert set(splits.train[0]).isdisjoint(splits.val[0])
    same = load_image_folder("imagenet", folder, val_size=3, seed=0, num_workers=0, **SMALL)  # the root itself
    assert same.train[0] == splits.train[0] and same.input_shape == (3, 16, 16)
    train = same.train_loader(4, seed=1)
    assert len(train) == 3
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = [x for x, _ in same.eval_loader("test", batch_size=4)]
    assert [tuple(x.shape) for x in xs] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    with pytest.raises(BadInput, match="crop_padding and cutout must be 0"):
        same.train_loader(4, crop_padding=4)


def test_eval_transform_is_deterministic_and_matches_a_hand_computation(tmp_path):
    # 20 x 25 (w x h): the shorter side is already resize_size=20, so no resampling; center crop 16:
    # top = round((25 - 16) / 2) = round(4.5) = 4 (round half to even, as torchvision), left = 2
    pixels = np.random.default_rng(5).integers(0, 256, (25, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    # a uniform 60 x 40 image stays uniform through the resize to 30 x 20 and the crop
    Image.new("RGB", (60, 40), (200, 100, 50)).save(tmp_path / "b.png")
    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    loader = ImageFolderLoader(paths, torch.tensor([0, 1]), batch_size=2, **SMALL)
    (x, y), = _batches(loader)
    (again, _), = _batches(loader)
    assert torch.equal(x, again) and y.tolist() == [0, 1]
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    expected = (pixels[4:20, 2:18] / 255.0 - mean) / std
    torch.testing.assert_close(x[0], torch.from_numpy(expected.transpose(2, 0, 1)).float())
    colour = (np.array([200, 100, 50]) / 255.0 - mean) / std
    torch.testing.assert_close(x[1], torch.from_numpy(colour).float().view(3, 1, 1).expand(3, 16, 16))


def test_random_resized_crop_boxes_fit_and_follow_the_ranges():
    rng = random.Random(0)
    for width, height in ((40, 30), (30, 50), (500, 20), (7, 7), (1, 300)):
        for _ in range(50):
            top, left, h, w = random_resized_crop_box(width, height, rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
    assert random_resized_crop_box(40, 30, random.Random(0), scale=(1, 1), ratio=(4 / 3, 4 / 3)) == (0, 0, 30, 40)


def test_training_batches_are_seeded_and_change_between_epochs(folder):
    first, second = _batches(_train_loader(folder)), _batches(_train_loader(folder))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    loader = _train_loader(folder)
    epoch0, epoch1 = _batches(loader), _batches(loader)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])
    assert sorted(torch.cat([y for _, y in epoch0]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_two_ranks_share_each_batch_of_the_one_process_plan(folder):
    whole = _batches(_train_loader(folder))
    ranks = [_batches(_train_loader(folder, rank=r, world_size=2)) for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 3
    for b, (x, y) in enumerate(whole):
        (x0, y0), (x1, y1) = ranks[0][b], ranks[1][b]
        assert torch.equal(x0, x[0::2]) and torch.equal(x1, x[1::2])
        assert torch.equal(y0, y[0::2]) and torch.equal(y1, y[1::2])
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())  # a partition of the batch


def test_resume_mid_epoch_gives_the_remaining_batches(folder):
    original = _train_loader(folder)
    _batches(original)  # one whole epoch first: the state must carry the epoch's generator state
    batches = iter(original)
    next(batches)
    state = original.state_dict()  # taken mid-epoch, as fit's checkpoint does
    assert (state["epoch"], state["position"]) == (1, 1)
    rest = list(batches)
    restored = _train_loader(folder)
    restored.load_state_dict(state)
    resumed = _batches(restored)
    assert len(resumed) == len(rest) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, resumed, strict=True))
    assert torch.equal(_batches(original)[0][0], _batches(restored)[0][0])  # and the epochs after it
    with pytest.raises(ValueError, match="batch_size=4 but this loader has 6"):
        _train_loader(folder, batch_size=6).load_state_dict(state)


def test_worker_processes_give_the_same_batches(folder):
    plain = _batches(_train_loader(folder))
    workers = _batches(_train_loader(folder, num_workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, workers, strict=True))


def test_bad_folders_and_files_are_named(folder, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"no train/ and val/ folders in .*nowhere.*cannot be downloaded"):
        load_dataset("imagenet", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="image folder .*missing does not exist"):
        scan_image_folder(tmp_path / "missing")
    (folder / "train" / "dog").mkdir()
    with pytest.raises(BadInput, match=r"class folder .*train/dog has no images"):
        scan_image_folder(folder / "train")
    (folder / "train" / "dog").rmdir()
    (folder / "val" / "emu").mkdir()
    with pytest.raises(BadInput, match=r"class folders of .*val differ from the training classes: missing \[\], "
                                       r"extra \['emu'\]"):
        load_image_folder("imagenet", folder.parent)
    (folder / "val" / "emu").rmdir()
    bad = folder / "train" / "bee" / "bee_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(DataFileError, match=r"cannot decode image .*bee_1\.JPEG"):
        _batches(_train_loader(folder, shuffle=False, batch_size=12))
    bad.write_bytes(b"this is no jpeg")
    with pytest.raises(DataFileError, match=r"cannot decode image .*bee_1\.JPEG"):
        _batches(_train_loader(folder, shuffle=False, batch_size=12))
    with pytest.raises(BadInput, match=r"resize_size must be an int >= 16, got 8"):
        _train_loader(folder, resize_size=8)
    with pytest.raises(BadInput, match=r"rank must be an int in \[0, world_size=2\), got 2"):
        _train_loader(folder, rank=2, world_size=2)


def test_imagenet_resnet50_has_the_torchvision_size():
    model = get_model("resnet50_imagenet")
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


@pytest.mark.parametrize("name", ["dst-imagenet-resnet50-granet-s80", "dst-imagenet-resnet50-granet-s90",
                                  "dst-imagenet-resnet50-rigl-s80", "dst-imagenet-resnet50-rigl-s90"])
def test_imagenet_recipes_build_on_a_tiny_folder(name, folder, tmp_path, monkeypatch):
    recipe = resolve(name)
    assert recipe["data"]["name"] == "imagenet" and recipe["model"]["name"] == "resnet50_imagenet"
    density = recipe["method"].get("final_density", recipe["method"].get("density"))
    assert density == {"80": 0.2, "90": 0.1}[name[-2:]]
    monkeypatch.setenv("NEUROPLASTIC_DATA_WORKERS", "0")
    prep = prepare(name, ["epochs_scale=0.01", "data.val_size=2", "data.batch_size=2"], data_dir=folder.parent,
                   out=tmp_path / "run")
    assert prep.input_shape == (3, 224, 224) and prep.model.fc.out_features == 3
    assert len(prep.loaders["train"]) == 5 and prep.loaders["test"].dataset_size == 6
    assert prep.method.architecture()["params"] < prep.method.architecture()["params_dense"]
    if name.endswith("granet-s90"):  # one training step of the sparse ResNet-50 on decoded 224 x 224 crops
        x, y = next(iter(prep.loaders["train"]))
        assert x.shape == (2, 3, 224, 224)
        prep.method.set_epoch(0)
        loss, _ = train_step(prep.model, prep.method, prep.optimizers, prep.schedules, x[:1], y[:1],
                             training_criterion(prep.method.closure_kind))
        assert torch.isfinite(loss)


def _fit(folder: Path, run_dir: Path, resume: bool = False, kill_at_step: int | None = None):
    from torch import nn

    from neuroplastic.train import build_optimizer, build_schedule, fit
    from train_fakes import NoisyMethod

    torch.manual_seed(0)
    splits = load_image_folder("imagenet", folder, val_size=3, seed=0, num_workers=0, **SMALL)
    loaders = {"train": splits.train_loader(3, seed=1), "val": splits.eval_loader("val", 3),
               "test": splits.eval_loader("test", 3)}
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    optimizer = build_optimizer(model.parameters(), {"name": "sgd", "lr": 0.05, "momentum": 0.9})
    schedule = build_schedule(optimizer, None, epochs=3, steps_per_epoch=len(loaders["train"]))
    method = NoisyMethod(model, seed=0, kill_at_step=kill_at_step)
    fit(model, method, [optimizer], [schedule], loaders, epochs=3, run_dir=run_dir, resume=resume, progress=False,
        tensorboard=False)
    return model


def test_fit_resumes_a_killed_run_exactly(folder, tmp_path):
    whole = _fit(folder, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of epoch 1 (3 steps per epoch)
        _fit(folder, tmp_path / "b", kill_at_step=3 + 1)
    resumed = _fit(folder, tmp_path / "b", resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
