"""Small synthetic containers for the viewer's tests, whose data make positions checkable.

The raw (uint8, 10 × 4 × 4 nm, offset 40, 40, 24 nm = voxels 4, 10, 6) is 40 everywhere
but a bright cube (250); the mito labels cover the same cube on a grid twice as coarse
(20 × 8 × 8 nm); a probability map (float32) on the raw's grid is 1.0 in the cube and
starts at another offset. In world voxels of the raw's grid the cube spans
:data:`CUBE_WORLD` and the raw :data:`RAW_WORLD`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from incasem.geometry import Roi
from incasem.io.volume import create_volume

RAW_VOXEL_SIZE = (10, 4, 4)
RAW_OFFSET_NM = (40, 40, 24)
LABELS_VOXEL_SIZE = (20, 8, 8)
PROB_OFFSET_NM = (40, 72, 56)
PROB = "volumes/predictions/unet/0001/prob_maps/class_1"
SEGMENTATION = "volumes/predictions/unet/0001/segmentation"

#: The raw (shape 20, 60, 80) and the cube in it, world voxels of the raw's grid (z, y, x).
RAW_WORLD = Roi((4, 10, 6), (20, 60, 80))
CUBE_WORLD = Roi((8, 30, 36), (10, 20, 20))
#: The voxel at the cube's centre, world voxels of the raw's grid.
CUBE_CENTRE = (13, 40, 46)


def _write(path: Path, name: str, data: np.ndarray, voxel_size, offset_nm) -> None:
    volume = create_volume(path, name, data.shape, data.dtype, voxel_size, offset_nm, chunks=(8, 16, 16))
    volume.write(volume.roi, data)
    volume.mark_complete()


def synthetic_cell(path: Path, zarr_format: int = 2) -> Path:
    """Write the synthetic cell (raw, labels, probabilities, segmentation) as a zarr v2 or v3 container."""
    zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    cube = CUBE_WORLD.relative_to(RAW_WORLD.offset).to_slices()
    raw = np.full(RAW_WORLD.shape, 40, np.uint8)
    raw[cube] = 250
    _write(path, "volumes/raw", raw, RAW_VOXEL_SIZE, RAW_OFFSET_NM)
    labels = np.zeros((10, 30, 40), np.uint8)
    labels[2:7, 10:20, 15:25] = 1  # the cube on the 20 x 8 x 8 nm grid
    _write(path, "volumes/labels/mito", labels, LABELS_VOXEL_SIZE, RAW_OFFSET_NM)
    prob = np.zeros((20, 40, 60), np.float32)
    prob[4:14, 12:32, 22:42] = 1.0  # the cube, seen from the offset voxels 4, 18, 14
    _write(path, PROB, prob, RAW_VOXEL_SIZE, PROB_OFFSET_NM)
    _write(path, SEGMENTATION, (prob > 0.5).astype(np.uint8), RAW_VOXEL_SIZE, PROB_OFFSET_NM)
    return path
