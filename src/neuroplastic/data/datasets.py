"""The named image data sets and :func:`load_dataset`, their one entry point.

Images come back as float32 tensors in [0, 1], NCHW, on the requested device (the whole split lives
there, so a :class:`~neuroplastic.data.loader.TensorLoader` never copies from the host). Labels are
int64. Normalisation is not applied here: the loaders apply it batch-wise with the per-channel
``mean`` and ``std`` listed below, so augmentation (zero padding of random crops) happens in pixel
space first, as torchvision's ``RandomCrop`` then ``Normalize`` would do.

A validation split is carved from the training set with a seeded permutation; the test set is kept
apart and is only to be reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from neuroplastic.data.cifar import read_cifar_batches
from neuroplastic.data.download import Archive, RemoteFile, ensure_files, resolve_data_dir
from neuroplastic.data.idx import read_idx
from neuroplastic.data.loader import TensorLoader
from neuroplastic.errors import BadInput, DataFileError

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                    "test_batch")

# Per-channel constants of the NPN reference code (and of most CIFAR code): pixel-value means and stds / 255.
_CIFAR10_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
_CIFAR10_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
# RandomCrop(32, padding=4) with zero padding + horizontal flip; MNIST-like sets get none.
_CIFAR_AUGMENT = (("crop_padding", 4), ("padding_mode", "zeros"), ("hflip", True))

if TYPE_CHECKING:
    from neuroplastic.data.imagenet import ImageFolderSplits

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set lives, how to check and read it, and its normalisation constants."""

    folder: str  # relative to the data directory
    files: tuple[RemoteFile, ...]
    read: Callable[[list[str]], Arrays]  # file paths (in ``files`` order) -> train x, y, test x, y
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    urls: tuple[str, ...] = ()
    archive: Archive | None = None
    hint: str = ""  # added to the missing-file message
    # the usual training augmentation of the data set (TensorLoader keyword arguments)
    augmentation: tuple[tuple[str, object], ...] = ()


def _read_idx_set(paths: list[str]) -> Arrays:
    train_x, train_y, test_x, test_y = (read_idx(p) for p in paths)
    return train_x[:, None], train_y, test_x[:, None], test_y


def _read_cifar10(paths: list[str]) -> Arrays:
    # paths: five training batches, the test batch, then batches.meta (not read)
    train_x, train_y = read_cifar_batches(paths[:5], "labels")
    test_x, test_y = read_cifar_batches(paths[5:6], "labels")
    return train_x, train_y, test_x, test_y


def _read_cifar100(paths: list[str]) -> Arrays:
    train_x, train_y = read_cifar_batches(paths[:1], "fine_labels")
    test_x, test_y = read_cifar_batches(paths[1:2], "fine_labels")
    return train_x, train_y, test_x, test_y


