"""ImageNet in its standard folder layout, decoded per batch: a streaming loader with per-rank sharding.

Layout (the one ``torchvision.datasets.ImageFolder`` reads)::

    ROOT/train/<class>/*.JPEG
    ROOT/val/<class>/*.JPEG

Class folders are sorted by name and numbered from 0; ``val`` must have the same class folders as
``train``. Image files are those ending in ``.jpeg``, ``.jpg`` or ``.png`` (any case), sorted by name;
other files are ignored. A validation split is carved from ``train`` with a seeded permutation
(:func:`~neuroplastic.data.datasets.split_indices`); the ``val`` folder is the test split, kept apart.

ImageNet does not fit in memory, so unlike :class:`~neuroplastic.data.loader.TensorLoader` the
:class:`ImageFolderLoader` keeps only file paths and decodes (with Pillow) the images of each batch when
the batch is asked for, optionally in ``torch.utils.data.DataLoader`` worker processes. Its randomness
follows TensorLoader's contract: all random draws of an epoch are made at its start from the loader's
own CPU generator (the permutation, then one seed per example from which that example's crop box and
flip are drawn), so a batch depends only on the seed, the epoch and its index, not on the workers; its
``state_dict``/``load_state_dict`` hold the same keys, so :func:`neuroplastic.train.fit` resumes it
mid-epoch exactly; ``rank``/``world_size`` give every process its share of each batch of the same plan.

Transforms (those of the torchvision ImageNet recipe):

* training: RandomResizedCrop (area ``scale`` (0.08, 1), aspect ``ratio`` (3/4, 4/3), resized
  bilinearly to ``crop_size`` 224), horizontal flip with probability 1/2, normalisation;
* evaluation: resize the shorter side to ``resize_size`` 256 (bilinear), center crop ``crop_size``,
  normalisation.

Normalisation uses the ImageNet mean and std (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`) on pixel
values scaled to [0, 1].
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from neuroplastic.data.augment import horizontal_flip, normalize
from neuroplastic.data.datasets import split_indices
from neuroplastic.data.download import resolve_data_dir
from neuroplastic.data.loader import EpochPlanResume
from neuroplastic.errors import BadInput, DataFileError, DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
#: names :func:`~neuroplastic.data.datasets.load_dataset` reads with :func:`load_image_folder`
IMAGE_FOLDER_DATASETS = ("imagenet",)


def scan_image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None
                      ) -> tuple[list[str], torch.Tensor, list[str]]:
    """The image files below ``root/<class>/``, their labels, and the sorted class names.

    ``classes`` (e.g. those of the training folder) fixes the class list: ``root`` must have exactly
    these class folders. Raises :class:`~neuroplastic.errors.DatasetNotFoundError` for a missing folder
    and :class:`~neuroplastic.errors.BadInput` for a folder without class folders, a class folder without
    images, or class folders that differ from ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist (expected {root}/<class>/*.JPEG)")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not found:
        raise BadInput(f"image folder {root} has no class folders (expected {root}/<class>/*.JPEG)")
    if classes is not None and found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise BadInput(f"class folders of {root} differ from the training classes: missing {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}, extra {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(found):
        files = sorted(entry.path for entry in os.scandir(root / name)
                       if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise BadInput(f"class folder {root / name} has no images (files ending in "
                           f"{', '.join(IMAGE_EXTENSIONS)}, any case)")
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, torch.tensor(labels, dtype=torch.int64), found


def decode_image(path: str) -> Image.Image:
    """The image at ``path`` as an RGB Pillow image; :class:`DataFileError` naming the file if unreadable."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() loads the pixels, so truncation is caught here
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataFileError(f"cannot decode image {path}: {err}; replace or remove the file") from None


def random_resized_crop_box(width: int, height: int, rng: random.Random,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of a RandomResizedCrop, drawn from ``rng``.

    torchvision's algorithm: up to 10 draws of an area fraction in ``scale`` and a log-uniform aspect
    ratio in ``ratio`` until the box fits; else the largest central box with a ratio inside ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def eval_resize_crop(img: Image.Image, resize_size: int, crop_size: int) -> Image.Image:
    """Resize the shorter side to ``resize_size`` (bilinear), then cut the central ``crop_size`` square."""
    width, height = img.size
    if width <= height:
        size = (resize_size, int(resize_size * height / width))
    else:
        size = (int(resize_size * width / height), resize_size)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    top = int(round((size[1] - crop_size) / 2.0))
    left = int(round((size[0] - crop_size) / 2.0))
    return img.crop((left, top, left + crop_size, top + crop_size))


def _to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


@dataclass
class BatchReader:
    """Decodes and transforms the images of one batch; small and picklable, so DataLoader workers can
    hold it. ``train``: random-resized-crop and flip from each example's seed; else the eval transform."""

    paths: list[str]
    labels: torch.Tensor
    train: bool
    crop_size: int
    resize_size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: bool
    mean: torch.Tensor | None
    std: torch.Tensor | None

    def read(self, indices: torch.Tensor, seeds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: float32 NCHW images (normalised unless mean is None) and int64 labels."""
        images, flips = [], []
        for k, i in enumerate(indices.tolist()):
            img = decode_image(self.paths[i])
            if self.train:
                rng = random.Random(int(seeds[k]))
                top, left, h, w = random_resized_crop_box(*img.size, rng, self.scale, self.ratio)
                img = img.resize((self.crop_size, self.crop_size), Image.BILINEAR,
                                 box=(left, top, left + w, top + h))
                flips.append(self.hflip and rng.random() < 0.5)
            else:
                img = eval_resize_crop(img, self.resize_size, self.crop_size)
            images.append(_to_uint8(img))
        x = torch.stack(images).float().div_(255.0)
        if self.train and self.hflip:
            x = horizontal_flip(x, torch.tensor(flips))
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        return x, self.labels[indices]


class _Batches(torch.utils.data.Dataset):
    """Batch ``k`` of a list of batches, for a DataLoader with ``batch_size=None``."""

    def __init__(self, reader: BatchReader, shares: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        self.reader, self.shares = reader, shares

    def __len__(self) -> int:
        return len(self.shares)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reader.read(*self.shares[k])


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadInput(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    if len(value) != 2 or not 0 < value[0] <= value[1]:
        raise BadInput(f"{name} must be two numbers 0 < low <= high, got {tuple(value)!r}")
    return float(value[0]), float(value[1])


class ImageFolderLoader(EpochPlanResume):
    """Iterate over ``(x, y)`` batches of images decoded from files, one batch at a time (CPU tensors).

    Parameters
    ----------
    paths, labels
        Image files and their int64 labels (e.g. from :func:`scan_image_folder`).
    batch_size
        Examples per batch (over all processes, as for TensorLoader).
    shuffle
        Draw a new permutation every epoch.
    seed
        Seed of the loader's own generator.
    train
        Training transform (random resized crop, flip) if True, else the evaluation transform.
    crop_size, resize_size
        Output side (224), and the shorter side the evaluation transform resizes to first (256).
    scale, ratio
        RandomResizedCrop's area-fraction and aspect-ratio ranges.
    hflip
        Mirror each training image left-right with probability 1/2.
    mean, std
        Per-channel normalisation (``None``: none); default the ImageNet constants.
    drop_last
        Leave out the last, smaller batch of an epoch.
    rank, world_size
        DDP: every process draws the same plan and takes examples ``rank, rank + world_size, ...`` of
        each batch; a last batch smaller than ``world_size`` is left out.
    num_workers
        Decode in this many DataLoader worker processes (0: in this process).
    pin_memory
        Pin the batches (for asynchronous copies to a GPU); only with workers.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        train: bool = False,
        crop_size: int = 224,
        resize_size: int = 256,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if len(paths) != len(labels):
            raise BadInput(f"paths and labels must have the same length, got {len(paths)} and {len(labels)}")
        if not paths:
            raise BadInput("no images: paths is empty")
        _check_int("batch_size", batch_size, 1)
        _check_int("crop_size", crop_size, 1)
        _check_int("resize_size", resize_size, crop_size)
        _check_int("world_size", world_size, 1)
        _check_int("num_workers", num_workers, 0)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise BadInput(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
        if batch_size < world_size:
            raise BadInput(f"batch_size ({batch_size}) must be >= world_size ({world_size}): every process "
                           "takes a share of each batch")
        if drop_last and batch_size > len(paths):
            raise BadInput(f"drop_last=True with batch_size={batch_size} > {len(paths)} examples: no batch")
        if (mean is None) != (std is None):
            raise BadInput("give both mean and std, or neither")
        if mean is not None and (len(mean) != 3 or len(std) != 3 or min(std) <= 0):
            raise BadInput(f"mean and std need 3 values each (RGB), std > 0; got {tuple(mean)} and {tuple(std)}")
        self.reader = BatchReader(
            list(paths), torch.as_tensor(labels, dtype=torch.int64), bool(train), crop_size, resize_size,
            _check_range("scale", scale), _check_range("ratio", ratio), bool(hflip),
            None if mean is None else torch.tensor(mean, dtype=torch.float32),
            None if std is None else torch.tensor(std, dtype=torch.float32))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0  # index of the epoch in progress, or of the next one to start
        self._position = 0  # batches already given in the epoch in progress
        self._start_state = self.generator.get_state()
        self._resume = False

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.dataset_size, self.batch_size)
        return full + int(rest > 0 and not self.drop_last and rest >= self.world_size)

    @property
    def dataset_size(self) -> int:
        """Number of examples in the split."""
        return len(self.reader.paths)

    @property
    def crop_size(self) -> int:
        """Side of the square images the loader gives."""
        return self.reader.crop_size

    def _draw_plan(self) -> dict[str, torch.Tensor]:
        """All random draws of one epoch: the order, then (training) one crop-and-flip seed per example."""
        n, g = self.dataset_size, self.generator
        plan = {"order": torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)}
        if self.reader.train:
            plan["seeds"] = torch.randint(0, 2**62, (n,), generator=g)
        return plan

    def _share(self, plan: dict[str, torch.Tensor], b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's example indices of batch ``b`` and their seeds (positions in the plan)."""
        start = b * self.batch_size
        stop = min(start + self.batch_size, self.dataset_size)
        part = torch.arange(start + self.rank, stop, self.world_size)
        seeds = plan["seeds"][part] if "seeds" in plan else None
        return plan["order"][part], seeds

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches (an unfinished epoch counts as done, unless it came from a loaded state)."""
        self._begin_epoch()
        plan = self._draw_plan()
        todo = range(self._position, len(self))
        shares = [self._share(plan, b) for b in todo]
        if self.num_workers > 0:
            batches = iter(torch.utils.data.DataLoader(
                _Batches(self.reader, shares), batch_size=None, shuffle=False, num_workers=self.num_workers,
                pin_memory=self.pin_memory))
        else:
            batches = (self.reader.read(*share) for share in shares)
        for b, batch in zip(todo, batches, strict=True):
            self._position = b + 1  # counted before yielding: a state taken now resumes after this batch
            yield batch
        self.epoch += 1
        self._position = 0


def default_workers() -> int:
    """Decoding workers per process: ``$NEUROPLASTIC_DATA_WORKERS`` if set, else the CPUs shared among
    the processes of this machine (``$LOCAL_WORLD_SIZE`` under torchrun), at most 8."""
    given = os.environ.get("NEUROPLASTIC_DATA_WORKERS")
    if given is not None:
        if not given.isdigit():
            raise BadInput(f"NEUROPLASTIC_DATA_WORKERS must be an int >= 0, got {given!r}")
        return int(given)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return min(8, max(1, (os.cpu_count() or 1) // max(local, 1)))


@dataclass
class ImageFolderSplits:
    """Train / validation / test file lists of an image-folder data set, with the loaders' settings.

    Has the interface of :class:`~neuroplastic.data.datasets.DataSplits` that the recipe runner uses
    (``num_classes``, ``input_shape``, ``train_loader``, ``eval_loader``), but its loaders decode per
    batch (:class:`ImageFolderLoader`). ``val`` is carved from the ``train`` folder; ``test`` is the
    ``val`` folder.
    """

    name: str
    root: Path
    classes: list[str]
    train: tuple[list[str], torch.Tensor]
    val: tuple[list[str], torch.Tensor] | None
    test: tuple[list[str], torch.Tensor]
    crop_size: int = 224
    resize_size: int = 256
    num_workers: int = 0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    augmentation: dict[str, object] = field(default_factory=lambda: {"hflip": True})

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(3, crop_size, crop_size)``."""
        return (3, self.crop_size, self.crop_size)

    def _loader(self, files: tuple[list[str], torch.Tensor], batch_size: int, normalize: bool,
                **options) -> ImageFolderLoader:
        norm = {} if normalize else {"mean": None, "std": None}
        options.setdefault("num_workers", self.num_workers)
        options.setdefault("pin_memory", torch.cuda.is_available() and options["num_workers"] > 0)
        return ImageFolderLoader(*files, batch_size, crop_size=self.crop_size, resize_size=self.resize_size,
                                 **norm, **options)

    def train_loader(self, batch_size: int, seed: int = 0, normalize: bool = True, augment: bool = True,
                     *, crop_padding: int = 0, padding_mode: str = "zeros", cutout: int = 0,
                     **options) -> ImageFolderLoader:
        """A shuffling loader over the training split with the training transform.

        The random resized crop is always applied (it is what makes images of any size ``crop_size``
        squares); ``augment`` sets the default of ``hflip`` (on for ImageNet). ``crop_padding`` and
        ``cutout`` (the tensor loaders' augmentations, which recipes may name) must be 0 here;
        ``options`` are further :class:`ImageFolderLoader` keyword arguments (``hflip``, ``rank``,
        ``world_size``, ``num_workers``, ``scale``, ``ratio``, ``drop_last``).
        """
        if crop_padding or cutout:
            raise BadInput(f"{self.name} takes the random resized crop and flip only: crop_padding and cutout "
                           f"must be 0, got crop_padding={crop_padding}, cutout={cutout}")
        kwargs = dict(self.augmentation) if augment else {"hflip": False}
        kwargs.update(options)
        return self._loader(self.train, batch_size, normalize, shuffle=True, seed=seed, train=True, **kwargs)

    def eval_loader(self, split: str = "val", batch_size: int = 1000, normalize: bool = True,
                    **options) -> ImageFolderLoader:
        """An ordered loader over ``"val"``, ``"test"`` or ``"train"`` with the evaluation transform."""
        files = {"train": self.train, "val": self.val, "test": self.test}
        if split not in files:
            raise BadInput(f"split must be one of {sorted(files)}, got {split!r}")
        if files[split] is None:
            raise BadInput(f"{self.name} was loaded with val_size=0: there is no validation split")
        return self._loader(files[split], batch_size, normalize, shuffle=False, train=False, **options)

    def __repr__(self) -> str:
        n_val = 0 if self.val is None else len(self.val[0])
        return (f"ImageFolderSplits({self.name!r}, root={str(self.root)!r}, train={len(self.train[0])}, "
                f"val={n_val}, test={len(self.test[0])}, classes={self.num_classes}, "
                f"input_shape={self.input_shape})")


def find_image_folder_root(name: str, data_dir: str | os.PathLike | None) -> Path:
    """``DATA_DIR/<name>`` if it holds ``train/`` and ``val/``, else ``DATA_DIR`` itself if it does."""
    base = resolve_data_dir(data_dir)
    for root in (base / name, base):
        if (root / "train").is_dir() and (root / "val").is_dir():
            return root
    raise DatasetNotFoundError(
        f"{name}: no train/ and val/ folders in {base / name} or {base}; {name} cannot be downloaded: put "
        f"the standard layout (train/<class>/*.JPEG, val/<class>/*.JPEG, the val images sorted into class "
        f"folders) in {base / name}, or give that folder as the data directory")


def load_image_folder(
    name: str = "imagenet",
    data_dir: str | os.PathLike | None = None,
    val_size: int | float = 10000,
    seed: int = 0,
    *,
    crop_size: int = 224,
    resize_size: int = 256,
    num_workers: int | None = None,
) -> ImageFolderSplits:
    """Scan an image-folder data set (see the module docstring) and carve its seeded validation split.

    The number of classes is that of the class folders (1000 for ImageNet; a model built by the recipe
    runner takes it from there). ``num_workers`` defaults to :func:`default_workers`.
    """
    root = find_image_folder_root(name, data_dir)
    train_paths, train_labels, classes = scan_image_folder(root / "train")
    test_paths, test_labels, _ = scan_image_folder(root / "val", classes)
    train_idx, val_idx = split_indices(len(train_paths), val_size, seed)
    pick = lambda idx: ([train_paths[i] for i in idx.tolist()], train_labels[idx])  # noqa: E731
    return ImageFolderSplits(
        name=name, root=root, classes=classes, train=pick(train_idx),
        val=pick(val_idx) if len(val_idx) else None, test=(test_paths, test_labels),
        crop_size=_check_int("crop_size", crop_size, 1), resize_size=_check_int("resize_size", resize_size, crop_size),
        num_workers=default_workers() if num_workers is None else _check_int("num_workers", num_workers, 0))
