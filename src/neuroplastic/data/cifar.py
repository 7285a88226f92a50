"""Reader for the CIFAR-10 / CIFAR-100 "python version" pickled batches.

Each batch file is a pickled dict with ``data`` (uint8, N x 3072, channel-major: 1024 red, then 1024
green, then 1024 blue values, rows top to bottom) and the labels: ``labels`` in CIFAR-10,
``fine_labels`` (and ``coarse_labels``) in CIFAR-100. The original files were written by Python 2,
so under ``encoding="bytes"`` their keys are ``bytes``; files re-pickled by Python 3 have ``str`` keys.
Both are accepted.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence

import numpy as np

# The batches hold only plain containers and numpy arrays. Unpickling anything else could run arbitrary
# code, so only the numpy names needed to rebuild an array are allowed.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _get(entry: dict, key: str, source: str):
    """Value of ``key`` in a batch dict whose keys may be ``str`` or ``bytes``."""
    if key in entry:
        return entry[key]
    if key.encode() in entry:
        return entry[key.encode()]
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in entry)
    raise KeyError(f"{source}: no {key!r} entry in the CIFAR batch (keys: {keys})")


def read_cifar_batch(path: str | os.PathLike, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into ``(images, labels)``: uint8 N x 3 x 32 x 32 and int64 N.

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` (or ``"coarse_labels"``) for CIFAR-100.
    """
    source = os.fspath(path)
    with open(path, "rb") as f:
        # encoding="bytes" keeps Python-2 strings as bytes (and is needed for Python-2 numpy arrays).
        entry = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: expected a pickled dict, found {type(entry).__name__}")
    data = np.asarray(_get(entry, "data", source), dtype=np.uint8)
    labels = np.asarray(_get(entry, label_key, source), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{source}: data of shape {data.shape} and {labels.shape[0]} labels do not form "
                         f"a CIFAR batch (N x 3072 with N labels)")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batches(paths: Sequence[str | os.PathLike], label_key: str = "labels"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several batch files, in the order given."""
    parts = [read_cifar_batch(p, label_key) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
