"""Volumes that ``incasem convert`` reads besides TIFF: MRC, HDF5, N5, OME-Zarr and OME-TIFF.

:func:`open_source` takes what the user typed and returns a source that reads any range
of z sections (:meth:`read`), with the voxel size and offset its metadata records (nm,
z, y, x; ``None`` where it records none). Only metadata is read on opening, so every
problem with the file is found before anything is written; the sections are read when
a block needs them (so memory stays at a few slabs, whatever the depth of the volume),
each read opening the file anew (the sources pickle for a Dask cluster).

- **MRC** (``.mrc``, ``.rec``, ``.st``, ``.map``; :mod:`mrcfile`, memory-mapped): voxel
  size from the header (Å → nm), the origin as offset where it is a whole number of
  voxels. Mode 0 is signed 8-bit as MRC2014 defines it, except in files IMOD wrote without
  its "signed bytes" flag, which hold unsigned bytes (as IMOD reads them); modes 1 (signed
  16-bit), 2 (float32), 6 (unsigned 16-bit) and 12 (float16) keep their values and type;
  complex and RGB modes are refused.
- **HDF5** (``file.h5:/path/to/dataset``; :mod:`h5py`), chunked or contiguous: voxel size
  from ``resolution`` (nm, z y x, as the original incasem and funlib write it) or
  ``element_size_um`` (µm, as ilastik and Fiji write it), offset from ``offset`` (nm).
- **N5** (``container.n5/path/to/dataset``; `tensorstore <https://google.github.io/tensorstore/>`_,
  which reads N5 with every compression Janelia's tools write and is maintained by Google;
  zarr-python 3 no longer reads N5): N5 lists axes x, y, z, read here as z, y, x; voxel
  size from ``pixelResolution`` (with its unit) or ``resolution`` (nm), offset from
  ``offset`` or ``translation`` (nm).
- **OME-Zarr** (a zarr group with OME-NGFF ``multiscales``, 0.4 or 0.5): its finest
  level, with ``scale``/``translation`` in the axes' units; axes other than z, y, x must
  have size 1.
- **OME-TIFF** (``.ome.tif``/``.ome.tiff``): a TIFF stack whose OME metadata gives the
  physical sizes (:func:`ome_tiff_geometry`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from xml.etree import ElementTree

import numpy as np

from incasem.errors import InputFileError, option
from incasem.geometry import NmTriple, Triple, as_nm_triple, as_triple
from incasem.io.metadata import nm_per_unit
from incasem.io.ngff import ngff_entries, ngff_geometry
from incasem.io.tiff import DEFAULT_PATTERN, TiffStack, open_stack

__all__ = [
    "Geometry",
    "Hdf5Source",
    "MrcSource",
    "N5Source",
    "OmeZarrSource",
    "VolumeSource",
    "is_ome_zarr",
    "mark_unsigned_bytes",
    "ome_tiff_geometry",
    "open_source",
    "source_geometry",
    "source_label",
]

#: File name endings of MRC files.
MRC_SUFFIXES = (".mrc", ".rec", ".st", ".map", ".ali")
#: The ``imodStamp`` of MRC files IMOD wrote; its ``imodFlags`` bit 0 says whether mode 0 bytes are signed.
IMOD_STAMP = 1146047817
#: File name endings of HDF5 files.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")

_SET_VOXEL_SIZE = option("voxel_size", "--voxel-size")


class VolumeSource(Protocol):
    """What ``incasem convert`` reads: a (z, y, x) volume, section by section."""

    @property
    def path(self) -> Path:
        """The file or folder."""
        ...

    @property
    def shape(self) -> Triple:
        """Shape in voxels (z, y, x)."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        ...

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Sections ``z_start:z_stop``, whole in y and x."""
        ...


@dataclass(frozen=True)
class Geometry:
    """Voxel size and offset (nm, z y x) that a source's metadata records; ``None``: not recorded."""

    voxel_size_nm: NmTriple | None = None
    offset_nm: NmTriple | None = None
    #: Where the geometry was looked for, for the message when it is missing.
    looked_in: str = ""
    #: Whether a voxel size must come from the metadata or ``--voxel-size`` (formats that record one);
    #: a plain TIFF stack without one gets 1 nm, as before.
    required: bool = False


