"""Test-wide settings: one intra-op thread (the tests use tiny tensors, for which more threads on a small
machine only add overhead), so the suite runs at the same speed on a busy or an idle 2-core machine."""

import torch

torch.set_num_threads(1)
