"""TIFF z-stacks: a folder of 2D slices or one multi-page file, read and written by slice.

:func:`open_stack` finds the slices and checks, from the TIFF headers alone (no
pixel data is read), that they form one stack: a folder's files are ordered by the
last number in their names, which must run without gaps, and every slice must be a
2D greyscale image of one shape and dtype. A multi-page file's slices are its 2D
greyscale pages in file order: one image series (a plain or ImageJ stack) is read
as that series, a file of several series (pages written one by one, appended
stacks, pages of differing shape) page by page. The returned :class:`TiffStack` then
reads any range of z slices; a slice whose pixel data turns out to be corrupt is
named in the error. :func:`open_sections` reads a folder in which only some sections
exist (partial labels): the same checks, but gaps in the numbers are allowed and each
file keeps its number. :func:`write_slices` writes one TIFF per z slice with zero-padded names.

Everything here only reads and writes; jobs that walk a whole stack live in
:mod:`incasem.preprocess.convert`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import cast

import numpy as np
import tifffile

from incasem.errors import InputFileError, option
from incasem.geometry import Triple

#: Default glob for the slices of a folder (matched case-insensitively): .tif and .tiff.
DEFAULT_PATTERN = "*.tif*"

_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class TiffStack:
    """A validated stack of 2D greyscale TIFF slices, axis order (z, y, x).

    Attributes
    ----------
    path
        The folder of slices or the multi-page file.
    files
        One file per z slice (folder), or the single multi-page file.
    shape
        Stack shape in voxels (z, y, x).
    dtype
        Element type shared by all slices.
    by_page
        Whether the slices are read as the pages of a multi-page file that holds
        several image series (slice ``z`` is page ``z``), rather than as its one
        series or as one file each.
    """

    path: Path
    files: tuple[Path, ...]
    shape: Triple
    dtype: np.dtype
    by_page: bool = False

    @property
    def multipage(self) -> bool:
        """Whether the slices are the pages of one file rather than one file each."""
        return self.by_page or len(self.files) != self.shape[0]

    @property
    def first_number(self) -> int | None:
        """The number in the name of the first slice's file (a folder's slices), ``None`` for a multi-page file."""
        return None if self.files == (self.path,) else slice_number(self.files[0])

    def read(self, z_start: int, z_stop: int) -> np.ndarray:
        """Read slices ``z_start`` (inclusive) to ``z_stop`` (exclusive), shape (z, y, x).

        Raises
        ------
        InputFileError
            If a slice's pixel data cannot be decoded; the message names the file.
        """
        if not 0 <= z_start <= z_stop <= self.shape[0]:
            raise ValueError(f"slices {z_start}:{z_stop} are outside {self.path} (0:{self.shape[0]})")
        out = np.empty((z_stop - z_start, *self.shape[1:]), dtype=self.dtype)
        if z_start == z_stop:
            return out
        if self.by_page:
            _decode_pages(self.files[0], out, z_start)
        elif self.multipage:
            _decode_series(self.files[0], out, z_start)
        else:
            for index, path in enumerate(self.files[z_start:z_stop]):
                _decode(path, out[index], 0)
        return out


def _decode(path: Path, out: np.ndarray, key: int | slice) -> None:
    """Decode page(s) ``key`` of the first series of ``path`` into ``out``."""
    try:
        with tifffile.TiffFile(path) as tif:
            tif.asarray(key=key, series=0, out=out.view(), maxworkers=1)  # a view: tifffile may reshape it
    except Exception as error:  # any decoding failure means the file is damaged
        raise InputFileError(f"{path} is corrupt ({error}): replace or remove it") from error


def _decode_pages(path: Path, out: np.ndarray, z_start: int) -> None:
    """Decode pages ``z_start`` on of ``path`` (in file order, any series) into ``out`` (z, y, x), one by one.

    Each page is decoded as itself, so pages may differ in compression or tiling.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            tif.pages.useframes = False  # real pages: frames would borrow the first page's compression/tiling
            for index, plane in enumerate(out, start=z_start):
                tif.pages[index].asarray(out=plane.view(), maxworkers=1)
    except Exception as error:  # any decoding failure means the file is damaged
        raise InputFileError(f"{path} is corrupt ({error}): replace or remove it") from error