def _nm(values: Sequence[Any], unit: str | None, where: str) -> NmTriple:
    factor = nm_per_unit(unit)
    if factor is None:
        raise InputFileError(f"{where} gives lengths in {unit!r}, a unit incasem does not know: give {_SET_VOXEL_SIZE} Z,Y,X in nm")
    try:
        numbers = [float(v) * factor for v in values]
    except (TypeError, ValueError):
        raise InputFileError(f"{where} holds {list(values)!r}, not numbers: give {_SET_VOXEL_SIZE} Z,Y,X in nm") from None
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise InputFileError(f"{where} holds {list(values)!r}, not three finite lengths: give {_SET_VOXEL_SIZE} Z,Y,X in nm")
    return as_nm_triple(numbers, where)


def _positive(voxel_size: NmTriple | None) -> NmTriple | None:
    return voxel_size if voxel_size is not None and all(v > 0 for v in voxel_size) else None


def _whole_voxels(offset_nm: NmTriple | None, voxel_size: NmTriple | None) -> NmTriple | None:
    """An offset that is a whole number of voxels of the recorded voxel size (what a container can
    hold), else ``None``: the volume then starts at 0 unless ``--offset`` says otherwise."""
    if offset_nm is None or voxel_size is None:
        return None
    ratios = [o / v for o, v in zip(offset_nm, voxel_size)]
    return offset_nm if all(abs(r - round(r)) < 1e-6 for r in ratios) else None


def _check_array(shape: Sequence[int], dtype: np.dtype, where: str) -> None:
    if len(shape) != 3:
        raise InputFileError(f"{where} is {len(shape)}D {list(shape)}; incasem converts 3D greyscale volumes (z, y, x): save one channel as a 3D volume")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputFileError(f"{where} holds {dtype} values (complex, RGB or records); incasem converts greyscale volumes of integers or floats")
    if 0 in shape:
        raise InputFileError(f"{where} is empty (shape {list(shape)})")


# -- MRC --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MrcSource:
    """An MRC volume (memory-mapped; module docstring)."""

    path: Path
    shape: Triple
    dtype: np.dtype
    geometry: Geometry

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Sections ``z_start:z_stop``."""
        import mrcfile

        with mrcfile.mmap(self.path, mode="r", permissive=True) as mrc:
            data = mrc.data if mrc.data.ndim == 3 else mrc.data[np.newaxis]
            slab = np.array(data[z_start:z_stop])
        return slab.view(np.uint8) if self.dtype == np.uint8 else slab.astype(self.dtype, copy=False)


def _imod_dtype(header: Any) -> np.dtype:
    return np.dtype(np.int32).newbyteorder(header.mode.dtype.byteorder)


def imod_fields(header: Any) -> tuple[int, int]:
    """IMOD's ``imodStamp`` and ``imodFlags`` (header bytes 152-159, inside what mrcfile calls ``extra2``)."""
    raw = bytes(np.asarray(header.extra2).tobytes())[40:48]
    return tuple(int(v) for v in np.frombuffer(raw, dtype=_imod_dtype(header)))  # type: ignore[return-value]


def mark_unsigned_bytes(header: Any) -> None:
    """Write IMOD's stamp without its "signed" flag into an mrcfile header: its mode 0 bytes are unsigned."""
    extra = bytearray(np.asarray(header.extra2).tobytes())
    extra[40:48] = np.array([IMOD_STAMP, 0], dtype=_imod_dtype(header)).tobytes()
    header.extra2 = np.frombuffer(bytes(extra), dtype=header.extra2.dtype)


