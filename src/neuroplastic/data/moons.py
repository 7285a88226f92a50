"""The two-moons problem of the NPN paper, generated here (no download) or read from VAT's file.

The paper's data (VAT's ``dataset/syndata_1.pkl``) are two interleaved three-quarter arcs of radius 1,
centred at (-0.5, 0.25) (class 0, angles 90..360 degrees) and (0.5, -0.25) (class 1, angles
-90..180 degrees), with isotropic Gaussian noise of standard deviation 0.1, embedded into 100-D by a fixed
2x100 orthonormal matrix. :func:`make_moons` draws from that distribution with a seed; the exact file
can be read with :func:`load_vat_moons`. The paper trains on 500 points and tests on 500; since the
test set must never steer training, :func:`moons_splits` also draws a separate validation set from the
same distribution (the expansion decisions of NPN use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuroplastic.errors import BadInput, DataFileError

ARCS = {0: ((-0.5, 0.25), (0.5 * math.pi, 2.0 * math.pi)), 1: ((0.5, -0.25), (-0.5 * math.pi, math.pi))}


@dataclass
class MoonsSplits:
    """Train / validation / test tensors (100-D float32 inputs, int64 labels) plus the 2-D embedding."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    basis: torch.Tensor  # (2, dim), orthonormal rows: x = p @ basis, p = x @ basis.T

    def to_2d(self, x: torch.Tensor) -> torch.Tensor:
        """Project embedded points back to the plane."""
        return x @ self.basis.T

    def embed(self, p: torch.Tensor) -> torch.Tensor:
        """Embed plane points into the input space."""
        return p @ self.basis


