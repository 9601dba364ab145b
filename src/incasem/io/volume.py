"""Datasets in zarr containers that know their voxel size and world offset.

A :class:`Volume` is a zarr array plus its geometry. Regions are given in **voxel
units on the world grid**: a voxel ROI ``r`` covers the world box
``r.to_world(voxel_size)`` nm, and the dataset itself covers ``volume.roi`` =
``offset_nm / voxel_size`` with the array's shape. Reading a region that leaves the
dataset either fails with a clear error or pads, as the caller asks.

Containers may be zarr v2 (the original's published cells) or zarr v3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.errors

from incasem.errors import (
    DatasetExistsError,
    DatasetMismatchError,
    DatasetNotFoundError,
    NotAContainerError,
    RoiError,
    VoxelSizeError,
)
from incasem.geometry import Roi, Triple, as_triple
from incasem.io.metadata import COMPLETE, INCOMPLETE, JOB_KEY, STATUS_KEY, geometry_attributes, read_geometry

PadMode = Literal["constant", "reflect", "symmetric", "edge"]

#: Default chunk edge (voxels) of datasets incasem creates.
DEFAULT_CHUNK = 128


@dataclass(frozen=True)
class Volume:
    """A dataset inside a zarr container, with voxel size and offset in nm (z, y, x)."""

    container: Path
    name: str
    array: zarr.Array
    voxel_size: Triple
    offset_nm: Triple

    @property
    def shape(self) -> Triple:
        """Shape in voxels."""
        return as_triple(self.array.shape, "shape")

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> Triple:
        """Chunk shape in voxels."""
        return as_triple(self.array.chunks, "chunks")

    @property
    def roi(self) -> Roi:
        """Region covered, in voxel units on the world grid."""
        return Roi(tuple(o // v for o, v in zip(self.offset_nm, self.voxel_size)), self.shape)

    @property
    def roi_nm(self) -> Roi:
        """Region covered, in nm."""
        return self.roi.to_world(self.voxel_size)

    @property
    def complete(self) -> bool:
        """False while the job writing this dataset has not finished."""
        return self.array.attrs.get(STATUS_KEY, COMPLETE) == COMPLETE

    @property
    def label(self) -> str:
        """``container/dataset``, for messages."""
        return f"{self.container}/{self.name}"

    def read(self, roi: Roi | None = None, padding: PadMode | None = None, fill_value: int | float = 0) -> np.ndarray:
        """Read a region (voxel units, world grid; default: everything).

        Parameters
        ----------
        roi
            Region to read, in voxels on the world grid.
        padding
            How to fill the part of ``roi`` outside the dataset: ``None`` refuses such
            a region, ``"constant"`` fills ``fill_value``, ``"reflect"``,
            ``"symmetric"`` and ``"edge"`` are the numpy padding modes.
        """
        roi = self.roi if roi is None else roi
        inside = roi.intersect(self.roi)
        if inside == roi:
            return np.asarray(self.array[roi.to_slices(self.roi.offset)])
        if padding is None:
            raise RoiError(
                f"region {roi} (voxels) reaches outside {self.label}, which covers {self.roi}: "
                "choose a region inside the dataset"
            )
        if inside.empty:
            if padding != "constant":
                raise RoiError(f"region {roi} (voxels) does not overlap {self.label} ({self.roi})")
            return np.full(roi.shape, fill_value, dtype=self.dtype)
        data = np.asarray(self.array[inside.to_slices(self.roi.offset)])
        widths = [(i0 - r0, r1 - i1) for r0, r1, i0, i1 in zip(roi.offset, roi.end, inside.offset, inside.end)]
        if padding == "constant":
            return np.pad(data, widths, mode="constant", constant_values=fill_value)
        return np.pad(data, widths, mode=padding)

    def write(self, roi: Roi, data: np.ndarray) -> None:
        """Write ``data`` into a region (voxel units, world grid) inside the dataset."""
        if not self.roi.contains(roi):
            raise RoiError(f"region {roi} (voxels) reaches outside {self.label}, which covers {self.roi}")
        if tuple(data.shape) != roi.shape:
            raise ValueError(f"data of shape {data.shape} does not fit region {roi} of {self.label}")
        self.array[roi.to_slices(self.roi.offset)] = data

    def mark_complete(self) -> None:
        """Record that the job writing this dataset has finished."""
        self.array.attrs[STATUS_KEY] = COMPLETE


def open_container(path: str | Path, mode: Literal["r", "r+", "a"] = "r") -> zarr.Group:
    """Open a zarr container (v2 or v3); ``mode="a"`` creates it when missing."""
    path = Path(path)
    if mode == "a" and not path.exists():
        return zarr.open_group(str(path), mode="a", zarr_format=2)
    try:
        return zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as error:
        raise NotAContainerError(f"{path} is not a zarr container: give the path of a .zarr folder") from error


def _volume_from_array(container: Path, name: str, array: zarr.Array) -> Volume:
    if array.ndim != 3:
        raise DatasetMismatchError(f"{container}/{name} has {array.ndim} dimensions; incasem needs 3D (z, y, x)")
    voxel_size, offset_nm = read_geometry(array.attrs.asdict())
    if any(o % v for o, v in zip(offset_nm, voxel_size)):
        raise VoxelSizeError(
            f"offset {list(offset_nm)} nm of {container}/{name} is not a multiple of its voxel size "
            f"{list(voxel_size)} nm: fix it with `incasem info {container} --dataset {name} --offset Z Y X`"
        )
    return Volume(container, name, array, voxel_size, offset_nm)


def open_volume(
    path: str | Path, dataset: str, mode: Literal["r", "r+"] = "r", require_complete: bool = True
) -> Volume:
    """Open dataset ``dataset`` of container ``path``.

    Raises
    ------
    NotAContainerError, DatasetNotFoundError
        If the container or the dataset does not exist.
    DatasetMismatchError
        If ``require_complete`` and the dataset was left unfinished by an interrupted job.
    """
    path = Path(path)
    group = open_container(path, mode)
    try:
        node = group[dataset]
    except KeyError:
        raise DatasetNotFoundError(
            f"{path} has no dataset '{dataset}' (it has: {', '.join(dataset_names(group)) or 'none'})"
        ) from None
    if not isinstance(node, zarr.Array):
        raise DatasetNotFoundError(f"'{dataset}' in {path} is a group, not a dataset")
    volume = _volume_from_array(path, dataset, node)
    if require_complete and not volume.complete:
        raise DatasetMismatchError(
            f"{volume.label} was left unfinished by an interrupted job: rerun that job with --resume or --overwrite"
        )
    return volume


def dataset_names(group: zarr.Group) -> list[str]:
    """Paths of all arrays in a container, sorted."""
    return sorted(name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array))


def list_volumes(path: str | Path) -> list[Volume]:
    """All 3D datasets of a container."""
    path = Path(path)
    group = open_container(path)
    volumes = []
    for name in dataset_names(group):
        array = group[name]
        if array.ndim == 3:
            volumes.append(_volume_from_array(path, name, array))
    return volumes


def _matches(volume: Volume, shape: Triple, dtype: np.dtype, voxel_size: Triple, offset_nm: Triple) -> list[str]:
    expected = {"shape": shape, "dtype": dtype, "voxel size": voxel_size, "offset": offset_nm}
    actual = {"shape": volume.shape, "dtype": volume.dtype, "voxel size": volume.voxel_size, "offset": volume.offset_nm}
    return [f"{key} {actual[key]} (expected {expected[key]})" for key in expected if actual[key] != expected[key]]


def create_volume(
    path: str | Path,
    dataset: str,
    shape: Triple,
    dtype: np.dtype | str,
    voxel_size: Triple,
    offset_nm: Triple = (0, 0, 0),
    chunks: Triple | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    attributes: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
) -> Volume:
    """Create a dataset for a job to fill, marked incomplete until :meth:`Volume.mark_complete`.

    An existing dataset is refused (:class:`DatasetExistsError`) unless ``overwrite``
    (it is deleted) or ``resume`` (it is reused after checking that shape, dtype,
    geometry and the recorded ``job`` settings match, else
    :class:`DatasetMismatchError`). ``job`` (JSON-like) is stored under
    :data:`~incasem.io.metadata.JOB_KEY`. The container is created (zarr v2, like
    the original's) when missing.
    """
    job = None if job is None else json.loads(json.dumps(job))
    path = Path(path)
    shape = as_triple(shape, "shape")
    voxel_size = as_triple(voxel_size, "voxel_size")
    offset_nm = as_triple(offset_nm, "offset")
    dtype = np.dtype(dtype)
    if min(voxel_size) <= 0:
        raise VoxelSizeError(f"voxel size {list(voxel_size)} nm for {path}/{dataset} must be positive")
    if any(o % v for o, v in zip(offset_nm, voxel_size)):
        raise VoxelSizeError(
            f"offset {list(offset_nm)} nm for {path}/{dataset} is not a multiple of the voxel size {list(voxel_size)} nm"
        )
    group = open_container(path, "a")
    if dataset in group:
        if resume and not overwrite:
            existing = open_volume(path, dataset, "r+", require_complete=False)
            problems = _matches(existing, shape, dtype, voxel_size, offset_nm)
            stored_job = existing.array.attrs.get(JOB_KEY)
            if job is not None and stored_job != job:
                problems.append(f"job settings {stored_job} (expected {job})")
            if problems:
                raise DatasetMismatchError(
                    f"cannot resume into {existing.label}: its {', '.join(problems)}; use --overwrite to start afresh"
                )
            return existing
        if not overwrite:
            raise DatasetExistsError(f"{path}/{dataset} exists already: pass --overwrite to replace it")
        del group[dataset]
    chunks = chunks or tuple(min(DEFAULT_CHUNK, s) if s > 0 else 1 for s in shape)
    attrs = geometry_attributes(voxel_size, offset_nm, dataset)
    attrs.update(attributes or {})
    if job is not None:
        attrs[JOB_KEY] = job
    attrs[STATUS_KEY] = INCOMPLETE
    array = group.create_array(dataset, shape=shape, chunks=as_triple(chunks, "chunks"), dtype=dtype, fill_value=0, attributes=attrs)
    return _volume_from_array(path, dataset, array)


def delete_volume(path: str | Path, dataset: str) -> None:
    """Remove a dataset from a container (nothing happens if it is missing)."""
    group = open_container(path, "r+")
    if dataset in group:
        del group[dataset]


def set_geometry(
    path: str | Path, dataset: str, voxel_size: Triple | None = None, offset_nm: Triple | None = None
) -> Volume:
    """Change the voxel size and/or world offset (nm) recorded for a dataset."""
    volume = open_volume(path, dataset, "r+", require_complete=False)
    new_voxel_size = volume.voxel_size if voxel_size is None else as_triple(voxel_size, "voxel_size")
    new_offset = volume.offset_nm if offset_nm is None else as_triple(offset_nm, "offset")
    if min(new_voxel_size) <= 0 or any(o % v for o, v in zip(new_offset, new_voxel_size)):
        raise VoxelSizeError(
            f"offset {list(new_offset)} nm must be a multiple of the voxel size {list(new_voxel_size)} nm "
            f"(both positive) for {volume.label}"
        )
    volume.array.attrs.update(geometry_attributes(new_voxel_size, new_offset, dataset))
    return _volume_from_array(volume.container, dataset, volume.array)

