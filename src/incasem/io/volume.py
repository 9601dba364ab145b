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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.errors
from numpy.typing import DTypeLike

from incasem.errors import (
    DatasetExistsError,
    DatasetMismatchError,
    DatasetNotFoundError,
    InvalidValueError,
    MetadataError,
    NotAContainerError,
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
    as_triple,
    nm_to_voxels,
)
from incasem.io.metadata import (
    COMPLETE,
    INCOMPLETE,
    JOB_KEY,
    STATUS_KEY,
    DatasetRef,
    geometry_attributes,
    read_geometry,
    read_offset,
    read_voxel_size,
    records_geometry,
)
from incasem.io.ngff import ngff_geometry, publish_ngff
from incasem.io.padding import PadMode, pad_to_region
from incasem.io.provenance import PROVENANCE_KEY, provenance_record
from incasem.io.tiff import convert_first, is_tiff_source

#: How a job treats an output that exists already: ``create`` refuses it, ``overwrite``
#: replaces it (only a dataset the same kind of incasem job wrote), ``resume`` finishes it.
WriteMode = Literal["create", "overwrite", "resume"]

#: The accepted values of :data:`WriteMode`.
WRITE_MODES: tuple[str, ...] = ("create", "overwrite", "resume")

#: Default chunk edge (voxels) of datasets incasem creates.
DEFAULT_CHUNK = 128


@dataclass(frozen=True)
class Volume:
    """A dataset inside a zarr container, with voxel size and offset in nm (z, y, x)."""

    container: Path
    name: str
    array: zarr.Array
    voxel_size: NmTriple
    offset_nm: NmTriple

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
        return Roi(nm_to_voxels(self.offset_nm, self.voxel_size), self.shape)

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
            raise RoiError(f"region {roi} (voxels) reaches outside {self.label}, which covers {self.roi}: choose a region inside the dataset")
        data = np.zeros((0, 0, 0), self.dtype) if inside.empty else np.asarray(self.array[inside.to_slices(self.roi.offset)])
        return pad_to_region(data, inside, roi, padding, fill_value, f"{self.label} ({self.roi})")

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


