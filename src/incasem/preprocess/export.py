"""Zarr datasets to folders of TIFF slices (``incasem export``), block by block.

:func:`zarr_to_tiff` writes a dataset, or a region of it, as one TIFF per z slice
for Fiji/ImageJ. It never destroys data:

* The output folder is resolved (``.``, ``..``, symbolic links) and refused when it
  is the source container, lies inside it, or holds it; also when it is a file or
  the current working directory.
* Without ``mode="overwrite"`` the folder must not exist or be empty. With it
  the folder may in addition hold a previous export: its manifest :data:`MANIFEST` (which
  every export writes) and nothing but the slices that manifest lists. Any other
  file, or no manifest, refuses the export before anything is written.
* The slices and the manifest are written into a hidden staging folder next to
  the output folder, which is renamed into place only once complete. A previous
  export is renamed aside and then only its own listed files are deleted. A failed
  or interrupted export removes the staging folder and leaves the old one as it was.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from incasem import __version__
from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_job,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import (
    DatasetExistsError,
    ExportFolderError,
    InputFileError,
    InvalidValueError,
    option,
)
from incasem.geometry import Roi
from incasem.io.provenance import command_line
from incasem.io.tiff import write_slices
from incasem.io.volume import Volume, WriteMode, open_volume
from incasem.preprocess.convert import (
    Crop,
    Rescale,
    check_crop,
    check_rescale,
    crop_region,
    describe_mapping,
    resolve_rescale,
    to_uint8,
)

#: Name of the file each export writes into its folder: what it wrote, from where and when.
#: ``mode="overwrite"`` replaces only a folder that holds this and the slices it lists.
MANIFEST = ".incasem-export.json"

#: Value of the manifest's ``"format"`` key.
_MANIFEST_FORMAT = "incasem-export/1"

_PROBABILITY_RANGE = (0.0, 1.0)

_CHOOSE = "choose a new folder, or empty it by hand"


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`zarr_to_tiff` wrote.

    Attributes
    ----------
    folder
        The folder of TIFF slices.
    files
        Number of slices (one file each).
    slice_shape
        (y, x) in voxels.
    dtype
        Element type of the files.
    mapping
        How the dataset's values became the files' values.
    """

    folder: Path
    files: int
    slice_shape: tuple[int, int]
    dtype: np.dtype
    mapping: str

    def __str__(self) -> str:
        y, x = self.slice_shape
        return f"{self.folder}: {self.files} slices {y}x{x} {self.dtype} ({self.mapping})"


def _read_region(volume: Volume, roi: Roi) -> np.ndarray:
    return volume.read(roi)


def _is_binary(volume: Volume, blocks: list[Block]) -> bool:
    """Whether all values in the blocks are 0 or 1; stops at the first block that shows otherwise."""
    for block in blocks:
        data = volume.read(block.write_roi)
        if data.size and (data.min() < 0 or data.max() > 1):
            return False
    return True


def export_range(volume: Volume, blocks: list[Block], rescale: Rescale | Literal["auto"] | None, run: RunOptions) -> tuple[float, float] | None:
    """The value range that ``rescale`` maps onto uint8 (``None``: values unchanged); see :func:`zarr_to_tiff`."""
    if rescale is None:
        return None
    if rescale != "auto":
        return resolve_rescale(rescale, [partial(_read_region, volume, b.write_roi) for b in blocks], run)
    if volume.dtype == np.bool_ or np.issubdtype(volume.dtype, np.floating) or _is_binary(volume, blocks):
        return _PROBABILITY_RANGE
    return None


def check_values(data: np.ndarray, source: Volume) -> None:
    """Refuse float values outside [0, 1] where ``rescale="auto"`` reads them as probabilities."""
    if data.size and not (data.min() >= 0 and data.max() <= 1):
        raise InputFileError(
            f"{source.label} holds values outside [0, 1] (e.g. {data.min():g}..{data.max():g}), so they are no "
            f"probabilities: pass {option('rescale', '--to-uint8')} LOW:HIGH, minmax or none"
        )


def _export_block(folder: Path, value_range: tuple[float, float] | None, checked: bool, digits: int, block: Block, source: Volume) -> None:
    data = source.read(block.write_roi)
    if checked:
        check_values(data, source)
    first = block.write_roi.offset[0] - source.roi.offset[0]
    write_slices(folder, data if value_range is None else to_uint8(data, *value_range), first, digits)


