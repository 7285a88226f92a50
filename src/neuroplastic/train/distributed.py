"""Data-parallel runs under ``torchrun``: the process group, and the few places a run must agree across
processes.

``torchrun --nproc_per_node N -m neuroplastic.cli run RECIPE ...`` starts N processes; each calls
:func:`init_from_env`, loads the data, builds the same model (same seed) and trains its share of every
batch (:class:`~neuroplastic.data.TensorLoader` with ``rank`` / ``world_size``) through
``DistributedDataParallel``. Only the main process (rank 0) writes the run folder.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> str:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), once;
    return the device this process trains on (``cuda:LOCAL_RANK`` for ``cuda``). Without torchrun, nothing
    happens and ``device`` is returned unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device


def ddp_wrap(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` on the model's device (rank 0's parameters are broadcast)."""
    param = next(model.parameters())
    ids = [param.device.index] if param.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def rewrap_like(wrapper: nn.parallel.DistributedDataParallel,
                module: nn.Module) -> nn.parallel.DistributedDataParallel:
    """A new ``DistributedDataParallel`` of ``module`` with ``wrapper``'s settings (devices, buffer
    broadcast, unused-parameter search, bucket size, gradient views): after a method replaced the
    module's parameters, the old wrapper would go on reducing the old ones. Communication hooks
    registered on ``wrapper`` are not carried over."""
    return nn.parallel.DistributedDataParallel(
        module, device_ids=wrapper.device_ids, output_device=wrapper.output_device,
        broadcast_buffers=wrapper.broadcast_buffers, find_unused_parameters=wrapper.find_unused_parameters,
        bucket_cap_mb=wrapper.bucket_bytes_cap / 2**20, gradient_as_bucket_view=wrapper.gradient_as_bucket_view)


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics follow each process's share of the
    batches), so that evaluations, and the decisions a method takes on them, agree; no-op outside a group."""
    if world()[1] == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def sum_over_processes(*values: float | torch.Tensor) -> list[float]:
    """The sums of ``values`` over the processes of the group (a collective: every process must call it),
    e.g. a loss total and an example count of each process's share of the validation data; the values
    as they are outside a group."""
    if world()[1] == 1:
        return [float(v) for v in values]
    totals = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        totals = totals.cuda()
    dist.all_reduce(totals)
    return totals.tolist()


def barrier() -> None:
    """Wait for every process (no-op outside a process group)."""
    if world()[1] > 1:
        dist.barrier()


def lift_ddp_ignores(root: nn.Module) -> list[str]:
    """Make the parameters that submodules of ``root`` keep out of DistributedDataParallel (their
    ``_ddp_params_and_buffers_to_ignore``, as NPN sets on the model it gates) known to ``root`` by their
    names in ``root``, since DDP reads only the wrapped module's list; a framework wraps ``root`` (a
    LightningModule, a Trainer's model) rather than the model the method gated. Returns ``root``'s list."""
    names = set(getattr(root, "_ddp_params_and_buffers_to_ignore", []))
    for prefix, module in root.named_modules():
        if module is not root:
            names |= {f"{prefix}.{name}" for name in getattr(module, "_ddp_params_and_buffers_to_ignore", [])}
    if names:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(root, sorted(names))
    return sorted(names)
