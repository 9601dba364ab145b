"""Labels painted on a few sections (in napari, or any array) as partial labels of a container.

A painted array covers a region of the raw, in the raw's voxels: 0 where nothing was
painted, :data:`ORGANELLE` on the organelle, :data:`BACKGROUND` where the painter marks
background on purpose. A z section in which anything is painted counts as labelled: all of
it, so its unpainted voxels are background (paint every organelle of a section you
label). A section with no organelle is marked labelled by a stroke of :data:`BACKGROUND`.
Unpainted sections stay unlabelled.

:func:`write_partial_labels` writes the labels (``volumes/labels/<organelle>``: 1 on the
organelle, 0 elsewhere) and their labelled mask (``volumes/labelled/<organelle>``: 1 on the
labelled sections) on the raw's grid, over the painted region: what ``incasem convert
--sparse`` makes of a folder of labelled sections, and what :func:`incasem.train.finetune.fine_tune`
trains from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from incasem.errors import DatasetNotFoundError, InvalidValueError, option
from incasem.geometry import Roi, as_triple
from incasem.io.defaults import default_raw
from incasem.io.layout import labelled_mask_dataset, labels_dataset
from incasem.io.volume import Volume, WriteMode, check_output, check_write_mode, create_volume, dataset_exists, open_volume

__all__ = ["BACKGROUND", "ORGANELLE", "labelled_sections", "write_partial_labels"]

#: Painted value of the organelle.
ORGANELLE = 1
#: Painted value of background marked on purpose (labels a section without organelle).
BACKGROUND = 2

_OVERWRITE = option('mode="overwrite"', "--overwrite")

#: Kind of job in the datasets' records: a later save may replace only what a save wrote.
PAINT_JOB = "paint"


def labelled_sections(painted: np.ndarray) -> np.ndarray:
    """Indices (along z, from the array's start) of the sections in which anything is painted."""
    return np.flatnonzero(painted.reshape(painted.shape[0], -1).any(axis=1))


def _check_painted(painted: ArrayLike) -> np.ndarray:
    array = np.asarray(painted)
    if array.ndim != 3 or array.dtype.kind not in "biu":
        raise InvalidValueError(f"painted labels must be a 3D integer array (z, y, x), got {array.ndim}D {array.dtype}")
    values = np.unique(array)
    unknown = [int(v) for v in values if v not in (0, ORGANELLE, BACKGROUND)]
    if unknown:
        raise InvalidValueError(
            f"painted labels hold values {unknown[:5]}: paint the organelle with {ORGANELLE} and background with {BACKGROUND} (0 = not painted)"
        )
    if not values.any():
        raise InvalidValueError(
            f"nothing is painted: paint the organelle ({ORGANELLE}) in a few sections, and background ({BACKGROUND}) where a section has none"
        )
    return array


def write_partial_labels(
    container: str | os.PathLike[str],
    painted: ArrayLike,
    offset_voxels: Sequence[int],
    organelle: str = "mito",
    *,
    raw: str | None = None,
    mode: WriteMode = "create",
) -> tuple[Volume, Volume]:
    """Write painted sections as the container's partial labels of ``organelle`` (module docstring).

    Parameters
    ----------
    container
        The cell's .zarr container; its raw sets the grid.
    painted
        Painted values (z, y, x): 0, :data:`ORGANELLE` or :data:`BACKGROUND`.
    offset_voxels
        Where the painted array starts, in the raw's voxels on the world grid.
    organelle
        Names the datasets: ``volumes/labels/<organelle>``, ``volumes/labelled/<organelle>``.
    raw
        The raw dataset whose grid the labels take (default: the equalised raw, else the raw).
    mode
        ``"overwrite"`` replaces labels that an earlier save wrote (never other labels);
        ``"create"`` refuses existing ones.

    Returns
    -------
    The labels and the labelled mask, both complete.

    Raises
    ------
    InvalidValueError, DatasetNotFoundError, DatasetExistsError, RoiError
        One line, before anything is written: values other than 0/1/2 or nothing painted,
        a missing raw, a region outside it, labels of another origin in the way.
    """
    check_write_mode(mode)
    if mode == "resume":
        raise InvalidValueError(f"painted labels are written in one go: use mode 'create' or {_OVERWRITE}")
    array = _check_painted(painted)
    container = Path(container)
    raw = raw or default_raw(container)
    if not dataset_exists(container, raw):
        raise DatasetNotFoundError(f"{container} has no dataset {raw}: name the raw the labels belong to")
    grid = open_volume(container, raw)
    region = Roi(as_triple(offset_voxels, "offset_voxels"), as_triple(array.shape, "painted shape"))
    if not grid.roi.contains(region):
        raise InvalidValueError(f"painted region {region} (voxels) reaches outside {grid.label}, which covers {grid.roi}: paint inside the raw")
    sections = labelled_sections(array)
    labels_name = labels_dataset(organelle)
    labelled_name = labelled_mask_dataset(labels_name)
    job = {"job": PAINT_JOB, "raw": raw, "offset": list(region.offset), "sections": [int(region.offset[0] + z) for z in sections]}
    for name in (labels_name, labelled_name):  # both refused or accepted before either is written
        check_output(container, name, mode=mode, job=job, reads=[raw])
    offset_nm = tuple(o * v for o, v in zip(region.offset, grid.voxel_size))
    labels = (array == ORGANELLE).astype(np.uint8)
    mask = np.zeros(array.shape, np.uint8)
    mask[sections] = 1
    labels[mask == 0] = 0
    written = []
    for name, data in ((labels_name, labels), (labelled_name, mask)):
        volume = create_volume(container, name, region.shape, np.uint8, grid.voxel_size, offset_nm, mode=mode, job=job, reads=[raw])  # type: ignore[arg-type]
        volume.write(region, data)
        written.append(volume)
    for volume in written:  # complete only once both are
        volume.mark_complete()
    return written[0], written[1]
