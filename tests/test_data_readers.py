"""Readers, checksums, missing-file errors and the validation split, on the real files in shared/data."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroplastic.data import (
    DATASETS,
    ChecksumError,
    DatasetNotFoundError,
    DataSplits,
    list_datasets,
    load_dataset,
    resolve_data_dir,
    split_indices,
)
from neuroplastic.data import download as download_module
from neuroplastic.data.cifar import read_cifar_batch
from neuroplastic.data.idx import parse_idx, read_idx
from neuroplastic.data.moons import VAT_SHA256, load_vat_moons
from neuroplastic.errors import DataFileError
from shared_data import CIFAR_SUBSET, SHARED, VAT, needs_data

# Published per-class counts of MNIST (digits 0..9).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def mnist():
    """MNIST read once for the module, with a 5,000-example validation split (seed 3)."""
    return load_dataset("mnist", data_dir=SHARED, val_size=5000, seed=3)


@pytest.fixture(scope="module")
def mnist_raw_train_labels():
    return read_idx(SHARED / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz")


@needs_data
def test_mnist_shapes_and_class_counts(mnist, mnist_raw_train_labels):
    assert mnist.train_x.shape == (55000, 1, 28, 28) and mnist.val_x.shape == (5000, 1, 28, 28)
    assert mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert 0.0 <= float(mnist.train_x.min()) and float(mnist.train_x.max()) <= 1.0
    assert mnist_raw_train_labels.shape == (60000,)
    assert np.bincount(mnist_raw_train_labels).tolist() == MNIST_TRAIN_COUNTS  # digit 1: 6742
    both = torch.cat([mnist.train_y, mnist.val_y])
    assert torch.bincount(both).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_y).tolist() == MNIST_TEST_COUNTS
    assert (mnist.num_classes, mnist.input_shape, mnist.name) == (10, (1, 28, 28), "mnist")


@needs_data
def test_mnist_normalisation_constants_match_the_data(mnist):
    pixels = torch.cat([mnist.train_x, mnist.val_x])
    assert abs(float(pixels.mean()) - mnist.mean[0]) < 1e-3
    assert abs(float(pixels.std()) - mnist.std[0]) < 1e-3


@needs_data
def test_validation_split_is_the_seeded_selection(mnist, mnist_raw_train_labels):
    train_idx, val_idx = split_indices(60000, 5000, seed=3)
    assert torch.equal(mnist.val_y, torch.from_numpy(mnist_raw_train_labels[val_idx.numpy()]))
    assert torch.equal(mnist.train_y, torch.from_numpy(mnist_raw_train_labels[train_idx.numpy()]))


def test_split_indices_partition_and_seed():
    train, val = split_indices(100, 0.25, seed=0)
    assert len(val) == 25 and len(train) == 75
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    assert torch.equal(val, split_indices(100, 25, seed=0)[1])  # count and fraction agree
    assert not torch.equal(val, split_indices(100, 25, seed=1)[1])
    assert len(split_indices(100, 0, seed=0)[1]) == 0


@pytest.mark.parametrize("bad", [-1, 100, 1.0, -0.1, "10", True, 0.999])
def test_split_indices_rejects_bad_sizes(bad):
    with pytest.raises((ValueError, TypeError), match="val_size"):
        split_indices(100, bad, seed=0)


@needs_data
def test_fashion_mnist_loads_balanced():
    data = load_dataset("fashion-mnist", data_dir=SHARED, val_size=0)
    assert data.val_x is None and data.train_x.shape == (60000, 1, 28, 28)
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10


@needs_data
def test_cifar10_subset_loads_with_channel_major_layout():
    data = load_dataset("cifar10-subset", data_dir=SHARED, val_size=0)
    assert data.train_x.shape == (5085, 3, 32, 32) and data.test_x.shape == (1017, 3, 32, 32)
    assert data.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # first labels of data_batch_1
    with open(SHARED / "cifar-10-subset" / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][0]
    # example 0 of batch 2 is example 1017 of the training set; pixel (c, r, col) is row[c*1024 + r*32 + col]
    image = data.train_x[1017]
    for c, r, col in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert float(image[c, r, col]) * 255 == pytest.approx(float(row[c * 1024 + r * 32 + col]))


def _write_batch(path: Path, data: np.ndarray, labels: list[int], key: str, bytes_keys: bool) -> None:
    entry = {"data": data, key: labels}
    if bytes_keys:
        entry = {k.encode(): v for k, v in entry.items()}
    with open(path, "wb") as f:
        pickle.dump(entry, f)


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar_reader_accepts_str_and_bytes_keys(tmp_path, bytes_keys):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    _write_batch(tmp_path / "b", data, [3, 7], "labels", bytes_keys)
    x, y = read_cifar_batch(tmp_path / "b")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7]
    assert x[1, 2, 3, 4] == data[1, 2 * 1024 + 3 * 32 + 4]


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({"data": os.getcwd, "labels": []}, f)
    with pytest.raises(DataFileError, match=r"evil cannot be read as a CIFAR batch: it refers to .*getcwd, which "
                       "is not allowed") as err:
        read_cifar_batch(tmp_path / "evil")
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((4, 3072), dtype=np.uint8)
    _write_batch(folder / "train", data, [0, 99, 5, 5], "fine_labels", bytes_keys=True)
    _write_batch(folder / "test", data[:2], [42, 1], "fine_labels", bytes_keys=True)
    (folder / "meta").write_bytes(b"")
    # these are not the published files: check the reading path without their checksums
    spec = DATASETS["cifar100"]
    unchecked = tuple(replace(f, md5=None) for f in spec.files)
    monkeypatch.setitem(DATASETS, "cifar100", replace(spec, files=unchecked))
    split = load_dataset("cifar100", data_dir=tmp_path, val_size=0, download=False)
    assert split.train_y.tolist() == [0, 99, 5, 5] and split.test_y.tolist() == [42, 1]
    assert split.num_classes == 100


def test_full_cifar10_refuses_files_with_wrong_checksum(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in DATASETS["cifar10"].files:
        _write_batch(folder / f.name, np.zeros((1, 3072), dtype=np.uint8), [0], "labels", False)
    with pytest.raises(ChecksumError, match="data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


@needs_data
def test_corrupted_file_fails_its_checksum(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(SHARED / "MNIST" / "raw", raw)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    content = bytearray(target.read_bytes())
    content[100] ^= 0xFF
    target.write_bytes(bytes(content))
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(target) in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message  # expected
    assert download_module.md5sum(target) in message  # actual


def test_missing_files_name_every_file_and_the_folder(tmp_path, monkeypatch):
    calls = []

    def offline(url, dest, timeout=0):
        calls.append(url)
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(download_module, "download_url", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert len(calls) == 4 * 2  # every file tried on both mirrors
    assert isinstance(info.value, FileNotFoundError)


def test_subset_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "download_url", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(DatasetNotFoundError, match="data_batch_5"):
        load_dataset("cifar10-subset", data_dir=tmp_path)


@needs_data
def test_download_falls_back_to_the_next_mirror_and_checks_md5(tmp_path, monkeypatch):
    def mirror(url, dest, timeout=0):
        if "ossci" in url:  # the first mirror is down
            raise urllib.error.URLError("down")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / "MNIST" / "raw" / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(download_module, "download_url", mirror)
    data = load_dataset("mnist", data_dir=tmp_path, val_size=0)
    assert len(data.train_y) == 60000
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(MNIST_FILES)


def test_unknown_dataset_lists_the_allowed_names():
    allowed = "allowed names: cifar10, cifar10-subset, cifar100, fashion-mnist, imagenet, mnist, moons, moons-vat"
    with pytest.raises(ValueError, match=allowed):
        load_dataset("svhn")
    assert list_datasets() == ["cifar10", "cifar10-subset", "cifar100", "fashion-mnist", "imagenet", "mnist", "moons",
                               "moons-vat"]


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NEUROPLASTIC_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "cache" / "neuroplastic"
    monkeypatch.setenv("NEUROPLASTIC_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_parse_idx_hand_built():
    raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    assert parse_idx(raw).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="shape"):
        parse_idx(raw[:-1])


def _fake_cifar10_archive(tmp_path: Path, members: dict[str, bytes] | None = None) -> Path:
    """A tar.gz laid out like cifar-10-python.tar.gz, with one 2-image batch per file."""
    import tarfile

    source = tmp_path / "source" / "cifar-10-batches-py"
    source.mkdir(parents=True)
    for i, f in enumerate(DATASETS["cifar10"].files):
        _write_batch(source / f.name, np.full((2, 3072), i, dtype=np.uint8), [i, 9 - i], "labels", True)
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
        for name, content in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive


def _serve(monkeypatch, archive: Path, md5: str) -> list[str]:
    """Make the cifar10 spec point at ``archive`` (with MD5 ``md5``, batch MD5s unchecked) and serve it."""
    spec = DATASETS["cifar10"]
    monkeypatch.setitem(DATASETS, "cifar10", replace(
        spec, files=tuple(replace(f, md5=None) for f in spec.files), archive=replace(spec.archive, md5=md5)))
    calls = []

    def mirror(url, dest, timeout=0):
        calls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, dest)

    monkeypatch.setattr(download_module, "download_url", mirror)
    return calls


def test_cifar10_archive_is_downloaded_checked_and_extracted(tmp_path, monkeypatch):
    archive = _fake_cifar10_archive(tmp_path)
    calls = _serve(monkeypatch, archive, download_module.md5sum(archive))
    data_dir = tmp_path / "data"
    split = load_dataset("cifar10", data_dir=data_dir, val_size=0)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert split.train_y.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5] and split.test_y.tolist() == [5, 4]
    assert float(split.test_x.max()) * 255 == pytest.approx(5)
    load_dataset("cifar10", data_dir=data_dir, val_size=0)  # present now: no second download
    assert len(calls) == 1


def test_cifar10_archive_with_wrong_md5_is_rejected(tmp_path, monkeypatch):
    archive = _fake_cifar10_archive(tmp_path)
    _serve(monkeypatch, archive, "0" * 32)
    with pytest.raises(DatasetNotFoundError, match="wrong MD5"):
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


def test_archive_members_outside_the_data_dir_are_refused(tmp_path, monkeypatch):
    archive = _fake_cifar10_archive(tmp_path, members={"../escape.txt": b"x"})
    _serve(monkeypatch, archive, download_module.md5sum(archive))
    with pytest.raises(ValueError, match="escape.txt"):
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert not (tmp_path / "escape.txt").exists()


def test_subset_missing_message_says_where_it_comes_from(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no public mirror") as info:
        load_dataset("cifar10-subset", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-subset" / "cifar-10-batches-py") in str(info.value)
    assert "local subset" in str(info.value)


def _tiny_splits(with_val: bool = True) -> DataSplits:
    x = torch.rand(10, 3, 8, 8)
    y = torch.arange(10) % 3
    return DataSplits(
        name="tiny", train_x=x[:6], train_y=y[:6], val_x=x[6:8] if with_val else None,
        val_y=y[6:8] if with_val else None, test_x=x[8:], test_y=y[8:], num_classes=3, input_shape=(3, 8, 8),
        mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), augmentation={"crop_padding": 2, "hflip": True},
    )


def test_train_loader_uses_the_usual_augmentation_and_options_override_it():
    splits = _tiny_splits()
    loader = splits.train_loader(4, seed=1)
    assert (loader.shuffle, loader.crop_padding, loader.hflip, loader.cutout) == (True, 2, True, 0)
    assert loader.mean.tolist() == pytest.approx([0.5, 0.4, 0.3])
    plain = splits.train_loader(4, augment=False, normalize=False, cutout=3, drop_last=True)
    assert (plain.crop_padding, plain.hflip, plain.cutout, plain.mean, len(plain)) == (0, False, 3, None, 1)


def test_eval_loader_is_ordered_normalised_and_unaugmented():
    splits = _tiny_splits()
    (xb, yb), = list(splits.eval_loader("test", batch_size=100))
    expected = (splits.test_x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    assert torch.allclose(xb, expected) and torch.equal(yb, splits.test_y)
    assert torch.equal(next(iter(splits.eval_loader("val", normalize=False)))[0], splits.val_x)
    with pytest.raises(ValueError, match="split must be one of"):
        splits.eval_loader("validation")
    with pytest.raises(ValueError, match="val_size=0"):
        _tiny_splits(with_val=False).eval_loader("val")


def test_an_archive_put_by_hand_is_extracted_without_network(tmp_path, monkeypatch):
    archive = _fake_cifar10_archive(tmp_path)
    calls = _serve(monkeypatch, archive, download_module.md5sum(archive))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(archive, data_dir / archive.name)
    split = load_dataset("cifar10", data_dir=data_dir, val_size=0, download=False)
    assert len(split.train_y) == 10 and calls == []


# -- pickled layouts: pinned checksums, restricted unpickling, clear errors for damaged files ------------
def _copy_truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def _subset_copy(tmp_path: Path, damaged: str) -> Path:
    """The CIFAR-10 subset in ``tmp_path`` (links to the shared files) with file ``damaged`` cut in half."""
    folder = tmp_path / "cifar-10-subset" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in DATASETS["cifar10-subset"].files:
        if f.name != damaged:
            (folder / f.name).symlink_to(CIFAR_SUBSET / f.name)
    return _copy_truncated(CIFAR_SUBSET / damaged, folder / damaged)


@needs_data
def test_pinned_checksums_are_those_of_the_shipped_files():
    for f in DATASETS["cifar10-subset"].files:
        assert download_module.file_digest(CIFAR_SUBSET / f.name, "sha256") == f.sha256, f.name
    assert download_module.file_digest(VAT, "sha256") == VAT_SHA256


@needs_data
@pytest.mark.parametrize("damaged", ["data_batch_3", "batches.meta"])
def test_truncated_cifar_subset_file_fails_its_pinned_checksum(tmp_path, damaged):
    target = _subset_copy(tmp_path, damaged)
    expected = next(f.sha256 for f in DATASETS["cifar10-subset"].files if f.name == damaged)
    with pytest.raises(ChecksumError) as info:
        load_dataset("cifar10-subset", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert message.startswith(f"checksum mismatch for {target}: expected SHA256 {expected}, got "
                              f"{download_module.file_digest(target, 'sha256')}")
    assert "copy the project's shared data/cifar-10-subset folder" in message  # what to do


@needs_data
def test_truncated_cifar_batch_read_directly_is_a_data_file_error(tmp_path):
    target = _copy_truncated(CIFAR_SUBSET / "data_batch_1", tmp_path / "data_batch_1")
    with pytest.raises(DataFileError, match=r"data_batch_1 \(1,563,243 bytes\) cannot be read as a CIFAR batch: "
                                            r"it is truncated, corrupt or not such a file"):
        read_cifar_batch(target)


@needs_data
def test_truncated_moons_file_fails_its_checksum_through_load_dataset(tmp_path):
    target = _copy_truncated(VAT, tmp_path / "moons-vat" / "syndata_1.pkl")
    with pytest.raises(ChecksumError, match=f"checksum mismatch for {target}: expected SHA256 {VAT_SHA256}"):
        load_dataset("moons-vat", data_dir=tmp_path)


@needs_data
@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.999])
def test_damaged_moons_file_without_the_checksum_is_still_a_clear_error(tmp_path, keep):
    target = _copy_truncated(VAT, tmp_path / "syndata_1.pkl", keep)
    with pytest.raises(DataFileError, match=f"{target}.* cannot be read as VAT's moons file: it is truncated"):
        load_vat_moons(target, verify=False)


def test_moons_file_of_the_wrong_shape_or_with_code_is_refused(tmp_path):
    wrong = tmp_path / "wrong.pkl"
    with open(wrong, "wb") as f:
        pickle.dump(([(None, None), (np.zeros((10, 3)), np.zeros(10))], np.zeros((2, 3))), f)
    with pytest.raises(DataFileError, match=r"does not hold VAT's moons data: expected X of 1000 x D points"):
        load_vat_moons(wrong, verify=False)
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump(os.getcwd, f)
    with pytest.raises(DataFileError, match=r"evil.pkl cannot be read as VAT's moons file: it refers to .*getcwd"):
        load_vat_moons(evil, verify=False)
    with pytest.raises(ChecksumError, match="expected SHA256"):  # verified by default
        load_vat_moons(wrong)
