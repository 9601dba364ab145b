"""Hostile or unusual input: damaged metadata, non-whole-nanometre voxels, huge blocks, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from incasem.cli import main
from incasem.errors import MetadataError
from incasem.io.ngff import ngff_geometry
from incasem.io.volume import create_volume, open_volume
from incasem.predict import PredictOptions, predict_roi
from tests.helpers import DROSOPHILA, QUIET, make_checkpoint, require


@pytest.fixture
def cell(tmp_path) -> Path:
    """A container with one small complete uint8 dataset, volumes/raw (5 nm)."""
    volume = create_volume(tmp_path / "cell.zarr", "volumes/raw", (8, 16, 16), "uint8", (5, 5, 5))
    volume.write(volume.roi, np.arange(8 * 16 * 16, dtype=np.uint8).reshape(8, 16, 16))
    volume.mark_complete()
    return tmp_path / "cell.zarr"


def _set_attribute(cell: Path, key: str, value: object) -> None:
    path = cell / "volumes" / "raw" / ".zattrs"
    attributes = json.loads(path.read_text())
    attributes[key] = value
    path.write_text(json.dumps(attributes))


@pytest.mark.parametrize(
    ("key", "value"),
    [("resolution", [0, 5, 5]), ("resolution", "5,5,5"), ("resolution", [5, 5]), ("offset", [1, 0, 0]), ("offset", None)],
)
def test_hostile_geometry_is_named_listed_and_repairable(cell, capsys, key, value):
    _set_attribute(cell, key, value)
    with pytest.raises(MetadataError, match=f"cell.zarr/volumes/raw has .*{key}.*incasem info"):
        open_volume(cell, "volumes/raw")
    assert main(["equalize", str(cell)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("incasem: error:") and err.count("\n") == 1
    assert main(["info", str(cell)]) == 0  # the listing still works and flags the dataset
    assert "volumes/raw  UNUSABLE" in capsys.readouterr().out
    assert main(["info", str(cell), "-d", "volumes/raw", "--voxel-size", "5", "--offset", "0"]) == 0
    assert open_volume(cell, "volumes/raw").voxel_size == (5, 5, 5)


def test_truncated_array_metadata_names_the_file(cell, capsys):
    zarray = cell / "volumes" / "raw" / ".zarray"
    zarray.write_text(zarray.read_text()[:25])
    for arguments in (["info", str(cell)], ["equalize", str(cell)], ["info", str(cell), "-d", "volumes/raw"]):
        assert main(arguments) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{zarray} is damaged" in err, err


def test_non_whole_nanometre_voxels_are_kept_exactly(tmp_path, capsys):
    """Real ssTEM at 50 x 4.6 x 4.6 nm: convert, crop, label and predict keep 4.6 nm exactly."""
    cell = tmp_path / "sstem.zarr"
    sstem = require(DROSOPHILA)
    stack = ["convert", str(sstem / "image"), str(cell), "--voxel-size", "50,4.6,4.6", "--y", "100:164", "--x", "7:71"]
    assert main([*stack, "--offset", "0,0,0"]) == 0
    attributes = json.loads((cell / "volumes" / "raw" / ".zattrs").read_text())
    assert attributes["resolution"] == [50, 4.6, 4.6]
    assert attributes["offset"] == [0, 460, 32.2]  # the crop's start, 100 and 7 voxels of 4.6 nm
    group = json.loads((cell / "volumes" / ".zattrs").read_text())
    assert ngff_geometry(group, "raw") == ((50, 4.6, 4.6), (0, 460, 32.2))
    labels = ["convert", str(sstem / "labels" / "mito"), str(cell), "-d", "volumes/labels/mito"]
    assert main([*labels, "--like", f"{cell}:volumes/raw", "--y", "100:164", "--x", "7:71"]) == 0
    raw = open_volume(cell, "volumes/raw")
    assert raw.roi.offset == (0, 100, 7) and raw.voxel_size == (50, 4.6, 4.6)
    checkpoint = make_checkpoint(tmp_path / "aniso.pt", voxel_size=(50, 4.6, 4.6))
    output = predict_roi(checkpoint, cell, "volumes/raw", options=PredictOptions(device="cpu"), run=QUIET)
    segmentation = open_volume(cell, output.segmentation)
    assert segmentation.voxel_size == (50, 4.6, 4.6) and segmentation.roi == raw.roi
    assert main(["info", str(cell), "-d", "volumes/raw"]) == 0
    assert "voxel_size=[50, 4.6, 4.6]nm  offset=[0, 460, 32.2]nm" in capsys.readouterr().out


def test_block_far_larger_than_the_data_is_clipped(cell, tmp_path):
    """--block-size 100000 must not try to read a 100000³ input: the block is clipped to the region."""
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    huge = predict_roi(checkpoint, cell, "volumes/raw", options=PredictOptions((100000,) * 3, "cpu"), run=QUIET)
    small = predict_roi(checkpoint, cell, "volumes/raw", options=PredictOptions((8, 8, 8), "cpu"), run=QUIET)
    assert huge.block_shape == (8, 16, 16)
    difference = open_volume(cell, huge.probabilities[0]).read().astype(int) - open_volume(cell, small.probabilities[0]).read()
    assert np.abs(difference).max() <= 1


@pytest.mark.parametrize("arguments", [[], ["models"]])
def test_a_command_group_without_a_command_shows_its_help(capsys, arguments):
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert "Usage:" in captured.out + captured.err and "incasem: error" not in captured.err


def _interrupt(arguments: list[str], cwd: Path) -> tuple[int, str]:
    """Start ``incasem ARGUMENTS``, press Ctrl-C once it reports progress, return exit status and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "incasem", *arguments], cwd=cwd, stderr=subprocess.PIPE, text=True, env=env)
    seen = ""
    while "block" not in seen:  # the progress bar: the job is running
        character = process.stderr.read(1)
        assert character, f"the job ended before it could be interrupted: {seen}"
        seen += character
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    return process.wait(timeout=60), rest


def test_ctrl_c_exits_130_with_a_resume_hint_and_resume_finishes(tmp_path, lucchi_crop):
    raw, _ = lucchi_crop
    volume = create_volume(tmp_path / "cell.zarr", "volumes/raw", raw.shape, "uint8", (5, 5, 5), job={"job": "convert"})
    volume.write(volume.roi, raw)
    volume.mark_complete()
    arguments = ["equalize", "cell.zarr", "--kernel-size", "4", "-n", "1"]  # ~5000 small tiles: takes a while
    status, err = _interrupt(arguments, tmp_path)
    assert status == 130
    # (the progress bar may have been mid-line when the signal came)
    assert err.strip().splitlines()[-1].endswith("incasem: interrupted: rerun the same command with --resume to finish it")
    assert "Traceback" not in err
    assert not open_volume(tmp_path / "cell.zarr", "volumes/raw_equalized_0.02", require_complete=False).complete
    assert main(["equalize", str(tmp_path / "cell.zarr"), "--kernel-size", "4", "--resume"]) == 0
    assert open_volume(tmp_path / "cell.zarr", "volumes/raw_equalized_0.02").complete
