"""TIFF stacks: slice order, header validation, reading ranges, writing slices."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.errors import InputFileError
from incasem.io.tiff import list_slices, open_sections, open_stack, slice_file_name, write_slices
from tests.helpers import LUCCHI, require


def _write(folder: Path, names: list[str], shape=(6, 7), dtype=np.uint8) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    planes = []
    for index, name in enumerate(names):
        plane = np.full(shape, index, dtype=dtype)
        tifffile.imwrite(folder / name, plane)
        planes.append(plane)
    return planes


def test_slices_are_ordered_by_the_number_in_their_names(tmp_path):
    names = ["img_9.tif", "img_10.tif", "img_11.tif", "img_8.tif"]  # lexical order would be 10, 11, 8, 9
    _write(tmp_path, names)
    assert [p.name for p in list_slices(tmp_path)] == ["img_8.tif", "img_9.tif", "img_10.tif", "img_11.tif"]


def test_last_number_counts_case_is_ignored_and_hidden_files_skipped(tmp_path):
    _write(tmp_path, ["cell6_z001.TIF", "cell6_z000.tiff", "._cell6_z002.tif"])
    (tmp_path / "notes.txt").write_text("not a slice")
    assert [p.name for p in list_slices(tmp_path)] == ["cell6_z000.tiff", "cell6_z001.TIF"]


def test_pattern_selects_slices(tmp_path):
    _write(tmp_path, ["raw_0.tif", "raw_1.tif", "mask_0.tif", "mask_5.tif"])
    assert [p.name for p in list_slices(tmp_path, "raw_*.tif")] == ["raw_0.tif", "raw_1.tif"]


def test_gap_in_numbering_names_the_missing_number(tmp_path):
    _write(tmp_path, ["0000.tif", "0001.tif", "0003.tif"])
    with pytest.raises(InputFileError, match=r"slice number 2 is missing .*between 0001.tif and 0003.tif.* convert with sparse=True$"):
        list_slices(tmp_path)


def test_sections_keep_their_numbers_with_gaps(tmp_path):
    planes = _write(tmp_path / "s", ["m_20.tif", "m_5.tif", "m_110.tif"])  # plane values 0, 1, 2 in this order
    sections = open_sections(tmp_path / "s")
    assert sections.numbers == (5, 20, 110)
    assert [p.name for p in sections.stack.files] == ["m_5.tif", "m_20.tif", "m_110.tif"]
    assert sections.stack.shape == (3, 6, 7) and sections.stack.first_number == 5
    np.testing.assert_array_equal(sections.stack.read(0, 3), np.stack([planes[1], planes[0], planes[2]]))


def test_sections_refuse_a_file_duplicates_and_inconsistent_slices(tmp_path):
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((3, 6, 7), np.uint8), photometric="minisblack")
    with pytest.raises(InputFileError, match=r"labels\.tif is one file, but sparse=True reads a folder of 2D TIFF slices"):
        open_sections(tmp_path / "labels.tif")
    with pytest.raises(InputFileError, match="does not exist"):
        open_sections(tmp_path / "nowhere")
    _write(tmp_path / "dup", ["a_10.tif", "b_10.tif"])
    with pytest.raises(InputFileError, match=r"a_10\.tif and b_10\.tif .* both have slice number 10"):
        open_sections(tmp_path / "dup")
    _write(tmp_path / "shape", ["0010.tif", "0020.tif"])
    tifffile.imwrite(tmp_path / "shape" / "0030.tif", np.zeros((6, 8), np.uint8))
    with pytest.raises(InputFileError, match=r"0030\.tif has shape \[6, 8\] uint8 but 0010\.tif has \[6, 7\] uint8"):
        open_sections(tmp_path / "shape")


def test_first_number_of_a_stack(tmp_path):
    _write(tmp_path / "f", ["cell_z0042.tif", "cell_z0043.tif"])
    assert open_stack(tmp_path / "f").first_number == 42
    tifffile.imwrite(tmp_path / "stack_7.tif", np.zeros((3, 6, 7), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((6, 7), np.uint8))
    assert open_stack(tmp_path / "stack_7.tif").first_number is None  # a file's pages carry no numbers
    assert open_stack(tmp_path / "one.tif").first_number is None


def test_duplicate_numbers_and_names_without_number(tmp_path):
    _write(tmp_path / "dup", ["a_1.tif", "b_1.tif"])
    with pytest.raises(InputFileError, match=r"a_1\.tif and b_1\.tif .* both have slice number 1"):
        list_slices(tmp_path / "dup")
    _write(tmp_path / "plain", ["first.tif"])
    with pytest.raises(InputFileError, match=r"first\.tif has no number"):
        list_slices(tmp_path / "plain")


def test_empty_folder_and_folder_without_tiffs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"no files matching '\*.tif\*' .*empty.* \(it is empty\)"):
        open_stack(tmp_path / "empty")
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "0000.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputFileError, match=r"1 other files, e\.g\. 0000\.png"):
        open_stack(tmp_path / "png")


def test_missing_path(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        open_stack(tmp_path / "nowhere")


def test_file_that_is_not_a_tiff_is_named(tmp_path):
    _write(tmp_path, ["0000.tif"])
    (tmp_path / "0001.tif").write_text("hello, not an image")
    with pytest.raises(InputFileError, match=r"0001\.tif is not a readable TIFF"):
        open_stack(tmp_path)


@pytest.mark.parametrize(
    ("shape", "dtype", "expected"),
    [
        ((6, 8), np.uint8, r"\[6, 8\] uint8 but 0000.tif has \[6, 7\] uint8"),
        ((6, 7), np.uint16, r"\[6, 7\] uint16 but"),
    ],
)
def test_inconsistent_slice_is_named(tmp_path, shape, dtype, expected):
    _write(tmp_path, ["0000.tif", "0001.tif", "0003.tif"])
    tifffile.imwrite(tmp_path / "0002.tif", np.zeros(shape, dtype))
    with pytest.raises(InputFileError, match="0002.tif has shape " + expected):
        open_stack(tmp_path)


def test_colour_slices_are_refused(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    tifffile.imwrite(tmp_path / "0000.tif", np.zeros((6, 7, 3), np.uint8))
    with pytest.raises(InputFileError, match=r"0000.tif holds an image of shape \[6, 7, 3\] \(axes YXS\)"):
        open_stack(tmp_path)


def test_folder_stack_reads_slice_ranges(tmp_path):
    planes = _write(tmp_path, [f"s{i}.tif" for i in range(5)], shape=(4, 3), dtype=np.uint16)
    stack = open_stack(tmp_path)
    assert stack.shape == (5, 4, 3) and stack.dtype == np.uint16 and not stack.multipage
    np.testing.assert_array_equal(stack.read(1, 4), np.stack(planes[1:4]))
    assert stack.read(2, 2).shape == (0, 4, 3)
    with pytest.raises(ValueError, match="outside"):
        stack.read(3, 6)


@pytest.mark.parametrize("imagej", [False, True])
def test_multipage_stack(tmp_path, imagej):
    data = np.random.default_rng(1).integers(0, 4000, (6, 5, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=imagej, photometric="minisblack")
    stack = open_stack(tmp_path / "stack.tif")
    assert stack.shape == (6, 5, 4) and stack.multipage
    np.testing.assert_array_equal(stack.read(2, 5), data[2:5])
    np.testing.assert_array_equal(stack.read(5, 6), data[5:6])
    np.testing.assert_array_equal(stack.read(0, 6), data)


def test_single_2d_file_is_a_one_slice_stack(tmp_path):
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tifffile.imwrite(tmp_path / "one.tif", plane)
    stack = open_stack(tmp_path / "one.tif")
    assert stack.shape == (1, 3, 4)
    np.testing.assert_array_equal(stack.read(0, 1)[0], plane)


def test_multichannel_file_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "hyper.tif", np.zeros((3, 2, 5, 4), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(InputFileError, match=r"hyper.tif holds an image of shape \[3, 2, 5, 4\] with axes ZCYX"):
        open_stack(tmp_path / "hyper.tif")


def test_corrupt_pixel_data_is_named_when_read(tmp_path):
    _write(tmp_path, ["0000.tif", "0001.tif", "0002.tif"], shape=(64, 64))
    whole = (tmp_path / "0001.tif").read_bytes()
    (tmp_path / "0001.tif").write_bytes(whole[: len(whole) // 2])  # header first, pixels cut off
    stack = open_stack(tmp_path)  # headers are fine
    np.testing.assert_array_equal(stack.read(0, 1), np.zeros((1, 64, 64)))
    with pytest.raises(InputFileError, match=r"0001\.tif is corrupt"):
        stack.read(0, 3)


def test_real_stack_reads_like_tifffile():
    files = sorted((require(LUCCHI) / "image").glob("*.tif"))
    stack = open_stack(LUCCHI / "image")
    first = tifffile.imread(files[0])
    assert stack.shape == (len(files), *first.shape) and stack.dtype == first.dtype == np.uint8
    assert list(stack.files) == files
    middle = len(files) // 2
    np.testing.assert_array_equal(stack.read(middle, middle + 4), tifffile.imread(files[middle : middle + 4]))
    np.testing.assert_array_equal(stack.read(len(files) - 1, len(files)), tifffile.imread(files[-1])[None])


def test_write_slices_zero_padded(tmp_path):
    data = np.random.default_rng(2).integers(0, 2**16, (3, 5, 6), dtype=np.uint16)
    paths = write_slices(tmp_path, data, first_index=98, digits=4)
    assert [p.name for p in paths] == ["0098.tif", "0099.tif", "0100.tif"]
    assert slice_file_name(7, 5) == "00007.tif"
    np.testing.assert_array_equal(tifffile.imread(paths), data)
    np.testing.assert_array_equal(open_stack(tmp_path).read(0, 3), data)
