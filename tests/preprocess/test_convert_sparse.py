"""Partial labels: ``incasem convert --sparse`` of a folder that holds only some labelled sections.

On real Lucchi++ FIB-SEM and its manual mitochondria labels (tests/data, a crop of the shared
copy): the raw crop is written as TIFF slices named with their Lucchi++ slice numbers, converted,
and every tenth labels section is saved as its own TIFF, named like the raw file it belongs to.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

import incasem.preprocess.convert as convert_module
from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetMismatchError, InputFileError, InvalidValueError
from incasem.io.layout import labelled_mask_dataset
from incasem.io.volume import open_volume
from incasem.preprocess.convert import ConvertOptions, first_section_number, tiff_to_zarr
from tests.helpers import LUCCHI, QUIET, Crash, error_line, fail_after, read_stack, write_volume

#: The crop of the test copy: its slices 8-47 are Lucchi++ slices 60-99 (tests/data/lucchi_pp_fibsem/SOURCE.md).
REGION = (slice(8, 48), slice(48, 176), slice(48, 176))
#: The Lucchi++ slice number of the crop's first slice: what the raw's file names carry.
FIRST = 52 + 8
#: The labelled sections (z in the crop): every tenth, not on chunk borders.
SECTIONS = [3, 13, 23, 33]
LABELS = "volumes/labels/mito"
LABELLED = "volumes/labelled/mito"


@pytest.fixture(scope="module")
def lucchi() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 128 x 128 crop of the Lucchi++ raw and its mito labels."""
    return read_stack(LUCCHI / "image", *REGION), read_stack(LUCCHI / "labels" / "mito", *REGION)


