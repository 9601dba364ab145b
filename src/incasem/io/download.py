"""Download the original incasem's example cells from its public bucket: resumable and verified.

The cells lie under ``datasets/`` of ``s3://asem-project`` (``datasets/cell_6/cell_6.zarr/...``).
:func:`download_cell` copies every object under ``datasets/<cell>/`` to the same path
below the destination folder (``<destination>/cell_6/cell_6.zarr/...``)::

    <destination>/cell_6/
        cell_6.zarr/...                 the container, as in the bucket
        DOWNLOAD_INCOMPLETE.txt         only while the download is not finished
        .incasem-download/files.jsonl   the files this tool wrote (key, size, ETag, SHA-256, mtime)
        .incasem-download/partial/      files in transfer (only while running)

- **Verified**: each file is streamed into ``partial/``, its size checked against the
  listing and its MD5 against the ETag when that is a plain MD5 (a multipart upload's
  ETag holds a ``-`` and only the size can be checked), then fsynced and renamed into
  place. A file that fails is deleted, never kept.
- **Resumable**: a rerun lists the bucket again and skips files that are complete: ones
  it wrote (same size, ETag and modification time as recorded) and any other file
  with the listed size and MD5. Only what is missing is fetched.
- **Incomplete until done**: ``DOWNLOAD_INCOMPLETE.txt`` is written before the first
  file and removed after the last. Data files come before zarr metadata, deepest
  first, and the container's own ``.zgroup``/``zarr.json`` last: until everything is
  there, zarr readers (``incasem info``) do not see a container, so nothing
  half-downloaded passes for complete.
- **The user's files are kept**: a file at a destination path that this tool did not
  write is never replaced; if it differs from the bucket's, the download is refused
  (before anything is fetched) with its name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from incasem.errors import DownloadError, InvalidValueError, option
from incasem.io.bucket import (
    DEFAULT_BASE_URL,
    BucketObject,
    byte_bar,
    check_base_url,
    download,
    list_objects,
    list_prefixes,
    object_url,
)

try:  # POSIX only; elsewhere two downloads into one folder are not kept apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Key prefix of the example cells in the bucket.
DATASETS_PREFIX = "datasets/"
#: Marker in the cell folder while a download is unfinished.
INCOMPLETE_MARKER = "DOWNLOAD_INCOMPLETE.txt"
#: Folder in the cell folder with the record of downloaded files and the files in transfer.
STATE_FOLDER = ".incasem-download"

_RECORD = "files.jsonl"
_PARTIAL = "partial"
_CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ZARR_METADATA = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})
_DIGEST_PIECE = 1 << 20


@dataclass(frozen=True)
class CellDownload:
    """The result of :func:`download_cell`.

    Attributes
    ----------
    cell
        Cell name, e.g. ``cell_6``.
    folder
        ``<destination>/<cell>``: the cell's files below it, as in the bucket.
    files
        Number of files of the cell (all present and verified now).
    size_bytes
        Their total size.
    fetched
        Files downloaded by this call (the others were there already).
    """

    cell: str
    folder: Path
    files: int
    size_bytes: int
    fetched: int


def cell_name(name_or_number: str | int) -> str:
    """The bucket's name of a cell: ``6``, ``"6"`` and ``"cell_6"`` give ``"cell_6"``.

    Raises
    ------
    InvalidValueError
        For a name that is not a plain folder name (e.g. holds ``/`` or starts with ``.``).
    """
    text = str(name_or_number).strip()
    if isinstance(name_or_number, bool) or not _CELL_NAME.fullmatch(text):
        raise InvalidValueError(f"cell {name_or_number!r} is not a cell name: give a name like cell_6, or its number 6")
    return f"cell_{text}" if text.isdigit() else text


def _natural(name: str) -> list[Any]:
    """Sort key putting cell_2 before cell_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_cells(base_url: str = DEFAULT_BASE_URL) -> list[str]:
    """The names of the cells in the bucket (folders right below ``datasets/``), naturally sorted.

    Raises
    ------
    DownloadError
        If the bucket cannot be reached or listed.
    """
    base_url = check_base_url(base_url)
    prefixes = list_prefixes(base_url, DATASETS_PREFIX, "then run the command again")
    return sorted((p[len(DATASETS_PREFIX) :].rstrip("/") for p in prefixes), key=_natural)


def _check_key(item: BucketObject, prefix: str, base_url: str) -> None:
    """Refuse a listed key that would be written outside the cell's folder (or into its state folder)."""
    parts = item.key[len(prefix) :].split("/")
    if (
        not item.key.startswith(prefix)
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] in (STATE_FOLDER, INCOMPLETE_MARKER)
        or any(c == "\\" or ord(c) < 32 for c in item.key)
    ):
        raise DownloadError(
            f"the bucket at {base_url} lists a key {item.key!r} that would be written outside the cell's "
            f"files: refusing to download it; check {option('base_url', '--base-url')}"
        )


