"""L0 hard-concrete gates (Louizos, Welling & Kingma, ICLR 2018), the baseline NPN is compared with.

Each unit has a log-scale ``log_alpha`` (stored as the gate's ``phi``). In training a gate is the
stretched, clipped relaxed-Bernoulli sample ``z = clip(sigmoid((log u - log(1-u) + log_alpha) / beta)
* (zeta - gamma) + gamma, 0, 1)``, differentiable in ``log_alpha`` (one forward, one backward pass); the
penalty uses ``P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))``. At evaluation the gate is
the deterministic ``clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``: a unit is *open* when it
is non-zero. Unlike NPN's sigmoid gate, a unit whose gate sits in the clipped region gets no gradient,
so it rarely comes back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from neuroplastic.gates.sites import GateSite
from neuroplastic.methods.gated import UnitGateMethod

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcrete(UnitGateMethod):
    """Hard-concrete L0 gates on the units of ``model``.

    Parameters
    ----------
    lam, gates, include, exclude : as for :class:`~neuroplastic.methods.npn.NPN`.
    init_drop_rate : initial probability of a gate being closed (``log_alpha = log((1-r)/r)``).
    beta, gamma, zeta : temperature and stretch of the hard-concrete distribution.
    """

    name = "hard_concrete"
    owns_backward = True  # the penalty joins the loss

    def __init__(
        self,
        model: nn.Module,
        lam: float | Sequence[float] | dict[str, float] = 0.0,
        *,
        gates: str | Sequence[str] | dict[str, str] | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        example_input: torch.Tensor | Sequence[int] | None = None,
        init_drop_rate: float = 0.3,
        beta: float = BETA,
        gamma: float = GAMMA,
        zeta: float = ZETA,
    ) -> None:
        super().__init__(model, lam, gates, include, exclude, example_input)
        if not 0 < init_drop_rate < 1:
            raise ValueError(f"init_drop_rate must be in (0, 1), got {init_drop_rate}")
        if not (beta > 0 and gamma < 0 and zeta > 1):
            raise ValueError(f"need beta > 0, gamma < 0, zeta > 1; got beta={beta}, gamma={gamma}, zeta={zeta}")
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)
        for site in self.sites:
            with torch.no_grad():
                site.gates.phi.fill_(math.log(1 - init_drop_rate) - math.log(init_drop_rate))
            site.gates.phase = "value"
            site.gates.value_fn = self._gate_fn(site)
        self._attach_all()

    def _gate_fn(self, site: GateSite) -> Callable[[torch.Tensor], torch.Tensor]:
        gates = site.gates

        def value(x: torch.Tensor) -> torch.Tensor:
            log_alpha = gates.phi
            if gates.training:
                u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
                s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.beta)
            else:
                s = torch.sigmoid(log_alpha)
            return torch.clamp(s * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0).to(x.dtype)

        return value

    def keep_prob(self, site: GateSite) -> torch.Tensor:
        return torch.sigmoid(site.gates.phi - self.beta * math.log(-self.gamma / self.zeta))

    def eval_gates(self, site: GateSite) -> torch.Tensor:
        """The deterministic evaluation gate of each unit of ``site`` (soft: in [0, 1])."""
        s = torch.sigmoid(site.gates.phi.detach())
        return torch.clamp(s * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0)

    def open_units(self) -> list[torch.Tensor]:
        return [self.eval_gates(s) > 0 for s in self.sites]

    def backward(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss = closure()
        (loss + self.penalty()).backward()
        return loss.detach()
