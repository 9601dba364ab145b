"""Neuroglancer on the datasets of a container: ``incasem view``.

The viewer's own web server (from the ``neuroglancer`` pip package, which ships the
web client) serves both the client and the data, so the browser loads the data from
the same origin as the page and no cross-origin request (the usual failure of local
zarr in neuroglancer) ever happens. Each dataset is a ``python://`` source
(:class:`neuroglancer.LocalVolume`) over the zarr array, read chunk by chunk when the
client asks: nothing is loaded whole, any size of container works, zarr v2 and v3
alike, and the container is only ever opened read-only.

Geometry: the viewer's coordinate space is z, y, x in nm on the voxel grid of the
first dataset shown; every layer has its own voxel size as scale and its world offset
(``offset_nm / voxel_size``) as voxel offset, so datasets of different voxel sizes
overlay where they belong.

Memory and reading: the client asks for chunks of at most
2**:data:`MAX_VOXELS_PER_CHUNK_LOG2` voxels at a downsampling of at most
:data:`MAX_DOWNSAMPLING` (product of the factors; more with pyramid levels). neuroglancer downsamples on the fly
by reading the full-resolution region behind a chunk (zoomed out, the region of a
pyramid level where there is one: below), so one request reads at most
:data:`MAX_READ_VOXELS` voxels (16 MiB of uint8) whatever the zoom; larger requests are
refused, and the server handles one request per CPU core at a time. Downsampling is
2D (per cross-section plane, flat chunks): with neuroglancer's default 3D downsampling a
zoomed-out cross-section reads 64**3-voxel chunks of 4x-downsampled data, i.e. 256
slices for each plane drawn. Measured on a 512 x 8192 x 8192 dataset, zoomed out to
show a whole plane: 3D read half the volume (17 G voxels, 1024 requests, 115 s); 2D
reads 67 M voxels (4 requests, 1 s). Meshes (which neuroglancer's local server would
compute from the whole array in memory) are not served.

Pyramid levels: where ``incasem pyramid`` wrote finished levels ``<dataset>_s1``, ... of a
dataset on its world grid (:class:`ServedLevel`), a zoomed-out request is answered from
the coarsest level that fits the request's 2D factor (:func:`pyramid_level_for`): its
factors divide the in-plane factors, and it is no thicker along the plane normal than
one drawn pixel (a slab, as 3D-downsampled viewers show). Only the rest of the factor
is downsampled on the fly (mean for images, stride for segmentations), so a request
reads at most its chunk times that rest, again at most :data:`MAX_READ_VOXELS`; the
client may then zoom out further (:func:`max_downsampling`). Full-resolution viewing is
unchanged, and datasets without such levels are served exactly as above.

Layers, by what the dataset holds (:func:`incasem.io.layout.dataset_kind`): probability
maps are a heat map, labels, masks, segmentations and instances (and integer data wider
than 16 bits) are segmentation layers, the raw and other grey levels a grey image.
Labels are drawn in one colour (:data:`~incasem.view.display.LABELS_COLOR`) and predictions in another
(:data:`~incasem.view.display.PREDICTION_COLOR`), so the two can be told apart where they overlap (by segment
id alone, neuroglancer would draw class 1 of both alike); masks and instances keep a
colour per segment id.
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neuroglancer
import neuroglancer.chunks
import neuroglancer.downsample
import neuroglancer.local_volume
import neuroglancer.server
import numpy as np
import zarr

from incasem.errors import DatasetNotFoundError, InvalidValueError, PortInUseError, option
from incasem.geometry import NmTriple, Triple, as_triple
from incasem.io.defaults import RAW_ORDER, label_datasets, latest_prediction
from incasem.io.layout import DatasetKind, dataset_kind
from incasem.io.ngff import pyramid_level_paths
from incasem.io.volume import (
    Volume,
    dataset_name,
    dataset_names,
    open_container,
    open_volume,
)
from incasem.view.display import display_range, segment_color

#: The largest chunk the client may ask for, log2 of voxels (neuroglancer's default 2**18, e.g. 512 x 512 x 1).
MAX_VOXELS_PER_CHUNK_LOG2 = 18
#: The largest on-the-fly downsampling (product of the factors over the axes).
MAX_DOWNSAMPLING = 64
#: The most voxels one request reads from the zarr array.
MAX_READ_VOXELS = MAX_DOWNSAMPLING << MAX_VOXELS_PER_CHUNK_LOG2

AXES = ("z", "y", "x")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the viewer: a dataset, how it is drawn and its geometry."""

    name: str
    kind: DatasetKind
    volume: Volume
    #: Display range of the image / heat-map shader in data values (None for segmentations).
    value_range: tuple[float, float] | None

    @property
    def dataset(self) -> str:
        """The dataset's name in the container."""
        return self.volume.name

    @property
    def voxel_size(self) -> NmTriple:
        """Voxel size, nm (z, y, x): the layer's scale."""
        return self.volume.voxel_size

    @property
    def voxel_offset(self) -> Triple:
        """World offset in voxels of this dataset (``offset_nm / voxel_size``, z, y, x)."""
        return self.volume.roi.offset

    @property
    def segment_color(self) -> str | None:
        """The one colour of every segment of a labels or prediction layer (:func:`incasem.view.display.segment_color`)."""
        return segment_color(self.volume, self.kind)

    @property
    def shader(self) -> str | None:
        """The GLSL shader of an image or heat-map layer; None for a segmentation layer."""
        if self.value_range is None:
            return None
        low, high = self.value_range
        control = f"#uicontrol invlerp normalized(range=[{low:g}, {high:g}])\n"
        if self.kind == "probabilities":
            return control + "void main() {\n  float p = normalized();\n  emitRGBA(vec4(colormapJet(p), p));\n}\n"
        return control + "void main() {\n  emitGrayscale(normalized());\n}\n"