def _imod_unsigned_bytes(header: Any) -> bool:
    stamp, flags = imod_fields(header)
    return stamp == IMOD_STAMP and not flags & 1


def _open_mrc(path: Path) -> MrcSource:
    import mrcfile

    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            data, header = mrc.data, mrc.header
            mode = int(header.mode)
            shape = (1, *data.shape) if data.ndim == 2 else tuple(data.shape)
            dtype = np.dtype(data.dtype).newbyteorder("=")
            if mode == 0 and _imod_unsigned_bytes(header):
                dtype = np.dtype(np.uint8)  # IMOD's mode 0 without its "signed" flag: unsigned bytes
            size = mrc.voxel_size
            offset = header.origin
            size_zyx = (float(size.z) / 10, float(size.y) / 10, float(size.x) / 10)
            origin_zyx = (float(offset.z) / 10, float(offset.y) / 10, float(offset.x) / 10)
    except (ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputFileError(f"{path} is not a readable MRC file ({reason}): check that it was copied whole") from None
    _check_array(shape, dtype, f"{path} (MRC mode {mode})")
    voxel_size = _positive(as_nm_triple(size_zyx, "MRC voxel size"))
    offset = None if not any(origin_zyx) else _whole_voxels(as_nm_triple(origin_zyx, "MRC origin"), voxel_size)
    return MrcSource(path, as_triple(shape, "shape"), dtype, Geometry(voxel_size, offset, "the MRC header's cell size", required=True))


# -- HDF5 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hdf5Source:
    """One dataset of an HDF5 file (module docstring)."""

    path: Path
    dataset: str
    shape: Triple
    dtype: np.dtype
    geometry: Geometry

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Sections ``z_start:z_stop``."""
        import h5py

        with h5py.File(self.path, "r") as file:
            return np.asarray(file[self.dataset][z_start:z_stop])


def _datasets_in(group: Any) -> list[str]:
    import h5py

    found: list[str] = []
    group.visititems(lambda name, node: found.append(name) if isinstance(node, h5py.Dataset) else None)
    return found


def _attribute_list(attrs: Mapping[str, Any], key: str) -> list[Any] | None:
    value = attrs.get(key)
    if value is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in np.ravel(np.asarray(value))]


def _open_hdf5(path: Path, dataset: str | None) -> Hdf5Source:
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise InputFileError(f"{path} is not a readable HDF5 file ({str(error).splitlines()[0]})") from None
    with file:
        if dataset is None:
            datasets = _datasets_in(file)
            if len(datasets) != 1:
                listed = ", ".join(datasets[:8]) or "none"
                raise InputFileError(f"{path} holds {len(datasets)} datasets ({listed}): name one as {path}:/path/to/dataset")
            dataset = datasets[0]
        node = file.get(dataset)
        where = f"{path}:/{dataset}"
        if node is None:
            listed = ", ".join(_datasets_in(file)[:8]) or "none"
            raise InputFileError(f"{where} does not exist (datasets: {listed}): name one as {path}:/path/to/dataset")
        if isinstance(node, h5py.Group):
            listed = ", ".join(_datasets_in(node)[:8]) or "none"
            raise InputFileError(f"{where} is a group, not a dataset (it holds: {listed}): name a dataset as {path}:/{dataset.rstrip('/')}/NAME")
        shape, dtype = tuple(node.shape), np.dtype(node.dtype)
        _check_array(shape, dtype, where)
        attrs = dict(node.attrs)
    resolution = _attribute_list(attrs, "resolution")
    element_size = _attribute_list(attrs, "element_size_um")
    offset = _attribute_list(attrs, "offset")
    voxel_size = (
        _nm(resolution, "nm", f"{where} attribute resolution")
        if resolution is not None
        else _nm(element_size, "um", f"{where} attribute element_size_um")
        if element_size is not None
        else None
    )
    offset_nm = None if offset is None else _nm(offset, "nm", f"{where} attribute offset")
    looked = "its attributes resolution (nm) or element_size_um"
    return Hdf5Source(
        path, dataset, as_triple(shape, "shape"), dtype, Geometry(_positive(voxel_size), _whole_voxels(offset_nm, voxel_size), looked, required=True)
    )


# -- N5 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class N5Source:
    """One dataset of an N5 container, read through tensorstore, axes reversed to z, y, x."""

    path: Path
    dataset: str
    shape: Triple
    dtype: np.dtype
    geometry: Geometry

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Sections ``z_start:z_stop``."""
        return np.asarray(_n5_store(self.path, self.dataset)[z_start:z_stop].read().result())


def _n5_store(container: Path, dataset: str) -> Any:
    """The dataset opened read-only by tensorstore, axes z, y, x (N5 lists x, y, z)."""
    import tensorstore

    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(container)}, "path": dataset}
    return tensorstore.open(spec, read=True).result().T


