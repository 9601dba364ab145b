"""Geometry attributes of a dataset: the original's and OME-NGFF's.

The original incasem (funlib/daisy) stores, per array, ``resolution`` = voxel size in
nm and ``offset`` = world offset in nm, both (z, y, x). Those are read as they are.
When incasem writes a dataset it stores them too, and next to them an OME-NGFF 0.4
``multiscales`` entry (one scale level, the array itself) so that viewers that know
OME-NGFF see the same geometry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from incasem.geometry import Triple, as_triple

#: Attribute that marks a dataset written by a job that has not finished.
STATUS_KEY = "incasem_status"
COMPLETE = "complete"
#: Attribute recording the job (and its settings) that writes a dataset.
JOB_KEY = "incasem_job"
INCOMPLETE = "incomplete"


def read_geometry(attrs: Mapping[str, Any]) -> tuple[Triple, Triple]:
    """Voxel size (nm) and world offset (nm) of a dataset from its attributes.

    ``resolution``/``offset`` (the original's attributes) win; otherwise the first
    scale of an OME-NGFF ``multiscales`` entry is used; otherwise voxel size 1 and
    offset 0, as the original assumed.
    """
    if "resolution" in attrs:
        voxel_size = as_triple(attrs["resolution"], "resolution")
        offset = as_triple(attrs.get("offset", (0, 0, 0)), "offset")
        return voxel_size, offset
    multiscales = attrs.get("multiscales")
    if multiscales:
        transforms = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
        scale: Triple = (1, 1, 1)
        translation: Triple = (0, 0, 0)
        for transform in transforms:
            if transform.get("type") == "scale":
                scale = as_triple([round(v) for v in transform["scale"][-3:]], "scale")
            elif transform.get("type") == "translation":
                translation = as_triple([round(v) for v in transform["translation"][-3:]], "translation")
        return scale, translation
    return (1, 1, 1), (0, 0, 0)


def geometry_attributes(voxel_size: Triple, offset_nm: Triple, name: str) -> dict[str, Any]:
    """Attributes that describe a dataset's geometry in both conventions."""
    return {
        "resolution": list(voxel_size),
        "offset": list(offset_nm),
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"],
                "datasets": [
                    {
                        "path": ".",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(v) for v in voxel_size]},
                            {"type": "translation", "translation": [float(v) for v in offset_nm]},
                        ],
                    }
                ],
            }
        ],
    }
