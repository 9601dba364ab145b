"""3D CLAHE (contrast-limited adaptive histogram equalisation), out of core.

The result equals scikit-image's in-memory

    img_as_ubyte(equalize_adapthist(volume, kernel_size, clip_limit, nbins))

on the whole dataset, voxel for voxel (see :mod:`incasem.preprocess.clahe` for how
the computation is split). :func:`equalize_volume` runs three blockwise passes:

1. ``histograms``: the value histogram of each contextual region (tile), with
   skimage's mirror padding past the far borders; then, in this process, the
   input's range and each tile's mapping (``nbins`` values per tile);
2. ``range``: the (min, max) of the 14-bit result per output block, from the few
   voxels that can reach them (:func:`~incasem.preprocess.clahe.level_range`);
3. ``write``: the uint8 output, one output chunk per block.

The histograms and the mappings stay in a folder inside the output dataset until
the job ends, so that a resumed run reads them back; the cheap range pass is redone,
and the write pass skips the blocks an interrupted run finished.

No 16-bit copy of the volume is stored. Memory per worker is a few times one block
(a chunk) plus the tile mappings. :func:`equalize_array` is the in-memory twin,
built from the same functions.
"""

from __future__ import annotations

import math
import numbers
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    DoneRecord,
    RunOptions,
    check_job,
    done_record_for,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import DatasetMismatchError, InvalidValueError, option
from incasem.geometry import Roi, Triple, as_triple
from incasem.io.layout import RAW, equalized_dataset
from incasem.io.volume import (
    Volume,
    WriteMode,
    create_volume,
    dataset_name,
    open_volume,
)
from incasem.preprocess.clahe import (
    SUPPORTED_DTYPES,
    ClaheGrid,
    bin_lookup,
    interpolate,
    level_range,
    output_lookup,
    tile_mapping,
    value_histogram,
)

#: Folder inside the output dataset that holds partial results until the job ends.
SCRATCH_FOLDER = ".incasem_equalize"

Histogram = tuple[np.ndarray, np.ndarray]


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ClaheOptions:
    """Validated CLAHE parameters (those of :func:`skimage.exposure.equalize_adapthist`).

    Attributes
    ----------
    kernel_size
        Shape of the contextual regions, voxels (z, y, x), each at least 2.
    clip_limit
        Clipping limit in (0, 1], a fraction of the voxels of a region; higher gives
        more contrast.
    nbins
        Number of histogram bins, 2 to 16384.
    """

    kernel_size: Triple = (128, 128, 128)
    clip_limit: float = 0.02
    nbins: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel_size", as_triple(self.kernel_size, option("kernel_size", "--kernel-size")))
        if min(self.kernel_size) < 2:
            raise InvalidValueError(f"{option('kernel_size', '--kernel-size')} must be at least 2 voxels per axis, got {list(self.kernel_size)}")
        if not _is_number(self.clip_limit) or not 0 < self.clip_limit <= 1:
            raise InvalidValueError(f"{option('clip_limit', '--clip-limit')} must be in (0, 1], got {self.clip_limit!r} (the original uses 0.02)")
        if not _is_number(self.nbins) or self.nbins != int(self.nbins) or not 2 <= self.nbins <= 2**14:
            raise InvalidValueError(f"{option('nbins', '--nbins')} must be a whole number from 2 to 16384, got {self.nbins!r}")

    def job(self, source: str) -> dict[str, Any]:
        """The record of the job stored with its output."""
        return {
            "job": "equalize",
            "input": source,
            "kernel_size": list(self.kernel_size),
            "clip_limit": self.clip_limit,
            "nbins": self.nbins,
        }


#: Largest contextual region edge, voxels: one region's histogram is taken in memory.
MAX_KERNEL_EDGE = 512


def _check_kernel_size(kernel_size: Triple, shape: Triple) -> None:
    """Refuse regions larger than the data needs (and than the default 128) or than :data:`MAX_KERNEL_EDGE`."""
    for axis, edge, size in zip("zyx", kernel_size, shape):
        largest = min(max(size, 128), MAX_KERNEL_EDGE)
        if edge > largest:
            raise InvalidValueError(
                f"{option('kernel_size', '--kernel-size')} {edge} along {axis} exceeds what the data needs ({size} voxels there; "
                f"at most {largest}): give a smaller {option('kernel_size', '--kernel-size')}"
            )


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if np.dtype(dtype) not in SUPPORTED_DTYPES:
        raise DatasetMismatchError(f"{what} holds {np.dtype(dtype)}; equalize supports uint8 and uint16 grey values: convert it first")