def dataset_name(name: str) -> str:
    """The normalised form of dataset path ``name``: how zarr resolves it, and how incasem compares names.

    Empty and ``.`` components are dropped (``/volumes//raw/`` and ``./volumes/raw``
    both name ``volumes/raw``), so that two spellings of one dataset always compare equal.

    Raises
    ------
    InvalidValueError
        For an empty name (the container itself), a ``..`` component, a component
        starting with ``.`` (zarr's and incasem's own metadata) or a control character.
    """
    if not isinstance(name, str):
        raise InvalidValueError(f"a dataset name must be a string like volumes/raw, got {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    problem = None
    if not parts:
        problem = "names the container itself, not a dataset"
    elif ".." in parts:
        problem = "has a '..' component"
    elif any(part.startswith(".") for part in parts):
        problem = "has a component starting with '.' (reserved for metadata)"
    elif any(ord(c) < 32 for c in name):
        problem = "holds a control character"
    if problem:
        raise InvalidValueError(f"dataset name {name!r} {problem}: give a path like volumes/raw")
    return "/".join(parts)


def _related(first: str, second: str) -> bool:
    """Whether normalised names ``first`` and ``second`` are one dataset, or one holds the other."""
    return first == second or first.startswith(f"{second}/") or second.startswith(f"{first}/")


_METADATA_FILES = (".zarray", ".zattrs", ".zgroup", "zarr.json")


def _damaged_metadata(path: Path) -> MetadataError:
    """The error naming the first metadata file under ``path`` that is not valid JSON."""
    for folder, _dirs, files in os.walk(path):
        for name in sorted(set(files) & set(_METADATA_FILES)):
            file = Path(folder) / name
            try:
                json.loads(file.read_bytes())
            except (ValueError, OSError):
                return MetadataError(f"{file} is damaged (not valid JSON): restore it from a backup, or re-create that dataset")
    return MetadataError(f"the zarr metadata of {path} is damaged: check it with `incasem info {path}`")


def open_container(path: str | Path, mode: Literal["r", "r+", "a"] = "r") -> zarr.Group:
    """Open a zarr container (v2 or v3); ``mode="a"`` creates it when missing.

    Raises
    ------
    NotAContainerError
        If ``path`` exists but is no zarr container (a plain folder or file is never touched).
    MetadataError
        If the container's own metadata is damaged.
    """
    path = Path(path)
    if mode == "a" and not path.exists():
        return zarr.open_group(str(path), mode="a", zarr_format=2)
    if path.exists() and not path.is_dir():
        if is_tiff_source(path):
            raise NotAContainerError(convert_first(path, "a zarr container"))
        raise NotAContainerError(f"{path} is a file, not a zarr container: give the path of a .zarr folder")
    try:
        return zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as error:
        if is_tiff_source(path):
            raise NotAContainerError(convert_first(path, "a zarr container")) from error
        raise NotAContainerError(f"{path} is not a zarr container: give the path of a .zarr folder") from error
    except ValueError as error:  # json.JSONDecodeError and zarr's metadata validation
        raise _damaged_metadata(path) from error


def _node(group: zarr.Group, path: Path, name: str) -> zarr.Array | zarr.Group | None:
    """The node at normalised ``name`` of ``group`` (``None`` if absent); damaged metadata is named."""
    try:
        return group.get(name)
    except KeyError:
        return None
    except ValueError as error:
        raise _damaged_metadata(path / name) from error


def _array_above(group: zarr.Group, path: Path, name: str) -> str | None:
    """The first dataset among the parents of ``name`` (zarr cannot nest a dataset in a dataset)."""
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if isinstance(_node(group, path, parent), zarr.Array):
            return parent
    return None


def _volume_from_array(container: Path, name: str, array: zarr.Array) -> Volume:
    if array.ndim != 3:
        raise DatasetMismatchError(f"{container}/{name} has {array.ndim} dimensions; incasem needs 3D (z, y, x)")
    ref = DatasetRef(container, name)
    attrs = array.attrs.asdict()
    voxel_size, offset_nm = read_geometry(attrs, ref)
    if not records_geometry(attrs):  # an OME-Zarr image: the geometry lies in its group's multiscales, in the axes' unit
        parent, _, child = name.rpartition("/")
        inherited = ngff_geometry(zarr.open_group(str(container / parent), mode="r").attrs.asdict(), child)
        if inherited is not None:
            voxel_size, offset_nm = inherited
    try:
        nm_to_voxels(offset_nm, voxel_size)
    except VoxelSizeError:
        raise ref.invalid(f"offset {list(offset_nm)} nm, which is not a multiple of its voxel size {list(voxel_size)} nm") from None
    return Volume(container, name, array, voxel_size, offset_nm)


def _open_array(path: Path, dataset: str, mode: Literal["r", "r+"]) -> tuple[zarr.Array, str]:
    """The zarr array of dataset ``dataset`` (normalised name returned with it)."""
    name = dataset_name(dataset)
    group = open_container(path, mode)
    node = _node(group, path, name)
    if node is None:
        raise DatasetNotFoundError(f"{path} has no dataset '{name}' (it has: {', '.join(dataset_names(group, path)) or 'none'})")
    if not isinstance(node, zarr.Array):
        raise DatasetNotFoundError(f"'{name}' in {path} is a group, not a dataset: name a dataset inside it")
    return node, name


def open_volume(path: str | Path, dataset: str, mode: Literal["r", "r+"] = "r", require_complete: bool = True) -> Volume:
    """Open dataset ``dataset`` of container ``path``.

    Raises
    ------
    NotAContainerError, DatasetNotFoundError
        If the container or the dataset does not exist.
    MetadataError
        If the dataset's metadata or geometry attributes are damaged.
    DatasetMismatchError
        If ``require_complete`` and the dataset was left unfinished by an interrupted job.
    """
    path = Path(path)
    array, name = _open_array(path, dataset, mode)
    volume = _volume_from_array(path, name, array)
    if require_complete and not volume.complete:
        raise DatasetMismatchError(f"{volume.label} was left unfinished by an interrupted job: rerun that job with --resume or --overwrite")
    return volume


def dataset_names(group: zarr.Group, path: Path) -> list[str]:
    """Paths of all arrays in container ``group`` (opened from ``path``), sorted."""
    try:
        return sorted(name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array))
    except ValueError as error:
        raise _damaged_metadata(path) from error