def _n5_geometry(attrs: Mapping[str, Any], where: str) -> Geometry:
    looked = "its attributes pixelResolution or resolution"
    pixel = attrs.get("pixelResolution")
    voxel_size: NmTriple | None = None
    if isinstance(pixel, Mapping) and isinstance(pixel.get("dimensions"), list):
        voxel_size = _nm(pixel["dimensions"][::-1], pixel.get("unit"), f"{where} attribute pixelResolution")
    elif isinstance(pixel, list):
        voxel_size = _nm(pixel[::-1], "nm", f"{where} attribute pixelResolution")
    elif isinstance(attrs.get("resolution"), list):
        voxel_size = _nm(attrs["resolution"][::-1], "nm", f"{where} attribute resolution")
    offset = next((attrs[key] for key in ("offset", "translation") if isinstance(attrs.get(key), list)), None)
    offset_nm = None if offset is None else _nm(offset[::-1], "nm", f"{where} attribute offset")
    return Geometry(_positive(voxel_size), _whole_voxels(offset_nm, voxel_size), looked, required=True)


def _open_n5(container: Path, dataset: str) -> N5Source:
    where = f"{container}/{dataset}"
    attributes = container / dataset / "attributes.json"
    try:
        attrs = json.loads(attributes.read_text(encoding="utf-8")) if attributes.is_file() else None
    except (OSError, ValueError) as error:
        raise InputFileError(f"{attributes} is damaged ({str(error).splitlines()[0]}): restore it from a backup") from None
    if not isinstance(attrs, dict) or "dimensions" not in attrs:
        children = sorted(p.name for p in (container / dataset).iterdir() if p.is_dir()) if (container / dataset).is_dir() else []
        raise InputFileError(
            f"{where} is an N5 group or folder, not a dataset (it holds: {', '.join(children[:8]) or 'nothing'}): name a dataset as {container}/PATH"
        )
    geometry = _n5_geometry(attrs, where)
    try:
        store = _n5_store(container, dataset)
    except ValueError as error:  # tensorstore's errors are ValueErrors with its status text
        raise InputFileError(f"{where} cannot be read as N5 ({str(error).splitlines()[0]})") from None
    shape, dtype = tuple(int(v) for v in store.shape), np.dtype(store.dtype.numpy_dtype)
    _check_array(shape, dtype, where)
    return N5Source(container, dataset, as_triple(shape, "shape"), dtype, geometry)