# Published MD5s of the original files (the same values torchvision checks).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        folder="MNIST/raw",
        files=tuple(RemoteFile(n, m) for n, m in zip(_IDX_NAMES, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"), strict=True)),
        read=_read_idx_set, num_classes=10, input_shape=(1, 28, 28),
        mean=(0.1307,), std=(0.3081,), urls=_MNIST_MIRRORS,
    ),
    "fashion-mnist": DatasetSpec(
        folder="FashionMNIST/raw",
        files=tuple(RemoteFile(n, m) for n, m in zip(_IDX_NAMES, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"), strict=True)),
        read=_read_idx_set, num_classes=10, input_shape=(1, 28, 28),
        mean=(0.2860,), std=(0.3530,), urls=_FASHION_MIRRORS,
    ),
    "cifar10": DatasetSpec(
        folder="cifar-10-batches-py",
        files=tuple(RemoteFile(n, m) for n, m in zip((*_CIFAR10_BATCHES, "batches.meta"), (
            "c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec",
            "54ebc095f3ab1f0389bbae665268c751", "634d18415352ddfa80567beed471001a",
            "482c414d41f54cd18b22e5b47cb7c3cb", "40351d587109b95175f43aff81a1287e",
            "5ff9c542aee3614f3951f8cda6e48888"), strict=True)),
        read=_read_cifar10, num_classes=10, input_shape=(3, 32, 32),
        mean=_CIFAR10_MEAN, std=_CIFAR10_STD,
        augmentation=_CIFAR_AUGMENT,
        archive=Archive("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), "cifar-10-batches-py"),
    ),
    "cifar100": DatasetSpec(
        folder="cifar-100-python",
        files=(RemoteFile("train", "16019d7e3df5f24257cddd939b257f8d"),
               RemoteFile("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
               RemoteFile("meta", "7973b15100ade9c7d40fb424638fde48")),
        read=_read_cifar100, num_classes=100, input_shape=(3, 32, 32),
        mean=tuple(v / 255 for v in (129.3, 124.1, 112.4)), std=tuple(v / 255 for v in (68.2, 65.4, 70.4)),
        augmentation=_CIFAR_AUGMENT,
        archive=Archive("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                        ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), "cifar-100-python"),
    ),
    # A locally made subset (the first 1,017 images of each CIFAR-10 batch): no published checksum, no
    # mirror; the SHA-256 of the shipped files is pinned, so a truncated or damaged copy is caught before
    # it is read. Only loaded when asked for by this name, so it is never mistaken for the full set.
    "cifar10-subset": DatasetSpec(
        folder="cifar-10-subset/cifar-10-batches-py",
        files=tuple(RemoteFile(n, None, sha) for n, sha in zip((*_CIFAR10_BATCHES, "batches.meta"), (
            "598cbd028c52709c628dd393e3a764d880ab673c97078f659ee047aff405fa03",
            "95f769a0296a043b6c1c9fc42a7db1f140729115dd1799e82b58e67bc6402114",
            "82926c870e6118fc5507f5bfc95911af142fb96cb6f4ee85121a7b77e886bc09",
            "e7137e1f2d7329fd390ffd73282f4d47a94c0b96bc5681741b6f34edebff01aa",
            "84cebd23a3c01f89e4b26c54230c15fe38292123660f6d70fd8c4865e628da56",
            "50cd931a88d9bbddee6f478bf0b2ddd75d8e9a06898c8ede2272838216c8f91c",
            "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb"), strict=True)),
        read=_read_cifar10, num_classes=10, input_shape=(3, 32, 32),
        mean=_CIFAR10_MEAN, std=_CIFAR10_STD, augmentation=_CIFAR_AUGMENT,
        hint="cifar10-subset is a local subset with no download: copy the project's shared "
             "data/cifar-10-subset folder into the data directory, or use that data folder as data_dir.",
    ),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    from neuroplastic.data.imagenet import IMAGE_FOLDER_DATASETS

    return sorted([*DATASETS, "moons", "moons-vat", *IMAGE_FOLDER_DATASETS])


@dataclass
class DataSplits:
    """Train / validation / test tensors of one data set, with what a model and a loader need to know.

    Images are float32 in [0, 1], NCHW; labels int64. ``val_x`` and ``val_y`` are ``None`` when the
    validation split was asked to be empty (``val_size=0``).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: dict[str, object] = field(default_factory=dict)

    def train_loader(self, batch_size: int, seed: int = 0, normalize: bool = True, augment: bool = True,
                     **options) -> TensorLoader:
        """A shuffling loader over the training split.

        ``augment=True`` applies the data set's usual augmentation (:attr:`augmentation`: crop with
        4-pixel zero padding and flips for CIFAR, none for MNIST-like sets); ``options`` are further
        :class:`TensorLoader` keyword arguments and override it (e.g. ``cutout=8``, ``drop_last=True``).
        """
        kwargs = dict(self.augmentation) if augment else {}
        kwargs.update(options)
        if normalize:
            kwargs.update(mean=self.mean, std=self.std)
        return TensorLoader(self.train_x, self.train_y, batch_size, shuffle=True, seed=seed, **kwargs)

    def eval_loader(self, split: str = "val", batch_size: int = 1000, normalize: bool = True) -> TensorLoader:
        """An ordered loader over the ``"val"``, ``"test"`` or ``"train"`` split, without augmentation."""
        tensors = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                   "test": (self.test_x, self.test_y)}
        if split not in tensors:
            raise BadInput(f"split must be one of {sorted(tensors)}, got {split!r}")
        x, y = tensors[split]
        if x is None:
            raise BadInput(f"{self.name} was loaded with val_size=0: there is no validation split")
        norm = {"mean": self.mean, "std": self.std} if normalize else {}
        return TensorLoader(x, y, batch_size, shuffle=False, **norm)

    def __repr__(self) -> str:
        n_val = 0 if self.val_y is None else len(self.val_y)
        return (f"DataSplits({self.name!r}, train={len(self.train_y)}, val={n_val}, test={len(self.test_y)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"device={self.train_x.device})")


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into (train, val) index tensors, each sorted ascending.

    ``val_size`` is a count (int, ``0 <= val_size < n``) or a fraction (float, ``0 <= val_size < 1``,
    rounded to the nearest count).
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int | float):
        raise TypeError(f"val_size must be an int (count) or a float (fraction), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 <= val_size < 1.0:
            raise BadInput(f"val_size as a fraction must be in [0, 1), got {val_size}")
        count = round(val_size * n)
        if count >= n:
            raise BadInput(f"val_size={val_size} of {n} examples leaves no training example")
    else:
        if not 0 <= val_size < n:
            raise BadInput(f"val_size as a count must be in [0, {n}) for this training set, got {val_size}")
        count = val_size
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # sorting keeps the original order inside each split, so the split is a pure selection
    return perm[count:].sort().values, perm[:count].sort().values


def _to_tensor(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    # convert on the target device: uint8 travels 4x lighter than float32
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int | float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> DataSplits | ImageFolderSplits:
    """Load a named data set, carve a seeded validation split from its training set, move it to ``device``.

    Parameters
    ----------
    name
        One of ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``cifar10-subset``, ``moons``
        (generated, see :mod:`neuroplastic.data.moons`), ``moons-vat`` (the paper's file), ``imagenet``
        (the standard folder layout, never downloaded: an
        :class:`~neuroplastic.data.imagenet.ImageFolderSplits` of file lists whose loaders decode per
        batch on the CPU; ``device`` is not used, see :mod:`neuroplastic.data.imagenet`).
    data_dir
        The data directory; default ``$NEUROPLASTIC_DATA``, else ``~/.cache/neuroplastic``. Files are
        expected in the usual download layout below it (e.g. ``MNIST/raw/``, ``cifar-10-batches-py/``).
    val_size
        Size of the validation split, a count (int) or a fraction of the training set (float).
    seed
        Seed of the validation split.
    device
        Where the tensors live.
    download
        Whether missing files may be fetched from the public mirrors.

    Raises
    ------
    ValueError
        Unknown ``name`` or bad ``val_size``.
    DatasetNotFoundError
        Files missing and not downloadable; the message names them and the folder.
    ChecksumError
        A file does not have its published MD5 (full data sets) or its pinned SHA-256 (local layouts:
        ``cifar10-subset``, ``moons-vat``).
    DataFileError
        A file cannot be read as what it should be (truncated, corrupt).
    """
    from neuroplastic.data.imagenet import IMAGE_FOLDER_DATASETS, load_image_folder
    from neuroplastic.data.moons import MOONS_DATASETS, load_moons_dataset

    if name in MOONS_DATASETS:
        return load_moons_dataset(name, data_dir, val_size, seed, device)
    if name in IMAGE_FOLDER_DATASETS:
        return load_image_folder(name, data_dir, val_size, seed)
    if name not in DATASETS:
        raise BadInput(f"unknown data set {name!r}; allowed names: {', '.join(list_datasets())}")
    spec = DATASETS[name]
    root = resolve_data_dir(data_dir)
    paths = ensure_files(
        name, root / spec.folder, spec.files, urls=spec.urls, archive=spec.archive, data_dir=root,
        download=download, hint=spec.hint,
    )
    train_x, train_y, test_x, test_y = spec.read([str(p) for p in paths])
    train_y, test_y = train_y.astype(np.int64), test_y.astype(np.int64)  # IDX labels are uint8
    for split, y in (("train", train_y), ("test", test_y)):
        if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
            raise DataFileError(f"{name}: {split} labels outside [0, {spec.num_classes})")
    train_idx, val_idx = split_indices(len(train_y), val_size, seed)
    train_idx, val_idx = train_idx.numpy(), val_idx.numpy()
    has_val = len(val_idx) > 0
    return DataSplits(
        name=name,
        train_x=_to_tensor(train_x[train_idx], device),
        train_y=torch.from_numpy(train_y[train_idx]).to(device),
        val_x=_to_tensor(train_x[val_idx], device) if has_val else None,
        val_y=torch.from_numpy(train_y[val_idx]).to(device) if has_val else None,
        test_x=_to_tensor(test_x, device),
        test_y=torch.from_numpy(test_y).to(device),
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        mean=spec.mean,
        std=spec.std,
        augmentation=dict(spec.augmentation),
    )
