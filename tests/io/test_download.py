"""``incasem download``: a real zarr cell served by a local stand-in of the public bucket.

The cell is made with ``incasem convert`` from a crop of the Lucchi++ FIB-SEM and
its mitochondria labels and laid out as ``datasets/cell_6/cell_6.zarr/...``, next to
a second cell, as in the bucket. Listings come in pages of :data:`PAGE_SIZE` keys.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import incasem.io.download as download_module
from incasem.cli import main
from incasem.errors import DownloadError, InvalidValueError, NotAContainerError
from incasem.io.bucket import BucketObject
from incasem.io.download import INCOMPLETE_MARKER, STATE_FOLDER, cell_name, download_cell, list_cell, list_cells
from incasem.io.volume import open_volume
from tests.fake_bucket import Bucket, serve, unreachable_url
from tests.helpers import LUCCHI, read_stack, require

PAGE_SIZE = 7  # keys per listing page: the cell's ~50 keys span several pages
CROP = (slice(10, 30), slice(100, 164), slice(100, 180))  # z, y, x voxels of the Lucchi++ test crop
CELL = "datasets/cell_6/"


@pytest.fixture(scope="module")
def bucket_root(tmp_path_factory) -> Path:
    """The bucket's files: cell_6 (a real zarr container, raw + labels), cell_1, a README."""
    require(LUCCHI)
    root = tmp_path_factory.mktemp("bucket")
    container = root / CELL / "cell_6.zarr"
    crop = [f"--{axis}={s.start}:{s.stop}" for axis, s in zip("zyx", CROP)]
    common = [*crop, "--voxel-size", "5", "--chunks", "8,32,32", "-q"]
    assert main(["convert", str(LUCCHI / "image"), str(container), *common]) == 0
    assert main(["convert", str(LUCCHI / "labels" / "mito"), str(container), "-d", "volumes/labels/mito", "--like", str(container), *crop, "-q"]) == 0
    (root / "datasets" / "cell_1").mkdir()
    (root / "datasets" / "cell_1" / "notes.txt").write_text("another cell")
    (root / "datasets" / "README.txt").write_text("example cells of incasem")
    return root


@pytest.fixture
def bucket(bucket_root) -> Iterator[tuple[Bucket, str]]:
    """A fresh server (request log, faults) on the module's bucket files; yields it and its URL."""
    state = Bucket(bucket_root, page_size=PAGE_SIZE)
    with serve(state) as base_url:
        yield state, base_url


def cell_keys(bucket: Bucket) -> list[str]:
    return [k for k in bucket.listed_keys() if k.startswith(CELL)]


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_same_files(bucket: Bucket, dest: Path, keys: list[str]) -> None:
    for key in keys:
        assert (dest / key.removeprefix("datasets/")).read_bytes() == (bucket.root / key).read_bytes(), key


def chunk_key(bucket: Bucket) -> str:
    return next(k for k in cell_keys(bucket) if k.endswith("volumes/raw/1.1.1"))


# ---------------------------------------------------------------------- a whole cell


def test_download_gives_the_source_volume_and_a_rerun_fetches_nothing(bucket, tmp_path) -> None:
    server, base_url = bucket
    dest = tmp_path / "data"
    keys = cell_keys(server)
    result = download_cell("cell_6", dest, base_url, progress=False)

    assert (result.cell, result.folder, result.files, result.fetched) == ("cell_6", dest / "cell_6", len(keys), len(keys))
    assert result.size_bytes == sum((server.root / k).stat().st_size for k in keys)
    raw = open_volume(dest / "cell_6" / "cell_6.zarr", "volumes/raw")
    assert raw.voxel_size == (5, 5, 5) and raw.offset_nm == tuple(5 * s.start for s in CROP)
    np.testing.assert_array_equal(raw.read(), read_stack(LUCCHI / "image", *CROP))
    labels = open_volume(dest / "cell_6" / "cell_6.zarr", "volumes/labels/mito")
    np.testing.assert_array_equal(labels.read(), read_stack(LUCCHI / "labels" / "mito", *CROP))
    assert_same_files(server, dest, keys)
    # nothing but the cell's files and the record; no marker, no partial files, no other cell
    assert [f for f in files_in(dest) if STATE_FOLDER not in f] == sorted(k.removeprefix("datasets/") for k in keys)
    assert files_in(dest / "cell_6" / STATE_FOLDER) == ["files.jsonl"]
    listings = [r for r in server.requests if r.startswith("/?")]
    assert len(listings) == math.ceil(len(keys) / PAGE_SIZE) > 2  # every page followed
    assert server.downloads() == len(keys)

    server.requests.clear()
    again = download_cell(6, dest, base_url, progress=False)  # the number names the cell too
    assert (again.files, again.fetched) == (len(keys), 0) and server.downloads() == 0


