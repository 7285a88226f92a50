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
    kinds = {e["event"] for e in rank0["events"]}
    if name == "npn":
        assert rank0["architecture"]["arch"][0] < S.HIDDEN
    if name == "npn_expand":
        assert "expand" in kinds
    if name == "npn_physical":  # shrunk for real on both processes, the DDP wrapper built again
        assert "remove" in kinds and rank0["state"]["fc1.weight"].shape[0] < S.HIDDEN
    if name == "npn_physical_expand":  # grew for real past its reserve, then removed the unused units
        assert {"expand", "grow", "remove"} <= kinds
        assert 8 < rank0["state"]["fc1.weight"].shape[0] < S.HIDDEN
    if name in ("rigl", "rigl_resume", "set", "granet", "gmp", "lpss"):
        assert rank0["events"], "no topology update"
    if name == "rigl_resume":  # stopped, resumed: the run of the uninterrupted one
        S.check_processes(runs[2], runs[2], "rigl")  # (the two processes of that run agree)
        uninterrupted = S.check_processes(runs[2], runs[1], "rigl")
        assert rank0["events"] == uninterrupted["events"]
        assert all(rank0["state"][k].equal(uninterrupted["state"][k]) for k in rank0["state"])
