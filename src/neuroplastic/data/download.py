"""Where data files live, how they are checked, and how missing ones are fetched.

A data set is a folder of files under a *data directory*. The data directory is, in order of
precedence: the ``data_dir`` argument, the environment variable ``NEUROPLASTIC_DATA``, or the user
cache folder ``~/.cache/neuroplastic`` (``$XDG_CACHE_HOME/neuroplastic`` when that is set).

Files of the full public data sets are checked against their published MD5 checksums every time they
are read (a few hundred milliseconds), and the files of local-only layouts (the CIFAR-10 subset, the
moons file of the NPN paper) against pinned SHA-256 checksums, so a truncated or corrupted file never
trains a model silently: :class:`ChecksumError` names the file, the expected and the actual checksum.
Missing files are downloaded from the usual public mirrors when the network answers; when it does not,
:class:`DatasetNotFoundError` names every missing file and the folder to put it in.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from neuroplastic.errors import DataFileError, DatasetNotFoundError
from neuroplastic.files import write_atomic

ENV_VAR = "NEUROPLASTIC_DATA"
DOWNLOAD_TIMEOUT_S = 10.0


class ChecksumError(DataFileError):
    """A data file exists but its checksum differs from the pinned one (corrupted or wrong file)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its path relative to the data set folder and its checksum.

    ``md5`` is the published MD5 of a file of a public data set; a file without one (a subset made
    locally) may pin its ``sha256`` instead. Neither: the file is not checked.
    """

    name: str
    md5: str | None
    sha256: str | None = None


@dataclass(frozen=True)
class Archive:
    """A compressed archive on the mirrors that, once extracted into the data directory, yields files.

    ``extracts_to`` is the folder (relative to the data directory) that the archive creates.
    """

    filename: str
    md5: str
    urls: tuple[str, ...]
    extracts_to: str


def default_data_dir() -> Path:
    """The user cache folder used when neither ``data_dir`` nor ``NEUROPLASTIC_DATA`` is given."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "neuroplastic"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$NEUROPLASTIC_DATA``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def file_digest(path: str | os.PathLike, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    """Hex digest (``"md5"`` or ``"sha256"``) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    return file_digest(path, "md5", chunk_size)


def verify_checksum(path: Path, expected: str, algorithm: str = "md5",
                    remedy: str = "delete it and download it again") -> None:
    """Raise :class:`ChecksumError` naming the file, the expected and the actual digest if they differ."""
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected {algorithm.upper()} {expected}, got {actual} "
            f"({os.path.getsize(path):,} bytes). The file is truncated, corrupted or not the expected one; "
            f"{remedy}."
        )


def verify_md5(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file, the expected and the actual MD5 if they differ."""
    verify_checksum(path, expected, "md5")


def download_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` through a temporary file, so a broken transfer leaves nothing behind.

    Raises ``OSError`` (``urllib.error.URLError`` included) when the network does not answer.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        write_atomic(dest, lambda out: shutil.copyfileobj(response, out))


def _fetch(urls: Sequence[str], dest: Path, md5: str | None) -> list[str]:
    """Try each mirror in turn; return the list of failure messages (empty on success)."""
    failures = []
    for url in urls:
        try:
            download_url(url, dest)
        except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {exc}")
            continue
        if md5 is not None and md5sum(dest) != md5:
            failures.append(f"{url}: downloaded file has the wrong MD5")
            dest.unlink()
            continue
        return []
    return failures


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract a tar archive, refusing members that would land outside ``into``."""
    root = into.resolve()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"refusing to extract {member.name!r} from {archive}: it leaves {into}")
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"refusing to extract {member.name!r} from {archive}: not a plain file")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and recent 3.10/3.11 patch releases)
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)


def ensure_files(
    dataset: str,
    folder: Path,
    files: Sequence[RemoteFile],
    *,
    urls: Sequence[str] = (),
    archive: Archive | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    hint: str = "",
) -> list[Path]:
    """Make sure every file of a data set is present in ``folder`` and has its published MD5.

    Parameters
    ----------
    dataset
        Name of the data set, for messages.
    folder
        Folder that holds the files.
    files
        The files, with their MD5 (``None``: not checked).
    urls
        Mirror base URLs for files downloaded one by one (``url + name``), tried in order.
    archive
        Alternatively, one archive that contains every file; it is downloaded into ``data_dir``,
        checked against its MD5 and extracted there.
    data_dir
        The data directory (needed with ``archive``).
    download
        If False, never touch the network.
    hint
        A sentence added to the missing-file message (e.g. where a local-only data set comes from).

    Returns
    -------
    The paths of the files, in the order given.
    """
    paths = [folder / f.name for f in files]
    missing = [f for f, p in zip(files, paths, strict=True) if not p.exists()]
    failures: list[str] = []
    if missing and archive is not None:
        if data_dir is None:
            raise ValueError("ensure_files: data_dir is required when archive is given")
        tar_path = data_dir / archive.filename
        if not tar_path.exists() and download:
            failures = _fetch(archive.urls, tar_path, archive.md5)
        if tar_path.exists():  # downloaded now, or put there by hand: check it, then extract it
            verify_md5(tar_path, archive.md5)
            _safe_extract(tar_path, data_dir)
    elif missing and download:
        for f in missing:
            failures += _fetch([base + f.name for base in urls], folder / f.name, f.md5)
    missing = [f for f, p in zip(files, paths, strict=True) if not p.exists()]
    if missing:
        names = "\n".join(f"  {f.name}" for f in missing)
        if not (urls or archive):
            how = "it has no public mirror"
        else:
            how = "no mirror could be reached" if download else "downloading was disabled"
        tried = ("\nDownload attempts:\n  " + "\n  ".join(failures)) if failures else ""
        where = ""
        if archive is not None:
            where = f"\n(or put {archive.filename} from {archive.urls[0]} in {data_dir}; it is extracted)"
        raise DatasetNotFoundError(
            f"data set {dataset!r}: {len(missing)} file(s) missing and {how}.\n"
            f"Put these files in the folder {folder}:\n{names}{where}\n"
            f"(The data directory is chosen by the data_dir argument / --data-dir, else the environment "
            f"variable {ENV_VAR}, else {default_data_dir()}.){tried}" + (f"\n{hint}" if hint else "")
        )
    remedy = "delete it and download it again" if (urls or archive) else hint.rstrip(".") or "replace it"
    for f, p in zip(files, paths, strict=True):
        if f.md5 is not None:
            verify_checksum(p, f.md5, "md5", remedy)
        elif f.sha256 is not None:
            verify_checksum(p, f.sha256, "sha256", remedy)
    return paths
