"""Multi-page TIFFs: one series, pages written one by one, appended stacks, mismatching pages."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.errors import InputFileError
from incasem.io.tiff import open_stack
from tests.helpers import LUCCHI, read_stack


@pytest.fixture(scope="module")
def planes() -> np.ndarray:
    """Eight real FIB-SEM slices of Lucchi++ (uint8), cropped to 40 x 48."""
    return read_stack(LUCCHI / "image", slice(8, 16), slice(72, 112), slice(76, 124))  # slices 60-67, rows 200-239, columns 300-347


def _append(path: Path, images, **kwargs) -> Path:
    """Write each image with its own ``imwrite(..., append=True)`` call, as page-by-page writers do."""
    for image in images:
        tifffile.imwrite(path, image, append=True, **kwargs)
    return path


def _series_count(path: Path) -> int:
    with tifffile.TiffFile(path) as tif:
        return len(tif.series)


def _error(path: Path) -> str:
    with pytest.raises(InputFileError) as caught:
        open_stack(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_page_by_page_file_reads_every_page(tmp_path, planes):
    path = _append(tmp_path / "pages.tif", planes)
    assert _series_count(path) == len(planes)  # tifffile sees one series per page
    stack = open_stack(path)
    assert stack.shape == (8, 40, 48) and stack.dtype == np.uint8 and stack.multipage and stack.by_page
    assert stack.files == (path,)
    np.testing.assert_array_equal(stack.read(0, 8), planes)
    np.testing.assert_array_equal(stack.read(3, 6), planes[3:6])
    np.testing.assert_array_equal(stack.read(7, 8), planes[7:8])
    assert stack.read(4, 4).shape == (0, 40, 48)
    with pytest.raises(ValueError, match="outside"):
        stack.read(6, 9)


def test_appended_stacks_and_pages_are_one_stack(tmp_path, planes):
    path = _append(tmp_path / "parts.tif", [planes[:3], planes[3], planes[4], planes[5:]], photometric="minisblack")
    assert _series_count(path) == 4
    stack = open_stack(path)
    assert stack.shape == (8, 40, 48) and stack.by_page
    np.testing.assert_array_equal(stack.read(0, 8), planes)
    np.testing.assert_array_equal(stack.read(2, 7), planes[2:7])  # across all four series


def test_pages_of_differing_compression_and_tiling(tmp_path, planes):
    path = tmp_path / "mixed.tif"
    for index, plane in enumerate(planes):
        options = [{}, {"compression": "zlib"}, {"tile": (16, 16)}, {"compression": "lzw", "tile": (32, 16)}]
        tifffile.imwrite(path, plane, append=True, **options[index % 4])
    stack = open_stack(path)
    assert stack.shape == (8, 40, 48)
    np.testing.assert_array_equal(stack.read(0, 8), planes)
    np.testing.assert_array_equal(stack.read(1, 4), planes[1:4])


@pytest.mark.parametrize(
    ("odd", "expected"),
    [
        (lambda p: p[:, :47], r"page 3 has shape \[40, 47\] uint8 but page 0 has \[40, 48\] uint8: "),
        (lambda p: p.astype(np.uint16) * 200, r"page 3 has shape \[40, 48\] uint16 but page 0 has \[40, 48\] uint8: "),
    ],
    ids=["shape", "dtype"],
)
def test_page_of_other_shape_or_dtype_is_named(tmp_path, planes, odd, expected):
    images = [*planes[:3], odd(planes[3]), *planes[4:]]
    message = _error(_append(tmp_path / "pages.tif", images))
    assert "pages.tif page 3" in message
    assert "all pages of a stack need one shape and dtype" in message
    assert re.search(expected, message), message


def test_mismatch_inside_an_appended_stack_is_named_by_page(tmp_path, planes):
    path = _append(tmp_path / "parts.tif", [planes[:2], planes[2:5, :39]], photometric="minisblack")
    assert "page 2 has shape [39, 48] uint8 but page 0 has [40, 48] uint8" in _error(path)


@pytest.mark.parametrize(
    ("extra", "kwargs", "expected"),
    [
        (lambda p: np.stack([p[0]] * 3, axis=-1), {"photometric": "rgb"}, r"series 2 .* shape \[40, 48, 3\]"),
        (lambda p: p[:4].reshape(2, 2, 40, 48), {"photometric": "minisblack"}, r"series 2 .* shape \[2, 2, 40, 48\]"),
    ],
    ids=["rgb", "4d"],
)
def test_series_with_extra_axes_is_refused(tmp_path, planes, extra, kwargs, expected):
    path = _append(tmp_path / "pages.tif", planes[:2])
    tifffile.imwrite(path, extra(planes), append=True, **kwargs)
    message = _error(path)
    assert re.search(expected, message) and "greyscale z-stack" in message, message


def test_planar_rgb_single_series_is_refused(tmp_path, planes):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, planes[:3], photometric="rgb", planarconfig="separate")
    assert "holds an image of shape [3, 40, 48] with axes SYX" in _error(path)


@pytest.mark.parametrize("imagej", [False, True], ids=["plain", "imagej"])
def test_single_series_files_keep_the_fast_path(tmp_path, planes, imagej):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, planes, imagej=imagej)
    assert _series_count(path) == 1
    stack = open_stack(path)
    assert stack.shape == (8, 40, 48) and stack.multipage and not stack.by_page
    np.testing.assert_array_equal(stack.read(0, 8), planes)
    np.testing.assert_array_equal(stack.read(2, 6), planes[2:6])


def _keep_first_page_header_only(path: Path) -> None:
    """Cut the IFD chain after the first page, as ImageJ does for stacks over 4 GB."""
    with tifffile.TiffFile(path) as tif:
        offset, order = tif.pages.first.offset, tif.byteorder
    with open(path, "r+b") as file:
        file.seek(offset)
        (count,) = struct.unpack(order + "H", file.read(2))
        file.seek(offset + 2 + 12 * count)
        file.write(struct.pack(order + "I", 0))


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_imagej_stack_with_one_page_header(tmp_path, planes, byteorder):
    data = planes.astype(np.uint16) * 257
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, imagej=True, byteorder=byteorder)
    _keep_first_page_header_only(path)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and tif.series[0].shape == (8, 40, 48)
    stack = open_stack(path)
    assert stack.shape == (8, 40, 48) and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack.read(3, 6), data[3:6])
    np.testing.assert_array_equal(stack.read(7, 8), data[7:8])
    np.testing.assert_array_equal(stack.read(0, 8), data)
    assert not stack.by_page


def test_validation_reads_no_pixel_data(tmp_path, planes, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    for index, plane in enumerate(planes):
        tifffile.imwrite(folder / f"{index:04d}.tif", plane)
    pages = _append(tmp_path / "pages.tif", planes)
    parts = _append(tmp_path / "parts.tif", [planes[:3], planes[3:]], photometric="minisblack")
    odd = _append(tmp_path / "odd.tif", [*planes[:5], planes[5, :30], *planes[6:]])
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, planes)
    imagej = tmp_path / "imagej.tif"
    tifffile.imwrite(imagej, planes, imagej=True)

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixel data was read")

    for owner, name in [
        (tifffile.TiffFile, "asarray"),
        (tifffile.TiffPage, "asarray"),
        (tifffile.TiffPage, "segments"),
        (tifffile.TiffFrame, "asarray"),
        (tifffile.TiffPageSeries, "asarray"),
        (tifffile.FileHandle, "read_array"),
        (tifffile.FileHandle, "read_segments"),
    ]:
        monkeypatch.setattr(owner, name, no_pixels)
    for path in [folder, pages, parts, plain, imagej]:
        assert open_stack(path).shape == (8, 40, 48), path
    with pytest.raises(InputFileError, match=r"odd.tif page 5 has shape \[30, 48\]"):
        open_stack(odd)


def test_corrupt_page_is_named_and_ranges_without_it_read(tmp_path, planes):
    path = _append(tmp_path / "pages.tif", planes, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[4]
        offset, size = page.dataoffsets[0], page.databytecounts[0]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)
    stack = open_stack(path)  # headers are fine
    np.testing.assert_array_equal(stack.read(0, 4), planes[:4])
    np.testing.assert_array_equal(stack.read(5, 8), planes[5:])
    with pytest.raises(InputFileError, match=r"pages\.tif is corrupt .*: replace or remove it"):
        stack.read(3, 6)


def test_page_by_page_file_converts_to_zarr(tmp_path, planes):
    from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
    from tests.helpers import QUIET

    path = _append(tmp_path / "pages.tif", planes)
    options = ConvertOptions(crop=(slice(1, 7), slice(None), slice(5, 48)), chunks=(2, 20, 20))
    volume = tiff_to_zarr(path, tmp_path / "c.zarr", options=options, run=QUIET)
    np.testing.assert_array_equal(volume.read(), planes[1:7, :, 5:])