def _slices(folder: Path, data: np.ndarray, numbers: list[int], prefix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number, plane in zip(numbers, data):
        tifffile.imwrite(folder / f"{prefix}_{number:04d}.tif", plane)
    return folder


@pytest.fixture
def cell(tmp_path, lucchi) -> Path:
    """``c.zarr`` with volumes/raw converted from slices named lucchi_0060.tif ... lucchi_0099.tif."""
    raw, _ = lucchi
    folder = _slices(tmp_path / "raw", raw, [FIRST + z for z in range(len(raw))], "lucchi")
    container = tmp_path / "c.zarr"
    assert main(["convert", str(folder), str(container), "--voxel-size", "5", "--offset", "300,240,240", "--chunks", "16,64,64", "-q"]) == 0
    return container


def _labels_folder(folder: Path, labels: np.ndarray, sections: list[int], first: int, prefix: str = "mito") -> Path:
    return _slices(folder, labels[sections], [first + z for z in sections], prefix)


def _expected(labels: np.ndarray, sections: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The labels on ``sections`` and 0 elsewhere; the labelled mask, 1 exactly on ``sections``."""
    expected, mask = np.zeros_like(labels), np.zeros(labels.shape, np.uint8)
    expected[sections], mask[sections] = labels[sections], 1
    return expected, mask


def _files(container: Path) -> list[str]:
    return sorted(str(p.relative_to(container)) for p in container.rglob("*")) if container.exists() else []


def test_sections_land_on_their_raw_sections_by_the_recorded_numbers(tmp_path, lucchi, cell, capsys):
    """Files named like the raw's files (Lucchi++ numbers 63, 73, ...) land on their sections."""
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    capsys.readouterr()
    assert main(["convert", str(folder), str(cell), "-d", LABELS, "--like", f"{cell}:volumes/raw", "--sparse", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{LABELS}  shape=[40, 128, 128]  dtype=uint8  chunks=[16, 64, 64]")
    assert out[-1] == f"labelled: 4 of 40 sections ({LABELLED}); file number = z + {FIRST}"
    raw = open_volume(cell, "volumes/raw")
    assert first_section_number(raw) == FIRST
    expected, mask = _expected(labels, SECTIONS)
    assert all(labels[z].any() for z in SECTIONS), "real mitochondria on every labelled section"
    volume, labelled = open_volume(cell, LABELS), open_volume(cell, LABELLED)
    assert labelled_mask_dataset(LABELS) == LABELLED
    np.testing.assert_array_equal(volume.read(), expected)
    np.testing.assert_array_equal(labelled.read(), mask)
    assert labelled.dtype == np.uint8 and volume.dtype == labels.dtype
    for output in (volume, labelled):
        assert (output.shape, output.voxel_size, output.offset_nm, output.chunks) == (raw.shape, raw.voxel_size, raw.offset_nm, raw.chunks)
        assert output.complete
    job = volume.array.attrs["incasem_job"]
    assert (job["sparse"], job["first_number"], job["sections"]) == (True, FIRST, SECTIONS)


def test_a_crop_of_the_raw_shifts_the_numbers_and_sections_crop_in_y_x(tmp_path, lucchi, capsys):
    """The raw converted with --z 10:40 --y 16:112 from files numbered 60-99: its z 0 is file 70; full-size
    label slices named by those numbers are cropped with --y to match."""
    raw, labels = lucchi
    source = _slices(tmp_path / "raw", raw, [FIRST + z for z in range(len(raw))], "lucchi")
    container = tmp_path / "c.zarr"
    tiff_to_zarr(
        source, container, options=ConvertOptions(voxel_size=(5, 5, 5), crop=(slice(10, 40), slice(16, 112), slice(None)), chunks=(8, 64, 64)), run=QUIET
    )
    assert first_section_number(open_volume(container, "volumes/raw")) == FIRST + 10
    sections = [13, 23, 33]  # source z; numbers 73, 83, 93
    folder = _labels_folder(tmp_path / "labels", labels, sections, FIRST)
    code = main(["convert", str(folder), str(container), "-d", LABELS, "--like", str(container), "--sparse", "--y", "16:112", "-q"])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"labelled: 3 of 30 sections ({LABELLED}); file number = z + {FIRST + 10}"
    expected, mask = _expected(labels[10:, 16:112], [z - 10 for z in sections])
    np.testing.assert_array_equal(open_volume(container, LABELS).read(), expected)
    np.testing.assert_array_equal(open_volume(container, LABELLED).read(), mask)


def test_without_a_record_numbers_are_z_indices_and_first_number_says_otherwise(tmp_path, lucchi):
    """A raw from a multi-page file records no file number: label files numbered by z index (as
    `incasem export` names them) land on that z; --first-number states the numbering outright."""
    raw, labels = lucchi
    tifffile.imwrite(tmp_path / "raw.tif", raw, photometric="minisblack")
    container = tmp_path / "c.zarr"
    tiff_to_zarr(tmp_path / "raw.tif", container, options=ConvertOptions(voxel_size=(5, 5, 5), chunks=(16, 64, 64)), run=QUIET)
    assert first_section_number(open_volume(container, "volumes/raw")) is None
    by_index = _labels_folder(tmp_path / "by_index", labels, SECTIONS, 0)
    options = ConvertOptions(like=(container, "volumes/raw"), sparse=True)
    volume = tiff_to_zarr(by_index, container, LABELS, options=options, run=QUIET)
    expected, mask = _expected(labels, SECTIONS)
    np.testing.assert_array_equal(volume.read(), expected)
    np.testing.assert_array_equal(open_volume(container, LABELLED).read(), mask)
    # numbered from 1 (Fiji's slice numbers): --first-number 1
    from_one = _labels_folder(tmp_path / "from_one", labels, SECTIONS, 1)
    options = ConvertOptions(like=(container, "volumes/raw"), sparse=True, first_number=1)
    volume = tiff_to_zarr(from_one, container, LABELS, options=options, mode="overwrite", run=QUIET)
    np.testing.assert_array_equal(volume.read(), expected)
    assert volume.array.attrs["incasem_job"]["first_number"] == 1


def test_first_number_overrides_the_record(tmp_path, lucchi, cell):
    """Files named like `incasem export` of the raw names them (z index) on a raw whose record says 60."""
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "exported", labels, SECTIONS, 0)
    options = ConvertOptions(like=(cell, "volumes/raw"), sparse=True, first_number=0)
    volume = tiff_to_zarr(folder, cell, LABELS, options=options, run=QUIET)
    np.testing.assert_array_equal(volume.read(), _expected(labels, SECTIONS)[0])
    # without it the record's 60 applies, and number 3 lies before the raw's first section: refused, in the API's words
    with pytest.raises(InputFileError, match=r"mito_0003\.tif has section number 3, outside 60\.\.99, .* with first_number$"):
        tiff_to_zarr(folder, cell, "volumes/labels/other", options=ConvertOptions(like=(cell, "volumes/raw"), sparse=True), run=QUIET)


def test_gap_without_sparse_points_to_it(tmp_path, lucchi, cell, capsys):
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    before = _files(cell)
    capsys.readouterr()
    assert main(["convert", str(folder), str(cell), "-d", LABELS, "--like", str(cell)]) == 1
    line = error_line(capsys)
    assert f"slice number {FIRST + 4} is missing" in line and "partial labels) convert with --sparse" in line
    assert _files(cell) == before


def _bad_case(case: str, tmp_path: Path, labels: np.ndarray, cell: Path) -> tuple[list[str], str]:
    """Arguments after ``convert`` and the expected part of the one-line error of a refused case."""
    like = ["--like", f"{cell}:volumes/raw"]
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    if case == "number outside":
        tifffile.imwrite(folder / f"mito_{FIRST + 40:04d}.tif", labels[0])
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse"], (
            f"mito_0100.tif has section number 100, outside 60..99, the numbers of the 40 sections of {cell}/volumes/raw "
            "(first number 60, from the raw's conversion record): remove or rename the file, or give the number of the "
            "raw's first section with --first-number"
        )
    if case == "number below":
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse", "--first-number", "64"], (
            "mito_0063.tif has section number 63, outside 64..103, the numbers of the 40 sections of"
        )
    if case == "section shape":
        small = _labels_folder(tmp_path / "small", labels[:, :, :120], SECTIONS, FIRST)
        return [str(small), str(cell), "-d", LABELS, *like, "--sparse"], (
            f"section mito_0063.tif of {small} has shape [128, 120] (y, x) but {cell}/volumes/raw has [128, 128]: "
            "label sections of that raw (crop with --y/--x to match)"
        )
    if case == "one section's shape":
        tifffile.imwrite(folder / "mito_0083.tif", labels[23, :, :120])
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse"], "mito_0083.tif has shape [128, 120] uint8 but mito_0063.tif has [128, 128] uint8"
    if case == "multi-page":
        tifffile.imwrite(tmp_path / "mito.tif", labels[SECTIONS], photometric="minisblack")
        return [str(tmp_path / "mito.tif"), str(cell), "-d", LABELS, *like, "--sparse"], (
            f"{tmp_path / 'mito.tif'} is one file, but --sparse reads a folder of 2D TIFF slices, one per labelled section"
        )
    if case == "no like":
        return [str(folder), str(cell), "-d", LABELS, "--sparse"], (
            "--sparse places the labelled sections on the grid of the raw they belong to: add --like CONTAINER:DATASET"
        )
    if case == "duplicate number":
        tifffile.imwrite(folder / "other_0073.tif", labels[13])
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse"], "mito_0073.tif and other_0073.tif in"
    if case == "first number alone":
        return [str(folder), str(cell), "-d", LABELS, *like, "--first-number", "60"], "--first-number places the sections of partial labels: add --sparse"
    if case == "z crop":
        message = "--sparse places each section by the number in its file name, not by --z"
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse", "--z", "0:10"], message
    if case == "rescale":
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse", "--to-uint8", "0:1"], "--sparse keeps the labels' values: leave --to-uint8 out"
    if case == "labels named as their mask":
        return [str(folder), str(cell), "-d", LABELLED, *like, "--sparse"], f"'{LABELLED}' is where its labelled mask would go"
    if case == "labelled mask exists":
        write_volume(cell, LABELLED, np.ones((40, 128, 128), np.uint8), (16, 64, 64), (300, 240, 240))
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse"], f"{cell}/{LABELLED} exists already: pass --overwrite to replace it"
    if case == "labelled mask of other origin":
        write_volume(cell, LABELLED, np.ones((40, 128, 128), np.uint8), (16, 64, 64), (300, 240, 240))
        return [str(folder), str(cell), "-d", LABELS, *like, "--sparse", "--overwrite"], (
            f"{cell}/{LABELLED} was written by something other than incasem, so --overwrite of incasem convert will not replace it"
        )
    raise AssertionError(case)


BAD_CASES = [
    "number outside",
    "number below",
    "section shape",
    "one section's shape",
    "multi-page",
    "no like",
    "duplicate number",
    "first number alone",
    "z crop",
    "rescale",
    "labels named as their mask",
    "labelled mask exists",
    "labelled mask of other origin",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_refusals_are_one_line_and_write_nothing(tmp_path, lucchi, cell, capsys, case):
    _, labels = lucchi
    arguments, expected = _bad_case(case, tmp_path, labels, cell)
    before = _files(cell)
    capsys.readouterr()
    assert main(["convert", *arguments, "-q"]) == 1
    assert expected in error_line(capsys)
    assert _files(cell) == before, "nothing written"
    assert not (cell / LABELS).exists()


def test_refusals_of_the_api_name_its_parameters():
    with pytest.raises(InvalidValueError, match=r"sparse=True places .*: add like=\(CONTAINER, DATASET\)$"):
        ConvertOptions(sparse=True)
    with pytest.raises(InvalidValueError, match="first_number must be a whole number of at least 0"):
        ConvertOptions(like=("c.zarr", "volumes/raw"), sparse=True, first_number=-1)


def test_an_existing_sparse_output_is_kept_unless_overwritten(tmp_path, lucchi, cell, capsys):
    """A second conversion into another labels dataset of the same organelle would replace the labelled
    mask: refused before either is written; --overwrite replaces both."""
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    arguments = [str(folder), str(cell), "--like", str(cell), "--sparse", "-q"]
    assert main(["convert", *arguments, "-d", LABELS]) == 0
    capsys.readouterr()
    assert main(["convert", *arguments, "-d", "volumes/labels_v2/mito"]) == 1
    assert f"{cell}/{LABELLED} exists already: pass --overwrite" in error_line(capsys)
    assert not (cell / "volumes" / "labels_v2").exists()
    fewer = _labels_folder(tmp_path / "fewer", labels, SECTIONS[:2], FIRST)
    assert main(["convert", str(fewer), str(cell), "-d", LABELS, "--like", str(cell), "--sparse", "-q", "--overwrite"]) == 0
    expected, mask = _expected(labels, SECTIONS[:2])
    np.testing.assert_array_equal(open_volume(cell, LABELS).read(), expected)
    np.testing.assert_array_equal(open_volume(cell, LABELLED).read(), mask)


def test_interrupted_sparse_conversion_leaves_both_incomplete_and_resumes(tmp_path, lucchi, cell, monkeypatch, capsys):
    """Each block reads its own sections, one at a time; both outputs are marked complete only at the end."""
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    options = ConvertOptions(like=(cell, "volumes/raw"), sparse=True)
    with monkeypatch.context() as patch:
        fail_after(patch, convert_module, "_stack_slab", 2)  # two sections read, the third fails
        with pytest.raises(Crash):
            tiff_to_zarr(folder, cell, LABELS, options=options, run=RunOptions(progress=False, workers=1))
    for name in (LABELS, LABELLED):
        assert not open_volume(cell, name, require_complete=False).complete
        with pytest.raises(DatasetMismatchError, match="left unfinished by an interrupted job"):
            open_volume(cell, name)
    assert main(["convert", str(folder), str(cell), "-d", LABELS, "--like", str(cell), "--sparse", "-q"]) == 1
    assert "left unfinished by an interrupted incasem convert run: pass --resume" in error_line(capsys)
    done = {int(p.name.split("_")[0]) - 60 for p in (cell / LABELS / ".incasem_done").iterdir()}  # the raw starts at z 60 (300 nm)
    assert done and done < {0, 16, 32}
    reads = []
    original = convert_module._stack_slab
    monkeypatch.setattr(convert_module, "_stack_slab", lambda stack, region, start, stop: reads.append((start, stop)) or original(stack, region, start, stop))
    assert main(["convert", str(folder), str(cell), "-d", LABELS, "--like", str(cell), "--sparse", "-q", "--resume"]) == 0
    unfinished = [index for index, z in enumerate(SECTIONS) if z // 16 * 16 not in done]
    assert sorted(reads) == [(index, index + 1) for index in unfinished], "only the unfinished blocks, one section at a time"
    expected, mask = _expected(labels, SECTIONS)
    np.testing.assert_array_equal(open_volume(cell, LABELS).read(), expected)
    np.testing.assert_array_equal(open_volume(cell, LABELLED).read(), mask)


def test_resume_rewrites_a_lost_labelled_mask(tmp_path, lucchi, cell):
    """Labels resumed without their labelled mask (deleted since): every block is written again, so the
    new mask is whole."""
    _, labels = lucchi
    folder = _labels_folder(tmp_path / "labels", labels, SECTIONS, FIRST)
    options = ConvertOptions(like=(cell, "volumes/raw"), sparse=True)
    tiff_to_zarr(folder, cell, LABELS, options=options, run=QUIET)
    shutil.rmtree(cell / LABELLED)
    tiff_to_zarr(folder, cell, LABELS, options=options, mode="resume", run=QUIET)
    labelled = open_volume(cell, LABELLED)
    assert labelled.complete
    np.testing.assert_array_equal(labelled.read(), _expected(labels, SECTIONS)[1])
