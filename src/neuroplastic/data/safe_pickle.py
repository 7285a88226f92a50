"""Reading pickled data files (CIFAR batches, the moons file of the NPN paper) safely and with clear errors.

The files hold only plain containers and numpy arrays. Unpickling anything else could run arbitrary
code, so :class:`NumpyOnlyUnpickler` allows only the numpy names needed to rebuild an array; and a file
that is truncated or corrupt (any failure while unpickling it) becomes a
:class:`~neuroplastic.errors.DataFileError` naming the file and what to do, not an ``UnpicklingError``
traceback.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from neuroplastic.errors import DataFileError

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
})


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global (a class or function) that a data file may not hold."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """Allow only the globals of :data:`ALLOWED_GLOBALS`; raise :class:`RefusedGlobal` for any other."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"it refers to {module}.{name}, which is not allowed in a data file "
                                "(only plain containers and numpy arrays are)")
        return super().find_class(module, name)


def load_data_pickle(path: str | os.PathLike, what: str, remedy: str = "replace it with a good copy") -> Any:
    """Unpickle the data file ``path`` (``encoding="bytes"``, numpy arrays and plain containers only).

    ``what`` names the content for the message (``"a CIFAR batch"``). Any failure to unpickle it raises
    :class:`~neuroplastic.errors.DataFileError` with the file, its size, the reason and ``remedy``.
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        try:
            # encoding="bytes" keeps Python-2 strings as bytes (and is needed for Python-2 numpy arrays)
            return NumpyOnlyUnpickler(f, encoding="bytes").load()
        except RefusedGlobal as err:
            raise DataFileError(f"{source} cannot be read as {what}: {err}; {remedy}") from err
        except Exception as err:  # noqa: BLE001 - whatever a damaged file makes the unpickler raise
            size = os.path.getsize(source)
            raise DataFileError(
                f"{source} ({size:,} bytes) cannot be read as {what}: it is truncated, corrupt or not such a "
                f"file ({type(err).__name__}: {err}); {remedy}"
            ) from err