def list_cell(name_or_number: str | int, base_url: str = DEFAULT_BASE_URL) -> list[BucketObject]:
    """The files of a cell in the bucket, with size and ETag (no "folder" placeholder objects).

    Raises
    ------
    InvalidValueError
        For a malformed cell name.
    DownloadError
        If the bucket cannot be reached, or has no such cell (the message lists those it has),
        or lists a key that would leave the cell's folder.
    """
    cell = cell_name(name_or_number)
    base_url = check_base_url(base_url)
    prefix = f"{DATASETS_PREFIX}{cell}/"
    items = [item for item in list_objects(base_url, prefix, "then run the command again") if not item.key.endswith("/")]
    if not items:
        cells = list_cells(base_url)
        there = f"the cells there are {', '.join(cells)}" if cells else f"it holds no cells: check {option('base_url', '--base-url')}"
        raise DownloadError(f"there is no cell '{cell}' in {base_url}/{DATASETS_PREFIX}: {there}")
    for item in items:
        _check_key(item, prefix, base_url)
    return items


def _download_order(item: BucketObject) -> tuple[bool, int, str]:
    """Data first, then zarr metadata from the deepest to the container's own."""
    path = PurePosixPath(item.key)
    return (path.name in _ZARR_METADATA, -len(path.parts), item.key)


# ---------------------------------------------------------------------- state of the cell folder


@dataclass(frozen=True)
class _Cell:
    """Paths of one cell download."""

    name: str
    base_url: str
    destination: Path

    @property
    def folder(self) -> Path:
        return self.destination / self.name

    @property
    def state(self) -> Path:
        return self.folder / STATE_FOLDER

    @property
    def marker(self) -> Path:
        return self.folder / INCOMPLETE_MARKER

    def target(self, item: BucketObject) -> Path:
        return self.destination.joinpath(*PurePosixPath(item.key[len(DATASETS_PREFIX) :]).parts)

    def partial(self, item: BucketObject) -> Path:
        return self.state / _PARTIAL / hashlib.sha256(item.key.encode()).hexdigest()[:32]

    @property
    def hint(self) -> str:
        return f"then rerun `incasem download {self.name}`: it resumes the incomplete download in {self.folder}"


def _read_record(cell: _Cell) -> dict[str, dict[str, Any]]:
    """The files this tool wrote, by key (a line cut off by a crash is ignored)."""
    record: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in (cell.state / _RECORD).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = json.loads(line)
                record[entry["key"]] = entry
    return record


def _append_record(cell: _Cell, item: BucketObject, target: Path, sha256: str) -> None:
    entry = {"key": item.key, "size": item.size, "etag": item.etag, "sha256": sha256, "mtime_ns": target.stat().st_mtime_ns}
    with open(cell.state / _RECORD, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(entry, sort_keys=True) + "\n")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while piece := stream.read(_DIGEST_PIECE):
            digest.update(piece)
    return digest.hexdigest()


def _matches(path: Path, item: BucketObject) -> bool:
    """Whether the regular file at ``path`` has the listed size and (when known) MD5."""
    return path.is_file() and path.stat().st_size == item.size and (item.md5 is None or _md5(path) == item.md5)


def _is_ours_and_intact(path: Path, item: BucketObject, entry: dict[str, Any] | None) -> bool:
    """A file this tool wrote for this very object and nobody touched since (no reading needed)."""
    if entry is None or path.is_symlink() or not path.is_file():
        return False
    stat = path.stat()
    return (entry.get("etag"), entry.get("size"), entry.get("mtime_ns")) == (item.etag, item.size, stat.st_mtime_ns) and (stat.st_size == item.size)


def _to_fetch(cell: _Cell, items: Sequence[BucketObject]) -> list[BucketObject]:
    """The objects that are not complete at their destination, in download order.

    Raises
    ------
    DownloadError
        If a destination holds something this tool did not write that differs from the object.
    """
    record = _read_record(cell)
    todo: list[BucketObject] = []
    foreign: list[BucketObject] = []
    for item in sorted(items, key=_download_order):
        target = cell.target(item)
        entry = record.get(item.key)
        if not os.path.lexists(target):
            todo.append(item)
        elif not (_is_ours_and_intact(target, item, entry) or _matches(target, item)):
            (todo if entry is not None and target.is_file() and not target.is_symlink() else foreign).append(item)
    if foreign:
        first, url = cell.target(foreign[0]), object_url(cell.base_url, foreign[0].key)
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DownloadError(
            f"{first}{more} exists, was not downloaded by incasem and differs from {url}: "
            "move it away or choose another destination folder; nothing was downloaded"
        )
    return todo


