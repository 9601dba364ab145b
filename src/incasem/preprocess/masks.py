"""Binary masks for training and evaluation: the metric mask and the cell mask.

Both are binary morphology computed block by block. Each block reads its output
region grown by the halo its morphology needs (the sum of the reaches of the steps
applied one after the other), so the result equals the whole-volume computation
exactly. At the dataset borders every step sees, beyond the data, the value that
scipy assumes beyond the edge of a whole-volume array (its ``border_value``):

- **metric mask** (:func:`create_metric_mask`, :class:`MetricMaskOptions`): the original incasem's result,
  ``scipy.ndimage.binary_dilation``/``binary_erosion`` with ``border_value=0`` (its
  script read labels with ``fill_value=0`` on a region grown by the context, which
  is the same). Outside the dataset is background, so an object cut by the dataset
  border is eroded from that border too: its voxels within ``exclude_inwards_voxels`` of
  the border are excluded from the metric. A width of 0 excludes nothing on that
  side (the original's ``iterations=0`` made scipy repeat until nothing changed).
  With partial labels (a labelled mask, ``volumes/labelled/<organelle>``) only
  boundaries between labelled organelle and labelled background make a band, and it
  grows through labelled voxels only, so a single labelled section gets the band of its
  objects' outlines in the section.
- **cell mask** (:func:`create_mask`, :class:`MaskOptions`): outside the dataset is ignored (scikit-image's
  ``mode="ignore"``): erosion sees foreground there, dilation background, so
  opening and closing do not eat into a cell that the dataset border cuts.

Both masks are stored as uint8, 0 (excluded / outside the cell) or 255.
The original's cell-mask script differs: it kept ``min < value < max`` (exclusive),
always ran an opening with ``ball(3)`` and a closing with ``ball(2)``, and filled
holes and removed small objects, each per 128³ block without context (so results
depended on the block grid). Hole filling and removal of small objects are global
operations (no finite halo makes them exact block by block) and are not offered.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import ball

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_job,
    done_record_for,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import ConfigError, DatasetMismatchError, InvalidValueError, option
from incasem.geometry import Triple
from incasem.io.defaults import default_labelled_masks
from incasem.io.layout import (
    CELL_MASK,
    EXCLUSION_WIDTHS_VOXELS,
    metric_mask_dataset,
    organelle_of,
)
from incasem.io.volume import Volume, WriteMode, create_like, open_volume

#: The 6-connected structuring element (a voxel and its face neighbours).
CROSS = ndimage.generate_binary_structure(3, 1)


#: Largest ball radius or exclusion width, voxels: a ball of radius r costs (2r + 1)³
#: voxels of structuring element and every block reads r voxels of context per step.
MAX_RADIUS_VOXELS = 64

Filter = Callable[..., np.ndarray]


def _morph(mask: np.ndarray, operation: Callable[..., np.ndarray], structure: np.ndarray, iterations: int, border_value: bool) -> np.ndarray:
    """Apply scipy's binary ``operation``; beyond the array it assumes ``border_value``.

    ``iterations=0`` leaves the mask unchanged (scipy would iterate until nothing
    changes).
    """
    if iterations == 0:
        return mask
    return operation(mask, structure=structure, iterations=iterations, border_value=border_value)


def _to_uint8(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.uint8(255), np.uint8(0))


def _metric_mask(labels: np.ndarray, *labelled: np.ndarray, exclude_inwards_voxels: int, exclude_outwards_voxels: int) -> np.ndarray:
    objects = labels != 0
    if not labelled:
        dilated = _morph(objects, ndimage.binary_dilation, CROSS, exclude_outwards_voxels, False)
        eroded = _morph(objects, ndimage.binary_erosion, CROSS, exclude_inwards_voxels, False)
        return _to_uint8(~(dilated & ~eroded))
    known = np.logical_and.reduce([mask != 0 for mask in labelled])
    objects &= known
    # Both bands grow through labelled voxels only; erosion is the growth of the background,
    # which (as in the original) also enters from beyond the dataset.
    outwards = _grow_within(objects, known, exclude_outwards_voxels, outside=False)
    inwards = _grow_within(known & ~objects, known, exclude_inwards_voxels, outside=True)
    return _to_uint8(~((outwards & ~objects) | (objects & inwards)))


def _grow_within(region: np.ndarray, within: np.ndarray, steps: int, outside: bool) -> np.ndarray:
    """``region`` grown by ``steps`` 6-connected steps through the voxels of ``within``; beyond the array is ``outside``."""
    if steps == 0:
        return region
    return ndimage.binary_dilation(region, CROSS, steps, mask=within, border_value=int(outside))


def metric_mask_array(labels: np.ndarray, exclude_inwards_voxels: int, exclude_outwards_voxels: int, labelled: np.ndarray | None = None) -> np.ndarray:
    """The metric mask of a whole labels array, in memory.

    ``NOT (dilate(labels != 0, outwards) - erode(labels != 0, inwards))`` with the
    6-connected structuring element applied ``exclude_*_voxels`` times; outside the array
    counts as background (scipy's ``border_value=0``), as in the original incasem. With
    partial labels (``labelled``: non-zero = labelled) the band lies between labelled
    organelle and labelled background only: both widths are counted in steps through
    labelled voxels.

    Parameters
    ----------
    labels
        3D integer labels (z, y, x), 0 = background.
    exclude_inwards_voxels, exclude_outwards_voxels
        Width of the excluded band inside and outside the objects, in voxels
        (6-connected steps); 0 excludes nothing on that side.
    labelled
        Labelled mask of partial labels (same shape), or ``None``: every voxel is labelled.

    Returns
    -------
    numpy.ndarray
        uint8, 0 in the band around object boundaries, 255 elsewhere.
    """
    _check_radius(option("exclude_inwards_voxels", "--exclude-inwards"), exclude_inwards_voxels)
    _check_radius(option("exclude_outwards_voxels", "--exclude-outwards"), exclude_outwards_voxels)
    extra = () if labelled is None else (labelled,)
    return _metric_mask(labels, *extra, exclude_inwards_voxels=exclude_inwards_voxels, exclude_outwards_voxels=exclude_outwards_voxels)


def _threshold_mask(raw: np.ndarray, min_grey: float, max_grey: float, opening_voxels: int, closing_voxels: int) -> np.ndarray:
    mask = (raw >= min_grey) & (raw <= max_grey)
    steps = (
        (ndimage.binary_erosion, opening_voxels, True),
        (ndimage.binary_dilation, opening_voxels, False),
        (ndimage.binary_dilation, closing_voxels, False),
        (ndimage.binary_erosion, closing_voxels, True),
    )
    for operation, radius, border_value in steps:
        if radius:
            mask = _morph(mask, operation, ball(radius, dtype=bool), 1, border_value)
    return _to_uint8(mask)


def threshold_mask_array(raw: np.ndarray, min_grey: float, max_grey: float, opening_voxels: int = 0, closing_voxels: int = 0) -> np.ndarray:
    """The cell mask of a whole raw array, in memory (see :class:`MaskOptions`).

    Voxels with ``min_grey <= raw <= max_grey`` are inside; then a binary opening
    (removes specks) and a binary closing (fills small gaps) with a ball, in that
    order. Outside the array is ignored (scikit-image's ``mode="ignore"``).

    Parameters
    ----------
    raw
        3D grey values (z, y, x).
    min_grey, max_grey
        Inclusive grey-value range of the cell.
    opening_voxels, closing_voxels
        Radius of the ball (voxels) for the opening and the closing; 0 skips it.

    Returns
    -------
    numpy.ndarray
        uint8, 255 inside the cell, 0 outside.
    """
    options = MaskOptions(min_grey, max_grey, opening_voxels, closing_voxels)
    return _threshold_mask(raw, options.min_grey, options.max_grey, options.opening_voxels, options.closing_voxels)


def _check_radius(option: str, radius: int) -> None:
    """Refuse a radius or width that is no whole number in 0..:data:`MAX_RADIUS_VOXELS`."""
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or not 0 <= radius <= MAX_RADIUS_VOXELS:
        raise InvalidValueError(f"{option} must be a whole number of voxels from 0 to {MAX_RADIUS_VOXELS}, got {radius!r}")


def _check_grey_range(min_grey: float, max_grey: float) -> None:
    for name, value in ((option("min_grey", "--min"), min_grey), (option("max_grey", "--max"), max_grey)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidValueError(f"{name} must be a finite grey value, got {value!r}")
    if min_grey > max_grey:
        raise InvalidValueError(f"{option('min_grey', '--min')} {min_grey} is above {option('max_grey', '--max')} {max_grey}: the grey-value range is empty")


def _check_widths(inwards: int | None, outwards: int | None) -> None:
    for name, width in ((option("exclude_inwards_voxels", "--exclude-inwards"), inwards), (option("exclude_outwards_voxels", "--exclude-outwards"), outwards)):
        if width is not None:
            _check_radius(name, width)


def _check_organelle(organelle: str | None) -> None:
    if organelle is not None and (not isinstance(organelle, str) or organelle.lower() not in EXCLUSION_WIDTHS_VOXELS):
        known = ", ".join(EXCLUSION_WIDTHS_VOXELS)
        raise InvalidValueError(f"unknown organelle {organelle!r} (known: {known}): pick one or leave out {option('organelle', '--organelle')}")


def exclusion_widths(
    labels_dataset: str,
    organelle: str | None = None,
    exclude_inwards_voxels: int | None = None,
    exclude_outwards_voxels: int | None = None,
) -> tuple[int, int]:
    """Exclusion widths (inwards, outwards) in voxels for a labels dataset.

    Explicit widths win; a missing one comes from :data:`EXCLUSION_WIDTHS_VOXELS` for
    ``organelle``, which defaults to the last component of the dataset name
    ``labels_dataset`` (``volumes/labels/mito`` -> ``mito``).

    Raises
    ------
    InvalidValueError
        If a width is not a whole number from 0 to :data:`MAX_RADIUS_VOXELS`, or
        ``organelle`` is unknown.
    ConfigError
        If a width is missing and no known organelle gives it.
    """
    _check_widths(exclude_inwards_voxels, exclude_outwards_voxels)
    _check_organelle(organelle)
    name = (organelle or organelle_of(labels_dataset)).lower()
    if exclude_inwards_voxels is not None and exclude_outwards_voxels is not None:
        return exclude_inwards_voxels, exclude_outwards_voxels
    if name not in EXCLUSION_WIDTHS_VOXELS:
        raise ConfigError(
            f"no default exclusion widths for labels '{labels_dataset}': give {option('organelle', '--organelle')} ({', '.join(EXCLUSION_WIDTHS_VOXELS)}) "
            f"or both {option('exclude_inwards_voxels', '--exclude-inwards')} and {option('exclude_outwards_voxels', '--exclude-outwards')}"
        )
    inwards, outwards = EXCLUSION_WIDTHS_VOXELS[name]
    return (
        inwards if exclude_inwards_voxels is None else exclude_inwards_voxels,
        outwards if exclude_outwards_voxels is None else exclude_outwards_voxels,
    )


@dataclass(frozen=True)
class MetricMaskOptions:
    """The band a metric mask excludes around object boundaries; validated on construction.

    Attributes
    ----------
    exclude_inwards_voxels, exclude_outwards_voxels
        Width of the band inside and outside the objects, voxels (6-connected
        steps), 0 to :data:`MAX_RADIUS_VOXELS`; ``None`` takes the organelle's
        default from :data:`EXCLUSION_WIDTHS_VOXELS`.
    organelle
        Whose default widths to use; default: the last component of the labels
        dataset's name (``volumes/labels/mito`` -> ``mito``).

    Raises
    ------
    InvalidValueError
        For a width out of range or an unknown organelle, naming the option
        (``--exclude-inwards``, ``--exclude-outwards``, ``--organelle``).
    """

    exclude_inwards_voxels: int | None = None
    exclude_outwards_voxels: int | None = None
    organelle: str | None = None

    def __post_init__(self) -> None:
        _check_widths(self.exclude_inwards_voxels, self.exclude_outwards_voxels)
        _check_organelle(self.organelle)

    def widths(self, labels_dataset: str) -> tuple[int, int]:
        """The widths (inwards, outwards) for ``labels_dataset``; see :func:`exclusion_widths`."""
        return exclusion_widths(labels_dataset, self.organelle, self.exclude_inwards_voxels, self.exclude_outwards_voxels)


@dataclass(frozen=True)
class MaskOptions:
    """How to threshold and clean up a cell mask; validated on construction.

    Attributes
    ----------
    min_grey, max_grey
        Inclusive grey-value range of the cell (finite, ``min_grey <= max_grey``).
    opening_voxels, closing_voxels
        Ball radii (voxels, 0 to :data:`MAX_RADIUS_VOXELS`) of an opening that
        removes specks and a closing that fills small gaps; 0 skips a step.

    Raises
    ------
    InvalidValueError
        For a bad value, naming its option (``--min``, ``--max``, ``--opening``, ``--closing``).
    """

    min_grey: float
    max_grey: float
    opening_voxels: int = 0
    closing_voxels: int = 0

    def __post_init__(self) -> None:
        _check_grey_range(self.min_grey, self.max_grey)
        _check_radius(option("opening_voxels", "--opening"), self.opening_voxels)
        _check_radius(option("closing_voxels", "--closing"), self.closing_voxels)

    @property
    def context_voxels(self) -> int:
        """How far the four morphology steps in a row reach (a ball of radius r reaches r voxels)."""
        return 2 * self.opening_voxels + 2 * self.closing_voxels


def _open_sources(container: Path, sources: tuple[str, ...], output: str) -> tuple[tuple[Volume, ...], Volume]:
    return tuple(open_volume(container, name) for name in sources), open_volume(container, output, "r+", require_complete=False)


def _filter_block(filter_: Filter, block: Block, state: tuple[tuple[Volume, ...], Volume]) -> None:
    """Read ``block`` with its context from every source, clipped to the dataset, filter, write its write region.

    Where the read region is clipped, the array ends where the dataset ends, so the
    morphology sees there what it sees beyond the edge of the whole volume.
    """
    sources, target = state
    read_roi = block.read_roi.intersect(sources[0].roi)
    result = filter_(*(source.read(read_roi) for source in sources))
    target.write(block.write_roi, result[block.write_roi.to_slices(read_roi.offset)])


def _run_filter(
    source: Volume,
    output: str,
    filter_: Filter,
    context: int,
    job: dict[str, Any],
    *,
    chunks: Triple | None,
    mode: WriteMode,
    run: RunOptions,
    also_reads: tuple[str, ...] = (),
) -> Volume:
    """Write ``filter_`` of ``source`` (and of ``also_reads`` on its grid) into uint8 dataset ``output``,
    block by block with ``context`` voxels.

    ``job`` (the parameters) is stored with the output; a resumed run must have the same.
    """
    target = create_like(
        source,
        output,
        np.uint8,
        chunks,
        mode=mode,
        job=job,
        reads=[source.name, *also_reads],
    )
    blocks = plan_blocks(target.roi, target.chunks, (context, context, context), target.roi.offset)
    task = BlockwiseTask(
        f"{job['job']} {output}",
        blocks,
        partial(_filter_block, filter_),
        partial(_open_sources, source.container, (source.name, *also_reads), output),
        done_record_for(source.container, output),
    )
    run_blockwise(task, run)
    target.mark_complete()
    return target


def create_metric_mask(
    container: str | Path,
    labels_dataset: str,
    output_dataset: str | None = None,
    *,
    options: MetricMaskOptions = MetricMaskOptions(),
    chunks: Triple | None = None,
    labelled: Sequence[str] | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Write the metric mask of labels dataset ``labels_dataset`` (see :func:`metric_mask_array`).

    Parameters
    ----------
    container
        The .zarr container holding ``labels_dataset``; the mask is written into it.
    labels_dataset
        Integer labels dataset, 0 = background (e.g. ``volumes/labels/mito``).
    output_dataset
        Output dataset; default ``volumes/metric_masks/<last component of labels_dataset>``.
    options
        Exclusion widths in voxels, or the organelle whose defaults to use; see
        :class:`MetricMaskOptions`.
    chunks
        Chunk shape of the output (voxels); blocks are one chunk. Default 128³.
    labelled
        Labelled masks of partial labels (AND-combined, on the labels' grid); default
        ``volumes/labelled/<organelle>`` where it exists, ``()`` for none.
    mode, run
        Write mode (:data:`~incasem.io.volume.WriteMode`) and run options
        (:class:`~incasem.blockwise.RunOptions`).

    Returns
    -------
    Volume
        The complete output: uint8 0/255, same geometry as ``labels_dataset``, with
        the job's provenance record (``incasem_provenance``).
    """
    check_job(mode, run)
    source = open_volume(container, labels_dataset)
    if not (np.issubdtype(source.dtype, np.integer) or source.dtype == np.bool_):
        raise DatasetMismatchError(f"labels {source.label} are {source.dtype}, not integers: give an integer labels dataset (0 = background)")
    inwards, outwards = options.widths(labels_dataset)
    output = output_dataset or metric_mask_dataset(labels_dataset)
    labelled = tuple(default_labelled_masks(container, [labels_dataset]) if labelled is None else labelled)
    for name in labelled:
        mask = open_volume(container, name)
        if mask.roi != source.roi or mask.dtype.kind not in "biu":
            raise DatasetMismatchError(
                f"labelled mask {mask.label} ({mask.dtype}, {mask.roi}) must be an integer mask on the grid of the labels "
                f"{source.label} ({source.roi}): convert it with --like the labels"
            )
    job = {"job": "metric-mask", "labels": labels_dataset, "exclude_inwards": inwards, "exclude_outwards": outwards}
    if labelled:
        job["labelled"] = list(labelled)
    filter_ = partial(_metric_mask, exclude_inwards_voxels=inwards, exclude_outwards_voxels=outwards)
    context = max(inwards, outwards)  # n steps of the cross reach n voxels; both steps read the labels
    return _run_filter(source, output, filter_, context, job, chunks=chunks, mode=mode, run=run, also_reads=labelled)


def create_mask(
    container: str | Path,
    raw_dataset: str,
    output_dataset: str = CELL_MASK,
    *,
    options: MaskOptions,
    chunks: Triple | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Write the cell mask of grey-value dataset ``raw_dataset`` (see :func:`threshold_mask_array`).

    Parameters
    ----------
    container
        The .zarr container holding ``raw_dataset``; the mask is written into it.
    raw_dataset
        Grey-value dataset (e.g. ``volumes/raw``).
    output_dataset
        Output dataset.
    options
        Grey-value range and clean-up radii; see :class:`MaskOptions`.
    chunks
        Chunk shape of the output (voxels); blocks are one chunk. Default 128³.
    mode, run
        As for :func:`create_metric_mask`.

    Returns
    -------
    Volume
        The complete output: uint8, 255 inside the cell, 0 outside; same geometry as
        ``raw_dataset``, with the job's provenance record (``incasem_provenance``).
    """
    check_job(mode, run)
    if not isinstance(options, MaskOptions):
        raise InvalidValueError(f"options must be MaskOptions(min_grey, max_grey, ...), got {options!r}")
    source = open_volume(container, raw_dataset)
    if not (np.issubdtype(source.dtype, np.integer) or np.issubdtype(source.dtype, np.floating)):
        raise DatasetMismatchError(f"{source.label} holds {source.dtype}, not grey values: give the raw dataset")
    grey, radii = (options.min_grey, options.max_grey), (options.opening_voxels, options.closing_voxels)
    job = {"job": "mask", "raw": raw_dataset, "min": grey[0], "max": grey[1], "opening": radii[0], "closing": radii[1]}
    filter_ = partial(_threshold_mask, min_grey=grey[0], max_grey=grey[1], opening_voxels=radii[0], closing_voxels=radii[1])
    return _run_filter(source, output_dataset, filter_, options.context_voxels, job, chunks=chunks, mode=mode, run=run)