def _open_source(container: Path, dataset: str) -> Volume:
    return open_volume(container, dataset)


def _check_placement(folder: Path, container: Path) -> None:
    """Refuse an output folder that overlaps the container, is a file, or the current directory."""
    if folder == container:
        raise ExportFolderError(f"{folder} is the container being exported: choose a folder outside it")
    if container in folder.parents:
        raise ExportFolderError(f"{folder} lies inside the container {container}: choose a folder outside it")
    if folder in container.parents:
        raise ExportFolderError(
            f"{folder} holds the container {container}, so replacing it could destroy the data: choose a new folder, e.g. {folder / 'tiffs'}"
        )
    if folder == Path.cwd().resolve():
        raise ExportFolderError(f"{folder} is the current directory, which the export would replace: choose a new folder, e.g. {folder / 'tiffs'}")
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise ExportFolderError(f"{path} is a file, not a folder: choose another output folder")
            break


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of a previous export in ``folder``, or ``None`` when missing or unreadable."""
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) and _plain_name(name) for name in files):
        return None
    return manifest


def _plain_name(name: str) -> bool:
    """Whether ``name`` is a file name without any folder part (and not the manifest)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..", MANIFEST)


def _previous_export(folder: Path) -> list[str]:
    """The files of the previous export that fills ``folder``; raises if anything else is there.

    Every entry must be a plain file (not a link or folder) that the manifest lists;
    listed files may be missing.
    """
    manifest = _read_manifest(folder)
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    if manifest is None:
        raise DatasetExistsError(
            f"{folder} is not empty and has no valid {MANIFEST}, so it holds no previous incasem export (it holds e.g. {entries[0].name}): {_CHOOSE}"
        )
    own = set(manifest["files"])
    for entry in entries:
        if entry.name == MANIFEST or (entry.name in own and entry.is_file(follow_symlinks=False)):
            continue
        raise DatasetExistsError(f"{folder} holds {entry.name}, which the previous incasem export there did not write: {_CHOOSE}")
    return [name for name in manifest["files"] if (folder / name).is_file()]


