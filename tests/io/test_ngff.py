"""OME-NGFF metadata of incasem's datasets, checked with an independent OME-Zarr reader (ome-zarr-py).

The containers are written with incasem's own API (``create_volume``), then the
geometry is published on the parent groups with ``publish_ngff`` (idempotent, so
these tests hold whether or not ``create_volume`` already calls it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from incasem.io.metadata import DatasetRef, read_geometry
from incasem.io.ngff import (
    ngff_entries,
    ngff_geometry,
    publish_container_ngff,
    publish_ngff,
)
from incasem.io.volume import create_volume, open_container, open_volume

ome_reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr (the `test` extra) is not installed")
ome_io = pytest.importorskip("ome_zarr.io")
ome_format = pytest.importorskip("ome_zarr.format")

RAW = ("volumes/raw", (6, 8, 10), "uint8", (50, 4.6, 4.6), (0, 460, 32.2))  # 4.6 nm, offset 100 and 7 voxels
LABELS = ("volumes/labels/mito", (6, 8, 10), "uint8", (50, 4.6, 4.6), (0, 460, 32.2))
PREDICTION = ("volumes/predictions/demo_model/0001/segmentation", (4, 6, 8), "uint8", (5, 5, 5), (10, 20, 30))
NANOMETRE_AXES = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]


def write(path: Path, name: str, shape, dtype, voxel_size, offset_nm, fill: int = 1) -> None:
    """Write a dataset with incasem's API and publish its OME-NGFF image."""
    volume = create_volume(path, name, shape, dtype, voxel_size, offset_nm)
    volume.write(volume.roi, np.full(shape, fill, dtype))
    volume.mark_complete()
    publish_ngff(open_container(path, "r+"), name, voxel_size, offset_nm)


def read_images(url: Path) -> list:
    """The nodes ome-zarr-py finds at ``url`` (the first is the image it shows)."""
    location = ome_io.parse_url(str(url))
    assert location is not None, f"ome-zarr finds no zarr at {url}"
    return list(ome_reader.Reader(location)())


def assert_image(node, name: str, shape, voxel_size, offset_nm) -> None:
    """ome-zarr-py's view of one image: name, axes, shape, scale and translation."""
    assert node.metadata["name"] == name
    assert node.metadata["axes"] == NANOMETRE_AXES
    assert len(node.data) == 1 and node.data[0].shape == tuple(shape)
    transforms = node.metadata["coordinateTransformations"]
    ome_format.FormatV04().validate_coordinate_transformations(3, 1, transforms)  # raises if not spec-conformant
    assert transforms == [[{"type": "scale", "scale": list(voxel_size)}, {"type": "translation", "translation": list(offset_nm)}]]


@pytest.fixture
def cell(tmp_path):
    path = tmp_path / "cell.zarr"
    for spec in (RAW, LABELS, PREDICTION):
        write(path, *spec)
    return path


def test_reader_finds_raw_labels_and_prediction_with_their_geometry(cell):
    """ome-zarr-py opens each dataset's parent group as an image with z, y, x in nm, scale and translation."""
    (raw, hidden_labels), labels, prediction = (
        read_images(cell / "volumes"),
        read_images(cell / "volumes" / "labels"),
        read_images(cell / "volumes" / "predictions" / "demo_model" / "0001"),
    )
    name, shape, _, voxel_size, offset_nm = RAW
    assert_image(raw, name, shape, voxel_size, offset_nm)
    assert raw.visible and (np.asarray(raw.data[0]) == 1).all()
    # the reader also walks volumes/labels (OME-NGFF's place for an image's labels), hidden
    assert not hidden_labels.visible and hidden_labels.metadata["name"] == "volumes/labels/mito"
    name, shape, _, voxel_size, offset_nm = LABELS
    assert_image(labels[0], name, shape, voxel_size, offset_nm)
    name, shape, _, voxel_size, offset_nm = PREDICTION
    assert_image(prediction[0], name, shape, voxel_size, offset_nm)
    assert len(prediction) == 1


