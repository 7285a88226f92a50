"""Unbiased gradient estimators for Bernoulli gates, in logit space.

For ``z ~ Bernoulli(sigmoid(alpha))`` (independent per coordinate) and ``u ~ U(0, 1)``:

* ARM (Yin & Zhou 2019): ``grad_alpha E[f(z)] = E_u[(f(1[u > 1 - pi]) - f(1[u < pi])) (u - 1/2)]``,
  two evaluations of ``f`` at antithetic gates;
* AR: ``grad_alpha E[f(z)] = E_u[f(1[u < pi]) (1 - 2u)]``, one evaluation, higher variance.

These helpers are pure tensor functions so that they can be checked against exact enumeration.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("arm", "ar")


def antithetic_gates(u: torch.Tensor, pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two ARM gate samples ``z1 = 1[u < pi]`` (main pass) and ``z2 = 1[u > 1 - pi]``."""
    return (u < pi).to(pi.dtype), (u > 1 - pi).to(pi.dtype)


def arm_logit_grad(f_main: torch.Tensor, f_anti: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ARM estimate of ``d E[f] / d alpha`` from ``f(z1)`` (main) and ``f(z2)`` (antithetic).

    ``f_main`` and ``f_anti`` are scalars (shared ``u`` per batch) or have ``u``'s leading shape
    (one ``u`` per sample: the mean over samples is taken).
    """
    diff = f_anti - f_main
    if diff.dim() == 0:
        return diff * (u - 0.5)
    return (diff.reshape(-1, *([1] * (u.dim() - 1))) * (u - 0.5)).mean(0)


def ar_logit_grad(f_main: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """AR estimate of ``d E[f] / d alpha`` from the single evaluation ``f(1[u < pi])``."""
    if f_main.dim() == 0:
        return f_main * (1 - 2 * u)
    return (f_main.reshape(-1, *([1] * (u.dim() - 1))) * (1 - 2 * u)).mean(0)
