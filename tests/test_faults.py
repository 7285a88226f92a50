"""``kill -9`` through ``neuroplastic run``, then ``--resume``: history and results bitwise equal to a run that
was never interrupted, for every method family (NPN, PhysicalNPN, a mask method, LpSS, IterativePruning).

Each run trains a few epochs of the moons MLP on the NPN paper's own points (the real file in shared/data),
so a run takes a second or two. The killed run is a ``neuroplastic run`` process that gets SIGKILL at a
moment drawn from a seeded generator (after a random number of finished epochs, a random few milliseconds
later), or while it is writing ``checkpoint.pt.tmp``; it is resumed with ``--resume --out DIR`` alone (the
run folder remembers the recipe and the data directory). The uninterrupted reference runs in this process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuroplastic.recipes import execute, prepare
from run_families import FAMILIES, recipe_ref
from shared_data import SHARED, needs_data

SRC = str(Path(__file__).resolve().parents[1] / "src")
WALL_CLOCK = {"seconds", "wall_seconds", "session_seconds"}  # the only fields allowed to differ
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neuroplastic.cli", "run", *args, "--no-progress"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NEUROPLASTIC_DATA"}
    return {**env, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _lines(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(s).items() if k not in WALL_CLOCK}
            for s in path.read_text().splitlines() if s.strip()]


def _results(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in json.loads((run / "results.json").read_text())]


def _start_and_kill(args: list[str], run: Path, when: str, rng: random.Random, epochs: int) -> dict:
    """Start ``neuroplastic run ARGS``, SIGKILL it at the chosen moment; return where it was."""
    proc = subprocess.Popen(_cli(*args, "--out", str(run), "--data-dir", str(SHARED)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after = rng.randint(1, epochs - 3)  # finished epochs before the kill
    delay = rng.uniform(0.0, 0.02)
    history, tmp = run / "history.jsonl", run / "checkpoint.pt.tmp"
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            done = len(history.read_text().splitlines()) if history.exists() else 0
            if done >= after and (when != "checkpoint" or tmp.exists()):
                if when == "random":
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself (code {proc.returncode}): {proc.stderr.read()}"
    return {"epochs_logged": len(history.read_text().splitlines()) if history.exists() else 0,
            "tmp_left": tmp.exists(), "finished": (run / "results.json").exists()}


@needs_data
@pytest.mark.parametrize("family", list(FAMILIES))
def test_kill_9_then_resume_equals_the_uninterrupted_run(tmp_path, family):
    _, overrides, when = FAMILIES[family]
    ref = recipe_ref(family, tmp_path)
    reference = tmp_path / "reference"
    execute(prepare(ref, overrides, out=reference, data_dir=SHARED), progress=False, plots=False)
    epochs = len(_lines(reference / "history.jsonl"))
    rng = random.Random(family)  # a seeded "random moment" per family: reproducible, different per family
    run = tmp_path / "killed"
    where = _start_and_kill([ref, *overrides], run, when, rng, epochs)
    assert not where["finished"] and 0 < where["epochs_logged"] < epochs, where
    if when == "checkpoint":
        assert where["tmp_left"], f"the kill was to land while checkpoint.pt.tmp was written: {where}"
    proc = subprocess.run(_cli("--resume", "--out", str(run)), env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (run / "checkpoint.pt.tmp").exists()
    for name in ("history.jsonl", "events.jsonl"):
        assert _lines(run / name) == _lines(reference / name), f"{name} differs after a kill at {where}"
    assert _results(run) == _results(reference), f"results.json differs after a kill at {where}"
