"""Snapshots of training: raw, labels and prediction of one block, as zarr and as a PNG.

The zarr group ``snapshots/<name>.zarr`` holds the three arrays on the output grid
(``raw`` cropped to the output, uint8; ``labels``, uint8 class ids; ``prediction``, the
organelle probability as uint8 0..255) for a 3D look in any zarr viewer; the PNG shows
the middle z-section of each side by side (raw | labels | prediction).
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import zarr

from incasem.io.layout import encode_probability

__all__ = ["snapshot_picture", "write_snapshot"]


def snapshot_picture(raw: np.ndarray, labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Middle z-sections of raw, labels (×255 / max class) and probability (×255) side by side, uint8 (H, 3W)."""
    middle = raw.shape[0] // 2
    top = max(int(labels.max()), 1)
    panels = (
        raw[middle],
        (labels[middle].astype(np.float32) * (255.0 / top)).astype(np.uint8),
        encode_probability(probability[middle]),
    )
    return np.concatenate(panels, axis=1)


def write_snapshot(folder: Path, name: str, raw: np.ndarray, labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Write ``folder/<name>.zarr`` and ``folder/<name>.png``; return the picture.

    Parameters
    ----------
    folder : pathlib.Path
        The run's snapshots folder (created if missing).
    name : str
        File stem, e.g. ``iteration_0001000_train``; existing files of that name are replaced
        (they are the run's own).
    raw : numpy.ndarray
        uint8 raw (z, y, x) of the output block.
    labels : numpy.ndarray
        Class ids (z, y, x).
    probability : numpy.ndarray
        Organelle probability in [0, 1] (z, y, x).
    """
    folder.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(folder / f"{name}.zarr", mode="w")
    for key, data in (
        ("raw", raw.astype(np.uint8)),
        ("labels", labels.astype(np.uint8)),
        ("prediction", encode_probability(probability)),
    ):
        group.create_array(key, data=data)
    picture = snapshot_picture(raw, labels, probability)
    (folder / f"{name}.png").write_bytes(imagecodecs.png_encode(picture))
    return picture
