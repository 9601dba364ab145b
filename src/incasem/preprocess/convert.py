"""TIFF stacks to zarr datasets, block by block, and the value mapping shared with export.

:func:`tiff_to_zarr` converts a folder of 2D TIFF slices or a multi-page TIFF (or an MRC,
HDF5, N5, OME-Zarr or OME-TIFF volume: :mod:`incasem.io.sources`) into a
dataset. Each block is one chunk-depth slab of z slices across the whole (cropped)
y, x extent, so the slabs align with the output chunks and memory stays at a few
slabs whatever the depth of the stack. All slices are validated from their headers
before anything is written, and the dataset is marked complete only at the end.

Partial labels (``ConvertOptions(sparse=True)``, ``--sparse``): a folder holding only
some sections, each file named with its section's number, becomes labels on the whole
grid of the raw it belongs to (0 on the other sections) and, beside them, the labelled
mask (:func:`incasem.io.layout.labelled_mask_dataset`: 1 on the given sections, 0
elsewhere). Section numbers map to z by :func:`first_section_number`.

:func:`incasem.preprocess.export.zarr_to_tiff` (in its own module) goes the other
way. Both keep the dtype unless told otherwise; :func:`to_uint8` is the one rescaling
they use: ``round_half_up(255 * (clip(v, low, high) - low) / (high - low))``.
"""

from __future__ import annotations

import math
import numbers
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

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
    run_each,
)
from incasem.errors import (
    DatasetMismatchError,
    InputFileError,
    InvalidValueError,
    MetadataError,
    RoiError,
    VoxelSizeError,
    option,
)
from incasem.geometry import (
    NmTriple,
    Roi,
    Triple,
    as_nm_triple,
    as_positive_triple,
    voxels_to_nm,
)
from incasem.io.layout import RAW, labelled_mask_dataset
from incasem.io.metadata import JOB_KEY
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.sources import Geometry, VolumeSource, is_ome_zarr, open_source, source_geometry, source_label
from incasem.io.tiff import DEFAULT_PATTERN, TiffSections, TiffStack, open_sections
from incasem.io.volume import (
    Volume,
    WriteMode,
    check_output,
    create_volume,
    dataset_exists,
    dataset_name,
    open_volume,
)

#: Default chunk shape (voxels) of converted datasets. A block is one chunk depth of
#: whole slices, so memory is about workers x 64 slices; 64 rather than 128 deep halves
#: it and keeps zarr's per-chunk write buffers at 1 MB.
CHUNKS: Triple = (64, 128, 128)

#: A crop: one ``slice(start, stop)`` per axis (z, y, x), in voxels; ``None`` ends are open.
Crop = tuple[slice, slice, slice]

#: A rescaling to uint8: the value range ``(low, high)`` mapped onto 0..255, or
#: ``"minmax"`` for the data's own minimum and maximum.
Rescale = tuple[float, float] | Literal["minmax"]

#: Field of a converted dataset's provenance record: the number in the name of its source
#: folder's first slice file (before any crop); absent for a multi-page file.
FIRST_SLICE_NUMBER = "first_slice_number"