def dataset_exists(path: str | Path, dataset: str) -> bool:
    """Whether container ``path`` holds an array named ``dataset`` (without reading its metadata)."""
    path = Path(path)
    return isinstance(_node(open_container(path), path, dataset_name(dataset)), zarr.Array)


def list_volumes(path: str | Path) -> list[Volume]:
    """All 3D datasets of a container."""
    path = Path(path)
    group = open_container(path)
    volumes = []
    for name in dataset_names(group, path):
        array = group[name]
        if isinstance(array, zarr.Array) and array.ndim == 3:  # dataset_names lists arrays only
            volumes.append(_volume_from_array(path, name, array))
    return volumes


def _matches(volume: Volume, shape: Triple, dtype: np.dtype, voxel_size: NmTriple, offset_nm: NmTriple, chunks: Triple | None) -> list[str]:
    """How ``volume`` differs from the dataset a job would create: ``shape [8, 16, 16] (this run: [4, 16, 16])``
    (``chunks`` ``None``: not asked for, so any chunk shape is kept)."""
    expected = {"shape": shape, "--dtype": dtype, "voxel size": voxel_size, "offset": offset_nm, "--chunks": chunks}
    actual = {"shape": volume.shape, "--dtype": volume.dtype, "voxel size": volume.voxel_size, "offset": volume.offset_nm, "--chunks": volume.chunks}
    keep = {"--chunks": "; leave --chunks out to keep them"}
    return [
        f"{key} {_shown(actual[key])} (this run: {_shown(expected[key])}{keep.get(key, '')})"
        for key in expected
        if expected[key] is not None and actual[key] != expected[key]
    ]


#: The option of each job setting whose name is not ``--<setting with dashes>``, or a word for it.
_OPTION_OF_SETTING = {
    "source": "input",
    "labels": "--labels",
    "raw": "--input",
    "min_size_voxels": "--min-size",
    "class_id": "--class",
    "mapping": "--to-uint8",
    "block_shape": "--block-size",
    "roi_offset_voxels": "--roi-offset",
    "roi_shape_voxels": "--roi-shape",
    "checkpoint_sha256": "the checkpoint with SHA-256",
    "level": "level",
    "factor": "factor",
}