def _decode_series(path: Path, out: np.ndarray, z_start: int) -> None:
    """Decode slices ``z_start`` on of the one (z, y, x) series of ``path`` into ``out`` (z, y, x).

    Uncompressed contiguous data, as in ImageJ stacks that may carry only the first
    page header, is read straight from its bytes; other series page by page.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if series.dataoffset is None:
                tif.asarray(key=slice(z_start, z_start + len(out)), series=0, out=out.view(), maxworkers=1)
                return
            offset = series.dataoffset + z_start * out[0].nbytes
            tif.filehandle.read_array(tif.byteorder + out.dtype.char, out.size, offset, out=out)
    except Exception as error:  # any decoding failure means the file is damaged
        raise InputFileError(f"{path} is corrupt ({error}): replace or remove it") from error


def slice_number(path: Path) -> int:
    """The number of a slice file: the last number in its name (``cell_z0042.tif`` -> 42).

    Raises
    ------
    InputFileError
        If the name holds no number.
    """
    numbers = _NUMBER.findall(path.name.rsplit(".", 1)[0])
    if not numbers:
        raise InputFileError(f"{path} has no number in its name: name slices like 0000.tif, 0001.tif, ...")
    return int(numbers[-1])


def numbered_files(folder: str | Path, pattern: str = DEFAULT_PATTERN) -> dict[int, Path]:
    """The files of ``folder`` matching ``pattern``, by their number (:func:`slice_number`), in number order.

    Files matching the glob ``pattern`` (case-insensitively; hidden files skipped)
    are the slices; their numbers need not be consecutive.

    Raises
    ------
    InputFileError
        If no file matches, a file has no number or two files share a number.
    """
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    matching = [folder / n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
    if not matching:
        others = f" (it holds {len(names)} other files, e.g. {names[0]})" if names else " (it is empty)"
        raise InputFileError(f"no files matching '{pattern}' in {folder}{others}: give a folder of TIFF slices or pass {option('pattern', '--pattern')}")
    numbered: dict[int, Path] = {}
    for path in matching:
        number = slice_number(path)
        if number in numbered:
            raise InputFileError(
                f"{numbered[number].name} and {path.name} in {folder} both have slice number {number}: remove one or narrow {option('pattern', '--pattern')}"
            )
        numbered[number] = path
    return {number: numbered[number] for number in sorted(numbered)}


def list_slices(folder: str | Path, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """The slice files of ``folder`` in z order, by the last number in each file name.

    Files matching the glob ``pattern`` (case-insensitively; hidden files skipped)
    are the slices. Their numbers must be distinct and consecutive; the first may be
    any number (a folder of some sections only is read by :func:`open_sections`).

    Raises
    ------
    InputFileError
        If no file matches, a file has no number, two files share a number, or a
        number is missing (the message names it, and the option for partial labels).
    """
    folder = Path(folder)
    numbered = numbered_files(folder, pattern)
    for before, after in pairwise(numbered):
        if after != before + 1:
            raise InputFileError(
                f"slice number {before + 1} is missing from {folder} (between {numbered[before].name} and "
                f"{numbered[after].name}): add it, or convert the parts on either side separately; labels of only "
                f"some sections (partial labels) convert with {option('sparse=True', '--sparse')}"
            )
    return list(numbered.values())


_Layout = tuple[tuple[int, ...], np.dtype | None, str]


def _series_layouts(path: Path) -> list[_Layout]:
    """Shape, dtype (None if tifffile cannot decode it) and axes of each image series of ``path``.

    Only the headers are read. Raises :class:`InputFileError` if ``path`` is no
    readable TIFF or holds no image.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            layouts: list[_Layout] = [(tuple(s.shape), None if s.dtype is None else np.dtype(s.dtype), s.axes) for s in tif.series]
    except Exception as error:  # any header parsing failure means it is no (intact) TIFF
        raise InputFileError(f"{path} is not a readable TIFF file ({error}): replace or remove it") from error
    if not layouts:
        raise InputFileError(f"{path} holds no image: replace or remove it")
    return layouts


def _undecodable(where: str) -> InputFileError:
    return InputFileError(f"{where} has a pixel format that cannot be decoded: save it as 8/16/32-bit greyscale")


