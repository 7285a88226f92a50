"""How many active weights of an LpSS run's constrained layers carry 99% of each unit's squared L2 norm.

Reads ``RUN_DIR/checkpoint.pt`` of a ``wrn_lpss`` run (any LpSS recipe), so it also measures runs made
before LpSS reported ``constrained_used`` in its history::

    python benchmarks/lpss_used_weights.py runs/e6-s90-f20-1

prints, per constrained layer and in total, the active (non-zero) weights and the used ones
(:func:`neuroplastic.lp.mass_support`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neuroplastic.lp import mass_support
from neuroplastic.lp.layers import constrained_layers
from neuroplastic.models import get_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    path = args.run_dir / "checkpoint.pt"
    if not path.is_file():
        raise SystemExit(f"no checkpoint at {path}: give the folder of a finished or running LpSS run")
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    live = used = 0
    for name in constrained_layers(get_model("wrn_lpss", num_classes=10, in_channels=1)):
        weight = state[f"{name}.weight"]
        layer_live, layer_used = int(torch.count_nonzero(weight)), int(mass_support(weight).sum())
        live, used = live + layer_live, used + layer_used
        print(f"{name:18s} live {layer_live:6d}  used {layer_used:6d}")
    print(f"{'constrained':18s} live {live:6d}  used {used:6d}  ({100 * used / live:.1f}%)")


if __name__ == "__main__":
    main()
