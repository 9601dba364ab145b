"""``incasem export`` (zarr dataset -> TIFF slices): values, crops, and that it never destroys data.

The folder rules: never the container, inside it or around it (whatever --overwrite);
never a file; --overwrite replaces only a previous export (its manifest and the files
it lists); a failed or interrupted export leaves nothing behind and the old export as
it was. Every refusal is one line on stderr, exit status 1, and not one byte changed.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetExistsError, ExportFolderError, IncasemError, NotAContainerError
from incasem.io.volume import create_volume, open_volume
from incasem.preprocess import export as export_module
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from incasem.preprocess.export import MANIFEST, zarr_to_tiff
from tests.helpers import LUCCHI, QUIET, error_line, expected_uint8, require


def _dataset(container: Path, name: str, data: np.ndarray, chunks=(3, 8, 8)) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, (5, 4, 4), (10, 0, 0), chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's SHA-256, a link's target, or "dir"."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = "link -> " + os.readlink(path)
        elif path.is_dir():
            entries[key] = "dir"
        else:
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def _slices(folder: Path) -> dict[str, bytes]:
    """The TIFF files of an export folder, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))}


@pytest.fixture
def cell(tmp_path):
    """``tmp_path/work`` holding ``cell.zarr`` (two datasets) and the user's ``notes.txt``."""
    work = tmp_path / "work"
    container = work / "cell.zarr"
    rng = np.random.default_rng(11)
    _dataset(container, "volumes/raw", rng.integers(0, 255, (7, 8, 8), dtype=np.uint8))
    _dataset(container, "volumes/labels/mito", rng.integers(0, 2, (7, 8, 8), dtype=np.uint8))
    (work / "notes.txt").write_text("my notes")
    return container


# --- values and crops --------------------------------------------------------------------------


def test_export_mappings(tmp_path):
    container = tmp_path / "c.zarr"
    rng = np.random.default_rng(6)
    probabilities = rng.random((5, 8, 8), dtype=np.float32)
    _dataset(container, "probabilities", probabilities)
    _dataset(container, "raw16", rng.integers(0, 2**16, (5, 8, 8), dtype=np.uint16))
    _dataset(container, "binary64", rng.integers(0, 2, (5, 8, 8)).astype(np.int64))
    summary = zarr_to_tiff(container, "probabilities", tmp_path / "p", run=QUIET)
    exported = tifffile.imread(sorted((tmp_path / "p").glob("*.tif")))
    np.testing.assert_array_equal(exported, np.floor(255 * probabilities.astype(np.float64) + 0.5))
    assert summary.dtype == np.uint8 and summary.files == 5
    zarr_to_tiff(container, "raw16", tmp_path / "r", run=QUIET)
    np.testing.assert_array_equal(tifffile.imread(sorted((tmp_path / "r").glob("*.tif"))), open_volume(container, "raw16").read())
    zarr_to_tiff(container, "binary64", tmp_path / "b", run=QUIET)
    assert set(np.unique(tifffile.imread(sorted((tmp_path / "b").glob("*.tif"))))) == {0, 255}
    zarr_to_tiff(container, "probabilities", tmp_path / "kept", rescale=None, run=QUIET)
    np.testing.assert_array_equal(tifffile.imread(sorted((tmp_path / "kept").glob("*.tif"))), probabilities)


def test_export_crop_keeps_slice_numbers(tmp_path, capsys):
    container = tmp_path / "c.zarr"
    data = np.arange(12 * 8 * 8, dtype=np.uint16).reshape(12, 8, 8)
    _dataset(container, "volumes/raw", data)
    assert main(["export", str(container), str(tmp_path / "t"), "--z", "10:", "--x", "2:6", "--to-uint8", "0:767"]) == 0
    files = sorted((tmp_path / "t").glob("*.tif"))
    assert [f.name for f in files] == ["0010.tif", "0011.tif"]
    np.testing.assert_array_equal(tifffile.imread(files), expected_uint8(data[10:, :, 2:6], 0, 767))


def test_export_refuses_existing_folder_and_replaces_a_previous_export_atomically(tmp_path, capsys):
    container = tmp_path / "c.zarr"
    _dataset(container, "volumes/raw", np.ones((4, 8, 8), np.uint8) * 7)
    target = tmp_path / "tiffs"
    target.mkdir()
    assert main(["export", str(container), str(target)]) == 0  # an empty folder is fine
    assert main(["export", str(container), str(target)]) == 1
    assert "exists already and is not an empty folder: pass --overwrite" in error_line(capsys)
    assert main(["export", str(container), str(target), "--overwrite"]) == 0
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, "0000.tif", "0001.tif", "0002.tif", "0003.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr", "tiffs"], "no temporary folders are left"


