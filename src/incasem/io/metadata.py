"""Geometry attributes of a dataset: the original's and OME-NGFF's.

The original incasem (funlib/daisy) stores, per array, ``resolution`` = voxel size in
nm and ``offset`` = world offset in nm, both (z, y, x). Those are read as they are.
When incasem writes a dataset it stores them too.

OME-NGFF places ``multiscales`` on a *group*, each entry one image whose
``datasets[].path`` are relative to that group; :mod:`incasem.io.ngff` publishes one
entry per dataset on the dataset's parent group (:func:`incasem.io.ngff.publish_ngff`).
Earlier incasem versions wrote an entry on the array itself (path ``"."``), which no
OME-Zarr reader looks at; :func:`read_geometry` still reads it when ``resolution`` is
absent, and :func:`geometry_attributes` still writes it for those versions' readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incasem.errors import InvalidValueError, MetadataError
from incasem.geometry import NmTriple, as_nm_triple

#: Attribute that marks a dataset written by a job that has not finished.
STATUS_KEY = "incasem_status"
COMPLETE = "complete"
#: Attribute recording the job (and its settings) that writes a dataset.
JOB_KEY = "incasem_job"
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives, for messages: container path and dataset name."""

    container: Path
    name: str

    def __str__(self) -> str:
        return f"{self.container}/{self.name}"

    def invalid(self, what: str) -> MetadataError:
        """The error for an invalid geometry attribute ``what`` of this dataset, with the fix."""
        return MetadataError(f"{self} has {what}: set its geometry with `incasem info {self.container} -d {self.name} --voxel-size Z,Y,X --offset Z,Y,X`")


def _nm_attribute(value: Any, key: str, ref: DatasetRef, positive: bool) -> NmTriple:
    try:
        return as_nm_triple(value, key, positive=positive)
    except InvalidValueError:
        need = "3 positive numbers" if positive else "3 finite numbers"
        raise ref.invalid(f"an invalid '{key}' attribute {value!r} (it needs {need}, nm, z, y, x)") from None


def _ngff_transform(attrs: Mapping[str, Any], kind: str, ref: DatasetRef) -> Any:
    """The last three values of the first scale level's OME-NGFF transform ``kind`` (``None``: absent)."""
    multiscales = attrs.get("multiscales")
    if not multiscales:
        return None
    try:
        for transform in multiscales[0]["datasets"][0].get("coordinateTransformations", []):
            if transform.get("type") == kind:
                return list(transform[kind][-3:])
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ref.invalid("a malformed OME-NGFF 'multiscales' attribute") from None
    return None


def read_voxel_size(attrs: Mapping[str, Any], ref: DatasetRef) -> NmTriple:
    """Voxel size (nm) of a dataset from its attributes; see :func:`read_geometry`."""
    if "resolution" in attrs:
        return _nm_attribute(attrs["resolution"], "resolution", ref, positive=True)
    scale = _ngff_transform(attrs, "scale", ref)
    return (1, 1, 1) if scale is None else _nm_attribute(scale, "multiscales scale", ref, positive=True)


def read_offset(attrs: Mapping[str, Any], ref: DatasetRef) -> NmTriple:
    """World offset (nm) of a dataset from its attributes; see :func:`read_geometry`."""
    if "resolution" in attrs or "offset" in attrs:
        return _nm_attribute(attrs.get("offset", (0, 0, 0)), "offset", ref, positive=False)
    translation = _ngff_transform(attrs, "translation", ref)
    return (0, 0, 0) if translation is None else _nm_attribute(translation, "multiscales translation", ref, positive=False)


def records_geometry(attrs: Mapping[str, Any]) -> bool:
    """Whether a dataset's own attributes give its geometry (``resolution``, ``offset`` or OME-NGFF ``multiscales``)."""
    return any(key in attrs for key in ("resolution", "offset", "multiscales"))


def read_geometry(attrs: Mapping[str, Any], ref: DatasetRef) -> tuple[NmTriple, NmTriple]:
    """Voxel size (nm) and world offset (nm) of dataset ``ref`` from its attributes.

    ``resolution``/``offset`` (the original's attributes) win; otherwise the first
    scale of an OME-NGFF ``multiscales`` entry is used; otherwise voxel size 1 and
    offset 0, as the original assumed. Non-whole nanometres (4.6) are kept exactly.

    Raises
    ------
    MetadataError
        If an attribute is not three finite numbers (the voxel size: positive ones);
        the message says how to set the geometry.
    """
    return read_voxel_size(attrs, ref), read_offset(attrs, ref)


#: Nanometres per unit of length, by the names OME-NGFF, OME-XML, N5 and HDF5 tools use.
NM_PER_UNIT: dict[str, float] = {
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "um": 1e3,
    "\u00b5m": 1e3,
    "\u03bcm": 1e3,
    "micron": 1e3,
    "angstrom": 0.1,
    "\u00e5": 0.1,
    "a": 0.1,
    "millimeter": 1e6,
    "mm": 1e6,
    "picometer": 1e-3,
    "pm": 1e-3,
}


def nm_per_unit(unit: str | None) -> float | None:
    """Nanometres per ``unit`` (``None``: nm, as incasem assumes without a unit); ``None`` for an unknown unit."""
    return NM_PER_UNIT.get((unit or "nm").strip().lower())


#: OME-NGFF axes of every incasem dataset: z, y, x in nanometres.
NGFF_AXES: tuple[dict[str, str], ...] = tuple({"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx")


def ngff_multiscale(name: str, path: str, voxel_size: NmTriple, offset_nm: NmTriple, version: str | None = "0.4") -> dict[str, Any]:
    """One OME-NGFF ``multiscales`` entry: a single-level image ``name`` stored at ``path``.

    ``scale`` is the voxel size and ``translation`` the world offset (nm), as the
    original's ``resolution``/``offset`` (and funlib.persistence) read them. The numbers
    are stored as given, so a voxel size of 4.6 nm stays 4.6 in the JSON. ``version``
    goes into the entry (OME-NGFF 0.4, zarr v2); ``None`` leaves it out (0.5 keeps the
    version next to the list, in the ``ome`` attribute of a zarr v3 group).
    """
    entry: dict[str, Any] = {} if version is None else {"version": version}
    entry.update(
        {
            "name": name,
            "axes": [dict(axis) for axis in NGFF_AXES],
            "datasets": [
                {
                    "path": path,
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(voxel_size)},
                        {"type": "translation", "translation": list(offset_nm)},
                    ],
                }
            ],
        }
    )
    return entry


def geometry_attributes(voxel_size: NmTriple, offset_nm: NmTriple, name: str) -> dict[str, Any]:
    """Attributes that describe a dataset's geometry on the array itself: the original's
    ``resolution``/``offset``. OME-Zarr readers find the same geometry where the spec puts
    it, on the parent group: see :func:`incasem.io.ngff.publish_ngff`."""
    return {"resolution": list(voxel_size), "offset": list(offset_nm)}