# -- OME-Zarr ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmeZarrSource:
    """The finest level of an OME-Zarr image; axes other than z, y, x (of size 1) are dropped."""

    path: Path
    array_path: str
    index: tuple[int | None, ...]  # per axis of the array: 0 for a dropped axis, None for z, y, x
    shape: Triple
    dtype: np.dtype
    geometry: Geometry

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Sections ``z_start:z_stop``."""
        import zarr

        array = zarr.open_group(str(self.path), mode="r")[self.array_path]
        spatial = iter((slice(z_start, z_stop), slice(None), slice(None)))
        return np.asarray(array[tuple(next(spatial) if i is None else i for i in self.index)])  # type: ignore[index]


def is_ome_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr group holding an OME-Zarr image (or a bioformats2raw set of them)."""
    for name in ("zarr.json", ".zattrs"):
        metadata = path / name
        if metadata.is_file():
            try:
                attrs = json.loads(metadata.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", {}) if name == "zarr.json" else attrs
            ome = attrs.get("ome") if isinstance(attrs.get("ome"), Mapping) else attrs
            return bool(ngff_entries(attrs)) or "bioformats2raw.layout" in ome
    return False


def _open_ome_zarr(path: Path) -> OmeZarrSource:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = group.attrs.asdict()
    entries = ngff_entries(attrs)
    if len(entries) != 1:
        images = sorted(name for name, _ in group.groups())
        listed = ", ".join(images[:8]) or f"{len(entries)} multiscales entries"
        raise InputFileError(f"{path} holds several images ({listed}): name one of them, e.g. {path}/{images[0] if images else '0'}")
    entry = entries[0]
    axes = [a if isinstance(a, Mapping) else {"name": a} for a in entry.get("axes") or [{"name": n} for n in "zyx"]]
    datasets = entry.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise InputFileError(f"{path} has an OME-NGFF multiscales entry without datasets: it is damaged")
    array_path = datasets[0]["path"]
    array = group.get(array_path)
    if not isinstance(array, zarr.Array):
        raise InputFileError(f"{path}/{array_path}, the finest level its OME-NGFF metadata names, is missing")
    if len(axes) != array.ndim:
        raise InputFileError(f"{path} names {len(axes)} axes for a {array.ndim}D array: its OME-NGFF metadata is damaged")
    spatial = [i for i, axis in enumerate(axes) if axis.get("type") == "space" or (axis.get("type") is None and axis.get("name") in ("z", "y", "x"))]
    others = [i for i in range(array.ndim) if i not in spatial]
    if len(spatial) != 3 or any(array.shape[i] != 1 for i in others):
        names = "".join(str(a.get("name", "?")) for a in axes)
        raise InputFileError(f"{path} is a {array.ndim}D image ({names}, shape {list(array.shape)}); incasem converts 3D greyscale volumes: save one channel")
    index = tuple(None if i in spatial else 0 for i in range(array.ndim))
    shape = tuple(int(array.shape[i]) for i in spatial)
    dtype = np.dtype(array.dtype)
    _check_array(shape, dtype, str(path))
    units = {axes[i].get("unit") for i in spatial}
    if len(units) > 1:
        raise InputFileError(f"{path} gives its axes in different units ({sorted(map(str, units))}): give {_SET_VOXEL_SIZE} Z,Y,X in nm")
    unit = units.pop()
    recorded = None if unit is None else ngff_geometry(attrs, array_path)  # scale and translation of z, y, x, made nm
    if unit is not None and recorded is None:
        raise InputFileError(f"{path} gives lengths in {unit!r}, a unit incasem does not know: give {_SET_VOXEL_SIZE} Z,Y,X in nm")
    voxel_size, offset_nm = recorded if recorded is not None else (None, None)
    geometry = Geometry(_positive(voxel_size), _whole_voxels(offset_nm, voxel_size), "its OME-NGFF axes' units and scale", required=True)
    return OmeZarrSource(path, array_path, index, as_triple(shape, "shape"), dtype, geometry)


# -- OME-TIFF ---------------------------------------------------------------------------------


def ome_tiff_geometry(path: Path) -> Geometry:
    """The physical sizes an OME-TIFF's metadata gives (µm unless it names a unit), as voxel size in nm."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        xml = tiff.ome_metadata
    if not xml:
        return Geometry(looked_in="its OME metadata")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        raise InputFileError(f"{path} has damaged OME metadata (not XML): give {_SET_VOXEL_SIZE} Z,Y,X in nm") from None
    pixels = next((node for node in root.iter() if node.tag.endswith("Pixels")), None)
    if pixels is None:
        return Geometry(looked_in="its OME metadata")
    if int(pixels.get("SizeC", "1")) > 1 or int(pixels.get("SizeT", "1")) > 1:
        raise InputFileError(
            f"{path} holds {pixels.get('SizeC', '1')} channels and {pixels.get('SizeT', '1')} time points; incasem converts one 3D greyscale volume: save one"
        )
    sizes = [pixels.get(f"PhysicalSize{axis}") for axis in "ZYX"]
    if any(size is None for size in sizes):
        return Geometry(looked_in="its OME metadata (PhysicalSizeZ, Y, X)")
    units = {pixels.get(f"PhysicalSize{axis}Unit", "µm") for axis in "ZYX"}
    if len(units) != 1:
        raise InputFileError(f"{path} gives its physical sizes in different units ({sorted(units)}): give {_SET_VOXEL_SIZE} Z,Y,X in nm")
    return Geometry(_positive(_nm(sizes, units.pop(), f"{path} OME PhysicalSize")), None, "its OME metadata")


# -- dispatch ---------------------------------------------------------------------------------

_HDF5_PATH = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)
_N5_PATH = re.compile(r"^(?P<container>.*?\.n5)(?:/(?P<dataset>.*))?$", re.IGNORECASE)


def open_source(text: str | Path, pattern: str = DEFAULT_PATTERN) -> VolumeSource:
    """The volume ``text`` names: an MRC file, ``file.h5:/dataset``, ``container.n5/dataset``, an
    OME-Zarr image, or a TIFF folder or (OME-)TIFF file (:func:`incasem.io.tiff.open_stack`).

    Raises
    ------
    InputFileError
        One line naming the file and what to do: missing, truncated or damaged, a group
        where a dataset is needed, several images, 4D / RGB / complex data.
    """
    text = str(text)
    path = Path(text)
    if path.suffix.lower() in MRC_SUFFIXES:
        if not path.is_file():
            raise InputFileError(f"{path} does not exist: give an MRC file")
        return _open_mrc(path)
    hdf5 = _HDF5_PATH.match(text)
    if hdf5 is not None:
        file = Path(hdf5["file"])
        if not file.is_file():
            raise InputFileError(f"{file} does not exist: give an HDF5 file as FILE.h5:/path/to/dataset")
        return _open_hdf5(file, (hdf5["dataset"] or "").strip("/") or None)
    n5 = _N5_PATH.match(text.rstrip("/"))
    if n5 is not None:
        container = Path(n5["container"])
        if not container.is_dir():
            raise InputFileError(f"{container} does not exist: give an N5 dataset as CONTAINER.n5/path/to/dataset")
        return _open_n5(container, (n5["dataset"] or "").strip("/"))
    if path.is_dir() and is_ome_zarr(path):
        return _open_ome_zarr(path)
    return open_stack(path, pattern)


def source_label(source: VolumeSource) -> str:
    """What the provenance records as the source: the absolute path, with the dataset inside the file."""
    where = str(source.path.resolve())
    if isinstance(source, Hdf5Source):
        return f"{where}:/{source.dataset}"
    if isinstance(source, N5Source):
        return f"{where}/{source.dataset}"
    return where


def source_geometry(source: VolumeSource) -> Geometry:
    """The voxel size and offset ``source``'s metadata records (OME-TIFF's physical sizes for a TIFF)."""
    if isinstance(source, TiffStack):
        name = source.path.name.lower()
        if source.path.is_file() and name.endswith((".ome.tif", ".ome.tiff")):
            return ome_tiff_geometry(source.path)
        return Geometry()
    return getattr(source, "geometry", Geometry())
