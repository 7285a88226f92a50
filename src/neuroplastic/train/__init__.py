"""The reference training loop and its parts (optimizers, schedules, progress, checkpoints)."""

from neuroplastic.train.optim import build_optimizer, build_schedule

__all__ = ["build_optimizer", "build_schedule"]
