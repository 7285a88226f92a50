"""``neuroplastic run`` under ``torchrun`` (two CPU processes, gloo): one run folder written by rank 0,
the same run as one process up to the order of floating-point sums."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the moons of this recipe are generated
RECIPE = ["npn-moons-sparse", "epochs_scale=0.01"]  # 20 epochs: 5 frozen, 5 plastic, 10 hard


def _run(out: Path, processes: int) -> list[dict]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                 "--master_port", str(29500 + os.getpid() % 1000)] if processes > 1 else [sys.executable])
    cmd = [*launcher, "-m", "neuroplastic.cli", "run", *RECIPE, "--data-dir", str(DATA), "--out", str(out),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed gloo missing")
def test_torchrun_trains_one_run_like_a_single_process(tmp_path):
    two = _run(tmp_path / "two", 2)
    one = _run(tmp_path / "one", 1)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(results) == 1 and results[0]["processes"] == 2
    assert len(two) == len(one) == 20
    for a, b in zip(one, two, strict=True):  # each process trains half of every batch of the same plan
        assert a["arch"] == b["arch"]
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.01
        assert abs(a["val_loss"] - b["val_loss"]) <= 0.01
    assert not list((tmp_path / "two").glob("*.tmp"))
