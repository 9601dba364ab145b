"""The region a widget works on, from what the viewer shows: the view, a drawn box, or everything.

Regions are in voxels of one layer's dataset on the world grid (``Volume.roi``), clipped
to it. napari's world coordinates are nm here: a layer's ``scale`` is its voxel size and
``translate`` its offset (:mod:`incasem.napari.layers`), so world / voxel size = voxel.

In a 2D view, the view and a box give a y-x rectangle; along z they take
``depth_voxels`` sections centred on the section shown (the view) or on the section the
box was drawn on. In a 3D view, the view is the whole dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from incasem.errors import InvalidValueError
from incasem.geometry import Roi, as_triple

__all__ = ["DEFAULT_DEPTH_VOXELS", "RegionChoice", "box_region", "camera_of", "layer_region", "region_of", "view_region"]

#: Sections a region from the 2D view or a box spans along z.
DEFAULT_DEPTH_VOXELS = 32

RegionChoice = Literal["view", "box", "all"]


def layer_region(layer: Any) -> Roi:
    """Everything ``layer`` covers, in its voxels on the world grid."""
    shape = layer.data[0].shape if layer.multiscale else layer.data.shape
    offset = [round(t / s) for t, s in zip(layer.translate, layer.scale)]
    return Roi(as_triple(offset, "offset"), as_triple(shape, "shape"))


def _to_voxels(world: Sequence[float], layer: Any) -> np.ndarray:
    """World coordinates (nm) as fractional voxel coordinates of ``layer`` on the world grid."""
    return np.asarray(world, float) / np.asarray(layer.scale, float)


def _clipped(low: Sequence[float], high: Sequence[float], layer: Any, what: str) -> Roi:
    """The voxels from ``low`` to ``high`` (fractional, world grid) that ``layer`` holds."""
    start = [math.floor(v) for v in low]
    stop = [math.ceil(v) for v in high]
    wanted = Roi(as_triple(start, "offset"), as_triple([max(b - a, 0) for a, b in zip(start, stop)], "shape"))
    inside = wanted.intersect(layer_region(layer))
    if inside.empty:
        raise InvalidValueError(f"{what} does not overlap {layer.name}: move the view or the box onto the data")
    return inside


def _slab(centre_voxel: float, depth_voxels: int) -> tuple[float, float]:
    start = math.floor(centre_voxel) - depth_voxels // 2
    return start, start + depth_voxels


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9 on, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def view_region(viewer: Any, layer: Any, depth_voxels: int = DEFAULT_DEPTH_VOXELS) -> Roi:
    """The part of ``layer`` in view (module docstring)."""
    if viewer.dims.ndisplay == 3 or len(viewer.dims.displayed) != 2 or tuple(viewer.dims.displayed) != (1, 2):
        return layer_region(layer)
    height, width = viewer.canvas.size
    camera = camera_of(viewer)
    zoom = camera.zoom
    centre = np.asarray(camera.center[-2:], float)
    half = np.asarray([height, width], float) / (2 * zoom)
    z = _to_voxels([viewer.dims.point[0], 0, 0], layer)[0]
    low_yx, high_yx = _to_voxels([0, *(centre - half)], layer)[1:], _to_voxels([0, *(centre + half)], layer)[1:]
    z_low, z_high = _slab(z, depth_voxels)
    return _clipped([z_low, *low_yx], [z_high, *high_yx], layer, "the view")


def box_region(shapes: Any, layer: Any, depth_voxels: int = DEFAULT_DEPTH_VOXELS) -> Roi:
    """The part of ``layer`` inside the boxes drawn on ``shapes`` (their bounding box; module docstring)."""
    if len(shapes.data) == 0:
        raise InvalidValueError(f"the shapes layer {shapes.name} holds no box: draw a rectangle on it first")
    vertices = np.concatenate([np.asarray(shape, float) for shape in shapes.data])
    if vertices.shape[1] != 3:
        raise InvalidValueError(f"the shapes layer {shapes.name} is {vertices.shape[1]}D: draw the box on a 3D shapes layer over the data")
    world = vertices * np.asarray(shapes.scale, float) + np.asarray(shapes.translate, float)
    voxels = world / np.asarray(layer.scale, float)
    low, high = voxels.min(axis=0), voxels.max(axis=0)
    if high[0] - low[0] < depth_voxels:  # drawn on one section (or a few): a slab around them
        z_low, z_high = _slab((low[0] + high[0]) / 2, depth_voxels)
    else:
        z_low, z_high = low[0], high[0] + 1
    return _clipped([z_low, *low[1:]], [z_high, *high[1:]], layer, f"the box on {shapes.name}")


def region_of(choice: RegionChoice, viewer: Any, layer: Any, shapes: Any = None, depth_voxels: int = DEFAULT_DEPTH_VOXELS) -> Roi:
    """The region of ``layer`` that ``choice`` names: ``view``, ``box`` (on ``shapes``) or ``all``."""
    if choice == "all":
        return layer_region(layer)
    if choice == "view":
        return view_region(viewer, layer, depth_voxels)
    if choice == "box":
        if shapes is None:
            raise InvalidValueError("no shapes layer to take the box from: add a Shapes layer and draw a rectangle on it")
        return box_region(shapes, layer, depth_voxels)
    raise InvalidValueError(f"region must be view, box or all, got {choice!r}")
