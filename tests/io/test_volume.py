"""Datasets in zarr containers: geometry, regions, padding, creation rules."""

import json

import numpy as np
import pytest
import zarr

from incasem.errors import (
    DatasetExistsError,
    DatasetMismatchError,
    DatasetNotFoundError,
    InvalidValueError,
    NotAContainerError,
    RoiError,
    VoxelSizeError,
)
from incasem.geometry import Roi, nm_to_voxels, voxels_to_nm
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.volume import create_volume, list_volumes, open_volume, set_geometry


@pytest.fixture
def data():
    return np.random.default_rng(0).integers(0, 255, (12, 20, 24), dtype=np.uint8)


@pytest.fixture
def container(tmp_path, data):
    path = tmp_path / "cell.zarr"
    volume = create_volume(path, "volumes/raw", data.shape, "uint8", (5, 4, 4), (50, 8, 0), chunks=(4, 8, 8))
    volume.write(volume.roi, data)
    volume.mark_complete()
    return path


def test_original_v2_attributes_are_read_as_they_are(tmp_path):
    """A container laid out like the original's published cells (zarr v2, resolution/offset in nm)."""
    group = zarr.open_group(str(tmp_path / "cell_6.zarr"), mode="w", zarr_format=2)
    array = group.create_array("volumes/raw_equalized_0.02", shape=(4, 6, 8), chunks=(2, 3, 4), dtype="uint8")
    array.attrs.update({"resolution": [5, 5, 5], "offset": [100, 200, 300]})
    array[:] = 7
    volume = open_volume(tmp_path / "cell_6.zarr", "volumes/raw_equalized_0.02")
    assert volume.voxel_size == (5, 5, 5) and volume.offset_nm == (100, 200, 300)
    assert volume.roi == Roi((20, 40, 60), (4, 6, 8))
    assert volume.complete
    assert (volume.read(Roi((21, 41, 61), (2, 2, 2))) == 7).all()


def test_zarr_v3_container(tmp_path):
    group = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    array = group.create_array("volumes/raw", shape=(4, 6, 8), chunks=(2, 3, 4), dtype="uint16")
    array.attrs.update({"resolution": [50, 4, 4], "offset": [0, 0, 0]})
    volume = open_volume(tmp_path / "v3.zarr", "volumes/raw")
    assert volume.voxel_size == (50, 4, 4) and volume.dtype == np.uint16


def test_written_geometry_has_original_and_ome_ngff_attributes(container):
    attrs = json.loads((container / "volumes" / "raw" / ".zattrs").read_text())
    assert attrs["resolution"] == [5, 4, 4] and attrs["offset"] == [50, 8, 0]
    assert "multiscales" not in attrs  # OME-NGFF puts it on the group, not on the array
    (entry,) = json.loads((container / "volumes" / ".zattrs").read_text())["multiscales"]
    assert entry["datasets"][0]["path"] == "raw"
    assert entry["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [5, 4, 4]}, {"type": "translation", "translation": [50, 8, 0]}]
    assert [axis["unit"] for axis in entry["axes"]] == ["nanometer"] * 3


def test_read_by_voxel_and_world_region(container, data):
    volume = open_volume(container, "volumes/raw")
    assert volume.roi == Roi((10, 2, 0), (12, 20, 24))
    region = Roi((12, 5, 3), (3, 4, 5))
    np.testing.assert_array_equal(volume.read(region), data[2:5, 3:7, 3:8])
    world_offset = voxels_to_nm(region.offset, volume.voxel_size)
    assert world_offset == (60, 20, 12)
    np.testing.assert_array_equal(volume.read(Roi(nm_to_voxels(world_offset, volume.voxel_size), region.shape)), data[2:5, 3:7, 3:8])


def test_read_outside_needs_padding(container, data):
    volume = open_volume(container, "volumes/raw")
    region = volume.roi.grow(2)
    with pytest.raises(RoiError, match="reaches outside"):
        volume.read(region)
    np.testing.assert_array_equal(volume.read(region, padding="reflect"), np.pad(data, 2, mode="reflect"))
    np.testing.assert_array_equal(volume.read(region, padding="constant", fill_value=3), np.pad(data, 2, constant_values=3))


def test_existing_dataset_rules(container, data):
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        create_volume(container, "volumes/raw", data.shape, "uint8", (5, 4, 4), (50, 8, 0))
    with pytest.raises(DatasetMismatchError, match="dtype"):
        create_volume(container, "volumes/raw", data.shape, "uint16", (5, 4, 4), (50, 8, 0), mode="resume")
    resumed = create_volume(container, "volumes/raw", data.shape, "uint8", (5, 4, 4), (50, 8, 0), mode="resume")
    np.testing.assert_array_equal(resumed.read(), data)
    with pytest.raises(DatasetExistsError, match="not replace"):  # not written by an incasem job of this kind
        create_volume(container, "volumes/raw", (2, 2, 2), "uint8", (5, 4, 4), mode="overwrite", job={"job": "test"})
    create_volume(container, "volumes/out", (3, 3, 3), "uint8", (5, 4, 4), job={"job": "test", "value": 1})
    fresh = create_volume(container, "volumes/out", (2, 2, 2), "uint8", (5, 4, 4), mode="overwrite", job={"job": "test"})
    assert fresh.shape == (2, 2, 2) and not fresh.complete
    np.testing.assert_array_equal(open_volume(container, "volumes/raw").read(), data)


@pytest.mark.parametrize("mode", ["append", "Overwrite", "", None, True])
def test_bad_write_mode_is_one_line_before_anything_is_written(tmp_path, mode):
    with pytest.raises(InvalidValueError, match="write mode must be 'create', 'overwrite'") as error:
        create_volume(tmp_path / "new.zarr", "volumes/raw", (2, 2, 2), "uint8", (1, 1, 1), mode=mode)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "new.zarr").exists()


