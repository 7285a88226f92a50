"""The LightningModule of the Lightning integration tests (imported by the tests and by the script that
runs them under ``strategy="ddp"``): a classifier as users write one."""

from __future__ import annotations

import lightning as L
import torch.nn.functional as F

from neuroplastic.integrations.lightning import capacity_step


class Classifier(L.LightningModule):
    """A LightningModule as users write one: ``make_optimizers(net)`` gives the optimizers and per-step
    schedules; with ``manual`` the step is handed to the method (``capacity_step``)."""

    def __init__(self, net, make_optimizers, manual: bool) -> None:
        super().__init__()
        self.net = net
        self.make_optimizers = make_optimizers
        self.automatic_optimization = not manual

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if not self.automatic_optimization:
            return capacity_step(self, x, y)
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        optimizers, schedules = self.make_optimizers(self.net)
        return optimizers, [{"scheduler": s, "interval": "step"} for s in schedules]