@dataclass(frozen=True)
class ViewSpec:
    """What the viewer shows: layers, the global voxel grid and the position."""

    container: Path
    layers: tuple[LayerSpec, ...]
    #: Voxel size (nm, z, y, x) of the viewer's grid: the first layer's.
    voxel_size: NmTriple
    #: Position in voxels of that grid on the world grid (z, y, x); the view centres on this voxel.
    position: Triple


def default_datasets(container: str | Path) -> list[str]:
    """The datasets ``incasem view`` shows when none are named (:mod:`incasem.io.defaults`).

    The raw (the first of :data:`~incasem.io.defaults.RAW_ORDER`), every labels dataset and
    the segmentation of the latest prediction (by its provenance time), those that exist.

    Raises
    ------
    DatasetNotFoundError
        If the container holds none of these (the message lists what it holds).
    """
    path = Path(container)
    names = dataset_names(open_container(path), path)
    raw = [next((name for name in RAW_ORDER if name in names), None)]
    chosen = [name for name in [*raw, *label_datasets(path), latest_prediction(path, finished_only=False)] if name is not None]
    if not chosen:
        raise DatasetNotFoundError(f"{path} has no raw, labels or prediction to show by default (it has: {', '.join(names) or 'none'}): name datasets with -d")
    return chosen


def _layer_names(datasets: Sequence[str]) -> list[str]:
    """Layer names: the dataset names without ``volumes/`` (in full where that would make two equal)."""
    short = [name.removeprefix("volumes/") for name in datasets]
    return short if len(set(short)) == len(short) else list(datasets)


def _unique(datasets: Sequence[str]) -> list[str]:
    """Normalised dataset names, each once, in the order given."""
    return list(dict.fromkeys(dataset_name(name) for name in datasets))


def _check_position(position: Triple, layers: Sequence[LayerSpec], voxel_size: NmTriple) -> None:
    """Refuse a position (voxels of the grid ``voxel_size``) outside every layer's data."""
    centre_nm = [(p + 0.5) * v for p, v in zip(position, voxel_size)]
    for layer in layers:
        begin = [o * v for o, v in zip(layer.voxel_offset, layer.voxel_size)]
        end = [b + s * v for b, s, v in zip(begin, layer.volume.shape, layer.voxel_size)]
        if all(b <= c < e for b, c, e in zip(begin, centre_nm, end)):
            return
    first = layers[0]
    raise InvalidValueError(
        f"{option('position', '--position')} {','.join(map(str, position))} (voxels z,y,x) lies outside every dataset shown; "
        f"{first.dataset} covers {first.volume.roi}: give a position inside it, or leave {option('position', '--position')} out for its centre"
    )


