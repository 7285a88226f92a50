"""What a run ran on: software versions, the processor or GPU, threads and the float modes that change
results, recorded beside its numbers (``results.json``'s ``environment``) so a table can say where each
number came from. The same seed on two machines need not give the same numbers (GPU kernels, TF32)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["describe_environment"]


def _cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_environment(device: torch.device | str) -> dict[str, Any]:
    """The machine and software a run on ``device`` uses: versions of Python, torch and neuroplastic, the
    CPU (model, logical cores, torch's intra-op threads) and, on a CUDA device, the GPU's name, the CUDA and
    cuDNN versions and whether convolutions and matrix products may use TF32 (fewer mantissa bits)."""
    from neuroplastic import __version__

    device = torch.device(device)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "neuroplastic": __version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env.update({
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_convolutions": torch.backends.cudnn.allow_tf32,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        })
    return env
