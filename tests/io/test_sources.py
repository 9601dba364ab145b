"""``incasem convert`` from MRC, HDF5, N5, OME-Zarr and OME-TIFF: real EM saved in each format by the test itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from incasem.cli import main
from incasem.errors import InputFileError
from incasem.io.volume import open_volume
from incasem.monitor import JobCancelled, JobMonitor, watching
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from tests.helpers import QUIET, error_line


def _mrc(path: Path, data: np.ndarray, voxel_size_nm=(8, 4, 4), origin_nm=(0, 0, 0)) -> str:
    """An MRC file of ``data``; uint8 as IMOD writes it (mode 0, no "signed bytes" flag)."""
    import mrcfile

    from incasem.io.sources import IMOD_STAMP

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data.view(np.int8) if data.dtype == np.uint8 else data)
        if data.dtype == np.uint8:  # IMOD's stamp and no flags, at header bytes 152-159
            extra = bytearray(mrc.header.extra2.tobytes())
            extra[40:48] = np.array([IMOD_STAMP, 0], dtype="<i4").tobytes()
            mrc.header.extra2 = np.frombuffer(bytes(extra), dtype=mrc.header.extra2.dtype)
        mrc.voxel_size = tuple(10 * v for v in voxel_size_nm[::-1])  # x, y, z in Å
        mrc.header.origin = tuple(10 * v for v in origin_nm[::-1])
    return str(path)


def _hdf5(path: Path, data: np.ndarray, chunked: bool, **attrs) -> str:
    import h5py

    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("volumes/raw", data=data, chunks=(8, 32, 32) if chunked else None, compression="gzip" if chunked else None)
        dataset.attrs.update(attrs)
        file.create_dataset("volumes/labels/mito", data=data > 128)
    return f"{path}:/volumes/raw"


def _n5(path: Path, data: np.ndarray, **attrs) -> str:
    import tensorstore

    z, y, x = data.shape
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "path": "em/fibsem-uint8",
        "metadata": {"dimensions": [x, y, z], "blockSize": [64, 64, 16], "dataType": "uint8", "compression": {"type": "gzip"}},
        "create": True,
    }
    store = tensorstore.open(spec).result()
    store.T[...] = data  # N5 lists x, y, z, as Janelia's tools write it
    attributes = path / "em" / "fibsem-uint8" / "attributes.json"
    attributes.write_text(json.dumps({**json.loads(attributes.read_text()), **attrs}))
    return str(path / "em" / "fibsem-uint8")


def _ome_zarr(path: Path, data: np.ndarray, five_d: bool = False, unit: str = "micrometer", zarr_format: int = 2) -> str:
    """An OME-Zarr image of two levels: OME-NGFF 0.4 on zarr v2, 0.5 (under ``ome``) on zarr v3."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("0", data=data[np.newaxis, np.newaxis] if five_d else data, chunks=(1, 1, 8, 32, 32) if five_d else (8, 32, 32))
    group.create_array("1", data=data[:, ::2, ::2] if not five_d else data[np.newaxis, np.newaxis, :, ::2, ::2])  # a coarser level
    spatial = [{"name": axis, "type": "space", "unit": unit} for axis in "zyx"]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, *spatial] if five_d else spatial
    lead = [1.0, 1.0] if five_d else []
    factor = 1e-3 if unit == "micrometer" else 1.0
    datasets = [
        {
            "path": "0",
            "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, *(v * factor for v in (8, 4, 4))]},
                {"type": "translation", "translation": [*[0.0] * len(lead), *(v * factor for v in (16, 8, 0))]},
            ],
        },
        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [*lead, *(v * factor for v in (8, 8, 8))]}]},
    ]
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", "name": "em", "axes": axes, "datasets": datasets}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "em", "axes": axes, "datasets": datasets}]}
    return str(path)


def _ome_tiff(path: Path, data: np.ndarray) -> str:
    import tifffile

    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 0.008, "PhysicalSizeY": 0.004, "PhysicalSizeX": 0.004})
    return str(path)


