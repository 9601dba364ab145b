"""Fixtures of the post-processing tests."""

import numpy as np
import pytest
from scipy import ndimage

from tests.helpers import LUCCHI, read_stack

#: Shape of ``real_labels``: 48 x 200 x 224 voxels (Lucchi++ slices 52-99, rows 128-327, columns 224-447).
REAL_LABELS_REGION = (slice(0, 48), slice(0, 200), slice(0, 224))


@pytest.fixture(scope="module")
def real_labels():
    """Real mito labels (Lucchi++ crop, 48 x 200 x 224) with 2000 single-voxel and small specks added."""
    labels = read_stack(LUCCHI / "labels" / "mito", *REAL_LABELS_REGION)
    rng = np.random.default_rng(7)
    specks = np.zeros(labels.shape, bool)
    specks[tuple(rng.integers(0, s, 2000) for s in labels.shape)] = True
    specks = ndimage.binary_dilation(specks, iterations=int(rng.integers(0, 2)))
    return np.where(specks, 1, labels).astype(np.uint8)
