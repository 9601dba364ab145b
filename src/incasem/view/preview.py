"""``incasem preview``: a PNG of three orthogonal planes through a position of a cell.

The picture shows the raw data in grey with label and prediction datasets overlaid in
colour, so a user sees at a glance whether raw, labels and prediction are aligned::

    container name, raw dataset, position, voxel size
    z = 82  (y down, x right)          x = 320  (y down, z right)
    +---------------------------+      +--------+
    |  z-plane: rows y, cols x  |      | x-plane|
    +---------------------------+      +--------+
    y = 256  (z down, x right)
    +---------------------------+
    |  y-plane: rows z, cols x  |
    +---------------------------+
    legend: one colour per overlay

The panels share their axes (the x-plane is drawn with z to the right so that its rows
are the z-plane's rows), and every axis is drawn at its physical length: a display
pixel is the raw's smallest voxel edge, so 50 × 5 × 5 nm voxels stretch z ten times in
the side views (raw interpolated linearly, overlays by nearest neighbour).

Each overlay gets a colour (matplotlib's tab10 without its grey) drawn as a 40 % fill
with an opaque outline; an overlay with several ids in view (instances, classes) gets a
colour per id, outlined in the overlay's colour. Ticks beside each panel mark the position.

Overlays are placed by world coordinates (nm): each raw voxel shows the overlay voxel
that holds its centre, so an overlay with another voxel size or offset (a prediction
of a sub-region) lands where it belongs, and the area it does not cover stays grey.
Only the three planes are read, never the whole volume. Large volumes are cropped
around the position (:func:`view_region`): by default an axis drawn longer than 1024
pixels shows 512 pixels' worth of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Patch
from skimage.exposure import rescale_intensity
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from incasem.errors import InvalidValueError, OutputExistsError, RoiError, option
from incasem.files import atomic_write
from incasem.geometry import NmTriple, Roi, Triple, as_positive_triple, as_triple
from incasem.io.defaults import default_raw, label_datasets, latest_prediction
from incasem.io.volume import (
    Volume,
    dataset_name,
    dataset_names,
    open_container,
    open_volume,
)

__all__ = [
    "DEFAULT_CROP_PIXELS",
    "WHOLE_AXIS_PIXELS",
    "PanelBox",
    "Preview",
    "check_png_output",
    "default_overlays",
    "render_preview",
    "view_region",
    "write_preview",
]

#: By default an axis is shown whole if it is drawn at most this many pixels long ...
WHOLE_AXIS_PIXELS = 1024
#: ... else cropped around the position to this many pixels. A pixel is the raw's smallest
#: voxel edge, so for isotropic data these are voxels; 50 nm sections at 5 nm in-plane
#: are cropped to 51 sections.
DEFAULT_CROP_PIXELS = 512

#: Opacity of an overlay's fill; its outline is opaque.
FILL_ALPHA = 0.4

#: A prediction's segmentation, as ``incasem predict`` names it (``volumes/predictions/<model>/<id>/segmentation``).

# matplotlib's tab10: a ListedColormap whose colours are a tuple of RGB tuples
_TAB10 = cast("tuple[tuple[float, float, float], ...]", cast(ListedColormap, matplotlib.colormaps["tab10"]).colors)

#: One colour per overlay, in order: matplotlib's tab10 without its grey (index 7), which
#: would vanish on the grey raw.
OVERLAY_COLOURS = tuple(colour for i, colour in enumerate(_TAB10) if i != 7)

#: Panels: the axis each plane is normal to, and the axes along its rows and columns.
_PANELS = (("z", 1, 2), ("x", 1, 0), ("y", 0, 2))
_AXES = "zyx"

# layout of the picture, pixels
_MARGIN = 12
_GAP = 24  # between panels; holds the label of the panel below
_TITLE = 36
_LABEL = 20
_TICK = 6  # length of the ticks marking the position
_LEGEND_GAP = 8
_LEGEND_ROW = 20
_MIN_WIDTH = 560
_DPI = 100


@dataclass(frozen=True)
class PanelBox:
    """One panel of a preview: where it lies in the picture and which raw voxels it shows.

    Attributes
    ----------
    axis
        The axis the plane is normal to: ``"z"``, ``"y"`` or ``"x"``.
    rows, columns
        The axes along the panel's rows (downwards) and columns (to the right).
    row, col, height, width
        The panel's box in the picture, pixels.
    region
        The raw voxels shown (world grid of the raw), one voxel thick along ``axis``.
    """

    axis: str
    rows: str
    columns: str
    row: int
    col: int
    height: int
    width: int
    region: Roi

    @property
    def slices(self) -> tuple[slice, slice]:
        """Numpy slices selecting the panel from :attr:`Preview.image`."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