def to_uint8(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the value range [``low``, ``high``] linearly onto 0..255.

    ``out = floor(255 * (clip(v, low, high) - low) / (high - low) + 1/2)``, i.e.
    rounded half up; exact (integer arithmetic) for integer data and integer bounds.
    NaN maps to 0. Binary labels 0/1 with (0, 1) become 0/255 and probabilities
    [0, 1] with (0, 1) become :func:`incasem.io.layout.encode_probability` of them.

    Parameters
    ----------
    data
        Integer, boolean or float values, any shape.
    low, high
        The values that map to 0 and 255; ``low < high``.
    """
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidValueError(f"the range to map onto 0..255 needs finite LOW < HIGH, got {low}:{high}")
    exact = not np.issubdtype(data.dtype, np.floating) and float(low).is_integer() and float(high).is_integer()
    out = np.empty(data.shape, np.uint8)
    for source, target in zip(data.reshape(-1, *data.shape[-2:]), out.reshape(-1, *data.shape[-2:])):
        if exact:
            lo, width = int(low), int(high) - int(low)
            values = np.clip(source.astype(np.int64), lo, int(high)) - lo
            target[:] = (510 * values + width) // (2 * width)
        else:
            values = np.nan_to_num(source.astype(np.float64), nan=low)
            target[:] = np.floor(255 * (np.clip(values, low, high) - low) / (high - low) + 0.5)
    return out


def check_crop(crop: Crop | None) -> None:
    """Refuse a crop that is not three ``slice(start, stop)`` of whole voxels counted from 0 (``None``: all).

    Whether it fits the data is checked by :func:`crop_region`, once the data's shape is known.

    Raises
    ------
    InvalidValueError
        Naming the axis of the bad range (``crop[0]``, ...; ``--z``, ... on the command line).
    """
    if crop is None:
        return
    if not isinstance(crop, (tuple, list)) or len(crop) != 3 or not all(isinstance(cut, slice) for cut in crop):
        raise InvalidValueError(f"a crop must be three slices (z, y, x) of voxels, got {crop!r}")
    for index, (axis, cut) in enumerate(zip("zyx", crop)):
        name = option(f"crop[{index}]", f"--{axis}")
        bounds = (cut.start, cut.stop)
        whole = all(b is None or (isinstance(b, numbers.Integral) and not isinstance(b, bool)) for b in bounds)
        text = f"{'' if cut.start is None else cut.start}:{'' if cut.stop is None else cut.stop}"
        if not whole or cut.step not in (None, 1) or any(b is not None and b < 0 for b in bounds):
            raise RoiError(f"{name} range {text} is not START:STOP with 0 <= START < STOP (voxels, no step): give such a range")
        if None not in bounds and cut.start >= cut.stop:
            raise RoiError(f"{name} range {text} is empty (STOP is exclusive): give START < STOP, e.g. {cut.start}:{cut.start + 1} for one voxel")


def crop_region(shape: Triple, crop: Crop | None = None) -> Roi:
    """The voxel region ``crop`` selects from an array of ``shape`` (default: all of it).

    Raises
    ------
    RoiError
        If a range is empty, has a step or leaves ``0:shape`` on its axis.
    """
    if crop is None:
        return Roi((0, 0, 0), shape)
    begin, end = [], []
    for axis, size, cut in zip("zyx", shape, crop):
        start = 0 if cut.start is None else cut.start
        stop = size if cut.stop is None else cut.stop
        if cut.step in (None, 1) and 0 <= stop <= start <= size:
            raise RoiError(f"{axis} range {start}:{stop} is empty (the data's is 0:{size}): give START < STOP inside it")
        if cut.step not in (None, 1) or not 0 <= start < stop <= size:
            raise RoiError(f"{axis} range {start}:{stop} is not inside the data's 0:{size}: choose a range inside it")
        begin.append(start)
        end.append(stop)
    return Roi.from_bounds(begin, end)


def check_rescale(rescale: Rescale | Literal["auto"] | None, allow_auto: bool = False) -> None:
    """Refuse a rescaling that is not ``None``, ``"minmax"``, finite ``(low, high)`` with low < high,
    or (only where ``allow_auto``, as for export) ``"auto"``.

    Raises
    ------
    InvalidValueError
        Naming ``--to-uint8``.
    """
    if rescale is None or rescale == "minmax" or (allow_auto and rescale == "auto"):
        return
    if rescale == "auto":
        raise InvalidValueError(f"{option('rescale', '--to-uint8')} auto is for incasem export; here give LOW:HIGH, minmax or none")
    if isinstance(rescale, str) or not isinstance(rescale, (tuple, list)) or len(rescale) != 2:
        raise InvalidValueError(f"{option('rescale', '--to-uint8')} needs LOW:HIGH, minmax or none, got {rescale!r}")
    low, high = rescale
    numbers_given = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
    if not (numbers_given and math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidValueError(f"{option('rescale', '--to-uint8')} needs finite LOW < HIGH, got {low}:{high}")


def _extremes(read: Callable[[], np.ndarray]) -> tuple[Any, Any]:
    data = read()
    return data.min(), data.max()


def _value_range(reads: list[Callable[[], np.ndarray]], run: RunOptions) -> tuple[float, float]:
    """Minimum and maximum over the arrays the ``reads`` return, on ``run``'s scheduler."""
    ranges = run_each(_extremes, reads, "value range", run)
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return (int(low), int(high)) if np.issubdtype(type(low), np.integer) else (float(low), float(high))


def resolve_rescale(rescale: Rescale, reads: list[Callable[[], np.ndarray]], run: RunOptions) -> tuple[float, float]:
    """The (low, high) of a rescaling; ``"minmax"`` reads the data (a constant one maps to 0)."""
    check_rescale(rescale)
    if rescale == "minmax":
        low, high = _value_range(reads, run)
        return (low, high) if low < high else (low, low + 1)
    low, high = rescale
    return low, high


def describe_mapping(dtype: np.dtype, value_range: tuple[float, float] | None) -> str:
    """How values of ``dtype`` become output values: unchanged, or ``value_range`` onto uint8."""
    if value_range is None:
        return f"{dtype} values unchanged"
    low, high = value_range
    return f"{dtype} {low:g}..{high:g} -> uint8 0..255, linear, rounded half up, clipped outside"


def _stack_slab(stack: VolumeSource, region: Roi, z_start: int, z_stop: int) -> np.ndarray:
    """Slices ``z_start:z_stop`` of ``region`` (relative to the region) of the stack, cropped in y, x."""
    data = stack.read(region.offset[0] + z_start, region.offset[0] + z_stop)
    if data.shape[1:] == region.shape[1:]:
        return data
    return data[:, region.offset[1] : region.end[1], region.offset[2] : region.end[2]]


def _slab_range(block: Block, origin: Triple) -> tuple[int, int]:
    """The z range of ``block``'s write region, counted from ``origin``."""
    z_start = block.write_roi.offset[0] - origin[0]
    return z_start, z_start + block.write_roi.shape[0]


def _open_target(container: Path, dataset: str) -> Volume:
    """The output, set to write every chunk: checking each for emptiness costs zarr more than writing it."""
    volume = open_volume(container, dataset, "r+", require_complete=False)
    return replace(volume, array=volume.array.with_config({"write_empty_chunks": True}))


def _convert_block(stack: VolumeSource, region: Roi, value_range: tuple[float, float] | None, block: Block, target: Volume) -> None:
    data = _stack_slab(stack, region, *_slab_range(block, target.roi.offset))
    target.write(block.write_roi, data if value_range is None else to_uint8(data, *value_range))


def _output_geometry(
    shape: Triple,
    region: Roi,
    voxel_size: NmTriple | None,
    offset_nm: NmTriple | None,
    like: tuple[str | Path, str] | None,
    recorded: Geometry = Geometry(),
    where: str = "",
) -> tuple[NmTriple, NmTriple, Triple | None]:
    """Voxel size, offset (nm) and default chunks of the output: from the options, else the raw ``like``,
    else what the source's metadata records (``recorded``; ``where`` names the source in messages)."""
    voxel_size = None if voxel_size is None else as_nm_triple(voxel_size, option("voxel_size", "--voxel-size"), positive=True)
    offset_nm = None if offset_nm is None else as_nm_triple(offset_nm, option("offset_nm", "--offset"))
    if like is None:
        if voxel_size is None and recorded.voxel_size_nm is None and recorded.required:
            raise InputFileError(f"{where} records no voxel size (looked in {recorded.looked_in}): give {option('voxel_size', '--voxel-size')} Z,Y,X in nm")
        if voxel_size is None and recorded.voxel_size_nm is not None:
            voxel_size, offset_nm = recorded.voxel_size_nm, recorded.offset_nm if offset_nm is None else offset_nm
        voxel_size = (1, 1, 1) if voxel_size is None else voxel_size
        stack_offset = (0, 0, 0) if offset_nm is None else offset_nm
        crop_offset = voxels_to_nm(region.offset, voxel_size)
        return voxel_size, as_nm_triple([o + c for o, c in zip(stack_offset, crop_offset)], option("offset_nm", "--offset")), None
    raw = open_volume(*like)
    if region.shape != raw.shape:
        raise DatasetMismatchError(
            f"the stack{' crop' if region.shape != shape else ''} has shape {list(region.shape)} but {raw.label} has "
            f"{list(raw.shape)}: labels must cover their raw voxel for voxel (crop with {option('crop', '--z/--y/--x')} to match)"
        )
    _check_like_geometry(raw, voxel_size, offset_nm)
    return raw.voxel_size, raw.offset_nm, raw.chunks


def _check_like_geometry(raw: Volume, voxel_size: NmTriple | None, offset_nm: NmTriple | None) -> None:
    """Refuse a voxel size or offset given beside ``like`` that differs from the raw's."""
    for name, given, own in (("voxel size", voxel_size, raw.voxel_size), ("offset", offset_nm, raw.offset_nm)):
        if given is not None and given != own:
            raise VoxelSizeError(f"{name} {list(given)} nm differs from {list(own)} nm of {raw.label}: leave it out")


@dataclass(frozen=True)
class ConvertOptions:
    """What to read from a TIFF stack and how to store it; validated on construction.

    Attributes
    ----------
    pattern
        Glob selecting the slices of a folder (case-insensitive).
    voxel_size
        Voxel size in nm (z, y, x); default 1 (unknown).
    offset_nm
        World position (nm, z, y, x) of the stack's first voxel; default 0. A crop
        keeps its world position: the output's offset is this plus the crop's start.
    like
        ``(container, dataset)`` of the raw these labels belong to: the (cropped)
        stack must have its shape; its voxel size, offset and chunks are taken.
    crop
        Region of the stack to convert, in voxels (default: all).
    chunks
        Output chunk shape in voxels (default :data:`CHUNKS`, or the chunks of
        ``like``). A block is one chunk depth of whole slices, so memory grows with
        ``chunks[0]`` times the slice size.
    rescale
        ``None`` keeps the dtype; ``(low, high)`` or ``"minmax"`` (the converted
        region's extremes, found in an extra pass) maps that range onto uint8
        0..255 with :func:`to_uint8`.
    sparse
        Partial labels: the folder holds only some sections of the raw ``like``
        (required), each file named with its section's number (gaps allowed). The
        labels cover the raw's whole grid, 0 on the sections not given, and the
        labelled mask (``volumes/labelled/<organelle>``, uint8) is written beside
        them: 1 on the given sections, 0 elsewhere. A crop may cut y and x of the
        sections (not z: their numbers place them); values are kept (no ``rescale``).
    first_number
        With ``sparse``: the number of the file of the raw's first section (z 0), so
        a file numbered ``n`` is section ``z = n - first_number``. Default: from the
        raw's conversion record (see :func:`first_section_number`), else 0.

    Raises
    ------
    InvalidValueError
        For a bad value, naming its option (``--voxel-size``, ``--offset``,
        ``--like``, ``--z``/``--y``/``--x``, ``--chunks``, ``--to-uint8``, ``--pattern``,
        ``--sparse``, ``--first-number``).
    """

    pattern: str = DEFAULT_PATTERN
    voxel_size: NmTriple | None = None
    offset_nm: NmTriple | None = None
    like: tuple[str | Path, str] | None = None
    crop: Crop | None = None
    chunks: Triple | None = None
    rescale: Rescale | None = None
    sparse: bool = False
    first_number: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidValueError(f"{option('pattern', '--pattern')} must be a glob like *.tif, got {self.pattern!r}")
        if self.voxel_size is not None:
            object.__setattr__(self, "voxel_size", as_nm_triple(self.voxel_size, option("voxel_size", "--voxel-size"), positive=True))
        if self.offset_nm is not None:
            object.__setattr__(self, "offset_nm", as_nm_triple(self.offset_nm, option("offset_nm", "--offset")))
        if self.like is not None:
            if not isinstance(self.like, (tuple, list)) or len(self.like) != 2 or not isinstance(self.like[1], str):
                raise InvalidValueError(f"{option('like', '--like')} needs CONTAINER:DATASET, got {self.like!r}")
            object.__setattr__(self, "like", (self.like[0], dataset_name(self.like[1])))
        check_crop(self.crop)
        if self.chunks is not None:
            object.__setattr__(self, "chunks", as_positive_triple(self.chunks, option("chunks", "--chunks")))
        check_rescale(self.rescale)
        self._check_sparse()

    def _check_sparse(self) -> None:
        sparse, first = option("sparse=True", "--sparse"), option("first_number", "--first-number")
        if not isinstance(self.sparse, bool):
            raise InvalidValueError(f"sparse must be True or False, got {self.sparse!r}")
        if self.first_number is not None:
            if isinstance(self.first_number, bool) or not isinstance(self.first_number, numbers.Integral) or self.first_number < 0:
                raise InvalidValueError(f"{first} must be a whole number of at least 0 (a file number), got {self.first_number!r}")
            if not self.sparse:
                raise InvalidValueError(f"{first} places the sections of partial labels: add {sparse}")
        if not self.sparse:
            return
        if self.like is None:
            raise InvalidValueError(
                f"{sparse} places the labelled sections on the grid of the raw they belong to: "
                f"add {option('like=(CONTAINER, DATASET)', '--like CONTAINER:DATASET')}"
            )
        if self.rescale is not None:
            raise InvalidValueError(f"{sparse} keeps the labels' values: leave {option('rescale', '--to-uint8')} out")
        if self.crop is not None and self.crop[0] != slice(None):
            raise InvalidValueError(
                f"{sparse} places each section by the number in its file name, not by {option('crop[0]', '--z')}: "
                f"leave it out ({first} says which number the raw's first section has)"
            )


def first_section_number(raw: Volume) -> int | None:
    """The number in the file name of the source slice of ``raw``'s first section (z 0), from its
    conversion record; ``None`` where the record does not say.

    :func:`tiff_to_zarr` records the number of a source folder's first slice file
    (:data:`FIRST_SLICE_NUMBER` in the provenance record) and the crop (in the job
    record): the first section's number is that number plus the crop's first z. A
    dataset converted from a multi-page file, by another job (e.g. the equalised raw)
    or by another tool has no such record.

    Raises
    ------
    MetadataError
        If the record holds the number but no readable crop.
    """
    provenance, job = raw.array.attrs.get(PROVENANCE_KEY), raw.array.attrs.get(JOB_KEY)
    number = provenance.get(FIRST_SLICE_NUMBER) if isinstance(provenance, dict) else None
    if not isinstance(job, dict) or job.get("job") != "convert" or isinstance(number, bool) or not isinstance(number, int):
        return None
    crop = job.get("crop")
    start = crop[0][0] if isinstance(crop, list) and crop and isinstance(crop[0], list) and crop[0] else None
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise MetadataError(
            f"the conversion record ({JOB_KEY}) of {raw.label} has no readable crop, so its first section's file "
            f"number is unknown: give it with {option('first_number', '--first-number')}"
        )
    return number + start


def tiff_to_zarr(
    source: str | Path,
    container: str | Path,
    dataset: str = RAW,
    *,
    options: ConvertOptions = ConvertOptions(),
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Convert a volume (a TIFF stack, or MRC, HDF5, N5, OME-Zarr, OME-TIFF) into dataset ``dataset`` of ``container``.

    Parameters
    ----------
    source
        A folder of 2D TIFF slices, in the order of the last number in their names,
        or one multi-page TIFF (see :func:`incasem.io.tiff.open_stack`); an MRC file,
        ``FILE.h5:/path/to/dataset``, ``CONTAINER.n5/path/to/dataset`` or an OME-Zarr
        image (:func:`incasem.io.sources.open_source`). Voxel size and offset default to
        what the file's metadata records (``options`` override them); an MRC, HDF5, N5
        or OME-Zarr source that records none needs ``options.voxel_size``.
    container, dataset
        Output .zarr container (created when missing) and dataset name, e.g.
        ``volumes/raw`` or ``volumes/labels/mito``.
    options
        Slice pattern, geometry (voxel size, offset or the raw ``like``), crop,
        chunks and rescaling; see :class:`ConvertOptions`.
    mode, run
        What to do with an existing dataset (:data:`~incasem.io.volume.WriteMode`:
        replace one an earlier conversion wrote, or finish it) and how to run
        (:class:`~incasem.blockwise.RunOptions`).

    Returns
    -------
    Volume
        The complete dataset. Its attribute ``incasem_job`` records the source,
        the crop and the value mapping; ``incasem_provenance`` also the command
        line, the time, the inputs and, for a folder, the number of its first
        slice file (:data:`FIRST_SLICE_NUMBER`). With ``options.sparse``: the
        labels, whose job record also lists the labelled ``sections`` (z) and the
        ``first_number`` used; the labelled mask lies beside them, complete too.

    Raises
    ------
    InputFileError
        For a missing, empty or inconsistent stack, or a corrupt slice (named). A
        slice found corrupt while converting leaves the dataset marked incomplete.
    InvalidValueError, RoiError, DatasetExistsError, DatasetMismatchError, VoxelSizeError
        For a bad ``mode`` or ``run``, a crop outside the stack, an existing output,
        or a stack that does not match ``like``; all raised before anything is written.
        With ``sparse`` also a section whose number maps outside the raw's z range
        or whose shape differs from the raw's y, x (:class:`InputFileError`), and an
        existing labelled mask (as for the labels).
    """
    check_job(mode, run)
    source, container = Path(source), Path(container)
    if ((source / ".zgroup").is_file() or (source / "zarr.json").is_file()) and not is_ome_zarr(source):
        raise InputFileError(f"{source} is a zarr container: to write TIFF slices from it use `incasem export {source} FOLDER -d DATASET`")
    if options.sparse:
        return _sparse_to_zarr(source, container, dataset, options, mode, run)
    stack = open_source(source, options.pattern)
    region = crop_region(stack.shape, options.crop)
    geometry = source_geometry(stack)
    label = source_label(stack)
    voxel_size, offset_nm, like_chunks = _output_geometry(stack.shape, region, options.voxel_size, options.offset_nm, options.like, geometry, label)
    default_chunks = as_positive_triple(like_chunks or [min(c, s) for c, s in zip(CHUNKS, region.shape)], option("chunks", "--chunks"))
    chunks = options.chunks or default_chunks  # a resumed output keeps its own (create_volume)
    depth = region.shape[0]
    slabs: list[Callable[[], np.ndarray]] = [partial(_stack_slab, stack, region, z, min(z + chunks[0], depth)) for z in range(0, depth, chunks[0])]
    value_range = None if options.rescale is None else resolve_rescale(options.rescale, slabs, run)
    job: dict[str, Any] = {
        "job": "convert",
        "source": label,
        "crop": [[b, e] for b, e in zip(region.offset, region.end)],
        "mapping": describe_mapping(stack.dtype, value_range),
    }
    like = options.like
    same_container = like is not None and Path(like[0]).resolve() == container.resolve()
    elsewhere = [f"{Path(like[0]).resolve()}/{like[1]}"] if like is not None and not same_container else []
    dtype = stack.dtype if value_range is None else np.dtype(np.uint8)
    target = create_volume(
        container,
        dataset,
        region.shape,
        dtype,
        voxel_size,
        offset_nm,
        options.chunks,
        mode=mode,
        job=job,
        reads=[like[1]] if like is not None and same_container else [],
        inputs=[job["source"], *elsewhere],
        details={FIRST_SLICE_NUMBER: stack.first_number} if isinstance(stack, TiffStack) and stack.first_number is not None else {},
        default_chunks=default_chunks,
    )
    slab = (target.chunks[0], *target.shape[1:])
    task = BlockwiseTask(
        f"convert {target.name}",
        plan_blocks(target.roi, slab, grid_origin=target.roi.offset),
        partial(_convert_block, stack, region, value_range),
        partial(_open_target, container, target.name),
        done_record_for(container, target.name),
    )
    run_blockwise(task, run)
    target.mark_complete()
    return target


def _section_region(sections: TiffSections, crop: Crop | None, raw: Volume) -> Roi:
    """The region of the sections stack to convert: all sections, cropped in y, x to the raw's y, x shape."""
    stack = sections.stack
    region = crop_region(stack.shape, crop)
    if region.shape[1:] != raw.shape[1:]:
        cropped = f" (cropped to {list(region.shape[1:])})" if region.shape[1:] != stack.shape[1:] else ""
        raise InputFileError(
            f"section {stack.files[0].name} of {stack.path} has shape {list(stack.shape[1:])} (y, x){cropped} but "
            f"{raw.label} has {list(raw.shape[1:])}: label sections of that raw (crop with {option('crop', '--y/--x')} to match)"
        )
    return region


def _section_depths(sections: TiffSections, first: int, basis: str, raw: Volume) -> list[int]:
    """The z of each section in ``raw``: its number minus ``first`` (found by ``basis``); refuses a number outside the raw."""
    depth, depths = raw.shape[0], []
    for path, number in zip(sections.stack.files, sections.numbers):
        z = number - first
        if not 0 <= z < depth:
            raise InputFileError(
                f"{path} has section number {number}, outside {first}..{first + depth - 1}, the numbers of the {depth} "
                f"sections of {raw.label} (first number {first}, {basis}): remove or rename the file, or give the "
                f"number of the raw's first section with {option('first_number', '--first-number')}"
            )
        depths.append(z)
    return depths


_OVERWRITE = option('mode="overwrite"', "--overwrite")


def _open_targets(container: Path, labels: str, labelled: str) -> tuple[Volume, Volume]:
    return _open_target(container, labels), _open_target(container, labelled)


def _sparse_block(stack: TiffStack, region: Roi, index_of: dict[int, int], block: Block, targets: tuple[Volume, Volume]) -> None:
    """Write one slab of the labels (the sections it holds, 0 elsewhere) and of the labelled mask."""
    labels, labelled = targets
    z_start, z_stop = _slab_range(block, labels.roi.offset)
    data = np.zeros(block.write_roi.shape, stack.dtype)
    mask = np.zeros(block.write_roi.shape, np.uint8)
    for z in range(z_start, z_stop):
        index = index_of.get(z)
        if index is not None:
            data[z - z_start] = _stack_slab(stack, region, index, index + 1)[0]
            mask[z - z_start] = 1
    labels.write(block.write_roi, data)
    labelled.write(block.write_roi, mask)


def _sparse_to_zarr(source: Path, container: Path, dataset: str, options: ConvertOptions, mode: WriteMode, run: RunOptions) -> Volume:
    """:func:`tiff_to_zarr` of partial labels (``options.sparse``): the labels and their labelled mask."""
    assert options.like is not None  # ConvertOptions requires it with sparse
    like = options.like
    labels_name = dataset_name(dataset)
    labelled_name = labelled_mask_dataset(labels_name)
    if labelled_name == labels_name:
        raise InvalidValueError(f"'{labels_name}' is where its labelled mask would go: name the labels volumes/labels/<organelle>")
    sections = open_sections(source, options.pattern)
    raw = open_volume(*like)
    _check_like_geometry(raw, options.voxel_size, options.offset_nm)
    region = _section_region(sections, options.crop, raw)
    recorded = first_section_number(raw) if options.first_number is None else None
    if options.first_number is not None:
        first, basis = options.first_number, "as given"
    elif recorded is not None:
        first, basis = recorded, "from the raw's conversion record"
    else:
        first, basis = 0, "the default where the raw's conversion record does not say: numbers are z indices"
    depths = _section_depths(sections, first, basis, raw)
    stack = sections.stack
    job: dict[str, Any] = {
        "job": "convert",
        "source": str(source.resolve()),
        "crop": [[0, raw.shape[0]], *([b, e] for b, e in zip(region.offset[1:], region.end[1:]))],
        "mapping": describe_mapping(stack.dtype, None),
        "sparse": True,
        "first_number": first,
        "sections": depths,
    }
    same_container = Path(like[0]).resolve() == container.resolve()
    reads = [like[1]] if same_container else []
    inputs = [job["source"], *([] if same_container else [f"{Path(like[0]).resolve()}/{like[1]}"])]
    for name in (labels_name, labelled_name):  # both refused or accepted before either is written
        check_output(container, name, mode=mode, job=job, reads=[*reads, *([labels_name] if name == labelled_name else [])])
    restart = mode == "resume" and container.exists() and dataset_exists(container, labels_name) and not dataset_exists(container, labelled_name)
    shape, geometry = raw.shape, (raw.voxel_size, raw.offset_nm)
    common: dict[str, Any] = {"mode": mode, "job": job, "reads": reads, "inputs": inputs, "default_chunks": raw.chunks}
    target = create_volume(container, labels_name, shape, stack.dtype, *geometry, options.chunks, **common)
    mask = create_volume(container, labelled_name, shape, np.uint8, *geometry, options.chunks, **common)
    done: DoneRecord = done_record_for(container, target.name)
    if restart:  # the labelled mask was lost since the interrupted run: write every block again
        shutil.rmtree(done.folder, ignore_errors=True)
    if mask.chunks[0] != target.chunks[0]:
        raise DatasetMismatchError(
            f"{mask.label} has chunks {list(mask.chunks)} but {target.label} has {list(target.chunks)}: rerun with {_OVERWRITE} to write both afresh"
        )
    index_of = {z: index for index, z in enumerate(depths)}
    task = BlockwiseTask(
        f"convert {target.name}",
        plan_blocks(target.roi, (target.chunks[0], *target.shape[1:]), grid_origin=target.roi.offset),
        partial(_sparse_block, stack, region, index_of),
        partial(_open_targets, container, target.name, mask.name),
        done,
    )
    run_blockwise(task, run)
    target.mark_complete()
    mask.mark_complete()
    return target
