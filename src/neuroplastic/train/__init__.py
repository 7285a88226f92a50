"""The reference training loop and its parts (optimizers, schedules, progress, checkpoints)."""

from neuroplastic.train.checkpoint import load_checkpoint, save_atomic, seed_everything
from neuroplastic.train.loop import FitResult, evaluate, fit
from neuroplastic.train.optim import build_optimizer, build_schedule

__all__ = [
    "FitResult",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_atomic",
    "seed_everything",
]
