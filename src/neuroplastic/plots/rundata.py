"""Read what a training run recorded in its run folder, for the pictures.

The run folder layout is contract 2 of ``docs/architecture.md``::

    RUN_DIR/recipe.yaml  history.jsonl  events.jsonl  snapshots/epoch_00012.npz  checkpoint.pt

Only ``history.jsonl`` is required to open a run; everything else is optional here and each plot asks
for what it needs through :meth:`RunData.require_fields`, :meth:`RunData.snapshots` and
:meth:`RunData.model_state`, which raise :class:`PlotDataError` naming the missing file or field and
the plot that needs it.

A run killed while it was writing leaves a last ``history.jsonl`` line cut mid-JSON. That last line is
dropped with a :class:`RuntimeWarning` naming the file and line; a broken line anywhere else is damage
we cannot explain and raises :class:`PlotDataError`.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["PlotDataError", "RunData", "Snapshot", "load_run", "read_jsonl"]

_SNAPSHOT_NAME = re.compile(r"^epoch_(\d+)\.npz$")
#: how ``neuroplastic run`` starts a run folder's recipe.yaml: the reference and overrides it resolved
_SOURCE_LINE = "# resolved from: "


class PlotDataError(ValueError):
    """A run folder lacks (or has a damaged copy of) what a plot needs."""


@dataclass(frozen=True)
class Snapshot:
    """The arrays ``method.snapshot()`` returned at the end of one epoch, as float32."""

    epoch: int
    path: Path
    arrays: dict[str, np.ndarray]

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays whose key starts with ``prefix + "/"``, keyed by the rest of the name.

        ``group("pi")`` of a snapshot holding ``pi/conv1`` and ``pi/fc1`` is ``{"conv1": ..., "fc1": ...}``.
        """
        start = prefix + "/"
        return {key[len(start):]: value for key, value in self.arrays.items() if key.startswith(start)}


