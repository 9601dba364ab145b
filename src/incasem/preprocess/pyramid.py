"""Multiscale pyramids of a dataset (OME-NGFF levels), for smooth viewing of big volumes.

:func:`create_pyramid` writes downsampled copies of a dataset next to it,
``volumes/raw`` -> ``volumes/raw_s1``, ``volumes/raw_s2``, ..., each level from the
previous one, block by block: a block is one chunk of the level and reads the region
of the level before that it covers (at most twice its size per axis), so memory is
bounded by a block, whatever the volume size.
The dataset itself is only read. When a level is finished it is listed, with its
scale and translation, in the dataset's OME-NGFF ``multiscales`` entry
(:mod:`incasem.io.ngff`), so viewers and ``ome-zarr`` see one multiscale image.

**Levels.** Each level halves the resolution of the axes that are not much coarser
than the finest one: an axis keeps its voxel size while it is at least twice the
smallest (anisotropic serial sections, 50 × 5 × 5 nm, go 50 × 10 × 10, 50 × 20 × 20,
50 × 40 × 40, then 100 × 80 × 80, ...); see :func:`level_factor`. Levels are made
until one fits in a single chunk (the dataset's chunk shape), or ``levels`` of them.

**Geometry.** Level voxels lie on the level's world grid: voxel ``i`` covers the
previous level's voxels ``f*i ... f*i + f - 1`` (``f`` the factor, 1 or 2), so its
offset (the corner of its first voxel, as the ``offset`` attribute means) is the
corner of that block, and every level overlays the dataset exactly. A level covers
every block that holds data: ``floor(begin / f)`` to ``ceil(end / f)`` in voxels.
The OME-NGFF translation of a level is that corner too, as for every incasem dataset
(:mod:`incasem.io.ngff`); viewers that put the first voxel's *centre* there draw
each level half of its own voxel off, so coarse levels by up to half a coarse voxel.

**Downsampling.** Intensities (``volumes/raw*``, any name with a component starting
with ``prob``, and all float data) take the **mean** of each block, rounded half up
for integer types; labels, segmentations and masks (all other integer data) take the
**first voxel of each block** (stride sampling): label ids stay exactly those of the
data, nothing is blended into an id that does not exist, and it costs nothing; the
mode of each block would be ~10× slower and still choose arbitrarily on ties.

**Border.** Where a block reaches past the data (a shape not a multiple of 2, or an
offset off the level's grid), it is completed by repeating the edge voxels
(``numpy.pad`` mode ``edge``) before reducing: with a factor of 2 the mean is then
exactly the mean of the block's voxels inside the data, and stride sampling takes
the block's first voxel inside the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from skimage.measure import block_reduce

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_job,
    check_run,
    done_record_for,
    run_blockwise,
)
from incasem.errors import DatasetExistsError, DatasetMismatchError, InvalidValueError, option
from incasem.geometry import (
    NmTriple,
    Roi,
    Triple,
    as_nm_triple,
    as_positive_triple,
    voxels_to_nm,
)
from incasem.io.layout import dataset_kind
from incasem.io.metadata import INCOMPLETE, STATUS_KEY
from incasem.io.ngff import (
    PYRAMID_JOB,
    level_name,
    publish_ngff,
    pyramid_level_paths,
    pyramid_source,
)
from incasem.io.volume import (
    Volume,
    WriteMode,
    check_write_mode,
    create_volume,
    open_container,
    open_volume,
)

#: How a block of voxels becomes one voxel of the next level.
Downsampling = Literal["mean", "stride"]

#: The accepted values of :data:`Downsampling`.
DOWNSAMPLINGS: tuple[str, ...] = ("mean", "stride")


@dataclass(frozen=True)
class PyramidLevel:
    """One level to write.

    Attributes
    ----------
    name
        Dataset name, ``<dataset>_s<level>``.
    level
        1 for the first downsampled level.
    factor
        Downsampling factor (z, y, x) from the previous level, 1 or 2 per axis.
    roi
        Region covered, voxels on this level's world grid.
    voxel_size
        Voxel size (nm, z, y, x).
    chunks
        Chunk shape (voxels): the dataset's, clipped to the level's shape.
    """

    name: str
    level: int
    factor: Triple
    roi: Roi
    voxel_size: NmTriple
    chunks: Triple

    @property
    def offset_nm(self) -> NmTriple:
        """World offset (nm): the corner of the level's first voxel."""
        return voxels_to_nm(self.roi.offset, self.voxel_size)


