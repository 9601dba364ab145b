"""Fixtures shared across the test suite: the real EM data beside the repository."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.blockwise import RunOptions

#: Run options of a job in a test: no progress bar.
QUIET = RunOptions(progress=False)

#: Real EM with manual labels (see SOURCE.md in each folder), beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LUCCHI = SHARED_DATA / "lucchi_pp_fibsem"


def read_stack(folder: Path, z: slice, y: slice, x: slice) -> np.ndarray:
    """Read slices ``z`` of a folder of numbered TIFFs and crop them to ``y``, ``x``."""
    files = sorted(folder.glob("*.tif"))[z]
    return np.stack([tifffile.imread(f)[y, x] for f in files])


@pytest.fixture(scope="session")
def lucchi_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 40 × 96 × 112 crop of the Lucchi++ FIB-SEM (5 nm isotropic) and its mito labels."""
    if not LUCCHI.is_dir():
        pytest.skip(f"real data not found at {LUCCHI}")
    region = (slice(60, 100), slice(200, 296), slice(300, 412))
    return read_stack(LUCCHI / "image", *region), read_stack(LUCCHI / "labels" / "mito", *region)