def read_jsonl(path: Path, *, tolerate_truncated_last: bool = True) -> list[dict[str, Any]]:
    """Parse a JSON-lines file into a list of objects.

    Blank lines are skipped. If the last non-blank line is not valid JSON and
    ``tolerate_truncated_last`` is true (a run killed mid-write), it is dropped with a
    :class:`RuntimeWarning`; any other bad line raises :class:`PlotDataError` with file and line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PlotDataError(f"{path} does not exist") from err
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    records: list[dict[str, Any]] = []
    for index, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if tolerate_truncated_last and index == len(numbered) - 1:
                warnings.warn(
                    f"{path}, line {lineno}: last line is not complete JSON ({err.msg}); "
                    "ignoring it (a run stopped while writing leaves such a line)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise PlotDataError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise PlotDataError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


@dataclass
class RunData:
    """A run folder opened for plotting: its history, events, recipe, and where its snapshots are."""

    path: Path
    history: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # recipe.yaml's "# resolved from:" line: the recipe reference and the overrides given

    # -- what the run is -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """A short label for titles: the recipe name if recorded, else the folder name."""
        name = self.recipe.get("name")
        return str(name) if name else self.path.name

    @property
    def method_name(self) -> str | None:
        """``recipe.yaml``'s ``method.name`` (e.g. ``"npn"``), or ``None`` when not recorded."""
        method = self.recipe.get("method")
        if isinstance(method, dict) and method.get("name") is not None:
            return str(method["name"])
        if isinstance(method, str):
            return method
        return None

    @property
    def overrides(self) -> list[str]:
        """The ``key=value`` overrides the run was started with, the seed left out (``source``'s words after
        the recipe reference)."""
        return [word for word in self.source.split()[1:] if not word.startswith("seed=")]

    def results(self) -> list[dict[str, Any]]:
        """The run's ``results.json`` objects (a list, one per run it holds; empty if the file is absent)."""
        path = self.path / "results.json"
        if not path.exists():
            return []
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PlotDataError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from err
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise PlotDataError(f"{path} must hold a list of result objects (docs/architecture.md, contract 3)")
        return results

    def has_field(self, name: str) -> bool:
        """Whether any history line records ``name``."""
        return any(name in record for record in self.history)

    def require_fields(self, names: list[str], plot: str, *, any_of: bool = False) -> None:
        """Raise :class:`PlotDataError` unless the history records ``names`` (all, or one if ``any_of``)."""
        missing = [n for n in names if not self.has_field(n)]
        if (any_of and len(missing) == len(names)) or (not any_of and missing):
            which = "any of" if any_of else "the field(s)"
            raise PlotDataError(
                f"the '{plot}' plot needs {which} {', '.join(repr(n) for n in missing)} in "
                f"{self.path / 'history.jsonl'}, which this run did not record"
            )

    def series(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """Epochs and values of one history field, over the lines that record it."""
        rows = [(r.get("epoch", i), r[name]) for i, r in enumerate(self.history) if name in r]
        return np.array([e for e, _ in rows], dtype=float), [v for _, v in rows]

    def dict_series(self, name: str, plot: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Epochs and one array per key of a per-layer history field (``layer_density``, ``hoyer``).

        A layer missing from some lines is NaN there. Raises :class:`PlotDataError` if a recorded
        value is not a dict of numbers.
        """
        epochs, values = self.series(name)
        keys: list[str] = []
        for epoch, value in zip(epochs, values, strict=True):
            # None stands for a non-finite number (JSON has no NaN)
            if not isinstance(value, dict) or not all(isinstance(v, int | float | None) for v in value.values()):
                raise PlotDataError(
                    f"the '{plot}' plot needs '{name}' to map layer names to numbers; epoch {epoch:g} has {value!r}"
                )
            keys += [k for k in value if k not in keys]
        table = {k: np.array([v.get(k) for v in values], dtype=float) for k in keys}
        return epochs, table

    def record_at(self, epoch: int) -> dict[str, Any]:
        """The history line of ``epoch`` (empty dict when that epoch was not recorded)."""
        for record in self.history:
            if record.get("epoch") == epoch:
                return record
        return {}

    # -- snapshots and checkpoint --------------------------------------------------------------
    def snapshot_paths(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of every ``snapshots/epoch_XXXXX.npz``, in epoch order."""
        folder = self.path / "snapshots"
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            match = _SNAPSHOT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def snapshots(self, plot: str, prefix: str) -> list[Snapshot]:
        """Every snapshot holding arrays under ``prefix/``, in epoch order.

        Raises :class:`PlotDataError` naming ``plot`` when there are none (no snapshots folder, an
        older run, or a method that records other arrays).
        """
        paths = self.snapshot_paths()
        if not paths:
            raise PlotDataError(
                f"the '{plot}' plot needs {self.path / 'snapshots'}/epoch_XXXXX.npz files, and there are none"
            )
        snaps = [s for s in (_load_snapshot(epoch, path) for epoch, path in paths) if s.group(prefix)]
        if not snaps:
            raise PlotDataError(
                f"the '{plot}' plot needs '{prefix}/<name>' arrays in {self.path / 'snapshots'}, "
                f"and none of its {len(paths)} snapshot(s) has one"
            )
        return snaps

    def has_snapshot_prefix(self, prefix: str) -> bool:
        """Whether the last snapshot has arrays under ``prefix/`` (cheap: reads only the key list)."""
        paths = self.snapshot_paths()
        if not paths:
            return False
        try:
            with np.load(paths[-1][1], allow_pickle=False) as data:
                return any(key.startswith(prefix + "/") for key in data.files)
        except (OSError, ValueError, zipfile.BadZipFile):
            return False

    def model_state(self, plot: str) -> dict[str, Any]:
        """The model ``state_dict`` saved under key ``"model"`` of ``checkpoint.pt``, on the CPU."""
        import torch  # imported here: reading history needs no torch

        path = self.path / "checkpoint.pt"
        if not path.is_file():
            raise PlotDataError(f"the '{plot}' plot needs {path}, which does not exist")
        # The checkpoint also holds optimizer, method and RNG states, which are not plain tensors;
        # run folders are the user's own output, so a full unpickle is acceptable here.
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same: unreadable
            raise PlotDataError(f"the '{plot}' plot cannot read {path} ({type(err).__name__}: {err})") from err
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            raise PlotDataError(f"the '{plot}' plot needs a 'model' state_dict in {path}")
        return checkpoint["model"]


def _load_snapshot(epoch: int, path: Path) -> Snapshot:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key], dtype=np.float32) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise PlotDataError(f"{path}: cannot read this snapshot ({err})") from err
    return Snapshot(epoch=epoch, path=path, arrays=arrays)


def load_run(run_dir: str | Path) -> RunData:
    """Open a run folder: parse ``history.jsonl`` (required), ``events.jsonl`` and ``recipe.yaml``.

    Raises
    ------
    PlotDataError
        if the folder or its history is missing, or the history is empty or damaged.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise PlotDataError(f"run folder {path} does not exist (or is not a folder)")
    history_path = path / "history.jsonl"
    if not history_path.is_file():
        raise PlotDataError(f"{history_path} does not exist: every plot needs the run's history")
    history = read_jsonl(history_path)
    if not history:
        raise PlotDataError(f"{history_path} has no complete epoch line: nothing to plot yet")
    events_path = path / "events.jsonl"
    events = read_jsonl(events_path) if events_path.is_file() else []
    recipe: dict[str, Any] = {}
    source = ""
    recipe_path = path / "recipe.yaml"
    if recipe_path.is_file():
        text = recipe_path.read_text(encoding="utf-8")
        if text.startswith(_SOURCE_LINE):
            source = text.splitlines()[0][len(_SOURCE_LINE):].strip()
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise PlotDataError(f"{recipe_path}: not valid YAML ({err})") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise PlotDataError(f"{recipe_path}: expected a mapping, got {type(loaded).__name__}")
        recipe = loaded or {}
    return RunData(path=path, history=history, events=events, recipe=recipe, source=source)
