"""TIFF stack <-> zarr conversion: values, geometry, crops, mappings, bad input, interruption."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from incasem.cli import main
from incasem.errors import DatasetExistsError, DatasetMismatchError, RoiError, VoxelSizeError
from incasem.io.ngff import ngff_geometry
from incasem.io.volume import open_volume
from incasem.preprocess.convert import ConvertOptions, crop_region, tiff_to_zarr, to_uint8
from tests.helpers import DROSOPHILA, LUCCHI, QUIET, error_line, expected_uint8, require, stack_shape


def _stack(folder: Path, data: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, plane in enumerate(data):
        tifffile.imwrite(folder / f"slice_{index:03d}.tif", plane)
    return folder


@pytest.fixture
def uint16_stack(tmp_path):
    data = np.random.default_rng(3).integers(0, 2**16, (6, 9, 11), dtype=np.uint16)
    data[0, 0, :3] = [0, 1000, 65535]
    return _stack(tmp_path / "u16", data), data


# --- the one rescaling -------------------------------------------------------------------------


@given(
    st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=40),
    st.integers(0, 2**16 - 2),
    st.integers(1, 2**16 - 1),
)
def test_to_uint8_is_the_stated_formula_exactly(values, low, width):
    data = np.array(values, dtype=np.uint16).reshape(1, 1, -1)
    np.testing.assert_array_equal(to_uint8(data, low, low + width), expected_uint8(data, low, low + width))


def test_to_uint8_binary_probabilities_and_nan():
    np.testing.assert_array_equal(to_uint8(np.array([[0, 1, 1]], np.uint8), 0, 1), [[0, 255, 255]])
    probabilities = np.array([[0.0, 0.5, 1 / 255, 0.999, 1.0, np.nan, 1.5, -0.2]], np.float32)
    expected = np.floor(255 * np.clip(np.nan_to_num(probabilities.astype(np.float64)), 0, 1) + 0.5)
    np.testing.assert_array_equal(to_uint8(probabilities, 0, 1), expected)
    assert to_uint8(probabilities, 0, 1)[0, 1] == 128  # 127.5 rounds half up
    with pytest.raises(ValueError, match="LOW < HIGH"):
        to_uint8(probabilities, 1, 1)


def test_crop_region_refuses_ranges_outside():
    assert crop_region((10, 20, 30), (slice(2, None), slice(None), slice(5, 9))).shape == (8, 20, 4)
    for cut in (slice(5, 11), slice(-1, 4)):
        with pytest.raises(RoiError, match=r"z range .* is not inside the data's 0:10"):
            crop_region((10, 20, 30), (cut, slice(None), slice(None)))
    for cut in (slice(4, 4), slice(10, None)):  # empty, also once clipped to the data: said so
        with pytest.raises(RoiError, match=r"z range \d+:\d+ is empty \(the data's is 0:10\)"):
            crop_region((10, 20, 30), (cut, slice(None), slice(None)))


# --- TIFF -> zarr ------------------------------------------------------------------------------


def test_real_crop_equals_tifffile_with_geometry(tmp_path, capsys):
    files = sorted((require(LUCCHI) / "image").glob("*.tif"))
    width = tifffile.imread(files[0]).shape[1]  # all columns: more than one chunk of 128
    code = main(
        [
            "convert",
            str(LUCCHI / "image"),
            str(tmp_path / "c.zarr"),
            "--voxel-size",
            "5",
            "--offset",
            "100,0,0",
            "--z",
            "20:40",
            "--y",
            "40:190",
            "--chunks",
            "8,128,128",
        ]
    )
    assert code == 0
    assert f"volumes/raw  shape=[20, 150, {width}]  dtype=uint8" in capsys.readouterr().out
    volume = open_volume(tmp_path / "c.zarr", "volumes/raw")
    np.testing.assert_array_equal(volume.read(), tifffile.imread(files[20:40])[:, 40:190])
    assert volume.voxel_size == (5, 5, 5) and volume.chunks == (8, 128, 128)
    assert volume.offset_nm == (100 + 20 * 5, 40 * 5, 0), "a crop keeps its world position"
    attrs = json.loads((tmp_path / "c.zarr" / "volumes" / "raw" / ".zattrs").read_text())
    assert attrs["resolution"] == [5, 5, 5] and attrs["offset"] == [200, 200, 0]
    group = json.loads((tmp_path / "c.zarr" / "volumes" / ".zattrs").read_text())
    assert ngff_geometry(group, "raw") == ((5, 5, 5), (200, 200, 0))
    assert attrs["incasem_job"]["crop"] == [[20, 40], [40, 190], [0, width]]


def test_real_labels_like_raw(tmp_path, capsys):
    container = tmp_path / "c.zarr"
    _, height, width = stack_shape(LUCCHI / "image")
    crop = (slice(30, 42), slice(None), slice(None))
    tiff_to_zarr(LUCCHI / "image", container, options=ConvertOptions(voxel_size=(5, 5, 5), crop=crop, chunks=(4, 256, 256)), run=QUIET)
    assert (
        main(["convert", str(LUCCHI / "labels" / "mito"), str(container), "-d", "volumes/labels/mito", "--like", f"{container}:volumes/raw", "--z", "30:42"])
        == 0
    )
    labels = open_volume(container, "volumes/labels/mito")
    raw = open_volume(container, "volumes/raw")
    assert (labels.voxel_size, labels.offset_nm, labels.chunks) == (raw.voxel_size, raw.offset_nm, raw.chunks)
    expected = tifffile.imread(sorted((LUCCHI / "labels" / "mito").glob("*.tif"))[30:42])
    np.testing.assert_array_equal(labels.read(), expected)
    assert set(np.unique(labels.read())) == {0, 1}
    capsys.readouterr()
    # a label stack whose shape differs from the raw is refused, and nothing is written
    assert main(["convert", str(LUCCHI / "labels" / "mito"), str(container), "-d", "volumes/labels/other", "--like", str(container), "--z", "30:43"]) == 1
    line = error_line(capsys)
    assert f"has shape [13, {height}, {width}] but" in line and f"volumes/raw has [12, {height}, {width}]" in line
    assert not (container / "volumes" / "labels" / "other").exists()


def test_real_full_stack(tmp_path):
    files = sorted((require(DROSOPHILA) / "image").glob("*.tif"))
    volume = tiff_to_zarr(DROSOPHILA / "image", tmp_path / "d.zarr", options=ConvertOptions(voxel_size=(50, 5, 5)), run=QUIET)
    assert volume.shape == (len(files), *tifffile.imread(files[0]).shape) and volume.complete
    np.testing.assert_array_equal(volume.read(), tifffile.imread(files))


def test_uint16_kept(tmp_path, uint16_stack):
    folder, data = uint16_stack
    volume = tiff_to_zarr(folder, tmp_path / "c.zarr", options=ConvertOptions(voxel_size=(40, 4, 4), chunks=(4, 4, 4)), run=QUIET)
    assert volume.dtype == np.uint16
    np.testing.assert_array_equal(open_volume(tmp_path / "c.zarr", "volumes/raw").read(), data)


@pytest.mark.parametrize("argument", ["1000:60000", "minmax"])
def test_uint16_to_uint8_mapping_is_exact(tmp_path, uint16_stack, capsys, argument):
    folder, data = uint16_stack
    assert main(["convert", str(folder), str(tmp_path / "c.zarr"), "--to-uint8", argument, "--chunks", "2,4,4"]) == 0
    low, high = (1000, 60000) if argument != "minmax" else (int(data.min()), int(data.max()))
    out = capsys.readouterr()
    assert f"uint16 {low}..{high} -> uint8 0..255" in out.out
    assert "no --voxel-size given, recorded 1,1,1 nm" in out.err
    volume = open_volume(tmp_path / "c.zarr", "volumes/raw")
    assert volume.dtype == np.uint8
    np.testing.assert_array_equal(volume.read(), expected_uint8(data, low, high))


def test_minmax_range_is_found_on_the_dask_cluster(tmp_path, uint16_stack, dask_cluster):
    """--to-uint8 minmax reads the stack on the chosen scheduler and maps exactly as locally."""
    folder, data = uint16_stack
    arguments = [str(folder), str(tmp_path / "c.zarr"), "--to-uint8", "minmax", "--chunks", "2,4,4", "-q"]
    assert main(["convert", *arguments, "--scheduler", dask_cluster]) == 0
    expected = expected_uint8(data, int(data.min()), int(data.max()))
    np.testing.assert_array_equal(open_volume(tmp_path / "c.zarr", "volumes/raw").read(), expected)


def test_multipage_input(tmp_path):
    data = np.random.default_rng(4).integers(0, 255, (7, 10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    crop = (slice(2, 7), slice(None), slice(3, 12))
    volume = tiff_to_zarr(tmp_path / "stack.tif", tmp_path / "c.zarr", options=ConvertOptions(crop=crop, chunks=(2, 5, 5)), run=QUIET)
    np.testing.assert_array_equal(volume.read(), data[2:7, :, 3:])


def test_overwrite_and_resume_rules(tmp_path, uint16_stack, capsys):
    folder, data = uint16_stack
    container = tmp_path / "c.zarr"
    tiff_to_zarr(folder, container, run=QUIET)
    with pytest.raises(DatasetExistsError, match="volumes/raw exists already: pass --overwrite"):
        tiff_to_zarr(folder, container, run=QUIET)
    crop = (slice(0, 3), slice(None), slice(None))
    with pytest.raises(DatasetMismatchError, match="cannot resume"):
        tiff_to_zarr(folder, container, options=ConvertOptions(crop=crop), mode="resume", run=QUIET)
    volume = tiff_to_zarr(folder, container, options=ConvertOptions(crop=crop), mode="overwrite", run=QUIET)
    np.testing.assert_array_equal(volume.read(), data[:3])


def test_interrupted_conversion_leaves_an_incomplete_dataset_and_resumes(tmp_path, capsys):
    data = np.random.default_rng(5).integers(0, 255, (12, 16, 16), dtype=np.uint8)
    folder = _stack(tmp_path / "stack", data)
    corrupt = folder / "slice_009.tif"
    whole = corrupt.read_bytes()
    corrupt.write_bytes(whole[: len(whole) - 100])
    container = tmp_path / "c.zarr"
    args = ["convert", str(folder), str(container), "--chunks", "4,16,16", "--workers", "1"]
    assert main(args) == 1
    assert "slice_009.tif is corrupt" in error_line(capsys)
    with pytest.raises(DatasetMismatchError, match="left unfinished by an interrupted job"):
        open_volume(container, "volumes/raw")
    assert not open_volume(container, "volumes/raw", require_complete=False).complete
    corrupt.write_bytes(whole)
    assert main([*args, "--resume"]) == 0
    np.testing.assert_array_equal(open_volume(container, "volumes/raw").read(), data)


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = np.zeros((3, 8, 8), np.uint8)
    cases = {}
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = (tmp_path / "empty", "it is empty")
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "0000.png").write_bytes(b"\x89PNG\r\n")
    cases["no TIFF"] = (tmp_path / "png", "no files matching '*.tif*'")
    folder = _stack(tmp_path / "not_tiff", good)
    (folder / "slice_001.tif").write_text("text")
    cases["not a TIFF"] = (folder, "slice_001.tif is not a readable TIFF")
    folder = _stack(tmp_path / "shape", good)
    tifffile.imwrite(folder / "slice_002.tif", np.zeros((8, 9), np.uint8))
    cases["shape"] = (folder, "slice_002.tif has shape [8, 9] uint8 but slice_000.tif has [8, 8] uint8")
    folder = _stack(tmp_path / "dtype", good)
    tifffile.imwrite(folder / "slice_001.tif", np.zeros((8, 8), np.uint16))
    cases["dtype"] = (folder, "slice_001.tif has shape [8, 8] uint16")
    folder = _stack(tmp_path / "gap", good)
    (folder / "slice_001.tif").unlink()
    cases["gap"] = (folder, "slice number 1 is missing")
    return cases


CASES = ["empty folder", "no TIFF", "not a TIFF", "shape", "dtype", "gap"]


@pytest.mark.parametrize("case", CASES)
def test_bad_stack_one_line_error_nothing_written(tmp_path, capsys, case):
    folder, expected = _bad_folders(tmp_path)[case]
    assert main(["convert", str(folder), str(tmp_path / "out.zarr")]) == 1
    assert expected in error_line(capsys)
    assert not (tmp_path / "out.zarr").exists()


def test_bad_options_one_line_error_nothing_written(tmp_path, capsys, uint16_stack):
    folder, _ = uint16_stack
    out = tmp_path / "out.zarr"
    assert main(["convert", str(folder), str(out), "--z", "2:7"]) == 1
    assert "z range 2:7 is not inside the data's 0:6" in error_line(capsys)
    assert main(["convert", str(folder), str(out), "--like", str(tmp_path / "missing.zarr")]) == 1
    assert "missing.zarr is not a zarr container" in error_line(capsys)
    assert not out.exists()
    tiff_to_zarr(folder, out, run=QUIET)
    assert main(["convert", str(folder), str(out)]) == 1
    assert "exists already: pass --overwrite" in error_line(capsys)
    assert main(["convert", str(out), str(tmp_path / "again.zarr")]) == 1
    assert "is a zarr container: to write TIFF slices from it use `incasem export " in error_line(capsys)
    for option, value, message in (("--to-uint8", "9:3", "needs finite LOW < HIGH"), ("--to-uint8", "auto", "is for")):
        assert main(["convert", str(folder), str(tmp_path / "new.zarr"), option, value]) == 1  # refused by ConvertOptions
        assert message in error_line(capsys)
    assert not (tmp_path / "new.zarr").exists()


# --- round trips (the export tests are in test_export.py) --------------------------------------


def test_real_round_trip_zarr_tiff_zarr(tmp_path, capsys):
    container = tmp_path / "c.zarr"
    _, height, width = stack_shape(LUCCHI / "image")
    crop = (slice(40, 55), slice(None), slice(None))
    raw = tiff_to_zarr(LUCCHI / "image", container, options=ConvertOptions(voxel_size=(5, 5, 5), crop=crop, chunks=(8, 128, 128)), run=QUIET)
    tiff_to_zarr(LUCCHI / "labels" / "mito", container, "volumes/labels/mito", options=ConvertOptions(like=(container, "volumes/raw"), crop=crop), run=QUIET)
    assert main(["export", str(container), str(tmp_path / "raw")]) == 0
    assert main(["export", str(container), str(tmp_path / "mito"), "-d", "volumes/labels/mito"]) == 0
    out = capsys.readouterr().out
    assert f"15 slices {height}x{width} uint8 (uint8 values unchanged)" in out
    assert "(uint8 0..1 -> uint8 0..255" in out
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.tif"))[:2] == ["0000.tif", "0001.tif"]
    back = tiff_to_zarr(tmp_path / "raw", tmp_path / "back.zarr", options=ConvertOptions(like=(container, "volumes/raw")), run=QUIET)
    np.testing.assert_array_equal(back.read(), raw.read())
    mito = tifffile.imread(sorted((tmp_path / "mito").glob("*.tif")))
    np.testing.assert_array_equal(mito, open_volume(container, "volumes/labels/mito").read() * 255)


def test_console_script_round_trip(tmp_path):
    data = np.random.default_rng(7).integers(0, 255, (3, 6, 5), dtype=np.uint8)
    folder = _stack(tmp_path / "in", data)
    script = Path(sys.executable).parent / "incasem"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "incasem.cli"]
    subprocess.run([*command, "convert", str(folder), str(tmp_path / "c.zarr"), "--voxel-size", "8,4,4"], check=True)
    subprocess.run([*command, "export", str(tmp_path / "c.zarr"), str(tmp_path / "out")], check=True)
    np.testing.assert_array_equal(tifffile.imread(sorted((tmp_path / "out").glob("*.tif"))), data)


def test_like_takes_the_raw_geometry_and_refuses_another(tmp_path, uint16_stack):
    folder, _data = uint16_stack
    container = tmp_path / "c.zarr"
    tiff_to_zarr(folder, container, options=ConvertOptions(voxel_size=(40, 4, 4), offset_nm=(80, 8, 0), chunks=(2, 3, 5)), run=QUIET)
    labels = tiff_to_zarr(folder, container, "volumes/labels/x", options=ConvertOptions(like=(container, "volumes/raw")), run=QUIET)
    assert (labels.voxel_size, labels.offset_nm, labels.chunks) == ((40, 4, 4), (80, 8, 0), (2, 3, 5))
    with pytest.raises(VoxelSizeError, match=r"voxel size \[5, 4, 4\] nm differs from \[40, 4, 4\] nm"):
        tiff_to_zarr(folder, container, "volumes/labels/y", options=ConvertOptions(like=(container, "volumes/raw"), voxel_size=(5, 4, 4)))
    assert "y" not in [p.name for p in (container / "volumes" / "labels").iterdir()]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"chunks": (0, 8, 8)}, "chunks must be positive"),
        ({"voxel_size": (0, 5, 5)}, "voxel_size must be positive"),
        ({"offset_nm": (float("inf"), 0, 0)}, "offset_nm"),
        ({"rescale": (5, 1)}, "rescale needs finite LOW < HIGH"),
        ({"rescale": "auto"}, "rescale auto is for incasem export"),
        ({"crop": (slice(5, 2), slice(None), slice(None))}, "crop[0] range 5:2"),
        ({"crop": (slice(None), slice(-1, None), slice(None))}, "crop[1] range -1:"),
        ({"like": ("c.zarr", "../raw")}, "'..'"),
        ({"pattern": ""}, "pattern"),
    ],
)
def test_convert_options_refuse_bad_values_in_one_line(fields, message):
    from incasem.errors import InvalidValueError

    with pytest.raises(InvalidValueError) as error:
        ConvertOptions(**fields)
    assert message in str(error.value) and "\n" not in str(error.value)