def test_interrupted_download_resumes_with_only_the_missing_files(bucket, tmp_path) -> None:
    server, base_url = bucket
    keys = cell_keys(server)
    server.fail_after = 5  # the server answers HTTP 503 from the sixth file on
    with pytest.raises(DownloadError, match=r"HTTP 503.*resumes the incomplete download") as info:
        download_cell("cell_6", tmp_path, base_url, progress=False)
    assert "\n" not in str(info.value)
    folder = tmp_path / "cell_6"
    assert (folder / INCOMPLETE_MARKER).is_file()
    assert "not finished" in (folder / INCOMPLETE_MARKER).read_text()
    done = [f for f in files_in(folder) if STATE_FOLDER not in f and f != INCOMPLETE_MARKER]
    assert len(done) == 5 and all(f.rsplit("/", 1)[-1][0].isdigit() for f in done)  # data before metadata
    assert_same_files(server, tmp_path, [f"datasets/cell_6/{f}" for f in done])
    with pytest.raises(NotAContainerError):  # the container's own metadata comes last: no half container
        open_volume(folder / "cell_6.zarr", "volumes/raw")

    server.fail_after, server.requests[:] = None, []
    result = download_cell("cell_6", tmp_path, base_url, progress=False)
    assert result.fetched == len(keys) - 5 and server.downloads() == len(keys) - 5
    assert not (folder / INCOMPLETE_MARKER).exists() and not (folder / STATE_FOLDER / "partial").exists()
    assert_same_files(server, tmp_path, keys)
    np.testing.assert_array_equal(open_volume(folder / "cell_6.zarr", "volumes/raw").read(), read_stack(LUCCHI / "image", *CROP))


# ---------------------------------------------------------------------- verification


@pytest.mark.parametrize(
    ("damage", "message"),
    [("corrupt", r"corrupted \(MD5 "), ("truncated", r"corrupted \(bytes "), ("short", "truncated|broke off")],
)
def test_a_damaged_file_is_refused_and_not_kept(bucket, tmp_path, damage, message) -> None:
    server, base_url = bucket
    key = chunk_key(server)
    server.damage[key] = damage
    with pytest.raises(DownloadError, match=message) as info:
        download_cell("cell_6", tmp_path, base_url, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / key.removeprefix("datasets/")).exists()
    assert (tmp_path / "cell_6" / INCOMPLETE_MARKER).exists()
    assert files_in(tmp_path / "cell_6" / STATE_FOLDER / "partial") == []

    del server.damage[key]
    download_cell("cell_6", tmp_path, base_url, progress=False)
    assert_same_files(server, tmp_path, cell_keys(server))


def test_a_multipart_etag_checks_the_size_only(bucket, tmp_path) -> None:
    server, base_url = bucket
    key = chunk_key(server)
    server.etags[key] = "0123456789abcdef0123456789abcdef-2"
    server.damage[key] = "corrupt"  # same size, wrong bytes: undetectable without an MD5
    download_cell("cell_6", tmp_path, base_url, progress=False)
    assert (tmp_path / key.removeprefix("datasets/")).stat().st_size == (server.root / key).stat().st_size
    assert BucketObject(key, 1, "0123456789abcdef0123456789abcdef-2").md5 is None
    assert BucketObject(key, 1, "0123456789ABCDEF0123456789ABCDEF").md5 == "0123456789abcdef0123456789abcdef"


def test_own_file_damaged_later_is_fetched_again(bucket, tmp_path) -> None:
    server, base_url = bucket
    download_cell("cell_6", tmp_path, base_url, progress=False)
    key = chunk_key(server)
    target = tmp_path / key.removeprefix("datasets/")
    target.write_bytes(bytes(target.stat().st_size))  # same size, zeros
    server.requests.clear()
    assert download_cell("cell_6", tmp_path, base_url, progress=False).fetched == 1
    assert server.downloads() == 1 and target.read_bytes() == (server.root / key).read_bytes()


# ---------------------------------------------------------------------- the user's files


def test_a_users_file_that_differs_is_never_replaced(bucket, tmp_path) -> None:
    server, base_url = bucket
    users = tmp_path / "cell_6" / "cell_6.zarr" / "volumes" / "raw" / ".zattrs"
    users.parent.mkdir(parents=True)
    users.write_text('{"mine": true}')
    with pytest.raises(DownloadError, match="was not downloaded by incasem and differs") as info:
        download_cell("cell_6", tmp_path, base_url, progress=False)
    assert str(users) in str(info.value) and "\n" not in str(info.value)
    assert server.downloads() == 0 and users.read_text() == '{"mine": true}'
    assert not (tmp_path / "cell_6" / INCOMPLETE_MARKER).exists()


def test_a_users_identical_copy_is_kept_and_not_fetched(bucket, tmp_path) -> None:
    server, base_url = bucket
    key = chunk_key(server)
    copy = tmp_path / key.removeprefix("datasets/")
    copy.parent.mkdir(parents=True)
    shutil.copy(server.root / key, copy)
    mtime = copy.stat().st_mtime_ns
    result = download_cell("cell_6", tmp_path, base_url, progress=False)
    assert result.fetched == len(cell_keys(server)) - 1 and f"/{key}" not in server.requests
    assert copy.stat().st_mtime_ns == mtime  # left as it was


