"""Zarr datasets to one OME-TIFF or MRC file (``incasem export CELL.zarr OUT.ome.tif``), for Fiji and IMOD.

:func:`zarr_to_file` writes a dataset, or a region of it, as one file that carries its
geometry: an OME-TIFF (BigTIFF, one page per z section, ``PhysicalSizeZ/Y/X`` in µm) or an
MRC file (voxel size and origin in Å; uint8 as mode 0 with IMOD's "unsigned bytes"
stamp, as IMOD writes it). Values map as for a TIFF folder (:func:`incasem.preprocess.export.zarr_to_tiff`:
``rescale="auto"`` makes binary labels 0/255 and probabilities 0..255). Memory stays at
one slab of sections: the file is written slab by slab, in z order.

It never destroys data: the file is written under a hidden temporary name beside the
output and renamed into place only when complete (an interrupted export leaves nothing);
an existing file is replaced only with ``mode="overwrite"`` and only if an earlier
``incasem export`` wrote it; the output may not lie inside the container.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from incasem.blockwise import Block, RunOptions, check_job, plan_blocks
from incasem.errors import DatasetExistsError, ExportFolderError, InvalidValueError, option
from incasem.io.sources import mark_unsigned_bytes
from incasem.io.volume import Volume, WriteMode, open_volume
from incasem.monitor import current_monitor
from incasem.preprocess.convert import Crop, Rescale, check_crop, check_rescale, crop_region, describe_mapping, to_uint8
from incasem.preprocess.export import ExportSummary, check_values, export_range

__all__ = ["FILE_FORMATS", "file_format", "zarr_to_file"]

#: Output file endings and the format each writes.
FILE_FORMATS = {".ome.tif": "ome-tiff", ".ome.tiff": "ome-tiff", ".mrc": "mrc", ".rec": "mrc", ".map": "mrc"}

#: What an export writes into the file, so that a later ``--overwrite`` knows the file is its own.
MARK = "incasem export"

#: MRC modes by the element type written.
_MRC_MODES = {np.dtype(np.int8): 0, np.dtype(np.uint8): 0, np.dtype(np.int16): 1, np.dtype(np.float32): 2, np.dtype(np.uint16): 6, np.dtype(np.float16): 12}


def file_format(path: str | Path) -> str | None:
    """``"ome-tiff"`` or ``"mrc"`` by the file name's ending; ``None`` for anything else (a TIFF folder)."""
    name = Path(path).name.lower()
    return next((kind for suffix, kind in FILE_FORMATS.items() if name.endswith(suffix)), None)


def _written_by_export(path: Path, kind: str) -> bool:
    try:
        if kind == "mrc":
            import mrcfile

            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                return any(MARK in bytes(label).decode("ascii", "replace") for label in mrc.header.label)
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            return f'Name="{MARK}' in (tiff.ome_metadata or "")
    except (OSError, ValueError, EOFError):
        return False


def _check_target(path: Path, container: Path, kind: str, overwrite: bool) -> None:
    if path == container or container in path.parents:
        raise ExportFolderError(f"{path} lies inside the container {container}: choose a file outside it")
    if path.is_dir():
        raise ExportFolderError(f"{path} is a folder: name the {kind} file to write, e.g. {path / ('cell' + ('.mrc' if kind == 'mrc' else '.ome.tif'))}")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise DatasetExistsError(f"{path} exists already: choose a new file name, or pass --overwrite to replace an earlier incasem export")
        if not _written_by_export(path, kind):
            raise DatasetExistsError(
                f"{path} was not written by incasem export, so --overwrite will not replace it (it may be data you need): choose a new file name"
            )
    if not path.parent.is_dir():
        raise ExportFolderError(f"{path.parent} is not a folder: create it first, or choose another place for {path.name}")


def _slabs(volume: Volume, blocks: list[Block], value_range: tuple[float, float] | None, checked: bool, progress: bool) -> Iterator[np.ndarray]:
    """The region's slabs in z order, mapped; the progress bar and a monitor's Cancel between slabs."""
    monitor = current_monitor()
    if monitor is not None:
        monitor.started(f"export {volume.name}", len(blocks))
    with tqdm(total=len(blocks), desc=f"export {volume.name}", unit="block", disable=not progress, leave=False) as bar:
        for block in blocks:
            if monitor is not None:
                monitor.raise_if_cancelled()
            data = volume.read(block.write_roi)
            if checked:
                check_values(data, volume)
            yield data if value_range is None else to_uint8(data, *value_range)
            bar.update(1)
            if monitor is not None:
                monitor.advanced()