def _page_layout(path: Path, layouts: list[_Layout] | None = None) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axes of the first image series of ``path`` (from ``layouts`` if given), from its header."""
    shape, dtype, axes = (layouts or _series_layouts(path))[0]
    if dtype is None:
        raise _undecodable(str(path))
    return shape, dtype, axes


def _page_layouts(path: Path) -> list[tuple[bool, tuple[int, ...], np.dtype | None, str]]:
    """For each page of ``path`` in file order: whether it is 2D greyscale, its shape, dtype and axes.

    Only the page headers are read (every page's, as real pages, never frames that
    borrow the first page's layout).
    """
    try:
        with tifffile.TiffFile(path) as tif:
            tif.pages.useframes = False
            pages = cast("Iterable[tifffile.TiffPage]", tif.pages)  # useframes off: real pages, never frames
            return [
                (
                    page.samplesperpixel == 1 and page.imagedepth == 1,
                    tuple(page.shape),
                    None if page.dtype is None else np.dtype(page.dtype),
                    page.axes,
                )
                for page in pages
            ]
    except Exception as error:  # any header parsing failure means it is no (intact) TIFF
        raise InputFileError(f"{path} is not a readable TIFF file ({error}): replace or remove it") from error


def _stack_of_files(folder: Path, files: list[Path]) -> TiffStack:
    """The stack of ``files`` (one 2D greyscale slice each, of one shape and dtype), checked from their headers."""
    shape, dtype, axes = _page_layout(files[0])
    if len(shape) != 2:
        raise InputFileError(
            f"{files[0]} holds an image of shape {list(shape)} (axes {axes}): a folder needs one 2D greyscale "
            "slice per file; convert a multi-page TIFF on its own and colour images to greyscale"
        )
    for path in files[1:]:
        other_shape, other_dtype, _ = _page_layout(path)
        if (other_shape, other_dtype) != (shape, dtype):
            raise InputFileError(
                f"{path} has shape {list(other_shape)} {other_dtype} but {files[0].name} has {list(shape)} {dtype}: "
                "all slices of a stack need one shape and dtype"
            )
    return TiffStack(folder, tuple(files), (len(files), shape[0], shape[1]), dtype)


def _stack_from_folder(folder: Path, pattern: str) -> TiffStack:
    return _stack_of_files(folder, list_slices(folder, pattern))


def _is_page_stack(shape: tuple[int, ...], axes: str) -> bool:
    """Whether a series of this shape and axes is one 2D greyscale page or a stack of them."""
    return len(shape) in (2, 3) and axes[-2:] == "YX" and "S" not in axes


def _stack_from_file(path: Path) -> TiffStack:
    layouts = _series_layouts(path)
    if len(layouts) == 1:  # a plain or ImageJ stack: read as the series, however few page headers it has
        shape, dtype, axes = _page_layout(path, layouts)
        if not _is_page_stack(shape, axes):
            raise InputFileError(
                f"{path} holds an image of shape {list(shape)} with axes {axes}: incasem needs a greyscale z-stack "
                "(one 2D page per slice); split channels/time points and make colour greyscale in Fiji first"
            )
        if len(shape) == 2:
            shape = (1, *shape)
        return TiffStack(path, (path,), (shape[0], shape[1], shape[2]), dtype)
    for index, (shape, _, axes) in enumerate(layouts):  # several series: the stack is every page
        if not _is_page_stack(shape, axes):
            raise InputFileError(
                f"{path} series {index} holds an image of shape {list(shape)} with axes {axes}: incasem needs a "
                "greyscale z-stack (one 2D page per slice); split channels/time points and make colour greyscale "
                "in Fiji first"
            )
    pages = _page_layouts(path)
    _, first_shape, first_dtype, _ = pages[0]
    for index, (greyscale, shape, page_dtype, axes) in enumerate(pages):
        if not greyscale or len(shape) != 2:
            raise InputFileError(
                f"{path} page {index} holds an image of shape {list(shape)} (axes {axes}): a multi-page TIFF needs "
                "one 2D greyscale page per slice; make colour pages greyscale in Fiji first"
            )
        if page_dtype is None:
            raise _undecodable(f"{path} page {index}")
        if (shape, page_dtype) != (first_shape, first_dtype):
            raise InputFileError(
                f"{path} page {index} has shape {list(shape)} {page_dtype} but page 0 has {list(first_shape)} "
                f"{first_dtype}: all pages of a stack need one shape and dtype; re-save the pages alike "
                "(e.g. crop/convert them in Fiji) or split the file and convert the parts separately"
            )
    assert first_dtype is not None  # the loop refused an undecodable page 0
    return TiffStack(path, (path,), (len(pages), first_shape[0], first_shape[1]), first_dtype, by_page=True)


def open_stack(path: str | Path, pattern: str = DEFAULT_PATTERN) -> TiffStack:
    """Find and validate a stack: a folder of 2D TIFF slices or one multi-page TIFF.

    Only the TIFF headers are read, so this is fast and every inconsistency is found
    before any data is converted.

    Parameters
    ----------
    path
        A folder of slices (ordered by the number in their names, see
        :func:`list_slices`) or a multi-page TIFF file. A file of one image
        series (a plain or ImageJ stack) is that series; a file of several series
        (pages written one by one, appended stacks) is all its pages in file
        order, each of which must be a 2D greyscale page of one shape and dtype.
    pattern
        Glob selecting the slices of a folder.

    Raises
    ------
    InputFileError
        If the path is missing, holds no TIFF slices, or the slices are not one
        consistent stack; the message names the offending file (and page).
    """
    path = Path(path)
    if path.is_dir():
        return _stack_from_folder(path, pattern)
    if path.is_file():
        return _stack_from_file(path)
    raise InputFileError(f"{path} does not exist: give a folder of TIFF slices or a multi-page TIFF file")


@dataclass(frozen=True)
class TiffSections:
    """Some sections of a z-stack: a folder of 2D TIFF slices, each named with its section's number.

    Attributes
    ----------
    stack
        The sections in number order, read as a stack: its slice ``i`` is section ``numbers[i]``.
    numbers
        The number of each section (:func:`slice_number` of its file), increasing, gaps allowed.
    """

    stack: TiffStack
    numbers: tuple[int, ...]


def open_sections(path: str | Path, pattern: str = DEFAULT_PATTERN) -> TiffSections:
    """Find and validate the sections of a folder in which only some exist (partial labels).

    As :func:`open_stack` for a folder, from the TIFF headers alone, except that the
    numbers in the file names may have gaps: every file must still be a 2D greyscale
    image, all of one shape and dtype, with distinct numbers.

    Raises
    ------
    InputFileError
        If the path is missing or a file (a multi-page TIFF: the sections need a
        folder of one file each), holds no TIFF slices, two files share a number or
        the slices differ in shape or dtype; the message names the file.
    """
    path = Path(path)
    if path.is_file():
        raise InputFileError(
            f"{path} is one file, but {option('sparse=True', '--sparse')} reads a folder of 2D TIFF slices, one per "
            "labelled section, each named with its section's number (e.g. 0010.tif, 0020.tif): save the sections so"
        )
    if not path.is_dir():
        raise InputFileError(f"{path} does not exist: give a folder of TIFF slices, one per labelled section")
    numbered = numbered_files(path, pattern)
    return TiffSections(_stack_of_files(path, list(numbered.values())), tuple(numbered))


def slice_file_name(index: int, digits: int) -> str:
    """Name of the TIFF file of z slice ``index``: zero-padded to ``digits``, e.g. ``0042.tif``."""
    return f"{index:0{digits}d}.tif"


def write_slices(folder: str | Path, data: np.ndarray, first_index: int, digits: int) -> list[Path]:
    """Write each z slice of ``data`` (z, y, x) as one uncompressed TIFF into ``folder``.

    Slice ``i`` goes to ``slice_file_name(first_index + i, digits)``. Returns the paths.
    """
    folder = Path(folder)
    paths = []
    for index, plane in enumerate(data, start=first_index):
        path = folder / slice_file_name(index, digits)
        tifffile.imwrite(path, plane)
        paths.append(path)
    return paths


#: The first bytes of a TIFF file (little- and big-endian, classic and BigTIFF).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

_ZARR_METADATA = (".zgroup", ".zarray", "zarr.json")


def is_tiff_source(path: str | Path) -> bool:
    """Whether ``path`` is what ``incasem convert`` reads: a TIFF file, or a folder holding TIFF
    files (``.tif``/``.tiff``) that is no zarr container. Only names and the first bytes are read."""
    path = Path(path)
    try:
        if path.is_file():
            with path.open("rb") as stream:
                return stream.read(4) in _TIFF_MAGIC
        if path.is_dir() and not any((path / name).exists() for name in _ZARR_METADATA):
            return any(child.suffix.lower() in (".tif", ".tiff") and child.is_file() for child in path.iterdir())
    except OSError:
        return False
    return False


def convert_first(path: str | Path, expected: str, then: str = "give {zarr} instead") -> str:
    """The message for a TIFF folder or file (:func:`is_tiff_source`) given where ``expected`` goes:
    what it is, and the ``incasem convert`` command that makes a zarr container of it; ``then``
    (with ``{zarr}``, the suggested container) says what to do with the container."""
    path = Path(path)
    beside = path if path.name else path.resolve()  # "." names the folder it is
    zarr_path = beside.with_name(f"{beside.stem if path.is_file() else beside.name}.zarr")
    what = "a TIFF file" if path.is_file() else "a folder of TIFF files"
    command = f"incasem convert {shlex.quote(str(path))} {shlex.quote(str(zarr_path))} --voxel-size Z,Y,X"
    return f"{path} is {what}, not {expected}: convert it first with `{command}`, then {then.format(zarr=zarr_path)}"