#: Each format, how the test saves the EM into it, and the geometry (voxel size, offset, nm) its metadata gives.
FORMATS = {
    "mrc": (lambda folder, em: _mrc(folder / "cell.mrc", em, origin_nm=(16, 8, 0)), ((8, 4, 4), (16, 8, 0))),
    "hdf5 chunked": (lambda folder, em: _hdf5(folder / "cell.h5", em, True, resolution=[8, 4, 4], offset=[16, 8, 0]), ((8, 4, 4), (16, 8, 0))),
    "hdf5 contiguous, ilastik": (lambda folder, em: _hdf5(folder / "cell.hdf5", em, False, element_size_um=[0.008, 0.004, 0.004]), ((8, 4, 4), (0, 0, 0))),
    "n5": (
        lambda folder, em: _n5(folder / "cell.n5", em, pixelResolution={"dimensions": [4.0, 4.0, 8.0], "unit": "nm"}, offset=[0, 8, 16]),
        ((8, 4, 4), (16, 8, 0)),
    ),
    "ome-zarr": (lambda folder, em: _ome_zarr(folder / "cell.ome.zarr", em), ((8, 4, 4), (16, 8, 0))),
    "ome-zarr tczyx": (lambda folder, em: _ome_zarr(folder / "cell.ome.zarr", em, five_d=True), ((8, 4, 4), (16, 8, 0))),
    "ome-zarr 0.5 (zarr v3)": (lambda folder, em: _ome_zarr(folder / "cell.ome.zarr", em, zarr_format=3), ((8, 4, 4), (16, 8, 0))),
    "ome-tiff": (lambda folder, em: _ome_tiff(folder / "cell.ome.tif", em), ((8, 4, 4), (0, 0, 0))),
}


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_converts_with_its_values_and_geometry(kind, lucchi_crop, tmp_path):
    em = lucchi_crop[0]
    source = FORMATS[kind][0](tmp_path, em)
    volume = tiff_to_zarr(source, tmp_path / "out.zarr", options=ConvertOptions(chunks=(16, 64, 64)), run=QUIET)
    assert np.array_equal(volume.read(), em) and volume.dtype == em.dtype
    assert (volume.voxel_size, volume.offset_nm) == FORMATS[kind][1]
    assert volume.complete


def test_the_command_line_converts_an_hdf5_dataset_and_options_override_the_files_geometry(lucchi_crop, tmp_path, capsys):
    source = _hdf5(tmp_path / "cell.h5", lucchi_crop[0], True, resolution=[8, 4, 4])
    assert main(["convert", source, str(tmp_path / "a.zarr"), "-q"]) == 0, capsys.readouterr().err
    assert open_volume(tmp_path / "a.zarr", "volumes/raw").voxel_size == (8, 4, 4)
    assert main(["convert", source, str(tmp_path / "b.zarr"), "--voxel-size", "10,5,5", "--offset", "20,0,5", "-q"]) == 0
    volume = open_volume(tmp_path / "b.zarr", "volumes/raw")
    assert (volume.voxel_size, volume.offset_nm) == ((10, 5, 5), (20, 0, 5))
    assert volume.array.attrs["incasem_job"]["source"] == f"{(tmp_path / 'cell.h5').resolve()}:/volumes/raw"


def test_signed_and_16_bit_mrc_modes_keep_their_values(lucchi_crop, tmp_path):
    em = lucchi_crop[0]
    signed = (em.astype(np.int16) - 128).astype(np.int8)  # mode 0: signed bytes, as MRC2014 defines them
    wide = em.astype(np.uint16) * 200  # mode 6
    for name, data in (("signed.mrc", signed), ("wide.rec", wide), ("short.st", (wide.astype(np.int32) - 20000).astype(np.int16))):
        volume = tiff_to_zarr(_mrc(tmp_path / name, data), tmp_path / f"{name}.zarr", run=QUIET)
        assert volume.dtype == data.dtype and np.array_equal(volume.read(), data)


