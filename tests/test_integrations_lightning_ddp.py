"""Lightning with ``strategy="ddp"`` on two CPU processes (gloo): every registered method, PhysicalNPN
shrinking and growing past its reserve included, ends with the same parameters, method state, records and
events on both processes, and as the one-process run on the same global batches, up to the order of
floating-point sums. The runs are made by tests/lightning_ddp_run.py (Lightning starts the second process
by running that script again)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytest.importorskip("lightning", reason="Lightning is not installed (pip install 'neuroplastic[lightning]')")

import integration_setups as S  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "lightning_ddp_run.py"
RUNS = [*S.METHODS, "npn_physical_expand", *sorted(S.OTHERS)]


def _run(out: Path, devices: int) -> None:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29600 + os.getpid() % 300 + devices)}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), *RUNS], capture_output=True,
                          text=True, timeout=600, env=env, cwd=out)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """The folders of the 2-process and the 1-process runs of every method in ``RUNS``."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    S.mnist()  # skips without the data
    root = tmp_path_factory.mktemp("lightning-ddp")
    for devices in (2, 1):
        _run(root / str(devices), devices)
    return {devices: root / str(devices) for devices in (2, 1)}


@pytest.mark.parametrize("name", RUNS)
def test_lightning_ddp_processes_agree_and_match_one_process(name, runs):
    rank0 = S.check_processes(runs[2], runs[1], name)
    S.check_capacity_events(name, rank0)
