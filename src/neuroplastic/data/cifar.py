"""Reader for the CIFAR-10 / CIFAR-100 "python version" pickled batches.

Each batch file is a pickled dict with ``data`` (uint8, N x 3072, channel-major: 1024 red, then 1024
green, then 1024 blue values, rows top to bottom) and the labels: ``labels`` in CIFAR-10,
``fine_labels`` (and ``coarse_labels``) in CIFAR-100. The original files were written by Python 2,
so under ``encoding="bytes"`` their keys are ``bytes``; files re-pickled by Python 3 have ``str`` keys.
Both are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from neuroplastic.data.safe_pickle import load_data_pickle
from neuroplastic.errors import DataFileError


def _get(entry: dict, key: str, source: str):
    """Value of ``key`` in a batch dict whose keys may be ``str`` or ``bytes``."""
    if key in entry:
        return entry[key]
    if key.encode() in entry:
        return entry[key.encode()]
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in entry)
    raise DataFileError(f"{source}: no {key!r} entry in the CIFAR batch (keys: {keys})")


def read_cifar_batch(path: str | os.PathLike, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into ``(images, labels)``: uint8 N x 3 x 32 x 32 and int64 N.

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` (or ``"coarse_labels"``) for CIFAR-100.
    """
    source = os.fspath(path)
    entry = load_data_pickle(source, "a CIFAR batch")
    if not isinstance(entry, dict):
        raise DataFileError(f"{source}: expected a pickled dict, found {type(entry).__name__}")
    data = np.asarray(_get(entry, "data", source), dtype=np.uint8)
    labels = np.asarray(_get(entry, label_key, source), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataFileError(f"{source}: data of shape {data.shape} and {labels.shape[0]} labels do not form "
                            f"a CIFAR batch (N x 3072 with N labels)")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batches(paths: Sequence[str | os.PathLike], label_key: str = "labels"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several batch files, in the order given."""
    parts = [read_cifar_batch(p, label_key) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
