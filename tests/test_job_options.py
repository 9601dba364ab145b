"""The options every blockwise command shares: --quiet, --overwrite/--resume, and the provenance record.

One small workspace (a TIFF stack, label slices, a model) goes through the whole
workflow on the command line: convert (raw and labels), equalize, metric-mask, mask,
predict and export. Each command runs under ``sys.argv`` as a shell would set it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.cli import main
from incasem.io.metadata import JOB_KEY
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.volume import open_volume
from tests.helpers import make_checkpoint

PREDICTION = "volumes/predictions/model/0001"

#: (arguments with W = the workspace, the datasets the command writes, what it reads: W-relative)
WORKFLOW = [
    (["convert", "W/stack", "W/cell.zarr", "--voxel-size", "5"], ["volumes/raw"], ["W/stack"]),
    (
        ["convert", "W/labels", "W/cell.zarr", "-d", "volumes/labels/mito", "--like", "W/cell.zarr"],
        ["volumes/labels/mito"],
        ["W/cell.zarr/volumes/raw", "W/labels"],
    ),
    (["equalize", "W/cell.zarr", "--kernel-size", "16"], ["volumes/raw_equalized_0.02"], ["W/cell.zarr/volumes/raw"]),
    (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito"], ["volumes/metric_masks/mito"], ["W/cell.zarr/volumes/labels/mito"]),
    (["mask", "W/cell.zarr", "--min", "10", "--max", "250", "--opening", "1"], ["volumes/mask"], ["W/cell.zarr/volumes/raw"]),
    (
        ["predict", "W/cell.zarr", "-m", "W/model.pt", "--device", "cpu", "--block-size", "8,16,16"],
        [f"{PREDICTION}/prob_maps/class_1", f"{PREDICTION}/segmentation"],
        ["W/cell.zarr/volumes/raw_equalized_0.02", "W/model.pt"],
    ),
    (["export", "W/cell.zarr", "W/tiffs", "-d", "volumes/mask"], [], []),
]

#: What each command's progress bar is called (its first words on stderr).
BARS = {"convert": "convert", "equalize": "equalize", "metric-mask": "metric-mask", "mask": "mask", "predict": "predict", "export": "export"}


def _args(root: Path, arguments: list[str]) -> list[str]:
    return [str(root / a[2:]) if a.startswith("W/") else a for a in arguments]


def _run(root: Path, arguments: list[str], monkeypatch, capsys) -> str:
    """Run ``incasem ARGUMENTS`` as a shell would (``sys.argv`` set); return its stderr."""
    args = _args(root, arguments)
    monkeypatch.setattr(sys, "argv", ["incasem", *args])
    status = main(args)
    err = capsys.readouterr().err
    assert status == 0, err
    return err


@pytest.fixture
def workspace(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 255, (12, 40, 48), dtype=np.uint8)
    labels = (rng.random((12, 40, 48)) > 0.7).astype(np.uint8)
    for name, stack in (("stack", raw), ("labels", labels)):
        (tmp_path / name).mkdir()
        for index, plane in enumerate(stack):
            tifffile.imwrite(tmp_path / name / f"{index:03d}.tif", plane)
    make_checkpoint(tmp_path / "model.pt")
    return tmp_path


def test_quiet_silences_every_command_and_provenance_is_on_every_dataset(workspace, monkeypatch, capsys):
    cell = workspace / "cell.zarr"
    for arguments, written, reads in WORKFLOW:
        err = _run(workspace, [*arguments, "--quiet"], monkeypatch, capsys)
        assert err == "", f"{arguments[0]} --quiet wrote to stderr: {err!r}"
        command = "incasem " + " ".join(_args(workspace, [*arguments, "--quiet"]))
        inputs = [str(Path(p).resolve()) for p in _args(workspace, reads)]
        for name in written:
            attributes = open_volume(cell, name).array.attrs
            record = attributes[PROVENANCE_KEY]
            assert record["command"] == command, name
            assert record["job"] == attributes[JOB_KEY] and record["job"]["job"] == arguments[0], name
            assert sorted(record["inputs"]) == sorted(inputs), name
            assert record["incasem_version"] and record["created"].endswith("+00:00"), name
    manifest = json.loads((workspace / "tiffs" / ".incasem-export.json").read_text())
    assert manifest["command"].startswith("incasem export ")


def test_without_quiet_each_command_shows_progress_and_overwrite_replaces_its_output(workspace, monkeypatch, capsys):
    cell = workspace / "cell.zarr"
    for arguments, _, _ in WORKFLOW:
        _run(workspace, [*arguments, "-q"], monkeypatch, capsys)
    for arguments, written, _ in WORKFLOW:
        err = _run(workspace, [*arguments, "--overwrite"], monkeypatch, capsys)
        assert BARS[arguments[0]] in err and "block" in err, f"{arguments[0]} showed no progress bar: {err!r}"
        for name in written:
            assert "--overwrite" in open_volume(cell, name).array.attrs[PROVENANCE_KEY]["command"]
    predictions = sorted(p.name for p in (cell / "volumes/predictions/model").iterdir() if p.is_dir())
    assert predictions == ["0001"], "predict --overwrite replaces the prediction of the same model, region and options"


@pytest.mark.parametrize("command", ["convert", "equalize", "metric-mask", "mask", "predict"])
def test_overwrite_with_resume_is_one_line_and_writes_nothing(workspace, capsys, command):
    arguments = next(a for a, _, _ in WORKFLOW if a[0] == command)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    assert main([*_args(workspace, arguments), "--overwrite", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("incasem: error: ") and err.count("\n") == 1
    assert "--overwrite and --resume exclude each other" in err
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def _jobs(root: Path) -> dict:
    """Every public job, called on paths that do not exist (a job must refuse bad settings before it looks)."""
    from incasem.predict import predict_config, predict_container, predict_roi
    from incasem.preprocess.convert import tiff_to_zarr
    from incasem.preprocess.equalize import equalize_volume
    from incasem.preprocess.export import zarr_to_tiff
    from incasem.preprocess.masks import MaskOptions, create_mask, create_metric_mask

    cell, cache = root / "cell.zarr", root / "cache"
    return {
        "convert": lambda **k: tiff_to_zarr(root / "stack", cell, **k),
        "export": lambda **k: zarr_to_tiff(cell, "volumes/raw", root / "tiffs", **k),
        "equalize": lambda **k: equalize_volume(cell, **k),
        "metric-mask": lambda **k: create_metric_mask(cell, "volumes/labels/mito", **k),
        "mask": lambda **k: create_mask(cell, "volumes/raw", options=MaskOptions(0, 255), **k),
        "predict_roi": lambda **k: predict_roi(root / "model.pt", cell, "volumes/raw", **k),
        "predict_container": lambda **k: predict_container(cell, "1847", cache_dir=cache, **k),
        "predict_config": lambda **k: predict_config(root / "predict.json", "1847", cache_dir=cache, **k),
    }


@pytest.mark.parametrize("job", list(_jobs(Path("."))))
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "append"}, "write mode must be 'create', 'overwrite' (--overwrite) or 'resume' (--resume)"),
        ({"mode": True}, "write mode must be"),
        ({"run": "tcp://host:8786"}, "run must be RunOptions"),
        ({"run": {"workers": 2}}, "run must be RunOptions"),
    ],
)
def test_every_job_refuses_a_bad_mode_or_run_before_anything(tmp_path, job, settings, message):
    from incasem.errors import InvalidValueError

    with pytest.raises(InvalidValueError) as error:
        _jobs(tmp_path)[job](**settings)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_export_cannot_resume(tmp_path):
    from incasem.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="an export cannot --resume"):
        _jobs(tmp_path)["export"](mode="resume")
    assert list(tmp_path.iterdir()) == []