def make_moons_2d(n: int, noise: float = 0.1, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` plane points (half per class, alternating labels) and their labels."""
    if n <= 0 or n % 2:
        raise BadInput(f"n must be a positive even number, got {n}")
    if noise < 0:
        raise BadInput(f"noise must be >= 0, got {noise}")
    rng = rng or np.random.default_rng(0)
    y = np.tile([0, 1], n // 2)
    points = np.empty((n, 2))
    for label, (centre, (a0, a1)) in ARCS.items():
        idx = y == label
        angle = rng.uniform(a0, a1, idx.sum())
        points[idx] = np.c_[np.cos(angle), np.sin(angle)] + centre
    points += rng.normal(0.0, noise, points.shape)
    return points, y


def random_basis(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random 2 x ``dim`` matrix with orthonormal rows."""
    if dim < 2:
        raise BadInput(f"dim must be >= 2, got {dim}")
    q, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    return q.T


def moons_splits(
    seed: int = 0, n_train: int = 500, n_val: int = 200, n_test: int = 500, dim: int = 100, noise: float = 0.1
) -> MoonsSplits:
    """Generate the moons problem: train, validation and test points embedded in ``dim`` dimensions."""
    rng = np.random.default_rng(seed)
    basis = random_basis(dim, rng)
    parts = [make_moons_2d(n, noise, rng) for n in (n_train, n_val, n_test)]
    return _splits(parts, basis)


def load_vat_moons(path: str | Path, n_val: int = 100, seed: int = 0, verify: bool = True) -> MoonsSplits:
    """Read VAT's ``syndata_1.pkl`` (the paper's exact data): points ``[:500]`` train, ``[500:]`` test.

    ``n_val`` training points (chosen with ``seed``) are held out for validation, so that the test half
    is never used for decisions; ``n_val=0`` keeps the paper's 500 training points and no validation.
    With ``verify`` the file must have the SHA-256 of VAT's file (:data:`VAT_SHA256`); either way it is
    read with an unpickler that builds numpy arrays and plain containers only, and a truncated, corrupt or
    differently shaped file raises :class:`~neuroplastic.errors.DataFileError` naming the file.
    """
    from neuroplastic.data.download import verify_checksum
    from neuroplastic.data.safe_pickle import load_data_pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"moons file not found: {path} (VAT's dataset/syndata_1.pkl)")
    if verify:
        verify_checksum(path, VAT_SHA256, "sha256", remedy=_VAT_REMEDY)
    data = load_data_pickle(path, "VAT's moons file", remedy=_VAT_REMEDY)
    try:
        (_, (x, y)), basis = data[0], np.asarray(data[1], dtype=np.float64)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(np.int64)
        ok = x.ndim == 2 and x.shape[0] == 1000 and y.shape == (1000,) and basis.shape == (2, x.shape[1])
    except (TypeError, ValueError, IndexError, KeyError) as err:
        raise DataFileError(f"{path} does not hold VAT's moons data ([(X16, y16), (X, y)], basis): {err}; "
                            f"{_VAT_REMEDY}") from err
    if not ok:
        raise DataFileError(f"{path} does not hold VAT's moons data: expected X of 1000 x D points, 1000 labels "
                            f"and a 2 x D basis, got {x.shape}, {y.shape} and {basis.shape}; {_VAT_REMEDY}")
    points = x @ basis.T @ np.linalg.inv(basis @ basis.T)
    order = np.random.default_rng(seed).permutation(500)
    val_idx, train_idx = order[:n_val], order[n_val:]
    parts = [(points[train_idx], y[train_idx]), (points[val_idx], y[val_idx]), (points[500:], y[500:])]
    return _splits(parts, basis / np.linalg.norm(basis, axis=1, keepdims=True))


def _splits(parts: list[tuple[np.ndarray, np.ndarray]], basis: np.ndarray) -> MoonsSplits:
    b = torch.tensor(basis, dtype=torch.float32)
    tensors = []
    for points, labels in parts:
        tensors += [torch.tensor(points, dtype=torch.float32) @ b, torch.tensor(labels, dtype=torch.int64)]
    return MoonsSplits(*tensors, basis=b)


MOONS_DATASETS = ("moons", "moons-vat")
VAT_FILE = "moons-vat/syndata_1.pkl"
#: SHA-256 of VAT's ``dataset/syndata_1.pkl`` (2,438,118 bytes), the file the NPN paper trained on
VAT_SHA256 = "9a745e762fde13b5ac24a6b884dc06fba6708f6f1849a14c576b4f79b9e34f64"
_VAT_REMEDY = ("put a good copy of VAT's dataset/syndata_1.pkl there (the project's shared data/moons-vat/"
               "syndata_1.pkl), or use the generated data set 'moons'")


def load_moons_dataset(name: str, data_dir: str | Path | None, val_size: int | float, seed: int, device):
    """The moons problem as :class:`~neuroplastic.data.DataSplits` (for ``load_dataset``).

    ``moons`` is generated with ``seed`` (500 train / 500 test, and ``val_size`` extra validation points
    drawn from the same distribution; a float is a fraction of the 500 training points). ``moons-vat``
    reads the paper's file ``<data_dir>/moons-vat/syndata_1.pkl`` and carves the validation points out of
    its 500 training points.
    """
    from neuroplastic.data.datasets import DataSplits
    from neuroplastic.data.download import resolve_data_dir

    if name not in MOONS_DATASETS:
        raise BadInput(f"moons data set must be one of {MOONS_DATASETS}, got {name!r}")
    n_val = round(val_size * 500) if isinstance(val_size, float) else int(val_size)
    if not 0 <= n_val < 500:
        raise BadInput(f"val_size for {name} must give between 0 and 499 points, got {val_size}")
    if name == "moons":
        if n_val % 2:
            raise BadInput(f"val_size for the generated moons must be even (half per class), got {n_val}")
        s = moons_splits(seed=seed, n_val=n_val or 2)  # 2 points drawn and dropped when no validation
    else:
        path = resolve_data_dir(data_dir) / VAT_FILE
        if not path.is_file():
            from neuroplastic.data.download import DatasetNotFoundError

            raise DatasetNotFoundError(
                f"moons-vat: missing file {path.name}; put VAT's dataset/syndata_1.pkl at {path} "
                "(or use the generated data set 'moons')"
            )
        s = load_vat_moons(path, n_val=n_val, seed=seed)
    has_val = n_val > 0
    return DataSplits(
        name=name,
        train_x=s.x_train.to(device), train_y=s.y_train.to(device),
        val_x=s.x_val.to(device) if has_val else None, val_y=s.y_val.to(device) if has_val else None,
        test_x=s.x_test.to(device), test_y=s.y_test.to(device),
        num_classes=2, input_shape=(s.x_train.shape[1],), mean=(0.0,), std=(1.0,),
    )
