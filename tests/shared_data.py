"""Where the tests find the real data sets (the project's shared/data folder, see its README).

``NEUROPLASTIC_TEST_DATA`` points elsewhere; by default the folder ``shared/data`` beside the clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("NEUROPLASTIC_TEST_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VAT = SHARED / "moons-vat" / "syndata_1.pkl"
CIFAR_SUBSET = SHARED / "cifar-10-subset" / "cifar-10-batches-py"

needs_data = pytest.mark.skipif(
    not (SHARED / "MNIST" / "raw").is_dir(),
    reason=f"real data not found at {SHARED} (set NEUROPLASTIC_TEST_DATA to the shared data folder)",
)