@dataclass(frozen=True)
class Preview:
    """A rendered preview.

    Attributes
    ----------
    image
        The picture, (height, width, 3) uint8 RGB.
    panels
        The panels by the axis their plane is normal to (``"z"``, ``"y"``, ``"x"``).
    position
        The position shown, voxels (z, y, x) on the world grid of the raw.
    raw, overlays
        The datasets drawn.
    """

    image: np.ndarray
    panels: dict[str, PanelBox]
    position: Triple
    raw: str
    overlays: tuple[str, ...]


@dataclass(frozen=True)
class _Overlay:
    """An overlay's content in the three panels: compact labels (0 = nothing, i = ``ids[i - 1]``)."""

    name: str
    colour: tuple[float, float, float]
    ids: np.ndarray
    labels: dict[str, np.ndarray]

    @property
    def per_id(self) -> bool:
        """Whether the overlay holds several ids in view (instances, classes): a colour each."""
        return len(self.ids) > 1


# ---------------------------------------------------------------------- datasets


def _names(container: Path) -> list[str]:
    return dataset_names(open_container(container), container)


def default_overlays(container: str | Path) -> list[str]:
    """The overlays shown when none are named: every ``volumes/labels/*`` dataset and the newest prediction's segmentation."""
    container = Path(container)
    labels = label_datasets(container)
    prediction = latest_prediction(container, finished_only=True)
    return labels if prediction is None else [*labels, prediction]


def _open_overlay(container: Path, name: str) -> Volume:
    volume = open_volume(container, name)
    if np.issubdtype(volume.dtype, np.floating):
        raise InvalidValueError(f"overlay {volume.label} holds floating-point values ({volume.dtype}), not labels: overlay a label or segmentation dataset")
    return volume


# ---------------------------------------------------------------------- geometry