@contextlib.contextmanager
def _exclusive(cell: _Cell) -> Iterator[None]:
    """Hold a lock on the cell's state folder, so that two downloads never write one folder."""
    cell.state.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(cell.state, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"another `incasem download` is writing {cell.folder}: wait until it finishes") from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- fetching


def _disk_error(cell: _Cell, path: Path, error: OSError) -> DownloadError:
    fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the destination"
    return DownloadError(f"cannot write {path} ({error.strerror or error}): {fix}, {cell.hint}")


def _fetch(cell: _Cell, item: BucketObject, on_bytes: Callable[[int], object]) -> None:
    """Download one object into ``partial/``, verify it, rename it into place and record it."""
    url, partial, target = object_url(cell.base_url, item.key), cell.partial(item), cell.target(item)
    try:
        try:
            with open(partial, "wb") as stream:
                transfer = download(url, stream, hint=cell.hint, on_bytes=on_bytes)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            raise _disk_error(cell, target, error) from None
        if transfer.size != item.size or (item.md5 is not None and transfer.md5 != item.md5):
            got, listed = (transfer.size, item.size) if transfer.size != item.size else (transfer.md5, item.md5)
            what = "bytes" if transfer.size != item.size else "MD5"
            raise DownloadError(f"{url} arrived corrupted ({what} {got}, the bucket lists {listed}); it was not kept: {cell.hint}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        except OSError as error:
            raise _disk_error(cell, target, error) from None
    finally:
        partial.unlink(missing_ok=True)
    _append_record(cell, item, target, transfer.sha256)


def _fetch_all(cell: _Cell, todo: Sequence[BucketObject], progress: bool) -> None:
    """Fetch ``todo`` with the incomplete marker in place; remove it (and the partial files) when all are there."""
    partial = cell.state / _PARTIAL
    shutil.rmtree(partial, ignore_errors=True)  # files of a killed run: ours, restarted
    if todo:
        partial.mkdir()
        if not cell.marker.exists():
            cell.marker.write_text(
                f"This download of {cell.name} from {cell.base_url} is not finished: its files may be missing "
                f"or incomplete.\nRun `incasem download {cell.name} {cell.destination}` again to finish it.\n",
                encoding="utf-8",
            )
        with byte_bar(f"download {cell.name}", progress, sum(item.size for item in todo)) as bar:
            for item in todo:
                _fetch(cell, item, bar.update)
    shutil.rmtree(partial, ignore_errors=True)
    cell.marker.unlink(missing_ok=True)


def download_cell(
    name_or_number: str | int,
    destination: str | os.PathLike[str] = ".",
    base_url: str = DEFAULT_BASE_URL,
    progress: bool = True,
) -> CellDownload:
    """Download (or finish downloading) an example cell of the original incasem.

    Every object under ``datasets/<cell>/`` of the bucket is stored at the same path
    below ``destination`` (``cell_6`` -> ``<destination>/cell_6/cell_6.zarr/...``); see
    the module documentation for verification, resume and the incomplete marker.
    Memory stays bounded (files are streamed to disk in 1 MiB pieces).

    Parameters
    ----------
    name_or_number
        The cell, e.g. ``"cell_6"`` or ``6``.
    destination
        Folder that receives the cell's folder (created when missing).
    base_url
        Address of the bucket (a mirror, or a local server in tests).
    progress
        Show a progress bar (bytes) on stderr.

    Returns
    -------
    CellDownload
        Where the cell is, how many files and bytes, and how many were fetched now.

    Raises
    ------
    InvalidValueError
        For a malformed cell name.
    DownloadError
        If the bucket cannot be reached or has no such cell (the message lists the
        cells it has); if a destination file that incasem did not write differs from
        the bucket's (nothing is fetched then); if a transfer fails, arrives corrupted
        or cannot be written (a full disk). The download then stays marked incomplete
        and a rerun resumes it.
    """
    items = list_cell(name_or_number, base_url)
    cell = _Cell(cell_name(name_or_number), check_base_url(base_url), Path(destination))
    if os.path.lexists(cell.folder) and not cell.folder.is_dir():
        raise DownloadError(f"{cell.folder} exists and is not a folder: move it away or choose another destination folder")
    try:
        with _exclusive(cell):
            todo = _to_fetch(cell, items)
            _fetch_all(cell, todo, progress)
    except OSError as error:  # creating the folders, the marker or the record
        raise _disk_error(cell, Path(error.filename or cell.folder), error) from None
    return CellDownload(cell.name, cell.folder, len(items), sum(item.size for item in items), len(todo))