def test_non_whole_nanometres_are_written_exactly(cell):
    text = (cell / "volumes" / ".zattrs").read_text()
    assert "4.6" in text and "32.2" in text and "4.599" not in text and "32.19" not in text
    (entry,) = json.loads(text)["multiscales"]
    assert entry["version"] == "0.4" and entry["datasets"][0]["path"] == "raw"
    scale, translation = entry["datasets"][0]["coordinateTransformations"]
    assert scale["scale"] == [50, 4.6, 4.6] and translation["translation"] == [0, 460, 32.2]
    # the original's attributes stay on the array, exactly
    attrs = json.loads((cell / "volumes" / "raw" / ".zattrs").read_text())
    assert attrs["resolution"] == [50, 4.6, 4.6] and attrs["offset"] == [0, 460, 32.2]
    assert ngff_geometry(json.loads(text), "raw") == ((50, 4.6, 4.6), (0, 460, 32.2))
    assert open_volume(cell, "volumes/raw").voxel_size == (50, 4.6, 4.6)


def test_second_dataset_in_a_group_is_a_second_entry_selectable_by_name(cell):
    write(cell, "volumes/raw_equalized_0.02", (6, 8, 10), "uint8", (50, 4.6, 4.6), (0, 460, 32.2), fill=9)
    write(cell, "volumes/mask", (3, 4, 5), "uint8", (100, 9.2, 9.2), (0, 460, 27.6), fill=255)
    entries = json.loads((cell / "volumes" / ".zattrs").read_text())["multiscales"]
    assert [e["name"] for e in entries] == ["volumes/raw", "volumes/raw_equalized_0.02", "volumes/mask"]
    # readers show the first image; the spec's selection by name finds the others
    assert read_images(cell / "volumes")[0].metadata["name"] == "volumes/raw"
    location = ome_io.parse_url(str(cell / "volumes"))
    for wanted, fill, shape in (("volumes/mask", 255, (3, 4, 5)), ("volumes/raw_equalized_0.02", 9, (6, 8, 10))):
        (entry,) = [e for e in location.root_attrs["multiscales"] if e["name"] == wanted]
        data = location.load(entry["datasets"][0]["path"])
        assert data.shape == shape and (np.asarray(data) == fill).all()


def test_replaced_dataset_keeps_one_entry_in_its_place_and_gone_ones_are_dropped(cell):
    write(cell, "volumes/labels/er", (6, 8, 10), "uint8", (50, 4.6, 4.6), (0, 460, 32.2))
    group = open_container(cell, "r+")
    del group["volumes/labels/mito"]  # what create_volume's overwrite does before re-creating
    write(cell, "volumes/labels/mito", (2, 3, 4), "uint16", (10, 10, 10), (100, 0, 0))
    entries = json.loads((cell / "volumes" / "labels" / ".zattrs").read_text())["multiscales"]
    assert [e["name"] for e in entries] == ["volumes/labels/mito", "volumes/labels/er"]
    assert_image(read_images(cell / "volumes" / "labels")[0], "volumes/labels/mito", (2, 3, 4), (10, 10, 10), (100, 0, 0))
    publish_ngff(open_container(cell, "r+"), "volumes/labels/mito")  # again: nothing changes
    assert json.loads((cell / "volumes" / "labels" / ".zattrs").read_text())["multiscales"] == entries
    del group["volumes/labels/mito"]
    publish_ngff(open_container(cell, "r+"), "volumes/labels/er")
    entries = json.loads((cell / "volumes" / "labels" / ".zattrs").read_text())["multiscales"]
    assert [e["name"] for e in entries] == ["volumes/labels/er"]


def test_labels_group_below_an_image_says_it_is_one(cell):
    """OME-NGFF's `labels` group under an image lists label-image groups; incasem's lists none."""
    attrs = json.loads((cell / "volumes" / "labels" / ".zattrs").read_text())
    assert attrs["labels"] == []