def test_every_created_dataset_carries_one_provenance_record(tmp_path, container, monkeypatch):
    monkeypatch.setattr("sys.argv", ["incasem", "job", "--flag"])
    job = {"job": "test", "value": 1}
    out = create_volume(container, "volumes/out", (2, 2, 2), "uint8", (5, 4, 4), job=job, reads=["volumes//raw/"],
                        inputs=["/data/stack"], details={"model": "m"})  # fmt: skip
    record = out.array.attrs[PROVENANCE_KEY]
    assert record["command"] == "incasem job --flag" and record["job"] == job and record["model"] == "m"
    assert record["inputs"] == [f"{container.resolve()}/volumes/raw", "/data/stack"]
    assert record["created"].endswith("+00:00") and record["incasem_version"]
    monkeypatch.setattr("sys.argv", ["incasem", "again"])
    resumed = create_volume(container, "volumes/out", (2, 2, 2), "uint8", (5, 4, 4), job=job, mode="resume")
    assert resumed.array.attrs[PROVENANCE_KEY] == record, "resuming keeps the record of the run that created it"


def test_incomplete_dataset_is_refused_as_input(tmp_path):
    create_volume(tmp_path / "c.zarr", "volumes/raw", (2, 2, 2), "uint8", (1, 1, 1))
    with pytest.raises(DatasetMismatchError, match="interrupted"):
        open_volume(tmp_path / "c.zarr", "volumes/raw")


def test_missing_things_name_themselves(tmp_path, container):
    with pytest.raises(NotAContainerError, match=r"nothing\.zarr"):
        open_volume(tmp_path / "nothing.zarr", "volumes/raw")
    with pytest.raises(DatasetNotFoundError, match=r"volumes/labels/mito.*volumes/raw"):
        open_volume(container, "volumes/labels/mito")
    with pytest.raises(VoxelSizeError, match="multiple"):
        create_volume(tmp_path / "d.zarr", "x", (2, 2, 2), "uint8", (5, 5, 5), (3, 0, 0))


def test_set_geometry_and_list(container):
    set_geometry(container, "volumes/raw", voxel_size=(10, 8, 8), offset_nm=(0, 0, 0))
    (volume,) = list_volumes(container)
    assert volume.voxel_size == (10, 8, 8) and volume.offset_nm == (0, 0, 0)
    with pytest.raises(VoxelSizeError):
        set_geometry(container, "volumes/raw", offset_nm=(5, 0, 0))