def describe_view(container: str | Path, datasets: Sequence[str] | None = None, position: Sequence[int] | None = None) -> ViewSpec:
    """The layers, grid and position that :func:`open_viewer` shows (opens nothing but metadata).

    Parameters
    ----------
    container
        A zarr container (v2 or v3), opened read-only.
    datasets
        Datasets to show, in order (the first sets the grid); default
        :func:`default_datasets`.
    position
        Voxel (z, y, x) to centre the view on, in voxels of the first dataset's voxel
        size on the world grid (its offset included, as ``Volume.roi``); default the
        centre of the first dataset.

    Raises
    ------
    NotAContainerError, DatasetNotFoundError
        For a missing container or dataset (the message lists the datasets that exist).
    InvalidValueError
        For a position outside every dataset shown.
    """
    path = Path(container)
    names = _unique(datasets if datasets else default_datasets(path))
    volumes = [open_volume(path, name, require_complete=False) for name in names]
    layers = []
    for layer_name, volume in zip(_layer_names(names), volumes):
        kind = dataset_kind(volume.name, volume.dtype)
        layers.append(LayerSpec(layer_name, kind, volume, display_range(volume, kind)))
    first = volumes[0]
    if position is None:
        centre = tuple(o + s // 2 for o, s in zip(first.roi.offset, first.shape))
    else:
        centre = as_triple(position, option("position", "--position"))
        _check_position(centre, layers, first.voxel_size)
    return ViewSpec(path, tuple(layers), first.voxel_size, centre)  # type: ignore[arg-type]


def _served_dtype(dtype: np.dtype, kind: DatasetKind) -> np.dtype:
    """The element type the client receives: one neuroglancer draws (segment ids unsigned)."""
    if kind == "segmentation":
        return np.dtype(f"uint{8 * max(1, dtype.itemsize)}") if dtype.kind in "biu" else dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind == "f" or dtype.itemsize > 4:
        return np.dtype(np.float32)
    return dtype


class LazyArray:
    """A zarr array as neuroglancer's :class:`~neuroglancer.LocalVolume` reads it: regions on request.

    Only the region asked for is read (and converted to ``dtype``); the array is never
    loaded whole. ``voxels_read`` and ``largest_read`` count the voxels read in all and
    in the largest single region.
    """

    def __init__(self, array: zarr.Array, dtype: np.dtype) -> None:
        self._array = array
        self.shape: Triple = as_triple(array.shape, "shape")
        self.dtype = np.dtype(dtype)
        self.voxels_read = 0
        self.largest_read = 0
        self._count = threading.Lock()

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        data = np.asarray(self._array[region])
        with self._count:
            self.voxels_read += data.size
            self.largest_read = max(self.largest_read, data.size)
        return data.astype(self.dtype, copy=False)


@dataclass(frozen=True)
class ServedLevel:
    """A pyramid level of a served dataset, on the dataset's world grid (usable by the viewer).

    Level voxel ``begin + i // factor`` covers the dataset's voxels ``i`` (local, per axis);
    the level covers every such voxel of the dataset (``ceil(shape / factor)`` from ``begin``).
    """

    name: str
    #: Cumulative downsampling factor (z, y, x) from the dataset: level voxel size / dataset voxel size.
    factor: Triple
    #: Level voxel (local index, z, y, x) that holds the dataset's first voxel.
    begin: Triple
    data: LazyArray


def _cumulative_factor(dataset: Volume, level: Volume) -> Triple | None:
    """``level.voxel_size / dataset.voxel_size`` per axis, or None unless each is a whole number >= 1."""
    factor = []
    for level_nm, dataset_nm in zip(level.voxel_size, dataset.voxel_size):
        ratio = level_nm / dataset_nm
        whole = round(ratio)
        if whole < 1 or abs(ratio - whole) > 1e-6 * ratio:
            return None
        factor.append(whole)
    return tuple(factor)  # type: ignore[return-value]


def served_levels(dataset: Volume, dtype: np.dtype) -> tuple[ServedLevel, ...]:
    """The finished pyramid levels of ``dataset`` that lie on its grid, finest first, read as ``dtype``.

    A level is used when its voxel size is a whole multiple ``F`` of the dataset's, the
    dataset's world offset (voxels) is a multiple of ``F`` on every axis (the level's
    voxels then start exactly at dataset voxels) and it covers the whole dataset; other
    levels (and those of datasets with other offsets) are left out, so requests they
    would serve read full resolution.
    """
    levels = []
    for name in pyramid_level_paths(open_container(dataset.container), dataset.name):
        level = open_volume(dataset.container, name)
        factor = _cumulative_factor(dataset, level)
        if factor is None or any(o % f for o, f in zip(dataset.roi.offset, factor)):
            continue
        begin = tuple(o // f - lo for o, f, lo in zip(dataset.roi.offset, factor, level.roi.offset))
        covered = [-(-s // f) for s, f in zip(dataset.shape, factor)]
        if all(b >= 0 and b + c <= s for b, c, s in zip(begin, covered, level.shape)):
            levels.append(ServedLevel(level.name, factor, begin, LazyArray(level.array, dtype)))  # type: ignore[arg-type]
    return tuple(levels)


def plane_normal(factor: Sequence[int]) -> int | None:
    """The axis a 2D downsampling factor leaves at full resolution (the first with factor 1), None if none."""
    return next((axis for axis, f in enumerate(factor) if f == 1), None)


def pyramid_level_for(factor: Sequence[int], levels: Sequence[ServedLevel]) -> ServedLevel | None:
    """The level that serves a request at downsampling ``factor`` (z, y, x), or None for full resolution.

    The coarsest of ``levels`` (finest first) whose factor divides ``factor`` on the two
    in-plane axes and whose factor along the plane normal is at most the smallest
    in-plane factor of ``factor``: a slab no thicker than one drawn pixel.
    """
    normal = plane_normal(factor)
    if normal is None:
        return None
    in_plane = [axis for axis in range(len(factor)) if axis != normal]
    thinnest = min(factor[axis] for axis in in_plane)
    chosen = None
    for level in levels:
        if level.factor[normal] <= thinnest and all(factor[axis] % level.factor[axis] == 0 for axis in in_plane):
            chosen = level
    return chosen


def max_downsampling(levels: Sequence[ServedLevel]) -> int:
    """The largest downsampling the client may ask for: :data:`MAX_DOWNSAMPLING` times what the coarsest level saves.

    That is the product of the coarsest level's two largest factors (its best plane);
    without levels, :data:`MAX_DOWNSAMPLING`.
    """
    if not levels:
        return MAX_DOWNSAMPLING
    largest = sorted(levels[-1].factor)[-2:]
    return MAX_DOWNSAMPLING * math.prod(largest)


def _encode(data_format: str, subvolume: np.ndarray) -> tuple[bytes, str]:
    """A chunk in ``data_format`` (npz, raw or jpeg) and its content type, as :class:`~neuroglancer.LocalVolume` sends it."""
    if data_format == "npz":
        return neuroglancer.chunks.encode_npz(subvolume), "application/octet-stream"
    if data_format == "raw":
        return neuroglancer.chunks.encode_raw(subvolume), "application/octet-stream"
    if data_format == "jpeg":
        return neuroglancer.chunks.encode_jpeg(subvolume), "image/jpeg"
    raise ValueError("Invalid data format requested.")


class ServedVolume(neuroglancer.LocalVolume):
    """A :class:`~neuroglancer.LocalVolume` whose requests are bounded, which reads pyramid levels
    when zoomed out (``levels``, finest first) and serves no meshes."""

    def __init__(self, data: LazyArray, *, levels: Sequence[ServedLevel] = (), **options: Any) -> None:
        super().__init__(data, **options)
        self.levels = tuple(levels)

    def get_encoded_subvolume(self, data_format: str, start: Any, end: Any, scale_key: str) -> tuple[bytes, str]:
        """Encode one chunk; refuse one larger than 2**:data:`MAX_VOXELS_PER_CHUNK_LOG2` voxels (HTTP 400).

        With levels, the chunk comes from :func:`pyramid_level_for`'s level, else from
        full resolution; a request that would read more than :data:`MAX_READ_VOXELS`
        voxels (more than :data:`MAX_DOWNSAMPLING` left to downsample) is refused.
        """
        voxels = math.prod(int(e) - int(s) for s, e in zip(start, end))
        if voxels > 1 << MAX_VOXELS_PER_CHUNK_LOG2:
            raise ValueError(f"chunk of {voxels} voxels requested; at most {1 << MAX_VOXELS_PER_CHUNK_LOG2} served")
        if not self.levels:
            return super().get_encoded_subvolume(data_format, start, end, scale_key)
        factor = self._checked_factor(start, end, scale_key)
        level = pyramid_level_for(factor, self.levels)
        rest = factor if level is None else self._rest(factor, level)
        if math.prod(rest) > MAX_DOWNSAMPLING:
            raise ValueError(
                f"downsampling {scale_key} leaves {math.prod(rest)} (more than {MAX_DOWNSAMPLING}) to do on the fly: "
                f"refused, a request reads at most {MAX_READ_VOXELS} voxels"
            )
        if level is None:
            return super().get_encoded_subvolume(data_format, start, end, scale_key)
        return _encode(data_format, self._level_chunk(level, factor, [int(s) for s in start], [int(e) for e in end]))

    def _checked_factor(self, start: Any, end: Any, scale_key: str) -> Triple:
        """The factor of ``scale_key``, checked as :meth:`neuroglancer.LocalVolume.get_encoded_subvolume` does."""
        factor = np.array(scale_key.split(","), dtype=np.int64)
        if len(start) != self.rank or len(end) != self.rank:
            raise ValueError("Invalid request")
        if len(factor) != self.rank or np.any(factor < 1) or np.any(factor > self.max_downsampling) or np.prod(factor) > self.max_downsampling:
            raise ValueError("Invalid downsampling factor.")
        downsampled_shape = -(-np.asarray(self.shape) // factor)
        start, end = np.asarray(start), np.asarray(end)
        if np.any(end < start) or np.any(start < 0) or np.any(end > downsampled_shape):
            raise ValueError("Out of bounds data request.")
        return tuple(int(f) for f in factor)  # type: ignore[return-value]

    @staticmethod
    def _rest(factor: Triple, level: ServedLevel) -> Triple:
        """What is left to downsample on the fly after ``level``: in-plane ``factor / level.factor``, 1 along the normal."""
        normal = plane_normal(factor)
        return tuple(1 if axis == normal else f // lf for axis, (f, lf) in enumerate(zip(factor, level.factor)))  # type: ignore[return-value]

    def _level_chunk(self, level: ServedLevel, factor: Triple, start: list[int], end: list[int]) -> np.ndarray:
        """The chunk ``start:end`` (voxels at ``factor``) from ``level``, exactly as full resolution would be shaped.

        In-plane, the level's voxels under the chunk (clipped to those over the dataset,
        as neuroglancer clips to the dataset) are downsampled by the rest of the factor;
        along the normal, full-resolution section ``k`` is level section ``begin + k // F``.
        """
        normal = plane_normal(factor)
        assert normal is not None  # a level serves 2D factors only
        rest = self._rest(factor, level)
        region = []
        for axis, (f, b, r) in enumerate(zip(level.factor, level.begin, rest)):
            if axis == normal:
                region.append(slice(b + start[axis] // f, b + (end[axis] - 1) // f + 1))
            else:
                covered = -(-self.shape[axis] // f)  # level voxels over the dataset
                region.append(slice(b + start[axis] * r, b + min(covered, end[axis] * r)))
        data = level.data[tuple(region)]
        if any(r != 1 for r in rest):
            reduce = neuroglancer.downsample.downsample_with_averaging if self.volume_type == "image" else (neuroglancer.downsample.downsample_with_striding)
            data = reduce(data, rest)
        thickness = level.factor[normal]
        if thickness > 1:
            sections = np.arange(start[normal], end[normal]) // thickness - start[normal] // thickness
            data = np.take(data, sections, axis=normal)
        return np.ascontiguousarray(data)

    def get_object_mesh(self, object_id: int) -> bytes:
        """Meshes are not served: neuroglancer would compute them from the whole array in memory."""
        raise neuroglancer.local_volume.MeshesNotSupportedForVolume()


def coordinate_space(voxel_size: NmTriple) -> neuroglancer.CoordinateSpace:
    """The z, y, x coordinate space in nm with ``voxel_size`` as scales."""
    return neuroglancer.CoordinateSpace(names=list(AXES), units="nm", scales=[float(v) for v in voxel_size])


def served_volume(layer: LayerSpec) -> ServedVolume:
    """The data source of ``layer``: its zarr array at its voxel size and voxel offset, served lazily,
    zoomed-out views from its pyramid levels where it has them (:func:`served_levels`)."""
    volume = layer.volume
    dtype = _served_dtype(volume.dtype, layer.kind)
    levels = served_levels(volume, dtype)
    return ServedVolume(
        LazyArray(volume.array, dtype),
        levels=levels,
        dimensions=coordinate_space(volume.voxel_size),
        voxel_offset=list(layer.voxel_offset),
        volume_type="segmentation" if layer.kind == "segmentation" else "image",
        max_voxels_per_chunk_log2=MAX_VOXELS_PER_CHUNK_LOG2,
        max_downsampling=max_downsampling(levels),
        downsampling="2d",
    )


def _neuroglancer_layer(layer: LayerSpec) -> neuroglancer.Layer:
    source = served_volume(layer)
    if layer.kind == "segmentation":
        color = layer.segment_color
        return neuroglancer.SegmentationLayer(source=source, **({"segment_default_color": color} if color else {}))
    return neuroglancer.ImageLayer(source=source, shader=layer.shader)


def apply_view(spec: ViewSpec, state: neuroglancer.ViewerState) -> None:
    """Put ``spec``'s layers, grid and position into a viewer ``state`` (x right, y down, z slices)."""
    state.dimensions = coordinate_space(spec.voxel_size)
    state.display_dimensions = ["x", "y", "z"]
    for layer in spec.layers:
        state.layers[layer.name] = _neuroglancer_layer(layer)
    state.position = [p + 0.5 for p in spec.position]  # neuroglancer puts voxel centres at +0.5
    state.layout = "4panel"


def _bind_error(error: OSError, bind_address: str, port: int) -> Exception:
    """The incasem error for a server that could not listen on ``bind_address:port``."""
    if error.errno == errno.EADDRINUSE:
        return PortInUseError(f"port {port} on {bind_address} is in use: pick another with {option('port', '--port')} or leave it out")
    if error.errno == errno.EACCES:
        return InvalidValueError(
            f"port {port} on {bind_address} needs administrator rights: pick one above 1023 with {option('port', '--port')} or leave it out"
        )
    return InvalidValueError(
        f"{option('bind_address', '--bind')} {bind_address} is not an address of this machine ({error.strerror or error}): "
        "use 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)"
    )


def start_server(bind_address: str = "127.0.0.1", port: int = 0) -> None:
    """Start neuroglancer's web server on ``bind_address:port`` (0: a free port).

    A process has one such server; a running one is kept when it listens where asked
    (any port for ``port=0``), else it is stopped (its viewers go with it) and a new one
    started.

    Raises
    ------
    PortInUseError
        If the port is taken.
    InvalidValueError
        For a port outside 0..65535, one that needs administrator rights, or an address
        that is not this machine's.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidValueError(f"{option('port', '--port')} must be 0 (a free port) or 1..65535, got {port!r}")
    server = neuroglancer.server
    running = server.global_server
    if running is not None and server.global_server_args["bind_address"] == bind_address and port in (0, running.port):
        return
    server.stop()
    server.set_server_bind_address(bind_address, port)
    try:
        server.start()
    except OSError as error:
        raise _bind_error(error, bind_address, port) from error


def open_viewer(
    container: str | Path,
    datasets: Sequence[str] | None = None,
    position: Sequence[int] | None = None,
    bind_address: str = "127.0.0.1",
    port: int = 0,
) -> neuroglancer.Viewer:
    """Serve the datasets of ``container`` in neuroglancer and return the viewer, without blocking.

    The viewer's URL is ``viewer.get_viewer_url()``; the server runs in a background
    thread of this process until :func:`stop_server` (or the process ends). See
    :func:`describe_view` for ``datasets`` and ``position`` (voxels z, y, x of the first
    dataset's grid) and :func:`start_server` for ``bind_address`` and ``port``.
    """
    spec = describe_view(container, datasets, position)
    start_server(bind_address, port)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as state:
        apply_view(spec, state)
    return viewer


def stop_server() -> None:
    """Stop neuroglancer's web server (every viewer's URL stops working)."""
    neuroglancer.server.stop()


def serve_until_interrupted(poll_seconds: float = 3600.0) -> None:
    """Keep the server running until the process is interrupted (Ctrl-C), then stop it."""
    try:
        while True:
            time.sleep(poll_seconds)
    finally:
        stop_server()
