"""Fixtures of the training tests."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from incasem.io.volume import create_volume
from tests.helpers import LUCCHI, read_stack, write_mito_config

#: The whole Lucchi++ crop, rich in mitochondria: 64 × 224 × 224 voxels (Lucchi++ slices 52-115).
REGION = (slice(0, 64), slice(0, 224), slice(0, 224))
#: Training ROI: the last 40 sections; validation ROI: the first 14 sections, never trained on and
#: more than the tiny network's context (9 voxels) away from the training sections.
TRAIN_ROI = ((24, 0, 0), (40, 224, 224))
VAL_ROI = ((0, 0, 0), (14, 224, 224))


@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> Path:
    """Folder with ``cell.zarr`` (raw, labels, metric mask) and ``train.json`` / ``val.json``."""
    folder = tmp_path_factory.mktemp("training")
    raw = read_stack(LUCCHI / "image", *REGION)
    mito = (read_stack(LUCCHI / "labels" / "mito", *REGION) != 0).astype(np.uint8)
    boundary = ndimage.binary_dilation(mito, iterations=2) & ~ndimage.binary_erosion(mito, iterations=2)
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito, "volumes/metric_masks/mito": (~boundary).astype(np.uint8) * 255}.items():
        volume = create_volume(folder / "cell.zarr", name, array.shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(64, 128, 128))
        volume.write(volume.roi, array)
        volume.mark_complete()
    write_mito_config(folder, "train", "cell.zarr", TRAIN_ROI, (5, 5, 5))
    write_mito_config(folder, "val", "cell.zarr", VAL_ROI, (5, 5, 5), metric_masks=["volumes/metric_masks/mito"])
    return folder
