"""A tensor-resident data loader: the whole split is one tensor, batches are slices of it.

Shuffling, random crops with padding, horizontal flips, normalisation and Cutout are done on a whole
batch at once on the device of the data. All random draws of an epoch are made at its start from the
loader's own CPU ``torch.Generator`` (so the batches are the same on every device and do not depend
on the global RNG), in a fixed order: permutation, crop offsets, flip flags, Cutout centres.

Resuming: :meth:`TensorLoader.state_dict` holds the epoch counter, the number of batches already
given in the epoch in progress, and the generator state at that epoch's start; a loader that loads it
continues with exactly the batches the original would have given next.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from neuroplastic.data.augment import PADDING_MODES, cutout, horizontal_flip, normalize, random_crop
from neuroplastic.errors import BadInput


class EpochPlanResume:
    """The resume bookkeeping of a loader that draws each epoch's plan from its own ``generator``:
    ``epoch``, ``_position`` (batches given in the epoch in progress) and the generator state at the
    epoch's start. Subclasses set ``generator``, ``batch_size``, ``shuffle``, ``dataset_size`` and call
    :meth:`_begin_epoch` before drawing an epoch's plan."""

    def _begin_epoch(self) -> None:
        """Restore the loaded epoch's start, or start a new epoch (an unfinished one counts as done)."""
        if self._resume:
            self._resume = False
            self.generator.set_state(self._start_state)
        else:
            if self._position > 0:  # the previous epoch was broken off; its draws are spent
                self.epoch += 1
                self._position = 0
            self._start_state = self.generator.get_state()

    def state_dict(self) -> dict:
        """Everything needed to continue with the same batches: epoch, position, generator state."""
        mid_epoch = self._position > 0
        return {
            "epoch": self.epoch,
            "position": self._position,
            "generator": (self._start_state if mid_epoch else self.generator.get_state()).clone(),
            "num_examples": self.dataset_size,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`; the next iteration continues where it stopped."""
        for key in ("num_examples", "batch_size", "shuffle"):
            mine = self.dataset_size if key == "num_examples" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(f"loader state has {key}={state[key]!r} but this loader has {mine!r}")
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._start_state = state["generator"].clone()
        self.generator.set_state(state["generator"].clone())
        self._resume = self._position > 0


class TensorLoader(EpochPlanResume):
    """Iterate over ``(x, y)`` batches of tensors that already live on the training device.

    Parameters
    ----------
    x, y
        Inputs (N x ...) and targets (N x ...) on the same device. Spatial augmentations need NCHW ``x``.
    batch_size
        Examples per batch.
    shuffle
        Draw a new permutation every epoch.
    seed
        Seed of the loader's own generator.
    mean, std
        Per-channel normalisation applied to every batch (``None``: no normalisation); one value each
        applies to every channel (or feature: the moons vectors).
    crop_padding
        Random crop after padding by this many pixels on each side (0: off).
    padding_mode
        ``"zeros"`` or ``"reflect"`` padding for the random crop.
    hflip
        Mirror each image left-right with probability 1/2.
    cutout
        Side of the square zeroed per image after normalisation (0: off).
    drop_last
        Leave out the last, smaller batch of an epoch.
    rank, world_size
        Data-parallel training (DDP): every process draws the same epoch plan and takes its own share of
        each batch (examples ``rank, rank + world_size, ...`` of it), so ``batch_size`` stays the batch of
        one optimizer step over all processes and the batches are those of a single-process run. A last
        batch smaller than ``world_size`` is left out (a process would get no example).

    Order of the operations on a batch: crop, flip (in pixel space, so zero padding is black), then
    normalisation, then Cutout (whose zeros are the mean colour, as Cutout after ``Normalize`` gives).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        padding_mode: str = "zeros",
        hflip: bool = False,
        cutout: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise BadInput(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if x.device != y.device:
            raise BadInput(f"x and y must be on the same device, got {x.device} and {y.device}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BadInput(f"batch_size must be a positive int, got {batch_size!r}")
        if drop_last and batch_size > len(x):
            raise BadInput(f"drop_last=True with batch_size={batch_size} > {len(x)} examples: no batch")
        if crop_padding < 0 or cutout < 0:
            raise BadInput(f"crop_padding and cutout must be >= 0, got {crop_padding} and {cutout}")
        if padding_mode not in PADDING_MODES:
            raise BadInput(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        spatial = crop_padding > 0 or hflip or cutout > 0
        if spatial and x.dim() != 4:
            raise BadInput(f"crop, flip and cutout need NCHW images, got x of shape {tuple(x.shape)}")
        if padding_mode == "reflect" and crop_padding >= min(x.shape[-2:]):
            raise BadInput(f"reflect padding {crop_padding} must be smaller than the image side, "
                           f"image is {tuple(x.shape[-2:])}")
        if (mean is None) != (std is None):
            raise BadInput("give both mean and std, or neither")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise BadInput(f"world_size must be an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise BadInput(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
        if batch_size < world_size:
            raise BadInput(f"batch_size ({batch_size}) must be >= world_size ({world_size}): every process "
                           "takes a share of each batch")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.crop_padding = crop_padding
        self.padding_mode = padding_mode
        self.hflip = hflip
        self.cutout = cutout
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.mean = self.std = None
        if mean is not None:
            channels = x.shape[1] if x.dim() > 1 else 1
            if len(mean) not in (1, channels) or len(std) not in (1, channels):
                raise BadInput(f"mean and std need one value per channel ({channels}) or one for all, "
                               f"got {len(mean)} and {len(std)}")
            if any(s <= 0 for s in std):
                raise BadInput(f"std values must be > 0, got {tuple(std)}")
            self.mean = torch.tensor(mean, dtype=x.dtype, device=x.device)
            self.std = torch.tensor(std, dtype=x.dtype, device=x.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0  # index of the epoch in progress, or of the next one to start
        self._position = 0  # batches already given in the epoch in progress
        self._start_state = self.generator.get_state()
        self._resume = False

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        full, rest = divmod(n, self.batch_size)
        return full + int(rest > 0 and not self.drop_last and rest >= self.world_size)

    @property
    def dataset_size(self) -> int:
        """Number of examples in the split."""
        return len(self.x)

    def _draw_plan(self) -> dict[str, torch.Tensor]:
        """All random draws of one epoch, made on the CPU generator and moved to the data's device."""
        n, g = len(self.x), self.generator
        plan = {"order": torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)}
        if self.crop_padding > 0:
            span = 2 * self.crop_padding + 1
            plan["top"] = torch.randint(0, span, (n,), generator=g)
            plan["left"] = torch.randint(0, span, (n,), generator=g)
        if self.hflip:
            plan["flip"] = torch.rand(n, generator=g) < 0.5
        if self.cutout > 0:
            h, w = self.x.shape[-2:]
            plan["cy"] = torch.randint(0, h, (n,), generator=g)
            plan["cx"] = torch.randint(0, w, (n,), generator=g)
        return {k: v.to(self.x.device) for k, v in plan.items()}

    def _batch(self, plan: dict[str, torch.Tensor], b: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = b * self.batch_size
        stop = min(start + self.batch_size, len(self.x))
        part = (slice(start, stop) if self.world_size == 1
                else torch.arange(start + self.rank, stop, self.world_size, device=self.x.device))
        idx = plan["order"][part]
        x, y = self.x[idx], self.y[idx]
        if self.crop_padding > 0:
            x = random_crop(x, plan["top"][part], plan["left"][part], self.crop_padding, self.padding_mode)
        if self.hflip:
            x = horizontal_flip(x, plan["flip"][part])
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        if self.cutout > 0:
            x = cutout(x, plan["cy"][part], plan["cx"][part], self.cutout)
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches (an unfinished epoch counts as done, unless it came from a loaded state)."""
        self._begin_epoch()
        plan = self._draw_plan()
        for b in range(self._position, len(self)):
            batch = self._batch(plan, b)
            self._position = b + 1  # counted before yielding: a state taken now resumes after this batch
            yield batch
        self.epoch += 1
        self._position = 0