def _check_target(folder: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``folder``, unless ``overwrite`` and it holds only a previous export."""
    if not folder.is_dir() or not any(os.scandir(folder)):
        return
    _previous_export(folder)
    if not overwrite:
        raise DatasetExistsError(f"{folder} exists already and is not an empty folder: pass --overwrite to replace the previous export in it")


def _write_manifest(staging: Path, volume: Volume, region: Roi, mapping: str) -> None:
    files = sorted(entry.name for entry in os.scandir(staging))
    manifest = {
        "format": _MANIFEST_FORMAT,
        "container": str(Path(volume.container).resolve()),
        "dataset": volume.name,
        "region": [[b - o, e - o] for b, e, o in zip(region.offset, region.end, volume.roi.offset)],
        "mapping": mapping,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "incasem": __version__,
        "command": command_line(),
        "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _remove_export(old: Path, files: list[str]) -> None:
    """Delete a previous export renamed aside: only its listed files, its manifest, then the folder."""
    for name in (*files, MANIFEST):
        (old / name).unlink(missing_ok=True)
    try:
        old.rmdir()
    except OSError:
        warnings.warn(f"{old} held files the previous export did not write and was kept: look inside", stacklevel=3)


def _replace_folder(staging: Path, folder: Path, overwrite: bool) -> None:
    """Move the finished ``staging`` folder to ``folder``, replacing an empty folder or a previous export there.

    ``folder`` is checked again (files may have appeared during the export). If
    renaming the new folder into place fails, the old one is moved back.
    """
    _check_target(folder, overwrite)
    if folder.is_dir() and not any(os.scandir(folder)):
        folder.rmdir()
    if not folder.exists():
        os.rename(staging, folder)
        return
    files = _previous_export(folder)
    old = folder.with_name(f".{folder.name}.incasem-old-{uuid.uuid4().hex[:8]}")
    os.rename(folder, old)
    try:
        os.rename(staging, folder)
    except BaseException:
        if not folder.exists():
            os.rename(old, folder)
        raise
    _remove_export(old, files)


def _missing_parents(folder: Path) -> list[Path]:
    """The ancestors of ``folder`` that do not exist yet, outermost first."""
    return [p for p in reversed(folder.parents) if not p.exists()]


def zarr_to_tiff(
    container: str | Path,
    dataset: str,
    folder: str | Path,
    *,
    crop: Crop | None = None,
    rescale: Rescale | Literal["auto"] | None = "auto",
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> ExportSummary:
    """Write dataset ``dataset`` (or a crop of it) as one TIFF per z slice into ``folder``.

    Files are named by the slice's z index in the dataset, zero-padded to at least
    4 digits (``0000.tif``, ``0001.tif``, ...). Next to them goes :data:`MANIFEST`,
    which lists them and records the source, the region, the mapping and the time.

    The files are written into a hidden temporary folder next to ``folder`` that is
    renamed to ``folder`` once all slices are written, so a failed or interrupted
    export leaves no partial folder and an existing one as it was (so there is
    nothing to resume: run it again).

    Parameters
    ----------
    container, dataset
        The .zarr container and the dataset to export.
    folder
        Output folder; it must not exist or be empty, unless ``mode="overwrite"``. It must
        not be the container, lie inside it or hold it, be a file, or be the
        current directory.
    crop
        Region to export in voxels, counted from the dataset's first voxel (default: all).
    rescale
        How values become file values. ``"auto"`` (default), as Fiji users expect:
        binary labels 0/1 (any integer dtype or bool) -> 0/255 uint8; float
        probabilities in [0, 1] -> ``round(255 * p)`` uint8 (other floats are
        refused); any other integer dataset (uint8 or uint16 raw, label ids)
        unchanged. ``None``: unchanged, whatever the dtype. ``(low, high)`` or
        ``"minmax"``: that range linearly onto 0..255 with :func:`to_uint8`.
    mode
        ``"create"`` (default) or ``"overwrite"``: replace a previous export in
        ``folder``, allowed only when the folder holds its :data:`MANIFEST` and
        nothing but the files listed there. Only those files are deleted, after the
        new export is complete. ``"resume"`` is refused: an export is written in one go.
    run
        Scheduler, local threads and progress bar; see :class:`incasem.blockwise.RunOptions`.

    Raises
    ------
    InvalidValueError
        For a bad ``crop``, ``rescale``, ``mode`` (also ``"resume"``) or ``run``.
    ExportFolderError
        If ``folder`` is the container, inside it or around it, a file, or the
        current directory (whatever ``mode``).
    DatasetExistsError
        If ``folder`` is not empty and either ``mode`` is not ``"overwrite"`` or the
        folder holds anything but a previous export (the message names a file).
    """
    check_job(mode, run)
    if mode == "resume":
        raise InvalidValueError("an export cannot --resume: it is written in one go; run it again (with --overwrite to replace it)")
    check_crop(crop)
    check_rescale(rescale, allow_auto=True)
    overwrite = mode == "overwrite"
    volume = open_volume(container, dataset)
    folder = Path(folder).expanduser().resolve()
    _check_placement(folder, Path(volume.container).resolve())
    _check_target(folder, overwrite)
    region = crop_region(volume.shape, crop).shift(volume.roi.offset)
    slab_grid = (volume.roi.offset[0], region.offset[1], region.offset[2])  # slabs on the dataset's z chunks
    blocks = plan_blocks(region, (volume.chunks[0], *region.shape[1:]), grid_origin=slab_grid)
    value_range = export_range(volume, blocks, rescale, run)
    mapping = describe_mapping(volume.dtype, value_range)
    checked = rescale == "auto" and np.issubdtype(volume.dtype, np.floating)
    digits = max(4, len(str(volume.shape[0] - 1)))
    created = _missing_parents(folder)
    staging = folder.with_name(f".{folder.name}.incasem-partial-{uuid.uuid4().hex[:8]}")
    made = done = False
    try:
        staging.mkdir(parents=True)
        made = True
        task = BlockwiseTask(
            f"export {dataset}",
            blocks,
            partial(_export_block, staging, value_range, checked, digits),
            partial(_open_source, volume.container, dataset),
        )
        run_blockwise(task, run)
        _write_manifest(staging, volume, region, mapping)
        _replace_folder(staging, folder, overwrite)
        done = True
    finally:
        if made and staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for parent in reversed(created):
                try:
                    parent.rmdir()
                except OSError:
                    break
    return ExportSummary(
        folder,
        region.shape[0],
        (region.shape[1], region.shape[2]),
        volume.dtype if value_range is None else np.dtype(np.uint8),
        mapping,
    )