def test_a_cancelled_conversion_resumes_to_the_same_values(lucchi_crop, tmp_path):
    source, options = _hdf5(tmp_path / "cell.h5", lucchi_crop[0], True, resolution=[8, 4, 4]), ConvertOptions(chunks=(8, 96, 112))

    class CancelAfterOne(JobMonitor):
        def advanced(self, units: int = 1) -> None:
            super().advanced(units)
            self.cancel()

    with pytest.raises(JobCancelled), watching(CancelAfterOne()):
        tiff_to_zarr(source, tmp_path / "out.zarr", options=options, run=QUIET)
    assert not open_volume(tmp_path / "out.zarr", "volumes/raw", require_complete=False).complete
    volume = tiff_to_zarr(source, tmp_path / "out.zarr", options=options, mode="resume", run=QUIET)
    assert np.array_equal(volume.read(), lucchi_crop[0])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_ome_zarr_image_is_used_in_place_with_its_geometry_in_nm(lucchi_crop, tmp_path, capsys, zarr_format):
    import zarr

    image = _ome_zarr(tmp_path / "cell.ome.zarr", lucchi_crop[0], zarr_format=zarr_format)
    before = zarr.open_group(image, mode="r").attrs.asdict()
    volume = open_volume(image, "0")
    assert (volume.voxel_size, volume.offset_nm) == ((8, 4, 4), (16, 8, 0)) and np.array_equal(volume.read(), lucchi_crop[0])
    assert main(["info", image]) == 0
    assert "voxel_size=[8, 4, 4]nm  offset=[16, 8, 0]nm" in capsys.readouterr().out
    assert main(["equalize", image, "-i", "0", "-q"]) == 0  # no copy: the output lands beside the image
    equalized = open_volume(image, "volumes/raw_equalized_0.02")
    assert (equalized.voxel_size, equalized.offset_nm) == ((8, 4, 4), (16, 8, 0))
    assert zarr.open_group(image, mode="r").attrs.asdict() == before and np.array_equal(open_volume(image, "0").read(), lucchi_crop[0])


def _truncated_mrc(folder: Path, em: np.ndarray) -> str:
    path = Path(_mrc(folder / "cut.mrc", em))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def _n5_without_geometry(folder: Path, em: np.ndarray) -> str:
    return _n5(folder / "bare.n5", em)


def _several_images(folder: Path, em: np.ndarray) -> str:
    import zarr

    root = folder / "plate.ome.zarr"
    for name in ("0", "1"):
        _ome_zarr(root / name, em)
    group = zarr.open_group(str(root), mode="a", zarr_format=2)
    group.attrs["bioformats2raw.layout"] = 3
    return str(root)


def _four_d(folder: Path, em: np.ndarray) -> str:
    import h5py

    with h5py.File(folder / "rgb.h5", "w") as file:
        file.create_dataset("rgb", data=np.stack([em] * 3, axis=-1))
    return f"{folder / 'rgb.h5'}:/rgb"


def _complex_mrc(folder: Path, em: np.ndarray) -> str:
    return _mrc(folder / "complex.mrc", em.astype(np.complex64))


BAD = {
    "truncated mrc": (_truncated_mrc, "cut.mrc is not a readable MRC file"),
    "hdf5 group": (lambda folder, em: _hdf5(folder / "cell.h5", em, True).rsplit("/", 1)[0], "is a group, not a dataset"),
    "n5 without geometry": (_n5_without_geometry, "records no voxel size"),
    "several ome-zarr images": (_several_images, "holds several images"),
    "4d rgb hdf5": (_four_d, "4D"),
    "complex mrc": (_complex_mrc, "complex64"),
}


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_are_one_line_naming_the_file_with_nothing_written(kind, lucchi_crop, tmp_path, capsys):
    make, expected = BAD[kind]
    source = make(tmp_path, lucchi_crop[0][:8])
    with pytest.raises(InputFileError, match=expected):
        tiff_to_zarr(source, tmp_path / "out.zarr", run=QUIET)
    assert main(["convert", source, str(tmp_path / "out.zarr")]) == 1
    line = error_line(capsys)
    assert Path(source.split(":")[0]).name.split("/")[0] in line or "plate.ome.zarr" in line
    assert not (tmp_path / "out.zarr").exists()