@dataclass(frozen=True)
class PyramidPlan:
    """What :func:`write_pyramid` writes; made and checked by :func:`plan_pyramid`."""

    container: Path
    dataset: str
    downsampling: Downsampling
    mode: WriteMode
    levels: tuple[PyramidLevel, ...]


def level_factor(voxel_size: NmTriple) -> Triple:
    """The downsampling factor of the next level: 2 on every axis whose voxel size is below twice the smallest, else 1.

    ``(50, 5, 5)`` gives ``(1, 2, 2)``; ``(50, 40, 40)`` gives ``(2, 2, 2)``.
    """
    smallest = min(voxel_size)
    return tuple(1 if size >= 2 * smallest * (1 - 1e-9) else 2 for size in voxel_size)  # type: ignore[return-value]


def default_downsampling(dataset: str, dtype: np.dtype) -> Downsampling:
    """``"mean"`` for grey levels and probabilities, ``"stride"`` for segmentations (labels, masks, ids):
    by :func:`incasem.io.layout.dataset_kind`."""
    return "stride" if dataset_kind(dataset, dtype) == "segmentation" else "mean"


def _reduced(means: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Block means in ``dtype``: rounded half up for integers and bools, cast for floats."""
    if np.issubdtype(dtype, np.floating):
        return means.astype(dtype)
    return np.floor(means + 0.5).astype(dtype)


def downsample_array(data: np.ndarray, factor: Triple, downsampling: Downsampling) -> np.ndarray:
    """One pyramid step of a whole array in memory (the block function uses it on each block).

    Parameters
    ----------
    data
        3D array (z, y, x) whose first voxel starts a block.
    factor
        Block shape (z, y, x), 1 or 2 per axis.
    downsampling
        ``"mean"`` of each block (rounded half up for integer types) or ``"stride"``
        (its first voxel).

    Returns
    -------
    numpy.ndarray
        Shape ``ceil(data.shape / factor)``, the dtype of ``data``. Blocks cut by the
        array's end are completed by repeating the edge voxels (see the module
        documentation).
    """
    factor = as_positive_triple(factor, "factor")
    if downsampling == "stride":
        return data[:: factor[0], :: factor[1], :: factor[2]].copy()
    missing = [(0, -size % f) for size, f in zip(data.shape, factor)]
    padded = np.pad(data, missing, mode="edge") if any(end for _, end in missing) else data
    means = block_reduce(padded, factor, np.mean, func_kwargs={"dtype": np.float64})
    return _reduced(means, data.dtype)


def _check_options(levels: int | None, downsampling: str | None) -> None:
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise InvalidValueError(f"{option('levels', '--levels')} must be a whole number of at least 1, got {levels!r}")
    if downsampling is not None and downsampling not in DOWNSAMPLINGS:
        raise InvalidValueError(f"{option('downsampling', '--downsampling')} must be 'mean' or 'stride', got {downsampling!r}")


def _next_level(previous_roi: Roi, voxel_size: NmTriple, chunks: Triple, dataset: str, level: int) -> PyramidLevel:
    """The level after one covering ``previous_roi`` with ``voxel_size``."""
    factor = level_factor(voxel_size)
    begin = [b // f for b, f in zip(previous_roi.offset, factor)]
    end = [-(-e // f) for e, f in zip(previous_roi.end, factor)]
    roi = Roi.from_bounds(begin, end)
    size = as_nm_triple([v * f for v, f in zip(voxel_size, factor)], "voxel size", positive=True)
    level_chunks = tuple(min(c, s) for c, s in zip(chunks, roi.shape))
    return PyramidLevel(level_name(dataset, level), level, factor, roi, size, level_chunks)  # type: ignore[arg-type]


def _levels(base: Volume, levels: int | None) -> tuple[PyramidLevel, ...]:
    """Levels until one fits in one chunk of ``base``, or ``levels`` of them."""
    planned: list[PyramidLevel] = []
    roi, voxel_size = base.roi, base.voxel_size
    while any(s > c for s, c in zip(roi.shape, base.chunks)) and (levels is None or len(planned) < levels):
        planned.append(_next_level(roi, voxel_size, base.chunks, base.name, len(planned) + 1))
        roi, voxel_size = planned[-1].roi, planned[-1].voxel_size
    return tuple(planned)


def _check_level_names(container: Path, dataset: str, names: list[str], mode: WriteMode) -> None:
    """Refuse existing level names that a pyramid job of ``dataset`` did not write, or any in create mode."""
    group = open_container(container)
    existing = []
    for name in names:
        node = group.get(name)
        if node is None:
            continue
        source = pyramid_source(node.attrs.asdict())
        if source != dataset:
            writer = f"a pyramid of {source}" if source else "something other than incasem pyramid"
            raise DatasetExistsError(
                f"{container}/{name} exists and was written by {writer} (it may be data you need): the pyramid of "
                f"{dataset} will not replace it; rename or delete it yourself"
            )
        existing.append((name, node.attrs.get(STATUS_KEY) == INCOMPLETE))
    if mode != "create" or not existing:
        return
    unfinished = [name for name, incomplete in existing if incomplete]
    if unfinished:
        raise DatasetExistsError(
            f"{container}/{unfinished[0]} was left unfinished by an interrupted incasem pyramid run of {dataset}: pass "
            "--resume to finish it (it keeps the levels already written), or --overwrite to start afresh"
        )
    raise DatasetExistsError(f"{container}/{existing[0][0]} exists already (a pyramid level of {dataset}): pass --overwrite to replace it")


def plan_pyramid(
    container: str | Path,
    dataset: str,
    levels: int | None = None,
    *,
    downsampling: Downsampling | None = None,
    mode: WriteMode = "create",
) -> PyramidPlan:
    """Check the input and plan the levels of a pyramid, writing nothing.

    Parameters are those of :func:`create_pyramid`.

    Raises
    ------
    InvalidValueError
        For a bad ``levels``, ``downsampling`` or ``mode``, or a dataset that is itself a pyramid level.
    NotAContainerError, DatasetNotFoundError
        If the container or the dataset does not exist (the message lists the datasets there are).
    DatasetMismatchError
        If the dataset is unfinished, not 3D, or of a type that cannot be averaged or sampled.
    DatasetExistsError
        If a level's name is taken by an array that a pyramid job of this dataset did
        not write, or (``mode="create"``) by any array.
    """
    mode = check_write_mode(mode)
    _check_options(levels, downsampling)
    base = open_volume(container, dataset)
    if not any(np.issubdtype(base.dtype, kind) for kind in (np.integer, np.floating, np.bool_)):
        raise DatasetMismatchError(f"{base.label} holds {base.dtype}: a pyramid needs integer, boolean or float data")
    source = pyramid_source(base.array.attrs.asdict())
    if source is not None:
        raise InvalidValueError(f"{base.label} is a pyramid level of {source}: make the pyramid of {source} instead")
    planned = _levels(base, levels)
    _check_level_names(base.container, base.name, [level.name for level in planned], mode)
    method = downsampling or default_downsampling(base.name, base.dtype)
    return PyramidPlan(base.container, base.name, method, mode, planned)


def _open_pair(container: Path, source: str, target: str) -> tuple[Volume, Volume]:
    return open_volume(container, source), open_volume(container, target, "r+", require_complete=False)


def _downsample_block(factor: Triple, downsampling: Downsampling, block: Block, state: tuple[Volume, Volume]) -> None:
    """Read the previous level's voxels under ``block`` (edge-padded past the data) and write their reduction."""
    source, target = state
    data = source.read(block.read_roi, padding="edge")
    target.write(block.write_roi, downsample_array(data, factor, downsampling))


