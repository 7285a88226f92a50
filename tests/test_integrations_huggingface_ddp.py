"""The Hugging Face Trainer under ``torchrun --nproc_per_node 2`` (CPU, gloo): every registered method,
PhysicalNPN shrinking and growing past its reserve (``CapacityTrainer`` wraps the model in DDP again after
each resize), NPN expanding on step-wise checks of the evaluation data and RigL resumed from a checkpoint
folder, ends with the same parameters, method state, records and events on both processes, and as one
process on the same global batches, up to the order of floating-point sums. The runs are made by
tests/huggingface_ddp_run.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'neuroplastic[huggingface]')")
pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'neuroplastic[huggingface]')")

import integration_setups as S  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "huggingface_ddp_run.py"
RUNS = ["npn", "npn_physical", "rigl", "lpss", "npn_expand", "npn_physical_expand", "rigl_resume", *sorted(S.OTHERS)]


def _run(out: Path, processes: int, names: list[str]) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    return subprocess.run([*launcher, str(SCRIPT), str(out), *names], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """The folders of the 2-process and the 1-process runs of every method in ``RUNS``."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    S.mnist()  # skips without the data
    root = tmp_path_factory.mktemp("hf-ddp")
    for processes in (2, 1):
        done = _run(root / str(processes), processes, RUNS)
        assert done.returncode == 0, done.stderr[-4000:]
    return {processes: root / str(processes) for processes in (2, 1)}


@pytest.mark.parametrize("name", RUNS)
def test_hf_ddp_processes_agree_and_match_one_process(name, runs):
    rank0 = S.check_processes(runs[2], runs[1], name)
    S.check_capacity_events(name, rank0)
    if name == "rigl_resume":  # stopped and resumed: exactly the uninterrupted run (of the same processes)
        uninterrupted = S.check_processes(runs[2], runs[1], "rigl")
        S.assert_close_records({k: rank0[k] for k in ("state", "method", "history", "events")},
                               {k: uninterrupted[k] for k in ("state", "method", "history", "events")}, 0.0)
