"""Train capacity methods through ``lightning.Trainer`` on ``DEVICES`` CPU processes and write what each
process ends with; tests/test_integrations_lightning_ddp.py runs it (``strategy="ddp"`` starts the other
processes by running this script again).

    python tests/lightning_ddp_run.py OUT DEVICES NAME [NAME ...]

Every process writes ``OUT/<name>-<rank>.pt``: its parameters, the method's state and the callback's
records. The N processes together take the one-process run's batches (``BATCH // N`` examples each, see
:func:`train_loader`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import integration_setups as S  # noqa: E402
from lightning_setups import Classifier  # noqa: E402
from neuroplastic.integrations.lightning import CapacityCallback  # noqa: E402


def train_loader(data: S.Mnist, devices: int) -> torch.utils.data.DataLoader:
    """The training batches: under DDP Lightning gives every process a shuffling ``DistributedSampler``
    (seed 0, reshuffled every epoch), whose processes together take the examples of one process's batches
    when that process reads them in the sampler's order, as here."""
    dataset = torch.utils.data.TensorDataset(data.train_x, data.train_y)
    if devices > 1:  # Lightning puts its sampler in
        return torch.utils.data.DataLoader(dataset, batch_size=S.BATCH // devices)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    return torch.utils.data.DataLoader(dataset, batch_size=S.BATCH, sampler=sampler)


#: runs other than ``integration_setups.build(name)``: run name -> (method name, options)
VARIANTS = {
    # growth on the validation loss every 4 steps (each process validates its share) and, physically,
    # past the reserve of 2 units
    "npn_physical_expand": ("npn_physical", {"mode": "expand", "k": 1, "lam": 0.0, "init_active": 8, "reserve": 2,
                                             "expand_every": 4, "expand_val_batches": 2}),
}


def main(out: Path, devices: int, names: list[str]) -> None:
    torch.set_num_threads(1)
    data = S.mnist()
    batch = S.BATCH // devices
    for name in names:
        method_name, options = VARIANTS.get(name, (name, {}))
        s = S.build(method_name, with_optimizer=False, **options)
        module = Classifier(s.net, lambda net, s=s: (s.optimizers, s.schedules), manual=s.method.owns_backward)
        callback = CapacityCallback(s.method)
        trainer = L.Trainer(max_epochs=S.EPOCHS, callbacks=[callback], accelerator="cpu", devices=devices,
                            strategy="ddp" if devices > 1 else "auto", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False)
        trainer.fit(module, train_loader(data, devices), S.loader(data.val_x, data.val_y, batch))
        torch.save({"state": {k: v.clone() for k, v in s.net.state_dict().items()},
                    "method": s.method.state_dict(), "history": callback.history, "events": callback.events,
                    "architecture": s.method.architecture()},
                   out / f"{name}-{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