# ---------------------------------------------------------------------- bad input, failures


def test_unknown_cell_lists_the_cells_there_are(bucket, tmp_path) -> None:
    _, base_url = bucket
    assert list_cells(base_url) == ["cell_1", "cell_6"]
    with pytest.raises(DownloadError, match=r"no cell 'cell_99' in .*/datasets/: the cells there are cell_1, cell_6$"):
        download_cell(99, tmp_path, base_url, progress=False)
    assert list(tmp_path.iterdir()) == []
    for bad in ("../cell_6", "cell/6", ".hidden", "", True):
        with pytest.raises(InvalidValueError, match="is not a cell name"):
            cell_name(bad)


def test_paged_cell_listing_with_delimiter(bucket_root) -> None:
    state = Bucket(bucket_root, page_size=1)  # one common prefix per page
    with serve(state) as base_url:
        assert list_cells(base_url) == ["cell_1", "cell_6"]
        assert [item.key for item in list_cell("cell_1", base_url)] == ["datasets/cell_1/notes.txt"]
    assert sum("delimiter=%2F" in r for r in state.requests) == 3  # cell_1/, cell_6/, README.txt (no prefix)


def test_a_key_leaving_the_cell_folder_is_refused(bucket_root, tmp_path) -> None:
    state = Bucket(bucket_root, listed_only=("datasets/cell_6/../../escape.txt",))
    with serve(state) as base_url, pytest.raises(DownloadError, match="outside the cell's files"):
        download_cell("cell_6", tmp_path, base_url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_and_bad_url(tmp_path) -> None:
    url = unreachable_url()
    with pytest.raises(DownloadError, match=f"cannot reach {url}/.*check the connection") as info:
        download_cell("cell_6", tmp_path, url, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(DownloadError, match="http:// or https://"):
        download_cell("cell_6", tmp_path, "ftp://example.org", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_the_download_incomplete(bucket, tmp_path, monkeypatch) -> None:
    _server, base_url = bucket

    class FullDisk:
        def __init__(self, path, mode) -> None:
            self.path, self.stream = path, open(path, mode)  # noqa: SIM115

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.stream.close()

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    def full_disk_open(path, mode="r", **kwargs):
        return FullDisk(path, mode) if mode == "wb" else open(path, mode, **kwargs)

    monkeypatch.setattr(download_module, "open", full_disk_open, raising=False)
    with pytest.raises(DownloadError, match=r"No space left on device\): free some space, then rerun") as info:
        download_cell("cell_6", tmp_path, base_url, progress=False)
    assert "\n" not in str(info.value)
    folder = tmp_path / "cell_6"
    assert (folder / INCOMPLETE_MARKER).exists() and files_in(folder / STATE_FOLDER / "partial") == []
    written = [f for f in files_in(folder) if STATE_FOLDER not in f and f != INCOMPLETE_MARKER]
    assert all((folder / f).stat().st_size == 0 for f in written)  # only empty files (nothing to write) got through


def test_two_downloads_never_write_one_folder(bucket, tmp_path) -> None:
    _, base_url = bucket
    state = tmp_path / "cell_6" / STATE_FOLDER
    state.mkdir(parents=True)
    fd = os.open(state, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another `incasem download` is writing"):
            download_cell("cell_6", tmp_path, base_url, progress=False)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- CLI


def test_cli_download_dry_run_and_errors(bucket, tmp_path, capsys) -> None:
    server, base_url = bucket
    keys = cell_keys(server)
    assert main(["download", "cell_6", str(tmp_path), "--base-url", base_url, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(keys) + 1 and lines[-1].startswith(f"{len(keys)} files, ")
    assert any(line.endswith(str(tmp_path / "cell_6" / "cell_6.zarr" / "volumes" / "raw" / ".zarray")) for line in lines)
    assert list(tmp_path.iterdir()) == [] and server.downloads() == 0

    assert main(["download", "6", str(tmp_path), "--base-url", base_url, "-q"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"cell_6: {len(keys)} files, ")
    assert out.endswith(f"in {tmp_path / 'cell_6'} ({len(keys)} fetched now, 0 already there)")

    assert main(["download", "cell_7", str(tmp_path), "--base-url", base_url, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("incasem: error: there is no cell 'cell_7'") and "cell_1, cell_6" in err


def test_console_script_downloads_a_cell(bucket, tmp_path) -> None:
    script = Path(sys.executable).parent / "incasem"
    if not script.exists():
        pytest.skip(f"console script {script} is not installed (pip install -e .)")
    _, base_url = bucket
    result = subprocess.run(
        [str(script), "download", "cell_1", str(tmp_path), "--base-url", base_url, "-q"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cell_1: 1 files, ")
    assert (tmp_path / "cell_1" / "notes.txt").read_text() == "another cell"