def _blocks(level: PyramidLevel) -> list[Block]:
    """One block per chunk of the level; each reads the previous level's voxels it covers."""

    def under(tile: Roi) -> Roi:
        (oz, oy, ox), (sz, sy, sx), (fz, fy, fx) = tile.offset, tile.shape, level.factor
        return Roi((oz * fz, oy * fy, ox * fx), (sz * fz, sy * fy, sx * fx))

    return [Block(tile, under(tile)) for tile in level.roi.tiles(level.chunks, level.roi.offset)]


def _write_level(plan: PyramidPlan, level: PyramidLevel, source: Volume, run: RunOptions) -> Volume:
    job = {
        "job": PYRAMID_JOB,
        "source": plan.dataset,
        "level": level.level,
        "factor": list(level.factor),
        "downsampling": plan.downsampling,
    }
    target = create_volume(
        plan.container,
        level.name,
        level.roi.shape,
        source.dtype,
        level.voxel_size,
        level.offset_nm,
        level.chunks,
        mode=plan.mode,
        job=job,
        reads=[source.name],
    )
    if target.complete:  # resumed after this level had finished
        return target
    task = BlockwiseTask(
        f"pyramid {level.name}",
        _blocks(level),
        partial(_downsample_block, level.factor, plan.downsampling),
        partial(_open_pair, plan.container, source.name, level.name),
        done_record_for(plan.container, level.name),
    )
    run_blockwise(task, run)
    target.mark_complete()
    publish_ngff(open_container(plan.container, "r+"), level.name)  # now listed in the dataset's entry
    return target