def _shown(value: Any) -> str:
    """A setting's value as it is typed on the command line: ``8,8,8``, ``none``, ``0.02``."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _setting(key: str, value: Any) -> str:
    """One job setting as options: ``--clip-limit 0.01``, ``--z 0:16 --y 0:48 --x 0:48``, ``no --tta``."""
    if key == "crop" and isinstance(value, list) and len(value) == 3:
        return " ".join(f"--{axis} {_shown(b)}:{_shown(e)}" for axis, (b, e) in zip("zyx", value))
    option = _OPTION_OF_SETTING.get(key, f"--{key.replace('_', '-')}")
    if isinstance(value, bool):
        return option if value else f"no {option}"
    return f"{option} {_shown(value)}"


def _this_run(key: str, value: Any) -> str:
    """The value of this run beside the stored one: options where a bare value says little (``--tta``, a crop)."""
    return _setting(key, value) if key == "crop" or isinstance(value, bool) else _shown(value)


def setting_differences(stored: Any, job: dict[str, Any]) -> list[str]:
    """How the job settings stored with an output differ from ``job``, each as the option with the
    stored value: ``--clip-limit 0.01 (this run: 0.02)``."""
    stored = stored if isinstance(stored, dict) else {}
    keys = [key for key in dict.fromkeys([*job, *stored]) if key != "job"]
    return [f"{_setting(key, stored.get(key))} (this run: {_this_run(key, job.get(key))})" for key in keys if stored.get(key) != job.get(key)]


def _exists_error(node: Any, path: Path, name: str, job: dict[str, Any] | None) -> DatasetExistsError:
    """The refusal of an existing output without --overwrite or --resume: an output left unfinished by
    an interrupted run of the same job is offered --resume first."""
    kind = _job_kind(job)
    stored = node.attrs.get(JOB_KEY) if isinstance(node, zarr.Array) else None
    if job is not None and kind is not None and _job_kind(stored) == kind and node.attrs.get(STATUS_KEY) == INCOMPLETE:
        differences = setting_differences(stored, job)
        made = f" with {'; '.join(differences)}" if differences else ""
        same = " with the same options" if differences else ""
        return DatasetExistsError(
            f"{path}/{name} was left unfinished by an interrupted incasem {kind} run{made}: pass --resume{same} to "
            "finish it (it keeps the part already written), or --overwrite to start afresh"
        )
    return DatasetExistsError(f"{path}/{name} exists already: pass --overwrite to replace it")


def _resume_error(existing: Volume, job: dict[str, Any] | None, problems: list[str]) -> DatasetMismatchError:
    """The refusal to resume into ``existing``: written by another job, or with other settings (``problems``)."""
    stored = existing.array.attrs.get(JOB_KEY)
    kind, stored_kind = _job_kind(job), _job_kind(stored)
    if kind is not None and stored_kind != kind:
        writer = f"incasem {stored_kind}" if stored_kind else "something other than incasem"
        return DatasetMismatchError(f"cannot resume into {existing.label}: it was written by {writer}, not by incasem {kind}: choose another output name")
    run = "the interrupted run" if not existing.complete else "the run that wrote it"
    return DatasetMismatchError(
        f"cannot resume into {existing.label}: {run} used {'; '.join(problems)}: give the same to finish it, or --overwrite to start afresh"
    )


def _job_kind(job: Any) -> str | None:
    return job.get("job") if isinstance(job, dict) else None


def _check_replaceable(group: zarr.Group, path: Path, name: str, job: dict[str, Any] | None) -> None:
    """Refuse to overwrite anything but a dataset that the same kind of incasem job wrote."""
    node = _node(group, path, name)
    if isinstance(node, zarr.Group):
        held = [n for n, member in node.members(max_depth=None) if isinstance(member, zarr.Array)]
        raise DatasetExistsError(
            f"'{name}' in {path} is a group holding {len(held)} dataset(s), not a dataset: --overwrite replaces one "
            "dataset, never a group; name the dataset itself (e.g. volumes/labels/mito)"
        )
    kind, existing = _job_kind(job), _job_kind(node.attrs.get(JOB_KEY)) if node is not None else None
    if kind is None or existing != kind:
        writer = f"incasem {existing}" if existing else "something other than incasem"
        raise DatasetExistsError(
            f"{path}/{name} was written by {writer}, so --overwrite{f' of incasem {kind}' if kind else ''} will not "
            "replace it (it may be data you need): choose another output name, or delete it yourself"
        )


def _check_not_an_input(path: Path, name: str, reads: Sequence[str]) -> None:
    for source in reads:
        if _related(name, dataset_name(source)):
            raise DatasetExistsError(f"output '{name}' is, holds or lies in the input '{dataset_name(source)}' of {path}: choose another output name")


def _check_not_inside_a_dataset(group: zarr.Group, path: Path, name: str) -> None:
    above = _array_above(group, path, name)
    if above is not None:
        raise DatasetExistsError(f"'{name}' would lie inside the dataset '{above}' of {path}: choose another output name")


def check_output(path: str | Path, dataset: str, *, mode: WriteMode, job: dict[str, Any] | None = None, reads: Sequence[str] = ()) -> None:
    """Refuse, without writing anything, an output that :func:`create_volume` would refuse by its name.

    For a job that reads its input once before it creates its output (to check the
    values): the output's name is checked first, so a bad name is reported before that read.
    Shape, dtype and geometry of a dataset to resume are checked by :func:`create_volume`.
    """
    mode = check_write_mode(mode)
    path, name = Path(path), dataset_name(dataset)
    _check_not_an_input(path, name, reads)
    if not path.exists():
        return
    group = open_container(path)
    _check_not_inside_a_dataset(group, path, name)
    node = _node(group, path, name)
    if node is None or mode == "resume":
        return
    job = None if job is None else json.loads(json.dumps(job, allow_nan=False))
    if mode != "overwrite":
        raise _exists_error(node, path, name, job)
    _check_replaceable(group, path, name, job)


def check_write_mode(mode: object) -> WriteMode:
    """Return ``mode`` if it is a :data:`WriteMode`; jobs call this before writing anything.

    Raises
    ------
    InvalidValueError
        For anything but ``"create"``, ``"overwrite"`` or ``"resume"``.
    """
    if not isinstance(mode, str) or mode not in WRITE_MODES:
        raise InvalidValueError(f"write mode must be 'create', 'overwrite' (--overwrite) or 'resume' (--resume), got {mode!r}")
    return mode  # type: ignore[return-value]


def create_volume(
    path: str | Path,
    dataset: str,
    shape: Triple,
    dtype: DTypeLike,
    voxel_size: NmTriple,
    offset_nm: NmTriple = (0, 0, 0),
    chunks: Triple | None = None,
    *,
    mode: WriteMode = "create",
    job: dict[str, Any] | None = None,
    reads: Sequence[str] = (),
    inputs: Sequence[str | Path] = (),
    details: dict[str, Any] | None = None,
    default_chunks: Triple | None = None,
) -> Volume:
    """Create a dataset for a job to fill, marked incomplete until :meth:`Volume.mark_complete`.

    Parameters
    ----------
    path, dataset
        The container (created, as zarr v2 like the original's, when missing) and the
        name of the new dataset.
    shape, dtype, voxel_size, offset_nm, chunks
        Shape (voxels), element type, voxel size (nm), world offset (nm) and chunk
        shape (voxels, as asked for: ``--chunks``) of the dataset. ``chunks=None``:
        ``default_chunks``, else up to 128 per axis; a resumed dataset keeps its own,
        while ``chunks`` that differ from them are refused.
    mode
        What to do when the dataset exists: ``"create"`` refuses it
        (:class:`DatasetExistsError`, which offers ``--resume`` first for an unfinished
        output of the same kind of job); ``"resume"`` reuses it after checking that
        shape, dtype, geometry, chunk shape (where ``chunks`` is given) and the recorded
        ``job`` settings match (else :class:`DatasetMismatchError`, naming each option
        and the value the interrupted run used); ``"overwrite"`` replaces only a *dataset* that
        an incasem job of the same kind (``job["job"]``) wrote: never a group, a
        container, or a dataset of other origin.
    job
        The job and its settings (JSON-like, finite numbers), stored under
        :data:`~incasem.io.metadata.JOB_KEY` and compared on resume.
    reads
        The datasets of this container the job reads: the output may be none of
        them, hold none and lie in none.
    inputs
        Other things the job reads (a source folder, a checkpoint, a dataset of
        another container), for the provenance record.
    details
        Further fields of the provenance record (e.g. a prediction's model).

    The new dataset carries the provenance record of
    :func:`incasem.io.provenance.provenance_record` (version, command line, time,
    ``job``, ``reads`` and ``inputs``, ``details``) under
    :data:`~incasem.io.provenance.PROVENANCE_KEY`; a resumed one keeps its record.
    """
    mode = check_write_mode(mode)
    job = None if job is None else json.loads(json.dumps(job, allow_nan=False))
    path = Path(path)
    name = dataset_name(dataset)
    _check_not_an_input(path, name, reads)
    shape = as_triple(shape, "shape")
    if min(shape) < 0:
        raise InvalidValueError(f"shape of {path}/{name} must not be negative, got {list(shape)}")
    voxel_size = as_nm_triple(voxel_size, "voxel size", positive=True)
    offset_nm = as_nm_triple(offset_nm, "offset")
    nm_to_voxels(offset_nm, voxel_size, f"offset of {path}/{name}")
    chunks = as_positive_triple(chunks, option("chunks", "--chunks")) if chunks is not None else None
    default_chunks = as_positive_triple(default_chunks, "chunks") if default_chunks is not None else None
    dtype = np.dtype(dtype)
    group = open_container(path, "a")
    _check_not_inside_a_dataset(group, path, name)
    node = _node(group, path, name)
    if node is not None:
        if mode == "resume":
            existing = open_volume(path, name, "r+", require_complete=False)
            stored_job = existing.array.attrs.get(JOB_KEY)
            # settings first: a different shape or chunk shape follows from them
            problems = setting_differences(stored_job, job) if job is not None else []
            problems = problems or _matches(existing, shape, dtype, voxel_size, offset_nm, chunks)
            if problems or (job is not None and stored_job != job):
                raise _resume_error(existing, job, problems)
            return existing
        if mode != "overwrite":
            raise _exists_error(node, path, name, job)
        _check_replaceable(group, path, name, job)
        del group[name]
    chunks = chunks or default_chunks or as_triple([min(DEFAULT_CHUNK, s) if s > 0 else 1 for s in shape])
    attrs = geometry_attributes(voxel_size, offset_nm, name)
    if job is not None:
        attrs[JOB_KEY] = job
    read = [f"{path.resolve()}/{dataset_name(source)}" for source in reads]
    attrs[PROVENANCE_KEY] = provenance_record(job, [*read, *map(str, inputs)], **(details or {}))
    attrs[STATUS_KEY] = INCOMPLETE
    dimension_names = ("z", "y", "x") if group.metadata.zarr_format == 3 else None  # None: create_array's default
    array = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, attributes=attrs, dimension_names=dimension_names)
    publish_ngff(group, name, voxel_size, offset_nm)
    return _volume_from_array(path, name, array)


def set_geometry(path: str | Path, dataset: str, voxel_size: NmTriple | None = None, offset_nm: NmTriple | None = None) -> Volume:
    """Change the voxel size and/or world offset (nm) recorded for a dataset.

    Works on a dataset whose recorded geometry is invalid, as long as the values
    given replace the invalid ones.
    """
    path = Path(path)
    array, name = _open_array(path, dataset, "r+")
    ref, attrs = DatasetRef(path, name), array.attrs.asdict()
    new_voxel_size = read_voxel_size(attrs, ref) if voxel_size is None else as_nm_triple(voxel_size, option("voxel_size", "--voxel-size"), positive=True)
    new_offset = read_offset(attrs, ref) if offset_nm is None else as_nm_triple(offset_nm, option("offset_nm", "--offset"))
    nm_to_voxels(new_offset, new_voxel_size, f"offset of {ref}")
    array.attrs.update(geometry_attributes(new_voxel_size, new_offset, name))
    publish_ngff(open_container(path, "r+"), name, new_voxel_size, new_offset)
    return _volume_from_array(path, name, array)


def create_like(source: Volume, dataset: str, dtype: DTypeLike, chunks: Triple | None = None, **options: Any) -> Volume:
    """:func:`create_volume` of a dataset on ``source``'s grid (same container, shape, voxel size and
    offset); ``options`` are :func:`create_volume`'s keywords (``mode``, ``job``, ``reads``, ...)."""
    return create_volume(source.container, dataset, source.shape, dtype, source.voxel_size, source.offset_nm, chunks, **options)