def view_region(
    raw_roi: Roi,
    position: Sequence[int],
    size_voxels: Sequence[int] | int | None = None,
    voxel_size: NmTriple = (1, 1, 1),
    raw_label: str = "the raw",
) -> Roi:
    """The box of raw voxels the panels show, around ``position``.

    Parameters
    ----------
    raw_roi
        The raw dataset's region (voxels, world grid).
    position
        The position shown, voxels (z, y, x) on the same grid; must lie inside ``raw_roi``.
    size_voxels
        Edge of the box per axis (one number for all); the box is centred on the
        position and shifted to stay inside the raw. Default: an axis drawn (see
        ``voxel_size``) at most :data:`WHOLE_AXIS_PIXELS` long whole, a longer one
        cropped to :data:`DEFAULT_CROP_PIXELS` pixels.
    voxel_size
        The raw's voxel size (nm); an axis is drawn ``voxel_size / min(voxel_size)``
        pixels per voxel.
    raw_label
        The raw's name in messages.

    Raises
    ------
    RoiError
        If ``position`` lies outside ``raw_roi``.
    InvalidValueError
        If ``size_voxels`` is not positive whole numbers.
    """
    point = as_triple(position, option("position", "--position"))
    if not raw_roi.contains(Roi(point, (1, 1, 1))):
        raise RoiError(
            f"{option('position', '--position')} {list(point)} (voxels, z,y,x) lies outside {raw_label}, which covers {raw_roi}: choose a position inside it"
        )
    size = _default_size(raw_roi, voxel_size) if size_voxels is None else as_positive_triple(size_voxels, option("size_voxels", "--size"))
    lengths = [min(s, n) for s, n in zip(size, raw_roi.shape)]
    starts = [min(max(p - length // 2, begin), end - length) for p, length, begin, end in zip(point, lengths, raw_roi.offset, raw_roi.end)]
    return Roi((starts[0], starts[1], starts[2]), (lengths[0], lengths[1], lengths[2]))


def _default_size(raw_roi: Roi, voxel_size: NmTriple) -> Triple:
    """Voxels per axis of the default view: whole up to :data:`WHOLE_AXIS_PIXELS` drawn, else :data:`DEFAULT_CROP_PIXELS`."""
    scales = [v / min(voxel_size) for v in voxel_size]
    z, y, x = (n if n * scale <= WHOLE_AXIS_PIXELS else max(1, round(DEFAULT_CROP_PIXELS / scale)) for n, scale in zip(raw_roi.shape, scales))
    return z, y, x


def _plane(region: Roi, position: Triple, axis: int) -> Roi:
    """The one-voxel-thick slab of ``region`` through ``position`` normal to ``axis``."""
    offset, shape = list(region.offset), list(region.shape)
    offset[axis], shape[axis] = position[axis], 1
    return Roi((offset[0], offset[1], offset[2]), (shape[0], shape[1], shape[2]))


def _orient(data: np.ndarray, axis: int, rows: int, columns: int) -> np.ndarray:
    """A slab (z, y, x) as a 2D panel: ``rows`` downwards, ``columns`` to the right."""
    return np.moveaxis(data, (axis, rows, columns), (0, 1, 2))[0]


def _sample(volume: Volume, plane: Roi, voxel_size: NmTriple) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` at the centres of the raw voxels of ``plane`` (raw voxel size ``voxel_size``).

    Returns the values (0 where not covered) and where ``volume`` covers them.
    """
    indices = [
        np.floor((np.arange(begin, end) + 0.5) * size / own).astype(np.int64)
        for begin, end, size, own in zip(plane.offset, plane.end, voxel_size, volume.voxel_size)
    ]
    inside = [(index >= begin) & (index < end) for index, begin, end in zip(indices, volume.roi.offset, volume.roi.end)]
    covered = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    values = np.zeros(plane.shape, volume.dtype)
    if not covered.any():
        return values, covered
    kept = [index[mask] for index, mask in zip(indices, inside)]
    box = Roi.from_bounds([k.min() for k in kept], [k.max() + 1 for k in kept])
    data = volume.read(box)
    values[np.ix_(*inside)] = data[np.ix_(*(k - b for k, b in zip(kept, box.offset)))]
    return values, covered


# ---------------------------------------------------------------------- drawing


def _display_shape(region: Roi, voxel_size: NmTriple, rows: int, columns: int) -> tuple[int, int]:
    """Pixels of a panel: each axis at its physical length, a pixel = the smallest voxel edge."""
    pixel_nm = min(voxel_size)
    height, width = (max(1, round(region.shape[a] * voxel_size[a] / pixel_nm)) for a in (rows, columns))
    return height, width


def _stretch(image: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """``image`` resized to ``shape``: linear (``order=1``) or nearest neighbour (``order=0``), same dtype."""
    if image.shape == shape:
        return image
    resized = resize(image, shape, order=order, mode="edge", preserve_range=True, anti_aliasing=False)
    return np.rint(resized).astype(image.dtype)


def _grey(planes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw planes as uint8 grey: uint8 as it is, anything else from its 0.5-99.5 percentiles in view."""
    first = next(iter(planes.values()))
    if first.dtype == np.uint8:
        return planes
    low, high = np.percentile(np.concatenate([p.ravel() for p in planes.values()]), (0.5, 99.5))
    high = high if high > low else low + 1
    return {k: rescale_intensity(p, in_range=(low, high), out_range=np.uint8).astype(np.uint8) for k, p in planes.items()}


def _id_colours(ids: np.ndarray) -> np.ndarray:
    """A colour per id (rows, RGB in [0, 1]): hues spread by the golden ratio, the same for an id everywhere."""
    hues = np.mod(ids.astype(np.float64) * 0.6180339887498949, 1.0)
    return hsv_to_rgb(np.stack([hues, np.full_like(hues, 0.85), np.ones_like(hues)], axis=-1))


def _colour_table(overlay: _Overlay) -> np.ndarray:
    """RGB in [0, 1] of each compact label (row 0 unused)."""
    fills = _id_colours(overlay.ids) if overlay.per_id else np.array([overlay.colour] * len(overlay.ids))
    return np.vstack([np.zeros((1, 3)), fills.reshape(-1, 3)])


def _fill(rgb: np.ndarray, overlay: _Overlay, labels: np.ndarray) -> None:
    """Blend ``FILL_ALPHA`` of each label's colour of ``overlay`` (compact labels at display size) into ``rgb`` (float, 0..255)."""
    table = _colour_table(overlay) * 255
    fill = labels > 0
    rgb[fill] = (1 - FILL_ALPHA) * rgb[fill] + FILL_ALPHA * table[labels[fill]]


def _outline(rgb: np.ndarray, overlay: _Overlay, labels: np.ndarray) -> None:
    """Paint the inner boundary of each label (also between touching ids) opaque in the overlay's colour."""
    rgb[find_boundaries(labels, mode="inner") & (labels > 0)] = np.array(overlay.colour) * 255


def _overlay(volume: Volume, colour: tuple[float, float, float], planes: dict[str, Roi], voxel_size: NmTriple) -> _Overlay:
    """Read ``volume`` in the panels' planes and turn it into compact labels per panel (raw grid)."""
    samples = {}
    for axis, rows, columns in _PANELS:
        values, covered = _sample(volume, planes[axis], voxel_size)
        index = _AXES.index(axis)
        samples[axis] = (_orient(values, index, rows, columns), _orient(covered, index, rows, columns))
    shown = np.concatenate([values[covered] for values, covered in samples.values()])
    ids = np.unique(shown[shown != 0])
    labels = {axis: np.where(covered & (values != 0), np.searchsorted(ids, values) + 1, 0).astype(np.int32) for axis, (values, covered) in samples.items()}
    return _Overlay(volume.name, colour, ids, labels)


def _panel_boxes(shapes: dict[str, tuple[int, int]], regions: dict[str, Roi]) -> dict[str, PanelBox]:
    """The L layout: z-plane top left, x-plane to its right, y-plane below it."""
    top = _MARGIN + _TITLE + _LABEL
    right, below = _MARGIN + shapes["z"][1] + _GAP, top + shapes["z"][0] + _GAP
    corners = {"z": (top, _MARGIN), "x": (top, right), "y": (below, _MARGIN)}
    return {axis: PanelBox(axis, _AXES[rows], _AXES[columns], *corners[axis], *shapes[axis], regions[axis]) for axis, rows, columns in _PANELS}


def _legend_handles(overlays: Sequence[_Overlay]) -> list[Patch]:
    handles = []
    for overlay in overlays:
        if overlay.per_id:
            label = f"{overlay.name} (a colour per id, outlined)"
            handles.append(Patch(facecolor="white", edgecolor=overlay.colour, linewidth=2, label=label))
        else:
            note = "" if len(overlay.ids) else " (nothing in view)"
            handles.append(Patch(facecolor=overlay.colour, edgecolor=overlay.colour, label=f"{overlay.name}{note}"))
    return handles


def _title(container: Path, raw: Volume, position: Triple) -> str:
    voxel = " × ".join(f"{v:g}" for v in raw.voxel_size)
    stretch = max(raw.voxel_size) / min(raw.voxel_size)
    longest = _AXES[int(np.argmax(raw.voxel_size))]
    note = f"; side views drawn to scale (×{stretch:.3g} along {longest})" if stretch > 1 else ""
    return f"{container.name}: {raw.name} at z,y,x = {position[0]},{position[1]},{position[2]} (voxels)\nvoxel size {voxel} nm{note}"


def _panel_label(box: PanelBox, position: Triple) -> str:
    return f"{box.axis} = {position[_AXES.index(box.axis)]}   ({box.rows} ↓, {box.columns} →)"


def _picture(canvas: np.ndarray, boxes: dict[str, PanelBox], title: str, position: Triple, handles: list[Patch]) -> np.ndarray:
    """Put the panels' canvas into a matplotlib figure with title, panel labels and legend; RGB pixels."""
    height, width = canvas.shape[:2]
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    agg = FigureCanvasAgg(figure)
    figure.figimage(canvas, xo=0, yo=0, origin="upper")

    def place(col: float, row: float) -> tuple[float, float]:
        return col / width, 1 - row / height

    figure.text(*place(_MARGIN, _MARGIN), title, va="top", ha="left", fontsize=9)
    for box in boxes.values():
        figure.text(*place(box.col, box.row - 4), _panel_label(box, position), va="bottom", ha="left", fontsize=9)
    legend_top = max(box.row + box.height for box in boxes.values()) + _LEGEND_GAP
    if handles:
        figure.legend(
            handles=handles, loc="upper left", bbox_to_anchor=place(_MARGIN, legend_top), frameon=False,
            fontsize=9, borderaxespad=0, borderpad=0, handlelength=1.5,
        )  # fmt: skip
    else:
        figure.text(*place(_MARGIN, legend_top), "no overlays", va="top", ha="left", fontsize=9)
    agg.draw()
    return np.asarray(agg.buffer_rgba())[..., :3].copy()


def _centre(roi: Roi) -> Triple:
    return (roi.offset[0] + roi.shape[0] // 2, roi.offset[1] + roi.shape[1] // 2, roi.offset[2] + roi.shape[2] // 2)


def _canvas(boxes: dict[str, PanelBox], grey: dict[str, np.ndarray], drawn: Sequence[_Overlay], position: Triple, outline: bool) -> np.ndarray:
    """White picture with the panels drawn in, the position ticked beside them, room for the legend below."""
    bottom = max(box.row + box.height for box in boxes.values())
    right = max(box.col + box.width for box in boxes.values())
    height = bottom + _LEGEND_GAP + max(1, len(drawn)) * _LEGEND_ROW + _MARGIN
    canvas = np.full((height, max(right + _MARGIN, _MIN_WIDTH), 3), 255, np.uint8)
    for axis, box in boxes.items():
        shape = (box.height, box.width)
        rgb = np.repeat(_stretch(grey[axis], shape, 1)[..., None], 3, axis=-1).astype(np.float64)
        labels = [_stretch(overlay.labels[axis], shape, 0) for overlay in drawn]
        for overlay, panel_labels in zip(drawn, labels):
            _fill(rgb, overlay, panel_labels)
        for overlay, panel_labels in zip(drawn, labels) if outline else ():
            _outline(rgb, overlay, panel_labels)  # after every fill: no overlay hides another's outline
        canvas[box.slices] = np.rint(rgb).astype(np.uint8)
        _mark_position(canvas, box, position)
    return canvas


def _mark_position(canvas: np.ndarray, box: PanelBox, position: Triple) -> None:
    """Black ticks outside the panel, left of the position's row and below its column."""
    row_axis, column_axis = _AXES.index(box.rows), _AXES.index(box.columns)
    row = box.row + int((position[row_axis] - box.region.offset[row_axis] + 0.5) * box.height / box.region.shape[row_axis])
    column = box.col + int((position[column_axis] - box.region.offset[column_axis] + 0.5) * box.width / box.region.shape[column_axis])
    canvas[row - 1 : row + 2, box.col - _TICK - 1 : box.col - 1] = 0
    canvas[box.row + box.height + 1 : box.row + box.height + _TICK + 1, column - 1 : column + 2] = 0


def render_preview(
    container: str | Path,
    raw: str | None = None,
    overlays: Sequence[str] | None = None,
    position: Sequence[int] | None = None,
    size_voxels: Sequence[int] | int | None = None,
    *,
    outline: bool = True,
) -> Preview:
    """Render three orthogonal planes through ``position`` with overlays, as an RGB picture.

    Parameters
    ----------
    container
        A .zarr container.
    raw
        Grey-level dataset; default :func:`incasem.io.defaults.default_raw` (the equalised raw, else ``volumes/raw``).
    overlays
        Label / segmentation datasets drawn in colour, in this order (later on top);
        default :func:`default_overlays`; ``()`` for none. An overlay with one id in
        view gets its overlay colour, one with several ids a colour per id.
    position
        Voxels (z, y, x) on the world grid of the raw; default the raw's centre.
    size_voxels
        Edge of the region shown per axis (one number for all), see :func:`view_region`.
    outline
        Draw each label's inner boundary opaque over the semi-transparent fill.

    Returns
    -------
    Preview
        The picture and where its panels lie.

    Raises
    ------
    DatasetNotFoundError
        If a dataset is missing (the message lists the container's datasets).
    RoiError
        If ``position`` lies outside the raw.
    InvalidValueError
        For a floating-point overlay or a bad ``size_voxels``.
    """
    container = Path(container)
    raw_volume = open_volume(container, raw if raw is not None else default_raw(container))
    names = list(dict.fromkeys(dataset_name(n) for n in (default_overlays(container) if overlays is None else overlays)))
    volumes = [_open_overlay(container, name) for name in names]
    point = _centre(raw_volume.roi) if position is None else as_triple(position, "position")
    region = view_region(raw_volume.roi, point, size_voxels, raw_volume.voxel_size, raw_volume.label)
    planes = {axis: _plane(region, point, _AXES.index(axis)) for axis, _, _ in _PANELS}
    grey = _grey({axis: _orient(raw_volume.read(planes[axis]), _AXES.index(axis), r, c) for axis, r, c in _PANELS})
    drawn = [_overlay(volume, OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)], planes, raw_volume.voxel_size) for i, volume in enumerate(volumes)]
    shapes = {axis: _display_shape(region, raw_volume.voxel_size, rows, columns) for axis, rows, columns in _PANELS}
    boxes = _panel_boxes(shapes, planes)
    canvas = _canvas(boxes, grey, drawn, point, outline)
    image = _picture(canvas, boxes, _title(container, raw_volume, point), point, _legend_handles(drawn))
    return Preview(image, boxes, point, raw_volume.name, tuple(names))


def check_png_output(output_png: Path, overwrite: bool) -> None:
    """Refuse an output picture that is no ``.png``, is a folder, or exists (unless ``overwrite``).

    Raises
    ------
    InvalidValueError
        If ``output_png`` does not end in ``.png``.
    OutputExistsError
        If it is a folder, or exists and not ``overwrite``.
    """
    if output_png.suffix.lower() != ".png":
        raise InvalidValueError(f"output {output_png} must be a .png file: give a name ending in .png")
    if output_png.is_dir():
        raise OutputExistsError(f"output {output_png} is a folder: give a file name ending in .png")
    if output_png.exists() and not overwrite:
        raise OutputExistsError(f"{output_png} exists already: pass --overwrite to replace it, or choose another name")


def _write_png(output_png: Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 picture as PNG, atomically (a reader never sees half a file)."""
    return atomic_write(output_png, lambda stream: imsave(stream, image, format="png"))


def write_preview(
    container: str | Path,
    output_png: str | Path,
    raw: str | None = None,
    overlays: Sequence[str] | None = None,
    position: Sequence[int] | None = None,
    size_voxels: Sequence[int] | int | None = None,
    *,
    outline: bool = True,
    overwrite: bool = False,
) -> Preview:
    """Write the preview of :func:`render_preview` to ``output_png``, atomically.

    Parameters
    ----------
    container, raw, overlays, position, size_voxels, outline
        See :func:`render_preview`.
    output_png
        The PNG file to write (parent folders are created).
    overwrite
        Replace an existing file; without it an existing file is refused.

    Returns
    -------
    Preview
        What was written.

    Raises
    ------
    OutputExistsError
        If ``output_png`` exists (and not ``overwrite``) or is a folder.
    InvalidValueError
        If ``output_png`` does not end in ``.png``; see also :func:`render_preview`.
    """
    output_png = Path(output_png)
    check_png_output(output_png, overwrite)
    preview = render_preview(container, raw, overlays, position, size_voxels, outline=outline)
    _write_png(output_png, preview.image)
    return preview
