"""Files written atomically: a crash, a kill or a full disk during a write leaves the old file, never a
truncated one.

The content goes to a temporary file in the same folder, is flushed to disk (``fsync``) and is then moved
over the target with :func:`os.replace`, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary binary file and move it to ``path`` once it is on disk.

    If ``write`` or the disk fails, the temporary file is removed, ``path`` is left as it was and the
    error propagates.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data))