def test_export_bad_input_one_line_nothing_written(tmp_path, capsys):
    container = tmp_path / "c.zarr"
    floats = np.zeros((6, 8, 8), np.float32)
    floats[4, 2, 2] = 3.5  # not a probability, in the second block
    _dataset(container, "volumes/raw", floats)
    assert main(["export", str(container), str(tmp_path / "t")]) == 1
    assert "holds values outside [0, 1]" in error_line(capsys)
    assert main(["export", str(tmp_path), str(tmp_path / "t")]) == 1
    assert "is not a zarr container" in error_line(capsys)
    assert main(["export", str(container), str(tmp_path / "t"), "--y", "4:9"]) == 1
    assert "y range 4:9 is not inside the data's 0:8" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]
    with pytest.raises(NotAContainerError):
        zarr_to_tiff(tmp_path / "missing.zarr", "volumes/raw", tmp_path / "t")


# --- the output folder never overlaps the container or the user's files ------------------------


def _folder_cases(container: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (cwd, FOLDER argument, text the error must hold)."""
    work = container.parent
    user = work / "mine"
    user.mkdir(exist_ok=True)
    (user / "thesis.docx").write_bytes(b"\x00years of work")
    (user / "sub").mkdir(exist_ok=True)
    (user / "sub" / "data.csv").write_text("1,2,3")
    return {
        "container": (work, str(container), "is the container being exported"),
        "container, trailing slash": (work, str(container) + "/", "is the container being exported"),
        "container, relative": (work, "cell.zarr", "is the container being exported"),
        "container via ..": (container / "volumes", "..", "is the container being exported"),
        "holds the container": (work, str(work), "holds the container"),
        "holds it two levels up": (work, str(work.parent), "holds the container"),
        "dot, cwd holds the container": (work, ".", "holds the container"),
        "dot-dot from inside": (container, "../", "holds the container"),
        "inside the container, new": (work, str(container / "tiffs"), "lies inside the container"),
        "inside the container, a group": (work, str(container / "volumes"), "lies inside the container"),
        "inside the container, an array": (work, str(container / "volumes" / "raw"), "lies inside the container"),
        "user files": (work, str(user), "choose a new folder, or empty it by hand"),
    }


CASES = [
    "container",
    "container, trailing slash",
    "container, relative",
    "container via ..",
    "holds the container",
    "holds it two levels up",
    "dot, cwd holds the container",
    "dot-dot from inside",
    "inside the container, new",
    "inside the container, a group",
    "inside the container, an array",
    "user files",
]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("case", CASES)
def test_dangerous_folder_is_refused_and_nothing_changes(cell, tmp_path, monkeypatch, capsys, case, overwrite):
    cwd, folder, message = _folder_cases(cell)[case]
    monkeypatch.chdir(cwd)
    before = _snapshot(tmp_path)
    assert main(["export", str(cell), folder, *(["--overwrite"] if overwrite else [])]) == 1
    line = error_line(capsys)
    assert message in line, line
    assert "pass --overwrite" not in line  # never advise overwriting
    assert _snapshot(tmp_path) == before, "every byte of the container and the user's files is unchanged"


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_symlinks_are_resolved(cell, tmp_path, capsys, overwrite):
    (tmp_path / "to_container").symlink_to(cell, target_is_directory=True)
    (tmp_path / "to_work").symlink_to(cell.parent, target_is_directory=True)
    before = _snapshot(tmp_path)
    flag = ["--overwrite"] if overwrite else []
    assert main(["export", str(cell), str(tmp_path / "to_container"), *flag]) == 1
    assert "is the container being exported" in error_line(capsys)
    assert main(["export", str(cell), str(tmp_path / "to_work") + "/", *flag]) == 1
    assert "holds the container" in error_line(capsys)
    assert main(["export", str(tmp_path / "to_work" / "cell.zarr"), str(cell.parent), *flag]) == 1
    assert "holds the container" in error_line(capsys)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_file_is_refused(cell, tmp_path, capsys, overwrite):
    before = _snapshot(tmp_path)
    flag = ["--overwrite"] if overwrite else []
    assert main(["export", str(cell), str(cell.parent / "notes.txt"), *flag]) == 1
    assert "notes.txt is a file, not a folder" in error_line(capsys)
    assert main(["export", str(cell), str(cell.parent / "notes.txt" / "tiffs"), *flag]) == 1
    assert "notes.txt is a file, not a folder" in error_line(capsys)
    assert _snapshot(tmp_path) == before


def test_dot_is_refused_even_when_empty(cell, tmp_path, monkeypatch, capsys):
    """Replacing the current directory would leave the shell in a deleted folder."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["export", str(cell), "."]) == 1
    assert "is the current directory" in error_line(capsys)
    assert empty.is_dir() and not any(empty.iterdir())


def test_the_api_raises_the_same_errors(cell, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    with pytest.raises(ExportFolderError, match="holds the container"):
        zarr_to_tiff(cell, "volumes/raw", cell.parent, mode="overwrite", run=QUIET)
    with pytest.raises(ExportFolderError, match="lies inside the container"):
        zarr_to_tiff(cell, "volumes/raw", cell / "out", run=QUIET)
    with pytest.raises(DatasetExistsError, match=r"no valid \.incasem-export\.json, .* e\.g\. notes\.txt"):
        zarr_to_tiff(cell, "volumes/raw", tmp_path / "notes", mode="overwrite", run=QUIET)
    assert issubclass(ExportFolderError, IncasemError)
    assert _snapshot(tmp_path) == before


# --- --overwrite replaces a previous export and nothing else -----------------------------------


def test_overwrite_of_a_previous_export_equals_a_fresh_export(cell, tmp_path, capsys):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert main(["export", str(cell), str(out), "-d", "volumes/labels/mito"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == [f"{z:04d}.tif" for z in range(7)]
    assert manifest["dataset"] == "volumes/labels/mito" and manifest["container"] == str(cell.resolve())
    assert main(["export", str(cell), str(out), "--z", "2:5", "--overwrite"]) == 0
    assert main(["export", str(cell), str(fresh), "--z", "2:5"]) == 0
    assert _slices(out) == _slices(fresh) and sorted(_slices(out)) == ["0002.tif", "0003.tif", "0004.tif"]
    new, again = (json.loads((f / MANIFEST).read_text()) for f in (out, fresh))
    assert {k: v for k, v in new.items() if k != "created"} == {k: v for k, v in again.items() if k != "created"}
    assert new["region"] == [[2, 5], [0, 8], [0, 8]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out", "work"], "no staging or old folder left"
    assert main(["export", str(cell), str(out), "--overwrite"]) == 0  # a deleted slice is no obstacle
    (out / "0003.tif").unlink()
    assert main(["export", str(cell), str(out), "--overwrite"]) == 0
    assert len(_slices(out)) == 7


@pytest.mark.parametrize("extra", ["file", "hidden file", "folder", "link", "no manifest", "bad manifest"])
def test_a_previous_export_with_anything_else_is_refused(cell, tmp_path, capsys, extra):
    out = tmp_path / "out"
    assert main(["export", str(cell), str(out)]) == 0
    capsys.readouterr()
    expected = {"file": "roi.zip", "hidden file": ".notes", "folder": "analysis", "link": "0007.tif"}.get(extra)
    if extra == "file":
        (out / "roi.zip").write_bytes(b"Fiji ROIs")
    elif extra == "hidden file":
        (out / ".notes").write_text("x")
    elif extra == "folder":
        (out / "analysis").mkdir()
        (out / "analysis" / "counts.csv").write_text("1")
    elif extra == "link":
        (out / "0007.tif").symlink_to(cell.parent / "notes.txt")
    elif extra == "no manifest":
        (out / MANIFEST).unlink()
    else:
        (out / MANIFEST).write_text("{not json")
    before = _snapshot(tmp_path)
    assert main(["export", str(cell), str(out), "--overwrite"]) == 1
    line = error_line(capsys)
    assert "choose a new folder, or empty it by hand" in line and str(out) in line
    no_manifest = "is not empty and has no valid .incasem-export.json"
    assert (f"holds {expected}, which the previous" if expected else no_manifest) in line
    assert main(["export", str(cell), str(out)]) == 1
    assert "choose a new folder, or empty it by hand" in error_line(capsys)
    assert _snapshot(tmp_path) == before


def test_a_listed_name_that_is_a_folder_is_refused(cell, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(cell), str(out)]) == 0
    (out / "0001.tif").unlink()
    (out / "0001.tif").mkdir()
    (out / "0001.tif" / "precious.txt").write_text("x")
    before = _snapshot(tmp_path)
    assert main(["export", str(cell), str(out), "--overwrite"]) == 1
    assert "holds 0001.tif, which the previous" in error_line(capsys)
    assert _snapshot(tmp_path) == before


# --- failures and interruptions leave nothing behind -------------------------------------------


def _failing_writes(monkeypatch, after: int = 1) -> None:
    """The disk fills up after ``after`` blocks."""
    calls = []
    write = export_module.write_slices

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(28, "No space left on device")
        return write(*args, **kwargs)

    monkeypatch.setattr(export_module, "write_slices", failing)


def _interrupt_after_writing(monkeypatch) -> None:
    """Ctrl-C once all slices are written, just before the folder is replaced."""
    run_blockwise = export_module.run_blockwise

    def interrupted(*args, **kwargs):
        run_blockwise(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "run_blockwise", interrupted)


@pytest.mark.parametrize("failure", ["ctrl-c", "disk full"])
def test_a_failed_or_interrupted_export_leaves_nothing_behind(cell, tmp_path, monkeypatch, capsys, failure):
    out = tmp_path / "out"
    assert main(["export", str(cell), str(out), "-d", "volumes/labels/mito"]) == 0
    capsys.readouterr()
    before = _snapshot(tmp_path)
    (_interrupt_after_writing if failure == "ctrl-c" else _failing_writes)(monkeypatch)
    for folder, overwrite in ((out, True), (tmp_path / "new" / "deeper" / "out", False)):
        if failure == "ctrl-c":  # through the API: the CLI turns it into an exit status
            with pytest.raises(KeyboardInterrupt):
                zarr_to_tiff(cell, "volumes/raw", folder, mode="overwrite" if overwrite else "create", run=RunOptions(workers=1, progress=False))
        else:
            assert main(["export", str(cell), str(folder), "-n", "1", *(["--overwrite"] if overwrite else [])]) == 1
            assert "No space left on device" in error_line(capsys)
        assert _snapshot(tmp_path) == before, "old export untouched; no staging, partial folder or created parents"


def test_a_failed_rename_puts_the_old_export_back(cell, tmp_path, monkeypatch):
    out = tmp_path / "out"
    zarr_to_tiff(cell, "volumes/labels/mito", out, run=QUIET)
    before = _snapshot(tmp_path)
    rename = os.rename

    def failing(source, target):
        if ".incasem-partial-" in str(source):
            raise KeyboardInterrupt
        rename(source, target)

    monkeypatch.setattr(export_module.os, "rename", failing)
    with pytest.raises(KeyboardInterrupt):
        zarr_to_tiff(cell, "volumes/raw", out, mode="overwrite", run=QUIET)
    assert _snapshot(tmp_path) == before


def test_a_file_added_during_the_export_is_kept(cell, tmp_path, monkeypatch):
    """The folder is checked again before it is replaced."""
    out = tmp_path / "out"
    zarr_to_tiff(cell, "volumes/raw", out, run=QUIET)
    write = export_module.write_slices

    def write_and_meddle(*args, **kwargs):
        (out / "late.txt").write_text("added while exporting")
        return write(*args, **kwargs)

    monkeypatch.setattr(export_module, "write_slices", write_and_meddle)
    with pytest.raises(DatasetExistsError, match=r"holds late\.txt"):
        zarr_to_tiff(cell, "volumes/raw", out, mode="overwrite", run=QUIET)
    assert (out / "late.txt").read_text() == "added while exporting"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]
    (out / "late.txt").unlink()
    late = tmp_path / "late"

    def put_an_export_there(*args, **kwargs):
        if not late.exists():
            shutil.copytree(out, late)
        return write(*args, **kwargs)

    monkeypatch.setattr(export_module, "write_slices", put_an_export_there)
    with pytest.raises(DatasetExistsError, match="pass --overwrite"):
        zarr_to_tiff(cell, "volumes/labels/mito", late, run=RunOptions(workers=1, progress=False))
    assert _snapshot(late) == _snapshot(out), "without --overwrite, not even a previous export is replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late", "out", "work"]


def test_real_overwrite_equals_fresh_export(tmp_path, capsys):
    container = tmp_path / "lucchi.zarr"
    crop = (slice(8, 18), slice(0, 200), slice(0, 224))  # Lucchi++ slices 60-69, rows 128-327, columns 224-447
    tiff_to_zarr(require(LUCCHI) / "image", container, options=ConvertOptions(voxel_size=(5, 5, 5), crop=crop), run=QUIET)
    before = _snapshot(container)
    assert main(["export", str(container), str(tmp_path / "out"), "--to-uint8", "minmax"]) == 0
    assert main(["export", str(container), str(tmp_path / "out"), "--overwrite"]) == 0
    assert main(["export", str(container), str(tmp_path / "fresh")]) == 0
    assert _slices(tmp_path / "out") == _slices(tmp_path / "fresh")
    np.testing.assert_array_equal(tifffile.imread(sorted((tmp_path / "out").glob("*.tif"))), open_volume(container, "volumes/raw").read())
    assert main(["export", str(container), str(tmp_path), "--overwrite"]) == 1
    assert "holds the container" in error_line(capsys)
    assert _snapshot(container) == before
