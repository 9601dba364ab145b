"""``incasem export`` to one OME-TIFF or MRC file: the values, the geometry, and never a lost file."""

from __future__ import annotations

import numpy as np
import pytest

from incasem.cli import main
from incasem.errors import DatasetExistsError, ExportFolderError, InvalidValueError
from incasem.monitor import JobCancelled, JobMonitor, watching
from incasem.preprocess.convert import tiff_to_zarr
from incasem.preprocess.export_file import zarr_to_file
from tests.helpers import QUIET, error_line, write_volume


@pytest.fixture
def cell(tmp_path, lucchi_crop):
    """Real EM at 8 x 4 x 4 nm with an offset, its mito labels (0/1) and instance ids (uint32)."""
    container = tmp_path / "cell.zarr"
    em, mito = lucchi_crop
    write_volume(container, "volumes/raw", em, (16, 48, 56), offset_nm=(16, 8, 4), voxel_size=(8, 4, 4))
    write_volume(container, "volumes/labels/mito", (mito != 0).astype(np.uint8), (16, 48, 56), offset_nm=(16, 8, 4), voxel_size=(8, 4, 4))
    write_volume(container, "volumes/instances", (mito != 0).astype(np.uint32) * 70000, (16, 48, 56), offset_nm=(16, 8, 4), voxel_size=(8, 4, 4))
    return container


@pytest.mark.parametrize("name", ["cell.ome.tif", "cell.mrc"])
def test_a_file_export_holds_the_values_and_the_geometry_and_converts_back(cell, tmp_path, lucchi_crop, name):
    summary = zarr_to_file(cell, "volumes/raw", tmp_path / name, run=QUIET)
    assert summary.files == 40 and summary.dtype == np.uint8
    back = tiff_to_zarr(tmp_path / name, tmp_path / "back.zarr", run=QUIET)  # the file's own geometry
    assert np.array_equal(back.read(), lucchi_crop[0]) and back.voxel_size == (8, 4, 4)
    assert back.offset_nm == ((16, 8, 4) if name.endswith(".mrc") else (0, 0, 0))  # OME-TIFF keeps no offset here


def test_the_files_read_in_fiji_and_imod_terms(cell, tmp_path):
    import mrcfile
    import tifffile

    zarr_to_file(cell, "volumes/raw", tmp_path / "cell.ome.tif", run=QUIET)
    with tifffile.TiffFile(tmp_path / "cell.ome.tif") as tiff:
        assert tiff.is_ome and tiff.is_bigtiff and len(tiff.pages) == 40
        assert 'PhysicalSizeX="0.004"' in tiff.ome_metadata and 'PhysicalSizeZ="0.008"' in tiff.ome_metadata
    zarr_to_file(cell, "volumes/raw", tmp_path / "cell.mrc", run=QUIET)
    with mrcfile.open(tmp_path / "cell.mrc", permissive=False) as mrc:  # a valid MRC2014 file
        assert mrc.header.mode == 0 and float(mrc.voxel_size.z) == pytest.approx(80) and float(mrc.voxel_size.x) == pytest.approx(40)
        assert (tmp_path / "cell.mrc").read_bytes()[152:156] == b"IMOD"  # with IMOD's stamp: its bytes are unsigned


def test_labels_become_0_255_and_ids_mrc_cannot_hold_are_refused(cell, tmp_path, lucchi_crop):
    zarr_to_file(cell, "volumes/labels/mito", tmp_path / "mito.mrc", run=QUIET)
    back = tiff_to_zarr(tmp_path / "mito.mrc", tmp_path / "back.zarr", run=QUIET)
    assert set(np.unique(back.read())) <= {0, 255} and np.array_equal(back.read() == 255, lucchi_crop[1] != 0)
    with pytest.raises(InvalidValueError, match="MRC holds 8- and 16-bit"):
        zarr_to_file(cell, "volumes/instances", tmp_path / "ids.mrc", rescale=None, run=QUIET)
    assert not (tmp_path / "ids.mrc").exists()
    zarr_to_file(cell, "volumes/instances", tmp_path / "ids.ome.tif", rescale=None, run=QUIET)  # OME-TIFF holds them
    assert tiff_to_zarr(tmp_path / "ids.ome.tif", tmp_path / "ids.zarr", run=QUIET).read().max() == 70000


def test_files_of_others_are_never_replaced_and_earlier_exports_only_when_asked(cell, tmp_path, capsys):
    foreign = tmp_path / "mine.mrc"
    foreign.write_bytes(b"my own data")
    for mode in ("create", "overwrite"):
        with pytest.raises(DatasetExistsError):
            zarr_to_file(cell, "volumes/raw", foreign, mode=mode, run=QUIET)
    assert foreign.read_bytes() == b"my own data"
    zarr_to_file(cell, "volumes/raw", tmp_path / "out.ome.tif", run=QUIET)
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        zarr_to_file(cell, "volumes/raw", tmp_path / "out.ome.tif", run=QUIET)
    zarr_to_file(cell, "volumes/labels/mito", tmp_path / "out.ome.tif", mode="overwrite", run=QUIET)  # its own earlier export
    with pytest.raises(ExportFolderError, match="inside the container"):
        zarr_to_file(cell, "volumes/raw", cell / "volumes" / "x.mrc", run=QUIET)
    assert main(["export", str(cell), str(foreign), "--overwrite"]) == 1
    assert "not written by incasem export" in error_line(capsys)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_the_command_line_writes_each_kind_by_its_name_and_a_cancel_leaves_nothing(cell, tmp_path, capsys):
    assert main(["export", str(cell), str(tmp_path / "raw.mrc"), "-q"]) == 0
    assert main(["export", str(cell), str(tmp_path / "slices"), "-q"]) == 0  # a folder of TIFF slices, as before
    assert (tmp_path / "raw.mrc").is_file() and len(list((tmp_path / "slices").glob("*.tif"))) == 40
    monitor = JobMonitor()
    monitor.cancel()
    with pytest.raises(JobCancelled), watching(monitor):
        zarr_to_file(cell, "volumes/raw", tmp_path / "cancelled.ome.tif", run=QUIET)
    assert not (tmp_path / "cancelled.ome.tif").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