def _write_ome_tiff(target: Path, slabs: Iterator[np.ndarray], shape: tuple[int, int, int], dtype: np.dtype, volume: Volume) -> None:
    import tifffile

    pages = (page for slab in slabs for page in slab)
    z, y, x = (v / 1000 for v in volume.voxel_size)
    metadata = {"axes": "ZYX", "Name": f"{MARK} of {volume.label}", "PhysicalSizeZ": z, "PhysicalSizeY": y, "PhysicalSizeX": x}
    metadata.update({f"PhysicalSize{axis}Unit": "µm" for axis in "ZYX"})
    with tifffile.TiffWriter(target, bigtiff=True, ome=True) as tiff:
        tiff.write(pages, shape=shape, dtype=dtype, metadata=metadata, photometric="minisblack")


def _write_mrc(target: Path, slabs: Iterator[np.ndarray], shape: tuple[int, int, int], dtype: np.dtype, volume: Volume) -> None:
    import mrcfile

    with mrcfile.new_mmap(target, shape=shape, mrc_mode=_MRC_MODES[dtype], overwrite=False) as mrc:
        z = 0
        for slab in slabs:
            mrc.data[z : z + slab.shape[0]] = slab.view(np.int8) if dtype == np.uint8 else slab
            z += slab.shape[0]
        mrc.voxel_size = tuple(10 * v for v in volume.voxel_size[::-1])  # x, y, z in Å
        mrc.header.origin = tuple(10 * v for v in volume.offset_nm[::-1])
        if dtype == np.uint8:
            mark_unsigned_bytes(mrc.header)
        mrc.update_header_stats()
        mrc.add_label(f"{MARK} of {volume.label}"[:80])


def zarr_to_file(
    container: str | Path,
    dataset: str,
    path: str | Path,
    *,
    crop: Crop | None = None,
    rescale: Rescale | Literal["auto"] | None = "auto",
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> ExportSummary:
    """Write dataset ``dataset`` (or a crop of it) as one OME-TIFF or MRC file (by ``path``'s ending; module docstring).

    Parameters are those of :func:`incasem.preprocess.export.zarr_to_tiff`; ``path`` ends in
    ``.ome.tif``/``.ome.tiff`` or ``.mrc``/``.rec``/``.map``. ``run`` sets only the progress bar:
    a file is written in z order, one slab at a time.

    Raises
    ------
    InvalidValueError
        For another ending, a bad ``crop``, ``rescale`` or ``mode`` (``"resume"`` too), or a
        type MRC cannot hold (32/64-bit integers, float64: pass ``rescale`` or write an OME-TIFF).
    ExportFolderError, DatasetExistsError
        For a file inside the container, a folder in its place, or an existing file
        that ``mode="overwrite"`` may not replace.
    """
    check_job(mode, run)
    if mode == "resume":
        raise InvalidValueError("an export cannot --resume: it is written in one go; run it again (with --overwrite to replace it)")
    kind = file_format(path)
    if kind is None:
        raise InvalidValueError(f"{path} is no OME-TIFF or MRC file name: end it with {', '.join(FILE_FORMATS)}, or give a folder for TIFF slices")
    check_crop(crop)
    check_rescale(rescale, allow_auto=True)
    volume = open_volume(container, dataset)
    target = Path(path).expanduser().resolve()
    _check_target(target, Path(volume.container).resolve(), kind, mode == "overwrite")
    region = crop_region(volume.shape, crop).shift(volume.roi.offset)
    blocks = plan_blocks(region, (volume.chunks[0], *region.shape[1:]), grid_origin=(volume.roi.offset[0], region.offset[1], region.offset[2]))
    value_range = export_range(volume, blocks, rescale, run)
    dtype = volume.dtype if value_range is None else np.dtype(np.uint8)
    dtype = np.dtype(np.uint8) if dtype == np.bool_ else dtype
    if kind == "mrc" and dtype not in _MRC_MODES:
        raise InvalidValueError(
            f"MRC holds 8- and 16-bit integers and 16/32-bit floats, not {dtype} ({volume.label}): "
            f"pass {option('rescale', '--to-uint8')} minmax or LOW:HIGH, or export an OME-TIFF"
        )
    checked = rescale == "auto" and np.issubdtype(volume.dtype, np.floating)
    staging = target.with_name(f".{target.name}.incasem-partial-{uuid.uuid4().hex[:8]}")
    write = _write_mrc if kind == "mrc" else _write_ome_tiff
    try:
        slabs = (slab.astype(dtype, copy=False) for slab in _slabs(volume, blocks, value_range, checked, run.progress))
        write(staging, slabs, region.shape, dtype, volume)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return ExportSummary(target, region.shape[0], (region.shape[1], region.shape[2]), dtype, describe_mapping(volume.dtype, value_range))
