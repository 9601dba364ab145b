"""Refusals a new user meets with hostile input, across every command that can meet them.

A refused model, an empty region, a TIFF folder where a container goes, a rerun of an
interrupted job, a resume with other options: each is one line that says what is wrong
and what to give, and nothing is written before it. Library warnings do not add lines to
a refusal. ``incasem view`` draws labels and predictions in colours of their own.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from incasem.cli import main
from incasem.errors import CheckpointError, DatasetMismatchError, InputFileError, NotAContainerError, RoiError
from incasem.geometry import Roi
from incasem.io.data_config import load_data_config
from incasem.io.metadata import INCOMPLETE, STATUS_KEY
from incasem.io.volume import create_volume, open_volume
from incasem.model.checkpoint import check_checkpoint, load_checkpoint
from incasem.predict import PredictOptions, predict_roi
from incasem.predict.core import predict_array
from tests.helpers import QUIET, error_line, make_checkpoint

SHAPE = (16, 48, 48)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file, and every folder (value ``"dir"``), under ``folder``."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))}


def _write(container: Path, name: str, data: np.ndarray, chunks=None) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, (5, 5, 5), chunks=chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()


@pytest.fixture
def workspace(tmp_path) -> Path:
    """TIFF slices, cell.zarr (raw, equalized raw, labels, a probability map), a model and a NaN model."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    (tmp_path / "stack").mkdir()
    for index, plane in enumerate(raw):
        tifffile.imwrite(tmp_path / "stack" / f"{index:04d}.tif", plane)
    cell = tmp_path / "cell.zarr"
    _write(cell, "volumes/raw", raw, chunks=(8, 16, 16))  # chunks smaller than the data: it has a pyramid
    _write(cell, "volumes/raw_equalized_0.02", raw)
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:12, 10:30, 10:30] = 1
    _write(cell, "volumes/labels/mito", labels)
    _write(cell, "volumes/probabilities", rng.random(SHAPE).astype(np.float32))
    _write(cell, "volumes/doubled", np.full(SHAPE, 2.0, np.float32))  # not probabilities: values up to 2
    make_checkpoint(tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    first = next(iter(payload["model_state_dict"]))
    payload["model_state_dict"][first][0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    (tmp_path / "two.json").write_text(json.dumps({
        "first": {"file": "cell.zarr", "voxel_size": [5, 5, 5], "raw": "volumes/raw_equalized_0.02", "offset": [0, 0, 0], "shape": [8, 16, 16]},
        "second": {"file": "cell.zarr", "voxel_size": [5, 5, 5], "raw": "volumes/probabilities", "offset": [0, 0, 0], "shape": [8, 16, 16]},
    }))  # fmt: skip
    return tmp_path


def _cli(workspace: Path, arguments: list[str]) -> int:
    return main([str(workspace / a[2:]) if a.startswith("W/") else a for a in arguments])


# ---------------------------------------------------------------------- 1. bad input is found before anything is written

REFUSED_BEFORE_WRITING = {
    "predict a container with a NaN model": (["predict", "W/cell.zarr", "-m", "W/nan.pt", "--device", "cpu"], "non-finite weights"),
    "predict a config with a NaN model": (["predict", "W/two.json", "-m", "W/nan.pt", "--device", "cpu"], "non-finite weights"),
    "predict a config whose second entry is refused": (["predict", "W/two.json", "-m", "W/model.pt", "--device", "cpu"], "volumes/probabilities is float32"),
    "instances of probabilities outside [0, 1]": (["instances", "W/cell.zarr", "-i", "volumes/doubled"], "must lie in [0, 1]"),
    "demo with a NaN model": (["demo", "W/demo", "--model", "W/nan.pt", "--device", "cpu"], "non-finite weights"),
    "equalize on a scheduler that does not answer": (
        ["equalize", "W/cell.zarr", "-o", "volumes/eq", "--scheduler", "tcp://127.0.0.1:9"],
        "cannot reach the Dask scheduler",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_WRITING))
def test_input_refused_while_running_is_refused_before_anything_is_written(workspace, capsys, case):
    arguments, words = REFUSED_BEFORE_WRITING[case]
    before = snapshot(workspace)
    assert _cli(workspace, arguments) == 1
    assert words in error_line(capsys)
    assert snapshot(workspace) == before  # no empty prediction, output or folder left behind


def test_check_checkpoint_refuses_what_load_checkpoint_refuses_without_building_the_model(workspace):
    with pytest.raises(CheckpointError) as loaded:
        load_checkpoint(workspace / "nan.pt")
    with pytest.raises(CheckpointError) as checked:
        check_checkpoint(workspace / "nan.pt")
    assert str(checked.value) == str(loaded.value)
    assert check_checkpoint(workspace / "model.pt") == load_checkpoint(workspace / "model.pt")[1]


# ---------------------------------------------------------------------- 2. a rerun of an interrupted job offers --resume

#: (command, options of the first run, the output) of every command that has --resume.
RESUMABLE = {
    "convert": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/converted", "--voxel-size", "5"], "volumes/converted"),
    "equalize": (["equalize", "W/cell.zarr", "-o", "volumes/eq"], "volumes/eq"),
    "mask": (["mask", "W/cell.zarr", "--min", "10", "--max", "240", "-o", "volumes/cellmask"], "volumes/cellmask"),
    "metric-mask": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito"], "volumes/metric_masks/mito"),
    "threshold": (["threshold", "W/cell.zarr", "-i", "volumes/probabilities", "-o", "volumes/thresholded"], "volumes/thresholded"),
    "instances": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito"], "volumes/labels/mito_instances"),
    "pyramid": (["pyramid", "W/cell.zarr", "-d", "volumes/raw", "--levels", "1"], "volumes/raw_s1"),
}


def _interrupt(container: Path, dataset: str) -> None:
    """Leave ``dataset`` as an interrupted job leaves it: marked incomplete."""
    zarr.open_array(str(container / dataset), mode="r+").attrs[STATUS_KEY] = INCOMPLETE


@pytest.mark.parametrize("command", list(RESUMABLE))
def test_rerun_of_an_interrupted_job_offers_resume_first(workspace, capsys, command):
    arguments, output = RESUMABLE[command]
    assert _cli(workspace, [*arguments, "-q"]) == 0
    capsys.readouterr()
    assert _cli(workspace, [*arguments, "-q"]) == 1  # finished: only --overwrite replaces it
    finished = error_line(capsys)
    assert "--overwrite" in finished and "--resume" not in finished
    _interrupt(workspace / "cell.zarr", output)
    before = snapshot(workspace)
    assert _cli(workspace, [*arguments, "-q"]) == 1
    line = error_line(capsys)
    assert output in line and "--resume" in line and line.index("--resume") < line.index("--overwrite"), line
    assert snapshot(workspace) == before
    assert _cli(workspace, [*arguments, "-q", "--resume"]) == 0  # the advice works
    assert open_volume(workspace / "cell.zarr", output).complete


def test_rerun_with_other_options_names_the_options_of_the_interrupted_run(workspace, capsys):
    arguments = ["equalize", "W/cell.zarr", "-o", "volumes/eq", "-q"]
    assert _cli(workspace, [*arguments, "--clip-limit", "0.01"]) == 0
    _interrupt(workspace / "cell.zarr", "volumes/eq")
    capsys.readouterr()
    assert _cli(workspace, arguments) == 1
    line = error_line(capsys)
    assert "left unfinished by an interrupted incasem equalize run with --clip-limit 0.01 (this run: 0.02)" in line, line
    assert "pass --resume with the same options" in line


# ---------------------------------------------------------------------- 3. library warnings do not add lines to a refusal


def test_a_library_warning_adds_no_line_to_a_refusal(workspace):
    """A checkpoint holding a sparse tensor makes torch warn while loading it: the refusal stays one line."""
    payload = torch.load(workspace / "model.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload["model_state_dict"] = {**payload["model_state_dict"], "extra": torch.eye(3).to_sparse_csr()}
        torch.save(payload, workspace / "sparse.pt")
    command = [sys.executable, "-W", "default", "-m", "incasem", "predict", "cell.zarr", "-m", "sparse.pt", "--device", "cpu"]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("incasem: error: checkpoint sparse.pt"), result.stderr
    debug = subprocess.run([*command[:5], "--debug", *command[5:]], cwd=workspace, capture_output=True, text=True, timeout=300)
    assert "UserWarning" in debug.stderr  # --debug shows what was held back


def _library_warning_then(then):
    def patched(*args, **kwargs):
        warnings.warn_explicit("a library has something to say", UserWarning, "/usr/lib/python3/somelibrary.py", 7)
        return then(*args, **kwargs)

    return patched


def test_library_warnings_of_a_successful_command_are_shown_and_dropped_on_a_refusal(workspace, monkeypatch, capsys):
    import incasem.cli.data as data

    monkeypatch.setattr(data, "describe_container", _library_warning_then(data.describe_container))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["info", str(workspace / "cell.zarr")]) == 0
    assert [str(w.message) for w in seen] == ["a library has something to say"]  # shown, once the command is done

    def refuse(*args, **kwargs):
        raise NotAContainerError("refused")

    monkeypatch.setattr(data, "describe_container", _library_warning_then(refuse))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["info", str(workspace / "cell.zarr")]) == 1
    assert not seen and error_line(capsys) == "incasem: error: refused"


# ---------------------------------------------------------------------- 4. an empty region is called empty

EMPTY = {
    "predict": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--roi-offset", "0,0,0", "--roi-shape", "0,16,16"], "is empty"),
    "evaluate": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/mito", "--roi-offset", "0,0,0", "--roi-shape", "4,16,0"], "is empty"),
    "export, empty range": (["export", "W/cell.zarr", "W/slices", "--z", "3:3"], "--z range 3:3 is empty"),
    "export, empty once clipped": (["export", "W/cell.zarr", "W/slices", "--z", "16:"], "z range 16:16 is empty"),
    "convert, empty once clipped": (["convert", "W/stack", "W/new.zarr", "--y", "48:"], "y range 48:48 is empty"),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_an_empty_region_is_called_empty_not_outside(workspace, capsys, case):
    arguments, words = EMPTY[case]
    before = snapshot(workspace)
    assert _cli(workspace, arguments) == 1
    line = error_line(capsys)
    assert words in line and "not inside" not in line and "outside" not in line, line
    assert snapshot(workspace) == before


def test_the_api_says_empty_too(workspace):
    empty = r"region \[2:2, 0:16, 0:16\] \(voxels\) is empty: .* no voxel along z: give roi of at least 1 voxel per axis, or leave roi out"
    with pytest.raises(RoiError, match=empty):
        predict_roi(workspace / "model.pt", workspace / "cell.zarr", "volumes/raw", Roi((2, 0, 0), (0, 16, 16)), run=QUIET)
    with pytest.raises(RoiError, match=r"output region .* is empty"):
        predict_array(workspace / "model.pt", np.zeros(SHAPE, np.uint8), Roi((0, 0, 0), (4, 0, 4)))
    with pytest.raises(RoiError, match="is not inside"):  # a region that is not empty but outside is still called so
        predict_roi(workspace / "model.pt", workspace / "cell.zarr", "volumes/raw", Roi((0, 0, 0), (17, 16, 16)), run=QUIET)


# ---------------------------------------------------------------------- 5. a TIFF folder where a container goes

TIFFS_GIVEN = {
    "predict": ["predict", "W/stack", "--model", "W/model.pt"],
    "equalize": ["equalize", "W/stack"],
    "evaluate": ["evaluate", "W/stack", "-p", "volumes/predictions/x/0001"],
    "mask": ["mask", "W/stack", "--min", "1", "--max", "9"],
    "metric-mask": ["metric-mask", "W/stack", "-l", "volumes/labels/mito"],
    "threshold": ["threshold", "W/stack", "-i", "volumes/probabilities"],
    "instances": ["instances", "W/stack", "-i", "volumes/labels/mito"],
    "pyramid": ["pyramid", "W/stack", "-d", "volumes/raw"],
    "export": ["export", "W/stack", "W/slices"],
    "info": ["info", "W/stack"],
    "view": ["view", "W/stack"],
    "preview": ["preview", "W/stack", "-o", "W/p.png"],
    "one TIFF file": ["predict", "W/stack/0000.tif", "--model", "W/model.pt"],
}


@pytest.mark.parametrize("command", list(TIFFS_GIVEN))
def test_a_tiff_folder_given_as_a_container_is_named_and_convert_is_offered(workspace, capsys, command):
    before = snapshot(workspace)
    assert _cli(workspace, TIFFS_GIVEN[command]) == 1
    line = error_line(capsys)
    what = "a TIFF file" if command == "one TIFF file" else "a folder of TIFF files"
    assert f"is {what}, not a zarr container: convert it first with `incasem convert " in line, line
    assert snapshot(workspace) == before


def test_the_convert_command_offered_for_a_tiff_folder_works(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    assert main(["equalize", "stack", "-q"]) == 1
    line = error_line(capsys)
    offered = line.split("`")[1]
    assert offered.startswith("incasem convert ") and offered.endswith("stack.zarr --voxel-size Z,Y,X"), offered
    assert line.endswith("stack.zarr instead")
    assert main([*offered.replace("Z,Y,X", "5,5,5").split()[1:], "-q"]) == 0
    assert main(["equalize", "stack.zarr", "-i", "volumes/raw", "-q"]) == 0


def test_a_tiff_folder_given_as_a_data_config_is_named(workspace, capsys):
    before = snapshot(workspace)
    assert main(["train", "--train-data", str(workspace / "stack"), "--runs-dir", str(workspace / "runs")]) == 1
    line = error_line(capsys)
    assert "stack is a folder of TIFF files, not a data config (.json): convert it first with `incasem convert" in line, line
    assert snapshot(workspace) == before
    with pytest.raises(InputFileError, match="is a folder of TIFF files, not a data config"):
        load_data_config(workspace / "stack")
    (workspace / "tiffs.json").write_text(json.dumps({"roi": {"file": "stack", "voxel_size": [5, 5, 5], "raw": "volumes/raw"}}))
    with pytest.raises(NotAContainerError, match=r"entry 'roi', key 'file': .*stack is a folder of TIFF files, not a zarr container"):
        load_data_config(workspace / "tiffs.json")


# ---------------------------------------------------------------------- 6. --resume with other output-shaping options

#: Commands with --chunks: (arguments, output).
CHUNKED = {
    "convert": RESUMABLE["convert"],
    "mask": RESUMABLE["mask"],
    "metric-mask": RESUMABLE["metric-mask"],
    "threshold": RESUMABLE["threshold"],
    "instances": RESUMABLE["instances"],
}


@pytest.mark.parametrize("command", list(CHUNKED))
def test_resume_with_other_chunks_is_refused_naming_the_old_ones_and_without_keeps_them(workspace, capsys, command):
    arguments, output = CHUNKED[command]
    assert _cli(workspace, [*arguments, "-q", "--chunks", "8,16,16"]) == 0
    _interrupt(workspace / "cell.zarr", output)
    capsys.readouterr()
    before = snapshot(workspace)
    assert _cli(workspace, [*arguments, "-q", "--resume", "--chunks", "16,48,48"]) == 1
    line = error_line(capsys)
    assert f"cannot resume into {workspace / 'cell.zarr'}/{output}: the interrupted run used --chunks 8,16,16 (this run: 16,48,48" in line, line
    assert snapshot(workspace) == before
    assert _cli(workspace, [*arguments, "-q", "--resume"]) == 0  # without --chunks: the interrupted run's are kept
    finished = open_volume(workspace / "cell.zarr", output)
    assert finished.complete and finished.chunks == (8, 16, 16)


def test_predict_resume_with_another_block_size_is_refused_and_auto_keeps_the_old_one(workspace, capsys):
    arguments = ["predict", "W/cell.zarr", "-m", "W/model.pt", "--device", "cpu", "-q"]
    assert _cli(workspace, [*arguments, "--block-size", "8"]) == 0
    group = "volumes/predictions/model/0001"
    _interrupt(workspace / "cell.zarr", f"{group}/segmentation")
    capsys.readouterr()
    before = snapshot(workspace)
    assert _cli(workspace, [*arguments, "--resume", "--block-size", "16", "--tta"]) == 1
    line = error_line(capsys)
    assert "cannot resume the interrupted prediction model/0001" in line
    assert "--block-size 8,8,8 (this run: 16,16,16); no --tta (this run: --tta)" in line, line
    assert snapshot(workspace) == before
    assert _cli(workspace, [*arguments, "--resume"]) == 0  # --block-size auto: the interrupted run's blocks
    assert f"{group}  (segmentation" in capsys.readouterr().out
    assert open_volume(workspace / "cell.zarr", f"{group}/segmentation").complete
    assert sorted(p.name for p in (workspace / "cell.zarr" / "volumes/predictions/model").iterdir() if p.is_dir()) == ["0001"]


def test_predict_resume_of_an_explicit_prediction_names_the_other_options(workspace):
    options = PredictOptions(block_shape=(8, 8, 8), device="cpu")
    output = predict_roi(workspace / "model.pt", workspace / "cell.zarr", "volumes/raw", options=options, run=QUIET)
    _interrupt(workspace / "cell.zarr", output.segmentation)
    other = PredictOptions(block_shape=(8, 8, 8), device="cpu", padding="constant")
    expected = r"cannot resume into .*/0001/.*: the (interrupted run|run that wrote it) used --padding reflect \(this run: constant\)"
    with pytest.raises(DatasetMismatchError, match=expected):
        predict_roi(workspace / "model.pt", workspace / "cell.zarr", "volumes/raw", options=other,
                    prediction_id=output.prediction_id, mode="resume", run=QUIET)  # fmt: skip


# ---------------------------------------------------------------------- 7. labels and predictions in colours of their own


def test_view_draws_labels_and_predictions_in_distinct_stable_colours(workspace):
    import neuroglancer

    from incasem.view.display import LABELS_COLOR, PREDICTION_COLOR
    from incasem.view.neuroglancer import apply_view, describe_view

    cell = workspace / "cell.zarr"
    segmentation = "volumes/predictions/model/0001/segmentation"
    _write(cell, segmentation, open_volume(cell, "volumes/labels/mito").read())  # segment 1 in both
    assert main(["instances", str(cell), "-i", "volumes/labels/mito", "-q"]) == 0
    names = ["volumes/raw", "volumes/labels/mito", segmentation, "volumes/labels/mito_instances"]
    spec = describe_view(cell, names)
    state = neuroglancer.ViewerState()
    apply_view(spec, state)
    layers = {layer["name"]: layer for layer in state.to_json()["layers"]}
    assert layers["labels/mito"]["segmentDefaultColor"] == LABELS_COLOR
    assert layers["predictions/model/0001/segmentation"]["segmentDefaultColor"] == PREDICTION_COLOR
    assert LABELS_COLOR != PREDICTION_COLOR
    assert "segmentDefaultColor" not in layers["labels/mito_instances"]  # objects keep a colour each
    assert "segmentDefaultColor" not in layers["raw"]
    again = neuroglancer.ViewerState()
    apply_view(describe_view(cell, names), again)  # stable: the same colours every time
    assert [layer.get("segmentDefaultColor") for layer in again.to_json()["layers"]] == [layer.get("segmentDefaultColor") for layer in layers.values()]
