"""NPN's learning-stage scheduler: one parameter ``k`` modulates pre-training, plasticity, hardening.

* stage 1 (pre-train, epochs ``[0, plastic_start)``): ``k = k_frozen`` (5000), gates deterministic and
  frozen;
* stage 2 (plastic, ``[plastic_start, harden_start)``): the user's ``k`` (7 to sparsify, 1 to expand);
* stage 3 (harden / fine-tune, ``[harden_start, inf)``): ``k = k_frozen`` again.

With ``stages=None`` every epoch is plastic (L0-ARM: one constant ``k``).
"""

from __future__ import annotations

from typing import Any

from neuroplastic.errors import BadInput

K_FROZEN = 5000.0


class StageSchedule:
    """Maps an epoch to its stage (1, 2, 3) and its ``k``."""

    def __init__(self, k: float, stages: tuple[int, int] | list[int] | None, k_frozen: float = K_FROZEN) -> None:
        if not k > 0:
            raise BadInput(f"k must be > 0, got {k}")
        if not k_frozen > 0:
            raise BadInput(f"k_frozen must be > 0, got {k_frozen}")
        if stages is not None:
            if len(stages) != 2 or not 0 <= stages[0] <= stages[1]:
                raise BadInput(
                    f"stages must be (plastic_start, harden_start) epochs with 0 <= start <= end, got {stages}"
                )
            stages = (int(stages[0]), int(stages[1]))
        self.k = float(k)
        self.k_frozen = float(k_frozen)
        self.stages = stages

    def stage(self, epoch: int) -> int:
        """1 (pre-train), 2 (plastic) or 3 (harden) for ``epoch``."""
        if self.stages is None:
            return 2
        if epoch < self.stages[0]:
            return 1
        return 2 if epoch < self.stages[1] else 3

    def __call__(self, epoch: int) -> float:
        """``k`` at ``epoch``."""
        return self.k if self.stage(epoch) == 2 else self.k_frozen

    def frozen(self, epoch: int) -> bool:
        """Whether gates are frozen (stages 1 and 3): no gate gradient, no antithetic pass."""
        return self.stage(epoch) != 2

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "k_frozen": self.k_frozen, "stages": self.stages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(state["k"], state["stages"], state["k_frozen"])  # type: ignore[misc]
