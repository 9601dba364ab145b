"""Regions that reach past the data: filled by numpy's padding modes.

Reading a region of a dataset or an array that partly lies outside it is the same
operation whether the data sit in zarr (:meth:`incasem.io.volume.Volume.read`) or in
memory (:func:`padded_crop`): read the part inside, then :func:`pad_to_region`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from incasem.errors import RoiError
from incasem.geometry import Roi

PadMode = Literal["constant", "reflect", "symmetric", "edge"]


def pad_to_region(inside_data: np.ndarray, inside: Roi, roi: Roi, padding: PadMode, fill_value: int | float = 0, what: str = "the data") -> np.ndarray:
    """Extend ``inside_data`` (the part ``inside`` of ``roi`` that exists) to all of ``roi``.

    ``"constant"`` fills ``fill_value``; ``"reflect"``, ``"symmetric"`` and ``"edge"``
    are numpy's modes (mirroring as often as a wide context needs).

    Raises
    ------
    RoiError
        If ``inside`` is empty and the mode needs data to mirror.
    """
    if inside.empty:
        if padding != "constant":
            raise RoiError(f"region {roi} (voxels) does not overlap {what}: {padding} padding has nothing to mirror")
        return np.full(roi.shape, fill_value, dtype=inside_data.dtype)
    widths = [(i0 - r0, r1 - i1) for r0, r1, i0, i1 in zip(roi.offset, roi.end, inside.offset, inside.end)]
    if padding == "constant":
        return np.pad(inside_data, widths, mode="constant", constant_values=fill_value)
    return np.pad(inside_data, widths, mode=padding)


def padded_crop(data: np.ndarray, roi: Roi, padding: PadMode, fill_value: int | float = 0) -> np.ndarray:
    """Region ``roi`` (coordinates of ``data``, may reach outside it) of an array in memory."""
    inside = roi.intersect(Roi((0, 0, 0), data.shape))
    inside_data = data[inside.to_slices()]
    if inside == roi:
        return inside_data
    return pad_to_region(inside_data, inside, roi, padding, fill_value, f"an array of shape {list(data.shape)}")