def test_other_tools_entries_are_kept(tmp_path):
    path = tmp_path / "cell.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for level in ("0", "1"):
        group.create_array(f"pyramid/{level}", shape=(4, 4, 4), dtype="uint8")
    foreign = {
        "version": "0.4",
        "name": "theirs",
        "axes": NANOMETRE_AXES,
        "datasets": [{"path": level, "coordinateTransformations": [{"type": "scale", "scale": [s, s, s]}]} for level, s in (("0", 1), ("1", 2))],
    }
    group["pyramid"].attrs["multiscales"] = [foreign]
    write(path, "pyramid/ours", (4, 4, 4), "uint8", (5, 5, 5), (0, 0, 0))
    entries = json.loads((path / "pyramid" / ".zattrs").read_text())["multiscales"]
    assert entries[0] == foreign and entries[1]["name"] == "pyramid/ours"


def test_zarr_v3_container_gets_ome_ngff_0_5(tmp_path):
    path = tmp_path / "v3.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=3)
    write(path, *RAW)
    attributes = json.loads((path / "volumes" / "zarr.json").read_text())["attributes"]
    assert attributes["ome"]["version"] == "0.5" and "multiscales" not in attributes
    assert "version" not in attributes["ome"]["multiscales"][0]
    name, shape, _, voxel_size, offset_nm = RAW
    assert_image(read_images(path / "volumes")[0], name, shape, voxel_size, offset_nm)


def test_original_container_is_published_as_a_whole(tmp_path):
    """A cell written by the original incasem (resolution/offset only) becomes readable by OME-Zarr tools."""
    path = tmp_path / "cell_6.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for name, offset in (("volumes/raw_equalized_0.02", [100, 200, 300]), ("volumes/labels/er", [100, 200, 300])):
        group.create_array(name, shape=(4, 6, 8), dtype="uint8").attrs.update({"resolution": [5, 5, 5], "offset": offset})
    group.create_array("volumes/notes", shape=(3,), dtype="uint8")  # not a 3D dataset: left alone
    assert publish_container_ngff(open_container(path, "r+")) == ["volumes", "volumes/labels"]
    assert_image(read_images(path / "volumes")[0], "volumes/raw_equalized_0.02", (4, 6, 8), (5, 5, 5), (100, 200, 300))
    assert_image(read_images(path / "volumes" / "labels")[0], "volumes/labels/er", (4, 6, 8), (5, 5, 5), (100, 200, 300))


def test_read_geometry_reads_an_old_array_level_entry_and_the_originals_attributes_win():
    ref = DatasetRef(Path("old.zarr"), "volumes/raw")
    old = {
        "multiscales": [
            {
                "version": "0.4",
                "name": "volumes/raw",
                "axes": NANOMETRE_AXES,
                "datasets": [
                    {
                        "path": ".",
                        "coordinateTransformations": [{"type": "scale", "scale": [50, 4.6, 4.6]}, {"type": "translation", "translation": [0, 460, 32.2]}],
                    }
                ],
            }
        ]
    }
    assert read_geometry(old, ref) == ((50, 4.6, 4.6), (0, 460, 32.2))
    assert read_geometry({**old, "resolution": [5, 5, 5], "offset": [10, 10, 10]}, ref) == ((5, 5, 5), (10, 10, 10))
    assert read_geometry({**old, "resolution": [5, 5, 5]}, ref) == ((5, 5, 5), (0, 0, 0))


def test_old_container_with_array_level_entries_opens(tmp_path):
    """A dataset written by an earlier incasem: array-level `multiscales` only."""
    path = tmp_path / "old.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("volumes/raw", shape=(4, 6, 8), dtype="uint8")
    array.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "volumes/raw",
            "axes": NANOMETRE_AXES,
            "datasets": [
                {"path": ".", "coordinateTransformations": [{"type": "scale", "scale": [50, 4.6, 4.6]}, {"type": "translation", "translation": [0, 460, 32.2]}]}
            ],
        }
    ]
    volume = open_volume(path, "volumes/raw")
    assert volume.voxel_size == (50, 4.6, 4.6) and volume.offset_nm == (0, 460, 32.2)
    publish_container_ngff(open_container(path, "r+"))
    assert_image(read_images(path / "volumes")[0], "volumes/raw", (4, 6, 8), (50, 4.6, 4.6), (0, 460, 32.2))


