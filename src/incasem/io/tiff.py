"""TIFF z-stacks: a folder of 2D slices or one multi-page file, read and written by slice.

:func:`open_stack` finds the slices and checks, from the TIFF headers alone (no
pixel data is read), that they form one stack: a folder's files are ordered by the
last number in their names, which must run without gaps, and every slice must be a
2D greyscale image of one shape and dtype. The returned :class:`TiffStack` then reads
any range of z slices; a slice whose pixel data turns out to be corrupt is named in
the error. :func:`write_slices` writes one TIFF per z slice with zero-padded names.

Everything here only reads and writes; jobs that walk a whole stack live in
:mod:`incasem.preprocess.convert`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from incasem.errors import InputFileError
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
    """

    path: Path
    files: tuple[Path, ...]
    shape: Triple
    dtype: np.dtype

    @property
    def multipage(self) -> bool:
        """Whether the slices are the pages of one file rather than one file each."""
        return len(self.files) != self.shape[0]

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
        if self.multipage:
            _decode(self.files[0], out, slice(z_start, z_stop))
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


def _slice_number(path: Path) -> int:
    numbers = _NUMBER.findall(path.name.rsplit(".", 1)[0])
    if not numbers:
        raise InputFileError(f"{path} has no number in its name: name slices like 0000.tif, 0001.tif, ...")
    return int(numbers[-1])


def list_slices(folder: str | Path, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """The slice files of ``folder`` in z order, by the last number in each file name.

    Files matching the glob ``pattern`` (case-insensitively; hidden files skipped)
    are the slices. Their numbers must be distinct and consecutive; the first may be
    any number.

    Raises
    ------
    InputFileError
        If no file matches, a file has no number, two files share a number, or a
        number is missing (the message names it).
    """
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    matching = [folder / n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
    if not matching:
        others = f" (it holds {len(names)} other files, e.g. {names[0]})" if names else " (it is empty)"
        raise InputFileError(
            f"no files matching '{pattern}' in {folder}{others}: give a folder of TIFF slices or pass --pattern"
        )
    numbered: dict[int, Path] = {}
    for path in matching:
        number = _slice_number(path)
        if number in numbered:
            raise InputFileError(
                f"{numbered[number].name} and {path.name} in {folder} both have slice number {number}: "
                "remove one or narrow --pattern"
            )
        numbered[number] = path
    order = sorted(numbered)
    for before, after in zip(order, order[1:]):
        if after != before + 1:
            raise InputFileError(
                f"slice number {before + 1} is missing from {folder} (between {numbered[before].name} and "
                f"{numbered[after].name}): add it, or convert the parts on either side separately"
            )
    return [numbered[n] for n in order]


def _page_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axes of the first image series of ``path``, from its header."""
    try:
        with tifffile.TiffFile(path) as tif:
            layout = [(tuple(s.shape), np.dtype(s.dtype), s.axes) for s in tif.series[:1]]
    except Exception as error:  # any header parsing failure means it is no (intact) TIFF
        raise InputFileError(f"{path} is not a readable TIFF file ({error}): replace or remove it") from error
    if not layout:
        raise InputFileError(f"{path} holds no image: replace or remove it")
    return layout[0]


def _stack_from_folder(folder: Path, pattern: str) -> TiffStack:
    files = list_slices(folder, pattern)
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


def _stack_from_file(path: Path) -> TiffStack:
    shape, dtype, axes = _page_layout(path)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or axes[-2:] != "YX":
        raise InputFileError(
            f"{path} holds an image of shape {list(shape)} with axes {axes}: incasem needs a greyscale z-stack "
            "(one 2D page per slice); split channels/time points in Fiji first"
        )
    return TiffStack(path, (path,), (shape[0], shape[1], shape[2]), dtype)


def open_stack(path: str | Path, pattern: str = DEFAULT_PATTERN) -> TiffStack:
    """Find and validate a stack: a folder of 2D TIFF slices or one multi-page TIFF.

    Only the TIFF headers are read, so this is fast and every inconsistency is found
    before any data is converted.

    Parameters
    ----------
    path
        A folder of slices (ordered by the number in their names, see
        :func:`list_slices`) or a multi-page TIFF file.
    pattern
        Glob selecting the slices of a folder.

    Raises
    ------
    InputFileError
        If the path is missing, holds no TIFF slices, or the slices are not one
        consistent stack; the message names the offending file.
    """
    path = Path(path)
    if path.is_dir():
        return _stack_from_folder(path, pattern)
    if path.is_file():
        return _stack_from_file(path)
    raise InputFileError(f"{path} does not exist: give a folder of TIFF slices or a multi-page TIFF file")


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