def _remove_stale_levels(plan: PyramidPlan) -> None:
    """Delete the levels past the planned ones that an earlier pyramid job of the dataset wrote."""
    group = open_container(plan.container, "r+")
    number = len(plan.levels) + 1
    while (name := level_name(plan.dataset, number)) in group and pyramid_source(group[name].attrs.asdict()) == plan.dataset:
        del group[name]
        number += 1
    publish_ngff(group, plan.dataset)


def write_pyramid(plan: PyramidPlan, run: RunOptions = RunOptions()) -> list[Volume]:
    """Write the levels of ``plan`` (see :func:`plan_pyramid`), each from the one before.

    ``plan.mode`` ``"resume"`` finishes an interrupted pyramid (finished levels and
    blocks are kept); ``"overwrite"`` rewrites the levels and deletes further levels an
    earlier, deeper pyramid of the dataset left.

    Returns
    -------
    list of Volume
        The dataset, then its levels, finest first.
    """
    run = check_run(run)
    volumes = [open_volume(plan.container, plan.dataset)]
    if plan.mode == "overwrite":
        _remove_stale_levels(plan)
    for level in plan.levels:
        volumes.append(_write_level(plan, level, volumes[-1], run))
    return volumes


def create_pyramid(
    container: str | Path,
    dataset: str,
    levels: int | None = None,
    *,
    downsampling: Downsampling | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> list[Volume]:
    """Write a multiscale pyramid of ``dataset``: ``<dataset>_s1``, ``<dataset>_s2``, ... next to it.

    See the module documentation for the levels, their geometry, the downsampling and
    the border. The dataset is only read; each finished level is added to its OME-NGFF
    ``multiscales`` entry.

    Parameters
    ----------
    container
        The .zarr container (v2 or v3); the levels are written into it.
    dataset
        The dataset to downsample, e.g. ``volumes/raw``.
    levels
        Most levels to write (at least 1); default: until a level fits in one chunk.
    downsampling
        ``"mean"`` or ``"stride"``; default by name and type (:func:`default_downsampling`).
    mode, run
        Write mode (:data:`~incasem.io.volume.WriteMode`: ``"overwrite"`` replaces only
        levels a pyramid job of this dataset wrote) and run options
        (:class:`~incasem.blockwise.RunOptions`).

    Returns
    -------
    list of Volume
        The dataset, then its levels, finest first (just the dataset if it fits in one chunk).

    Raises
    ------
    IncasemError
        See :func:`plan_pyramid`; nothing is written then.
    """
    check_job(mode, run)
    return write_pyramid(plan_pyramid(container, dataset, levels, downsampling=downsampling, mode=mode), run)


def pyramid_levels(container: str | Path, dataset: str) -> list[Volume]:
    """The dataset and its finished pyramid levels, finest first (the levels its OME-NGFF entry lists).

    Raises
    ------
    NotAContainerError, DatasetNotFoundError, DatasetMismatchError
        As :func:`~incasem.io.volume.open_volume` for the dataset.
    """
    base = open_volume(container, dataset)
    names = pyramid_level_paths(open_container(base.container), base.name)
    return [base, *(open_volume(base.container, name) for name in names)]