@dataclass(frozen=True)
class _Mapper:
    """What every block needs: the tile grid, the bin of every value and the tile mappings."""

    grid: ClaheGrid
    bin_of_value: np.ndarray
    mappings: np.ndarray

    def levels(self, data: np.ndarray, offset: Triple) -> np.ndarray:
        """14-bit CLAHE levels (uint16) of ``data``, a box at array coordinates ``offset``."""
        return interpolate(self._bins_of(data), offset, self.grid, self.mappings)

    def level_range(self, data: np.ndarray, offset: Triple) -> tuple[int, int]:
        """(min, max) of :meth:`levels`, computed from a few voxels."""
        return level_range(self._bins_of(data), offset, self.grid, self.mappings)

    def _bins_of(self, data: np.ndarray) -> np.ndarray:
        return np.take(self.bin_of_value, data.astype(np.intp))


def _tile_histogram(read: Callable[[Roi], np.ndarray], grid: ClaheGrid, tile: Triple) -> Histogram:
    """Value histogram of one tile; ``read`` returns a box given in array coordinates."""
    sources = grid.tile_sources(tile)
    box = Roi.from_bounds([int(s.min()) for s in sources], [int(s.max()) + 1 for s in sources])
    data = read(box)
    return value_histogram(data[np.ix_(*(s - o for s, o in zip(sources, box.offset)))])


def _mapper(
    grid: ClaheGrid,
    dtype: np.dtype,
    options: ClaheOptions,
    histograms: Callable[[], Iterable[tuple[Triple, Histogram]]],
) -> tuple[_Mapper, tuple[int, int]]:
    """Tile mappings from the tile histograms (``histograms()`` yields them; called twice).

    Returns the mapper and the input's value range (min, max), in input units.
    """
    ends = np.array([(values[0], values[-1]) for _, (values, _) in histograms()], dtype=np.int64)
    value_range = (int(ends[:, 0].min()), int(ends[:, 1].max()))
    bin_of_value = bin_lookup(dtype, value_range, options.nbins)
    mappings = np.empty((*grid.tiles, options.nbins), dtype=np.uint16)
    for tile, (values, counts) in histograms():
        mappings[tile] = tile_mapping(values, counts, bin_of_value, options.nbins, grid, options.clip_limit)
    return _Mapper(grid, bin_of_value, mappings), value_range


def equalize_array(image: np.ndarray, kernel_size: int | Triple = 128, clip_limit: float = 0.02, nbins: int = 256) -> np.ndarray:
    """3D CLAHE of an array in memory: the twin of :func:`equalize_volume`.

    Equals ``img_as_ubyte(skimage.exposure.equalize_adapthist(image, kernel_size,
    clip_limit, nbins))`` (which would treat an array whose last axis has 3 or 4
    elements as RGB; this function never does).

    Parameters
    ----------
    image
        3D uint8 or uint16 grey values (z, y, x).
    kernel_size
        Contextual region edge in voxels: one for all axes or (z, y, x).
    clip_limit
        Clipping limit in (0, 1].
    nbins
        Number of histogram bins.

    Returns
    -------
    numpy.ndarray
        uint8, the same shape as ``image``.
    """
    options = ClaheOptions(as_triple(kernel_size, "kernel_size"), clip_limit, nbins)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x), got shape {image.shape}")
    _check_dtype(image.dtype, "the array")
    grid = ClaheGrid(as_triple(image.shape, "shape"), options.kernel_size)
    histograms = {tile: _tile_histogram(lambda box: image[box.to_slices()], grid, tile) for tile in grid.all_tiles()}
    mapper, _ = _mapper(grid, image.dtype, options, histograms.items)
    levels = mapper.levels(image, (0, 0, 0))
    return np.take(output_lookup(int(levels.min()), int(levels.max())), levels)


# ---------------------------------------------------------------------- the job


