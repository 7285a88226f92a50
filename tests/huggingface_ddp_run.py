"""Train capacity methods through the Hugging Face ``Trainer`` on the processes ``torchrun`` started (or one
process without it) and write what each process ends with; tests/test_integrations_huggingface_ddp.py
runs it.

    torchrun --nproc_per_node N tests/huggingface_ddp_run.py OUT NAME [NAME ...]

Every process writes ``OUT/<name>-<rank>.pt``: its parameters, the method's state and the callback's
records. Each process takes ``BATCH // N`` examples per step: the Trainer gives process ``r`` the batches
``r, r + N, ...`` of the sequential order, so the N processes together take the one-process batches.
``rigl_resume`` stops RigL after 2 epochs and resumes it with new objects from the checkpoint folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import integration_setups as S  # noqa: E402
from huggingface_setups import train_hf  # noqa: E402

#: runs other than ``integration_setups.build(name)``: run name -> (method name, options)
VARIANTS = {
    # growth on the evaluation loss every 4 steps (each process evaluates its share of 2 batches)
    "npn_expand": ("npn", {"mode": "expand", "k": 1, "lam": 0.0, "init_active": 8, "expand_every": 4,
                           "expand_val_batches": 2}),
    "rigl_resume": ("rigl", {}),
    # physical growth past the reserve of 2 units: the model is wrapped in DDP again after every resize
    "npn_physical_expand": ("npn_physical", {"mode": "expand", "k": 1, "lam": 0.0, "init_active": 8, "reserve": 2,
                                             "expand_every": 4, "expand_val_batches": 2}),
}


def main(out: Path, names: list[str]) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batches = {"per_device_train_batch_size": S.BATCH // world, "per_device_eval_batch_size": S.BATCH // world}
    if world > 1:
        batches["ddp_backend"] = "gloo"
    for name in names:
        method_name, options = VARIANTS.get(name, (name, {}))
        s = S.build(method_name, with_optimizer=False, **options)
        folder = out / f"{name}-hf"
        if name == "rigl_resume":  # stopped after 2 epochs, then resumed with new objects
            train_hf(s, folder, 2, save_strategy="epoch", **batches)
            s = S.build(method_name, with_optimizer=False, **options)
            callback, trainer = train_hf(s, folder, resume=True, save_strategy="epoch", **batches)
        else:
            callback, trainer = train_hf(s, folder, **batches)
        torch.save({"state": {k: v.clone() for k, v in s.net.state_dict().items()},
                    "method": s.method.state_dict(), "history": callback.history, "events": callback.events,
                    "architecture": s.method.architecture()},
                   out / f"{name}-{trainer.args.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