WORKER = textwrap.dedent(
    """
    import random, sys, time
    from pathlib import Path
    import incasem.io.ngff as ngff
    from incasem.io.volume import create_volume, open_container
    path, name, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    rebuilt = ngff._rebuilt

    def slow_rebuilt(*args):  # widen the window between reading a group and writing it
        attrs = rebuilt(*args)
        time.sleep(random.uniform(0, 0.05))
        return attrs

    ngff._rebuilt = slow_rebuilt
    while not go.exists():
        time.sleep(0.005)
    for suffix in ("", "_b"):
        create_volume(path, name + suffix, (2, 2, 2), "uint8", (5, 5, 5), (0, 0, 0))
        ngff.publish_ngff(open_container(path, "r+"), name + suffix)
    """
)


def test_concurrent_writers_lose_no_entry(tmp_path):
    """Jobs creating datasets at once, in one group and in different groups: every entry is there once."""
    path, go = tmp_path / "cell.zarr", tmp_path / "go"
    write(path, *RAW)
    write(path, "volumes/labels/mito", (2, 2, 2), "uint8", (5, 5, 5), (0, 0, 0))  # groups exist before the race
    names = [f"volumes/labels/organelle_{i}" for i in range(6)]
    names += [f"volumes/predictions/demo_model/{i:04d}/segmentation" for i in (1, 2, 3)]  # each writes name, name_b
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), name, str(go)]) for name in names]
    time.sleep(0.5)  # let them start (imports) and wait on the signal
    go.touch()
    assert [worker.wait(timeout=120) for worker in workers] == [0] * len(workers)
    labels = json.loads((path / "volumes" / "labels" / ".zattrs").read_text())["multiscales"]
    assert sorted(e["name"] for e in labels) == sorted(["volumes/labels/mito", *names[:6], *(f"{n}_b" for n in names[:6])])
    for name in names[6:]:
        group = name.rsplit("/", 1)[0]
        entries = ngff_entries(json.loads((path / group / ".zattrs").read_text()))
        assert [entry["name"] for entry in entries] == [name, f"{name}_b"]
    assert [e["name"] for e in json.loads((path / "volumes" / ".zattrs").read_text())["multiscales"]] == ["volumes/raw"]


def test_publish_refuses_what_is_not_a_3d_dataset_and_geometry_that_contradicts_the_array(cell):
    group = open_container(cell, "r+")
    for name in ("volumes", "volumes/nothing", "", "volumes/labels"):
        with pytest.raises(ValueError):
            publish_ngff(group, name)
    with pytest.raises(ValueError, match="records voxel size"):
        publish_ngff(group, "volumes/raw", (50, 4.6, 4.6), (0, 0, 0))
    publish_ngff(group, "/volumes//raw/", voxel_size=(50, 4.6, 4.6))  # agrees: fine


def test_an_array_without_geometry_attributes_is_published_with_the_given_one(tmp_path):
    path = tmp_path / "cell.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("volumes/raw", shape=(4, 6, 8), dtype="uint8")
    publish_ngff(group, "volumes/raw")  # nothing to publish: no geometry known
    assert ngff_entries(group["volumes"].attrs.asdict()) == []
    publish_ngff(group, "volumes/raw", (5, 5, 5), (10, 0, 0))
    assert_image(read_images(path / "volumes")[0], "volumes/raw", (4, 6, 8), (5, 5, 5), (10, 0, 0))


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_writer_waits_while_another_holds_the_group(tmp_path):
    """Mutual exclusion across processes: a publisher blocks while the group is locked, then adds its entry."""
    from incasem.io.ngff import _locked

    path, go = tmp_path / "cell.zarr", tmp_path / "go"
    write(path, *LABELS)
    go.touch()
    group = open_container(path, "r+")["volumes/labels"]
    with _locked(group):
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(path), "volumes/labels/er", str(go)])
        deadline = time.monotonic() + 60
        while not (path / "volumes" / "labels" / "er").is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert worker.poll() is None, "the worker published while the group was locked"
        assert [e["name"] for e in ngff_entries(group.attrs.asdict())] == ["volumes/labels/mito"]
    assert worker.wait(timeout=60) == 0
    entries = json.loads((path / "volumes" / "labels" / ".zattrs").read_text())["multiscales"]
    assert [e["name"] for e in entries] == ["volumes/labels/mito", "volumes/labels/er", "volumes/labels/er_b"]
