"""``neuroplastic run`` under ``torchrun`` (two CPU processes, gloo): one run folder written by rank 0,
the same run as one process up to the order of floating-point sums, for every method family (NPN on the
moons recipe; PhysicalNPN shrinking, RigL, LpSS and IterativePruning on the short runs the fault tests
use); a run killed with its processes and resumed under torchrun ends as the uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

import integration_setups as S
from neuroplastic.recipes import execute, prepare
from run_families import FAMILIES, recipe_ref
from shared_data import SHARED, needs_data

WALL_CLOCK = {"seconds", "wall_seconds", "session_seconds"}
NPN_MOONS = ["npn-moons-sparse", "epochs_scale=0.01"]  # 20 epochs: 5 frozen, 5 plastic, 10 hard

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed gloo missing")


def _torchrun(args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "neuroplastic.cli", "run", *args, "--data-dir", str(SHARED),
            "--out", str(out), "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _lines(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(s).items() if k not in WALL_CLOCK}
            for s in path.read_text().splitlines() if s.strip()]


def _results(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK | {"processes", "environment"}}
            for r in json.loads((run / "results.json").read_text())]


def _same_run(two: Path, one: Path) -> None:
    """The 2-process run folder ``two`` holds the run of ``one`` (one process), up to float sums."""
    for name in ("history.jsonl", "events.jsonl"):
        S.assert_close_records(_lines(two / name), _lines(one / name), 1e-4, name)
    S.assert_close_records(_results(two), _results(one), 1e-4, "results.json")
    assert json.loads((two / "results.json").read_text())[0]["processes"] == 2
    assert not list(two.glob("*.tmp"))


@needs_data
def test_torchrun_trains_npn_like_a_single_process(tmp_path):
    done = subprocess.run(_torchrun(NPN_MOONS, tmp_path / "two"), capture_output=True, text=True, timeout=300,
                          env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    execute(prepare(NPN_MOONS[0], NPN_MOONS[1:], out=tmp_path / "one", data_dir=SHARED), progress=False,
            plots=False)
    _same_run(tmp_path / "two", tmp_path / "one")
    assert len(_lines(tmp_path / "two" / "history.jsonl")) == 20


@needs_data
@pytest.mark.parametrize("family", ["npn_physical", "rigl", "lpss", "imp"])
def test_torchrun_trains_every_family_like_a_single_process(family, tmp_path):
    ref, overrides = recipe_ref(family, tmp_path), FAMILIES[family][1]
    done = subprocess.run(_torchrun([ref, *overrides], tmp_path / "two"), capture_output=True, text=True,
                          timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    execute(prepare(ref, overrides, out=tmp_path / "one", data_dir=SHARED), progress=False, plots=False)
    _same_run(tmp_path / "two", tmp_path / "one")
    kinds = {e["event"] for e in _lines(tmp_path / "two" / "events.jsonl")}
    expected = {"npn_physical": "remove", "rigl": "drop_and_grow", "lpss": "lpss_update", "imp": "prune_round"}[family]
    assert expected in kinds, kinds


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line holds ``marker`` (Linux: read from /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@needs_data
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the processes to kill in /proc")
def test_torchrun_resumes_a_killed_run(tmp_path):
    """PhysicalNPN (it shrinks: DDP is wrapped again after each removal), all its processes killed after
    3 or more epochs and resumed with ``torchrun ... --resume``: the run of the
    uninterrupted 2-process run."""
    ref, overrides = recipe_ref("npn_physical", tmp_path), FAMILIES["npn_physical"][1]
    whole = subprocess.run(_torchrun([ref, *overrides], tmp_path / "whole"), capture_output=True, text=True,
                           timeout=300, env=_env())
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun([ref, *overrides], run), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, )
    history, deadline = run / "history.jsonl", time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if history.exists() and len(history.read_text().splitlines()) >= 3:
                _kill_all(str(run))  # the launcher and both processes (torchrun starts them in new sessions)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_all(str(run))
    assert not (run / "results.json").exists(), "the run ended before the kill"
    epochs = len(_lines(run / "history.jsonl"))
    assert 3 <= epochs < 10
    resumed = subprocess.run(_torchrun(["--resume"], run), capture_output=True, text=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("history.jsonl", "events.jsonl"):
        assert _lines(run / name) == _lines(tmp_path / "whole" / name), name
    assert _results(run) == _results(tmp_path / "whole")
    assert "remove" in {e["event"] for e in _lines(run / "events.jsonl")}