def _tile_of(block: Block, origin: Triple, grid: ClaheGrid) -> Triple:
    """Tile index of a pass-1 block (its write region is the tile, on the world grid)."""
    o, k = block.write_roi.offset, grid.kernel_size
    return ((o[0] - origin[0]) // k[0], (o[1] - origin[1]) // k[1], (o[2] - origin[2]) // k[2])


def _histogram_block(grid: ClaheGrid, folder: Path, block: Block, source: Volume) -> None:
    """Pass 1: save the value histogram of the tile that ``block`` stands for."""
    origin = source.roi.offset
    values, counts = _tile_histogram(lambda box: source.read(box.shift(origin)), grid, _tile_of(block, origin, grid))
    np.savez(folder / f"{block.block_id}.npz", values=values, counts=counts)


def _saved_histograms(folder: Path, blocks: list[Block], origin: Triple, grid: ClaheGrid) -> Iterator[tuple[Triple, Histogram]]:
    for block in blocks:
        with np.load(folder / f"{block.block_id}.npz") as saved:
            yield _tile_of(block, origin, grid), (saved["values"], saved["counts"])


def _setup_mapper(container: Path, source: str, mappings_file: Path, value_range: tuple[int, int], options: ClaheOptions) -> tuple[Volume, _Mapper]:
    volume = open_volume(container, source)
    grid = ClaheGrid(volume.shape, options.kernel_size)
    bin_of_value = bin_lookup(volume.dtype, value_range, options.nbins)
    return volume, _Mapper(grid, bin_of_value, np.load(mappings_file, mmap_mode="r"))


def _range_block(block: Block, state: tuple[Volume, _Mapper]) -> tuple[int, int]:
    """Pass 2: the (min, max) of the block's 14-bit levels."""
    source, mapper = state
    return mapper.level_range(source.read(block.write_roi), block.write_roi.relative_to(source.roi.offset).offset)


def _setup_writer(container: Path, output: str, setup_mapper: Callable[[], tuple[Volume, _Mapper]]) -> tuple[Volume, _Mapper, Volume]:
    source, mapper = setup_mapper()
    return source, mapper, open_volume(container, output, "r+", require_complete=False)


def _equalize_block(to_uint8: np.ndarray, block: Block, state: tuple[Volume, _Mapper, Volume]) -> None:
    """Pass 3: write the block's uint8 output."""
    source, mapper, target = state
    levels = mapper.levels(source.read(block.write_roi), block.write_roi.relative_to(source.roi.offset).offset)
    target.write(block.write_roi, np.take(to_uint8, levels))


def equalize_volume(
    container: str | Path,
    raw_dataset: str = RAW,
    output_dataset: str | None = None,
    *,
    options: ClaheOptions = ClaheOptions(),
    chunks: Triple | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Write the 3D CLAHE of dataset ``raw_dataset`` as a uint8 dataset, block by block.

    The output equals :func:`equalize_array` of the whole dataset (and so
    ``img_as_ubyte(equalize_adapthist(...))``); the tile grid is anchored at the
    dataset's first voxel. Memory stays bounded: per worker a few times one block
    (an output chunk) or one tile (``kernel_size``), plus the tile mappings
    (``nbins`` values per tile).

    Parameters
    ----------
    container
        The .zarr container holding ``raw_dataset``; the output is written into it.
    raw_dataset
        uint8 or uint16 grey-value dataset.
    output_dataset
        Output dataset; default ``volumes/raw_equalized_<clip_limit>``.
    options
        CLAHE parameters (kernel size in voxels, clip limit, bins), see :class:`ClaheOptions`.
    chunks
        Chunk shape of the output (voxels); blocks are one chunk. Default: the input's.
    mode, run
        The :data:`~incasem.io.volume.WriteMode` for an existing output and the
        :class:`~incasem.blockwise.RunOptions`, as for every job.

    Returns
    -------
    Volume
        The complete output: uint8, same shape, voxel size and offset as ``raw_dataset``,
        with the job's provenance record (``incasem_provenance``).
    """
    check_job(mode, run)
    if not isinstance(options, ClaheOptions):
        raise InvalidValueError(f"options must be ClaheOptions(kernel_size, clip_limit, nbins), got {options!r}")
    container = Path(container).absolute()  # workers of a cluster may run elsewhere
    volume = open_volume(container, raw_dataset)
    _check_dtype(volume.dtype, volume.label)
    _check_kernel_size(options.kernel_size, volume.shape)
    output = dataset_name(output_dataset or equalized_dataset(options.clip_limit))
    target = create_volume(
        container,
        output,
        volume.shape,
        np.uint8,
        volume.voxel_size,
        volume.offset_nm,
        chunks,
        mode=mode,
        job=options.job(volume.name),
        reads=[volume.name],
        default_chunks=volume.chunks,
    )
    if target.complete:
        return target
    scratch = container / output / SCRATCH_FOLDER
    grid = ClaheGrid(volume.shape, options.kernel_size)
    origin = volume.roi.offset

    histograms = scratch / "histograms"
    histograms.mkdir(parents=True, exist_ok=True)
    tiles = plan_blocks(Roi(origin, grid.extent), grid.kernel_size, grid_origin=origin)
    run_blockwise(
        BlockwiseTask(
            "equalize 1/3 histograms",
            tiles,
            partial(_histogram_block, grid, histograms),
            partial(open_volume, container, volume.name),
            DoneRecord(histograms),
        ),
        run,
    )
    mapper, value_range = _mapper(grid, volume.dtype, options, partial(_saved_histograms, histograms, tiles, origin, grid))
    mappings_file = scratch / "mappings.npy"
    np.save(mappings_file, mapper.mappings)
    setup_mapper = partial(_setup_mapper, container, volume.name, mappings_file, value_range, options)

    blocks = plan_blocks(target.roi, target.chunks, grid_origin=target.roi.offset)
    ranges = np.array(run_blockwise(BlockwiseTask("equalize 2/3 range", blocks, _range_block, setup_mapper), run))
    to_uint8 = output_lookup(int(ranges[:, 0].min()), int(ranges[:, 1].max()))

    run_blockwise(
        BlockwiseTask(
            "equalize 3/3 write",
            blocks,
            partial(_equalize_block, to_uint8),
            partial(_setup_writer, container, output, setup_mapper),
            done_record_for(container, output),
        ),
        run,
    )
    target.mark_complete()
    shutil.rmtree(scratch)
    return target
