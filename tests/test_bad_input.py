"""Every option of every command, given a bad value: one line, exit != 0, nothing touched.

Each case runs the real command line (``main``) in a workspace that holds a container
made from real Lucchi++ EM, a folder of TIFF slices, a model and unrelated user files.
Afterwards the workspace must be byte for byte what it was: no input changed, no
output half-written, no stray folder. A second test runs every command with
``--overwrite`` and checks that it only ever replaced what that command itself wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.cli import main
from incasem.io.volume import create_volume, open_volume
from tests.helpers import LUCCHI, make_checkpoint, read_stack


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file, and every folder (value ``"dir"``), under ``folder``."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A user's folder: TIFF slices, cell.zarr (raw, equalized, labels written by hand), a model, other files."""
    root = tmp_path_factory.mktemp("workspace")
    region = (slice(8, 24), slice(72, 120), slice(76, 124))  # Lucchi++ slices 60-75, rows 200-247, columns 300-347
    raw = read_stack(LUCCHI / "image", *region)
    labels = read_stack(LUCCHI / "labels" / "mito", *region)
    (root / "stack").mkdir()
    for index, plane in enumerate(raw):
        tifffile.imwrite(root / "stack" / f"{index:04d}.tif", plane)
    cell = root / "cell.zarr"
    assert main(["convert", str(root / "stack"), str(cell), "--voxel-size", "5,5,5", "-n", "1"]) == 0
    assert main(["equalize", str(cell), "-n", "1"]) == 0
    hand_made = create_volume(cell, "volumes/labels/mito", labels.shape, "uint8", (5, 5, 5))  # not by an incasem job
    hand_made.write(hand_made.roi, labels)
    hand_made.mark_complete()
    floats = create_volume(cell, "volumes/float", (4, 4, 4), "float32", (5, 5, 5))
    floats.mark_complete()
    (cell / "README.txt").write_text("notes the user keeps inside the container\n")
    (root / "notes.txt").write_text("the user's notes\n")
    (root / "results").mkdir()
    (root / "results" / "figure.txt").write_text("a result the user keeps\n")
    make_checkpoint(root / "model.pt")
    (root / "predict.json").write_text(json.dumps({"roi": {
        "file": "cell.zarr", "offset": [0, 0, 0], "shape": [8, 16, 16], "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02", "labels": {"volumes/labels/mito": 1},
    }}))  # fmt: skip
    (root / "predict_er.json").write_text(json.dumps({"roi": {
        "file": "cell.zarr", "offset": [0, 0, 0], "shape": [8, 16, 16], "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02", "labels": {"volumes/labels/er": 1},
    }}))  # fmt: skip
    er = create_volume(cell, "volumes/labels/er", labels.shape, "uint8", (5, 5, 5))
    er.mark_complete()
    return root


# (arguments with W = the workspace folder, words the one-line error must contain)
BAD = {
    # convert: every option
    "convert source missing": (["convert", "W/nothing", "W/new.zarr"], "does not exist"),
    "convert source is a container": (["convert", "W/cell.zarr", "W/new.zarr"], "is a zarr container"),
    "convert source not a tiff": (["convert", "W/notes.txt", "W/new.zarr"], "not a readable TIFF"),
    "convert container is a plain folder": (["convert", "W/stack", "W/results"], "not a zarr container"),
    "convert container is a file": (["convert", "W/stack", "W/notes.txt"], "not a zarr container"),
    "convert dataset empty": (["convert", "W/stack", "W/cell.zarr", "-d", "/"], "names the container itself"),
    "convert dataset dotdot": (["convert", "W/stack", "W/cell.zarr", "-d", "../x"], "'..'"),
    "convert dataset inside a dataset": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/raw/x"], "inside the dataset"),
    "convert overwrite a group": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/labels", "--overwrite"], "never a group"),
    "convert overwrite a group, trailing slash": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/", "--overwrite"], "never a group"),
    "convert overwrite data it did not write": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes//labels/mito", "--overwrite"], "not replace"),
    "convert overwrite equalize output": (
        ["convert", "W/stack", "W/cell.zarr", "-d", "./volumes/raw_equalized_0.02", "--overwrite"],
        "written by incasem equalize",
    ),
    "convert exists": (["convert", "W/stack", "W/cell.zarr"], "exists already"),
    "convert resume mismatch": (["convert", "W/stack", "W/cell.zarr", "--resume", "--z", "0:4"], "cannot resume"),
    "convert pattern": (["convert", "W/stack", "W/new.zarr", "--pattern", "*.png"], "no files matching"),
    "convert voxel size zero": (["convert", "W/stack", "W/new.zarr", "--voxel-size", "0,5,5"], "positive"),
    "convert voxel size nan": (["convert", "W/stack", "W/new.zarr", "--voxel-size", "nan"], "finite"),
    "convert voxel size two": (["convert", "W/stack", "W/new.zarr", "--voxel-size", "5,5"], "three"),
    "convert offset inf": (["convert", "W/stack", "W/new.zarr", "--offset", "inf,0,0"], "finite"),
    "convert offset off grid": (["convert", "W/stack", "W/new.zarr", "--voxel-size", "5", "--offset", "3,0,0"], "multiple"),
    "convert like missing": (
        ["convert", "W/stack", "W/cell.zarr", "-d", "volumes/labels/x", "--like", "W/cell.zarr:volumes/nope"],
        "no dataset 'volumes/nope'",
    ),
    "convert like shape": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/labels/x", "--like", "W/cell.zarr", "--z", "0:4"], "shape"),
    "convert z negative stop": (["convert", "W/stack", "W/new.zarr", "--z", "0:-1"], "no negative"),
    "convert z reversed": (["convert", "W/stack", "W/new.zarr", "--z", "5:2"], "range 5:2"),
    "convert y beyond": (["convert", "W/stack", "W/new.zarr", "--y", "0:1000"], "range 0:1000"),
    "convert x text": (["convert", "W/stack", "W/new.zarr", "--x", "a:b"], "START:STOP"),
    "convert chunks zero": (["convert", "W/stack", "W/new.zarr", "--chunks", "0"], "--chunks must be positive"),
    "convert sparse without like": (["convert", "W/stack", "W/cell.zarr", "-d", "volumes/labels/x", "--sparse"], "--like"),
    "convert first number without sparse": (["convert", "W/stack", "W/new.zarr", "--first-number", "3"], "--sparse"),
    "convert chunks negative": (["convert", "W/stack", "W/new.zarr", "--chunks", "-4,8,8"], "--chunks must be positive"),
    "convert to-uint8 reversed": (["convert", "W/stack", "W/new.zarr", "--to-uint8", "5:1"], "LOW < HIGH"),
    "convert to-uint8 nan": (["convert", "W/stack", "W/new.zarr", "--to-uint8", "nan:1"], "LOW < HIGH"),
    "convert to-uint8 auto": (["convert", "W/stack", "W/new.zarr", "--to-uint8", "auto"], "for incasem export"),
    "convert workers zero": (["convert", "W/stack", "W/new.zarr", "--workers", "0"], "--workers"),
    "convert scheduler malformed": (["convert", "W/stack", "W/new.zarr", "--scheduler", "localhost"], "--scheduler"),
    "convert overwrite and resume": (["convert", "W/stack", "W/cell.zarr", "--overwrite", "--resume"], "exclude each other"),
    # equalize
    "equalize container missing": (["equalize", "W/nothing.zarr"], "not a zarr container"),
    "equalize input missing": (["equalize", "W/cell.zarr", "-i", "volumes/nope", "-o", "volumes/eq"], "no dataset 'volumes/nope'"),
    "equalize input is a group": (["equalize", "W/cell.zarr", "-i", "volumes", "-o", "volumes/eq"], "is a group"),
    "equalize input float": (["equalize", "W/cell.zarr", "-i", "volumes/float", "-o", "volumes/eq"], "uint8 and uint16"),
    "equalize output is input": (["equalize", "W/cell.zarr", "-i", "volumes/raw_equalized_0.02", "-o", "volumes//raw_equalized_0.02/", "--overwrite"], "input"),
    "equalize output holds input": (["equalize", "W/cell.zarr", "-o", "volumes", "--overwrite"], "input"),
    "equalize output not incasem's": (["equalize", "W/cell.zarr", "-o", "volumes/labels/mito", "--overwrite"], "not replace"),
    "equalize output dot": (["equalize", "W/cell.zarr", "-o", "."], "names the container itself"),
    "equalize clip limit zero": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--clip-limit", "0"], "--clip-limit"),
    "equalize clip limit nan": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--clip-limit", "nan"], "--clip-limit"),
    "equalize kernel one": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--kernel-size", "1"], "--kernel-size"),
    "equalize kernel huge": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--kernel-size", "100000"], "--kernel-size"),
    "equalize nbins": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--nbins", "1"], "--nbins"),
    "equalize workers": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "-n", "-2"], "--workers"),
    "equalize scheduler": (["equalize", "W/cell.zarr", "-o", "volumes/eq", "--scheduler", "tcp://"], "--scheduler"),
    # export
    "export into the container": (["export", "W/cell.zarr", "W/cell.zarr", "--overwrite"], "cell.zarr"),
    "export into the workspace": (["export", "W/cell.zarr", "W", "--overwrite"], "cell.zarr"),
    "export into a folder inside": (["export", "W/cell.zarr", "W/cell.zarr/volumes/slices"], "cell.zarr"),
    "export over user files": (["export", "W/cell.zarr", "W/results", "--overwrite"], "results"),
    "export onto a file": (["export", "W/cell.zarr", "W/notes.txt", "--overwrite"], "notes.txt"),
    "export dataset missing": (["export", "W/cell.zarr", "W/out", "-d", "volumes/nope"], "no dataset"),
    "export z negative": (["export", "W/cell.zarr", "W/out", "--z", "0:-1"], "no negative"),
    "export to-uint8": (["export", "W/cell.zarr", "W/out", "--to-uint8", "2:1"], "LOW < HIGH"),
    "export y beyond": (["export", "W/cell.zarr", "W/out", "--y", "40:100"], "range 40:100"),
    "export x empty": (["export", "W/cell.zarr", "W/out", "--x", "7:7"], "range 7:7"),
    "export scheduler": (["export", "W/cell.zarr", "W/out", "--scheduler", "nowhere"], "--scheduler"),
    "export workers": (["export", "W/cell.zarr", "W/out", "-n", "0"], "--workers"),
    # info
    "info container missing": (["info", "W/nothing.zarr"], "not a zarr container"),
    "info dataset missing": (["info", "W/cell.zarr", "-d", "volumes/nope"], "no dataset 'volumes/nope'"),
    "info voxel size without dataset": (["info", "W/cell.zarr", "--voxel-size", "4"], "--dataset"),
    "info voxel size zero": (["info", "W/cell.zarr", "-d", "volumes/raw", "--voxel-size", "0,4,4"], "positive"),
    "info offset off grid": (["info", "W/cell.zarr", "-d", "volumes/raw", "--offset", "2,0,0"], "multiple"),
    # mask
    "mask input missing": (["mask", "W/cell.zarr", "-i", "volumes/nope", "--min", "0", "--max", "1"], "no dataset"),
    "mask min nan": (["mask", "W/cell.zarr", "--min", "nan", "--max", "100", "-o", "volumes/m"], "--min must be a finite"),
    "mask max inf": (["mask", "W/cell.zarr", "--min", "0", "--max", "inf", "-o", "volumes/m"], "--max must be a finite"),
    "mask empty range": (["mask", "W/cell.zarr", "--min", "200", "--max", "100", "-o", "volumes/m"], "above --max"),
    "mask opening negative": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "--opening", "-1"], "--opening"),
    "mask opening huge": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "--opening", "100000"], "--opening"),
    "mask closing negative": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "--closing", "-3"], "--closing"),
    "mask chunks": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "--chunks", "8,0,8"], "--chunks"),
    "mask output is input": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/raw/", "--overwrite"], "input"),
    "mask output group": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/labels", "--overwrite"], "never a group"),
    "mask scheduler": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "--scheduler", "x"], "--scheduler"),
    "mask workers": (["mask", "W/cell.zarr", "--min", "0", "--max", "9", "-o", "volumes/m", "-n", "0"], "--workers"),
    # metric-mask
    "metric-mask labels missing": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/golgi"], "no dataset"),
    "metric-mask labels float": (["metric-mask", "W/cell.zarr", "-l", "volumes/float", "--organelle", "mito"], "not integers"),
    "metric-mask output is input": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "-o", "./volumes/labels/mito", "--overwrite"], "input"),
    "metric-mask inwards": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--exclude-inwards", "-1"], "--exclude-inwards"),
    "metric-mask outwards huge": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--exclude-outwards", "100000"], "--exclude-outwards"),
    "metric-mask labelled missing": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--labelled", "volumes/nope"], "volumes/nope"),
    "metric-mask labelled off the grid": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--labelled", "volumes/float"], "grid of the labels"),
    "metric-mask organelle": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--organelle", "mitos"], "unknown organelle"),
    "metric-mask chunks": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--chunks", "-1"], "--chunks"),
    "metric-mask scheduler": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "--scheduler", "::"], "--scheduler"),
    "metric-mask workers": (["metric-mask", "W/cell.zarr", "-l", "volumes/labels/mito", "-n", "0"], "--workers"),
    # predict
    "predict source missing": (["predict", "W/nothing.json", "-m", "W/model.pt"], "nothing.json"),
    "predict model missing": (["predict", "W/cell.zarr", "-m", "W/nothing.pt"], "nothing.pt"),
    "predict model not a checkpoint": (["predict", "W/cell.zarr", "-m", "W/notes.txt"], "notes.txt"),
    "predict raw missing": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--raw", "volumes/nope"], "no dataset"),
    "predict raw float": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--raw", "volumes/float"], "uint8"),
    "predict roi half": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--roi-offset", "0,0,0"], "--roi-shape"),
    "predict roi negative": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--roi-offset", "0,0,0", "--roi-shape", "4,-4,4"], "negative"),
    "predict roi outside": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--roi-offset", "0,0,0", "--roi-shape", "400,4,4"], "not inside"),
    "predict block zero": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--block-size", "0"], "--block-size"),
    "predict block negative": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--block-size", "-8"], "--block-size"),
    "predict device": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--device", "tpu"], "device"),
    "predict precision": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--precision", "fp8"], "--precision"),
    "predict padding": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--padding", "wrap"], "--padding"),
    "predict seed threshold": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--seed-threshold", "0.2"], "--seed-threshold"),
    "predict scheduler": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--scheduler", "8786"], "--scheduler"),
    "predict workers": (["predict", "W/cell.zarr", "-m", "W/model.pt", "-n", "0"], "--workers"),
    "predict overwrite and resume": (["predict", "W/cell.zarr", "-m", "W/model.pt", "--resume", "--overwrite"], "exclude each other"),
    "predict cache dir is a file": (["predict", "W/cell.zarr", "-m", "1847", "--cache-dir", "W/notes.txt"], "notes.txt"),
    "predict run not in runs dir": (["predict", "W/cell.zarr", "-m", "run:3", "--runs-dir", "W/cache"], "run 3 not found in"),
    "predict er labels with a mito model": (["predict", "W/predict_er.json", "-m", "W/model.pt"], "--classes er=mito"),
    "predict classes malformed": (["predict", "W/predict_er.json", "-m", "W/model.pt", "--classes", "er"], "LABEL=CLASS"),
    "predict classes to a class the model lacks": (["predict", "W/predict_er.json", "-m", "W/model.pt", "--classes", "er=golgi"], "'mito'"),
    "predict data root": (["predict", "W/predict.json", "-m", "W/model.pt", "--data-root", "W/nothing"], "nothing"),
    # models
    "models fetch unknown id": (["models", "fetch", "99999", "--cache-dir", "W/cache"], "99999"),
    "models import missing": (["models", "import", "W/nothing.pt", "--cache-dir", "W/cache"], "nothing.pt"),
    "models import not a checkpoint": (["models", "import", "W/notes.txt", "--id", "1847", "--cache-dir", "W/cache"], "notes.txt"),
    "models import organelle empty": (["models", "import", "W/model.pt", "--organelle", "", "--voxel-size", "5", "--cache-dir", "W/cache"], "organelle"),
    "models import voxel size zero": (["models", "import", "W/model.pt", "--organelle", "mito", "--voxel-size", "0", "--cache-dir", "W/cache"], "voxel"),
    "models import preparation with id": (["models", "import", "W/model.pt", "--id", "1847", "--preparation", "CF", "--cache-dir", "W/cache"], "not both"),
    "models list cache is a file": (["models", "list", "--cache-dir", "W/notes.txt"], "notes.txt"),
    "models export runs dir is a file": (["models", "export", "run:1", "W/m.zip", "--runs-dir", "W/notes.txt"], "notes.txt"),
    "models export cache is a file": (["models", "export", "1847", "W/m.zip", "--cache-dir", "W/notes.txt"], "notes.txt"),
    "models export not a zip": (["models", "export", "mito-fibsem-5nm", "W/m.tar"], ".zip"),
    "models import package name a path": (["models", "import", "W/m.zip", "--name", "a/b", "--cache-dir", "W/cache"], "a/b"),
    # train (W/predict.json: a ROI of 8 x 16 x 16 voxels with labels)
    "train without data": (["train"], "--train-data"),
    "train data missing": (["train", "--train-data", "W/nothing.json"], "nothing.json"),
    "train val data not a config": (["train", "--train-data", "W/predict.json", "--val-data", "W/notes.txt"], "notes.txt"),
    "train config missing": (["train", "--train-data", "W/predict.json", "--config", "W/nothing.yaml"], "nothing.yaml"),
    "train unknown key": (["train", "--train-data", "W/predict.json", "optimizer.lrate=1"], "optimizer.lr"),
    "train ROI smaller than the output block": (["train", "--train-data", "W/predict.json"], "smaller than the training output block"),
    "train start from a text file": (["train", "--train-data", "W/predict.json", "--start-from", "W/notes.txt"], "notes.txt"),
    "train start from and resume": (["train", "--resume", "1", "--start-from", "W/model.pt"], "--resume continues a run"),
    "train resume unknown run": (["train", "--resume", "99"], "run 99 not found"),
    "train runs dir is a file": (["train", "--train-data", "W/predict.json", "--runs-dir", "W/notes.txt"], "notes.txt is a file"),
    "train data root": (["train", "--train-data", "W/predict.json", "--data-root", "W/nothing"], "nothing"),
    "train cache dir is a file": (["train", "--train-data", "W/predict.json", "--start-from", "1847", "--cache-dir", "W/notes.txt"], "notes.txt"),
    "train device": (["train", "--train-data", "W/predict.json", "--device", "tpu"], "device"),
    "train precision": (["train", "--train-data", "W/predict.json", "--precision", "fp8"], "--precision"),
    "train tracking uri without mlflow": (["train", "--train-data", "W/predict.json", "--no-mlflow", "--tracking-uri", "sqlite:///W/m.db"], "drop --no-mlflow"),
    "train tracking uri not a uri": (["train", "--train-data", "W/predict.json", "--mlflow", "--tracking-uri", "my runs"], "not an MLflow store URI"),
    # fine-tune: every option (W/model.pt is a mito model; the cell's mito labels are dense)
    "fine-tune start from missing": (["fine-tune", "W/cell.zarr", "--start-from", "W/nothing.pt"], "nothing.pt"),
    "fine-tune container missing": (["fine-tune", "W/nothing.zarr", "--start-from", "W/model.pt"], "nothing.zarr"),
    "fine-tune labels missing": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--labels", "volumes/labels/golgi"], "volumes/labels/golgi"),
    "fine-tune labelled missing": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--labelled", "volumes/nope"], "volumes/nope"),
    "fine-tune labelled float": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--labelled", "volumes/float"], "--labelled"),
    "fine-tune raw missing": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--raw", "volumes/nope"], "volumes/nope"),
    "fine-tune mask missing": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--mask", "volumes/nope"], "volumes/nope"),
    "fine-tune validation share": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--validation-share", "1.5"], "--validation-share"),
    "fine-tune runs dir is a file": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--runs-dir", "W/notes.txt"], "notes.txt is a file"),
    "fine-tune cache dir is a file": (["fine-tune", "W/cell.zarr", "--start-from", "1847", "--cache-dir", "W/notes.txt"], "notes.txt"),
    "fine-tune device": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--device", "tpu"], "device"),
    "fine-tune precision": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "--precision", "fp8"], "--precision"),
    "fine-tune unknown key": (["fine-tune", "W/cell.zarr", "--start-from", "W/model.pt", "optimizer.lrate=1"], "optimizer.lr"),
    # runs
    "runs list runs dir is a file": (["runs", "list", "--runs-dir", "W/notes.txt"], "notes.txt is a file"),
    "runs show unknown id": (["runs", "show", "12"], "run 12 not found"),
    "runs show id not a number": (["runs", "show", "last"], "not a whole number"),
    "runs show runs dir is a file": (["runs", "show", "1", "--runs-dir", "W/notes.txt"], "notes.txt is a file"),
    "runs show runs dir without runs": (["runs", "show", "1", "--runs-dir", "W/results"], "no runs there"),
    # evaluate (the empty ER labels stand in for a prediction)
    "evaluate prediction missing": (["evaluate", "W/cell.zarr", "-p", "volumes/nope"], "no dataset 'volumes/nope'"),
    "evaluate labels missing": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "-l", "volumes/labels/golgi"], "volumes/labels/golgi"),
    "evaluate mask missing": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--mask", "volumes/nope"], "volumes/nope"),
    "evaluate labelled missing": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--labelled", "volumes/nope"], "volumes/nope"),
    "evaluate metric mask missing": (
        ["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--metric-mask", "volumes/metric_masks/nope"],
        "volumes/metric_masks/nope",
    ),
    "evaluate roi offset alone": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--roi-offset", "0,0,0"], "--roi-shape"),
    "evaluate roi outside": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--roi-offset", "0,0,0", "--roi-shape", "99,9,9"], "reaches outside"),
    "evaluate threshold": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--threshold", "2"], "--threshold"),
    "evaluate sweep of a segmentation": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--sweep"], "--sweep needs a probability map"),
    "evaluate iou": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--instances", "--iou", "0"], "--iou"),
    "evaluate min size": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--min-size", "-1"], "--min-size"),
    "evaluate json exists": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--json", "W/notes.txt"], "exists"),
    "evaluate scratch is a file": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--scratch", "W/notes.txt"], "--scratch"),
    "evaluate data root": (["evaluate", "W/predict.json", "-p", "volumes/labels/er", "--data-root", "W/nothing"], "nothing"),
    "evaluate scheduler": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "--scheduler", "localhost"], "--scheduler"),
    "evaluate workers": (["evaluate", "W/cell.zarr", "-p", "volumes/labels/er", "-n", "0"], "--workers"),
    # threshold (volumes/float: a float probability map of zeros)
    "threshold input missing": (["threshold", "W/cell.zarr", "-i", "volumes/nope"], "no dataset 'volumes/nope'"),
    "threshold threshold": (["threshold", "W/cell.zarr", "-i", "volumes/float", "-t", "1.5"], "--threshold"),
    "threshold output is the user's": (["threshold", "W/cell.zarr", "-i", "volumes/float", "-o", "volumes/labels/mito", "--overwrite"], "not replace"),
    "threshold mask missing": (["threshold", "W/cell.zarr", "-i", "volumes/float", "--mask", "volumes/nope"], "volumes/nope"),
    "threshold chunks": (["threshold", "W/cell.zarr", "-i", "volumes/float", "--chunks", "0"], "--chunks"),
    "threshold scheduler": (["threshold", "W/cell.zarr", "-i", "volumes/float", "--scheduler", "localhost"], "--scheduler"),
    "threshold workers": (["threshold", "W/cell.zarr", "-i", "volumes/float", "-n", "0"], "--workers"),
    "threshold seed below threshold": (["threshold", "W/cell.zarr", "-i", "volumes/float", "-t", "0.7", "--seed-threshold", "0.6"], "is below the threshold"),
    # instances
    "instances input missing": (["instances", "W/cell.zarr", "-i", "volumes/nope"], "no dataset 'volumes/nope'"),
    "instances class": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--class", "0"], "--class"),
    "instances threshold": (["instances", "W/cell.zarr", "-i", "volumes/float", "-t", "-1"], "--threshold"),
    "instances seed of labels": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--seed-threshold", "0.9"], "needs a probability map"),
    "instances min size": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--min-size", "-5"], "--min-size"),
    "instances dtype": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--dtype", "int8"], "--dtype"),
    "instances output is a group": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "-o", "volumes", "--overwrite"], "lies in the input"),
    "instances output is another group": (["instances", "W/cell.zarr", "-i", "volumes/float", "-o", "volumes/labels", "--overwrite"], "never a group"),
    "instances mask missing": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--mask", "volumes/nope"], "volumes/nope"),
    "instances chunks": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--chunks", "-1"], "--chunks"),
    "instances scheduler": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "--scheduler", "localhost"], "--scheduler"),
    "instances workers": (["instances", "W/cell.zarr", "-i", "volumes/labels/mito", "-n", "0"], "--workers"),
    # view, preview, runs plot
    "view dataset missing": (["view", "W/cell.zarr", "-d", "volumes/nope"], "no dataset 'volumes/nope'"),
    "view position outside": (["view", "W/cell.zarr", "--position", "1000,0,0"], "outside"),
    "view port": (["view", "W/cell.zarr", "--port", "70000"], "--port"),
    "view bind": (["view", "W/cell.zarr", "--bind", "203.0.113.7"], "203.0.113.7"),
    "preview output not png": (["preview", "W/cell.zarr", "-o", "W/notes.txt"], ".png"),
    "preview raw missing": (["preview", "W/cell.zarr", "-o", "W/p.png", "--raw", "volumes/nope"], "volumes/nope"),
    "preview overlay missing": (["preview", "W/cell.zarr", "-o", "W/p.png", "--overlay", "volumes/nope"], "volumes/nope"),
    "preview position outside": (["preview", "W/cell.zarr", "-o", "W/p.png", "--position", "1000,0,0"], "outside"),
    "preview size": (["preview", "W/cell.zarr", "-o", "W/p.png", "--size", "0"], "--size"),
    "runs plot output not png": (["runs", "plot", "1", "-o", "W/notes.txt"], ".png"),
    "runs plot runs dir is a file": (["runs", "plot", "1", "--runs-dir", "W/notes.txt"], "notes.txt is a file"),
    # demo
    "demo model unknown": (["demo", "W/demo", "--model", "mito-best"], "neither a checkpoint file"),
    "demo device": (["demo", "W/demo", "--device", "tpu"], "device"),
    "demo folder not its own": (["demo", "W/results"], "not the output of an earlier"),
    # pyramid, download
    "pyramid dataset missing": (["pyramid", "W/cell.zarr", "-d", "volumes/nope"], "no dataset"),
    "pyramid levels": (["pyramid", "W/cell.zarr", "-d", "volumes/raw", "--levels", "0"], "--levels"),
    "pyramid downsampling": (["pyramid", "W/cell.zarr", "-d", "volumes/raw", "--downsampling", "max"], "--downsampling"),
    "pyramid scheduler": (["pyramid", "W/cell.zarr", "-d", "volumes/raw", "--scheduler", "localhost"], "--scheduler"),
    "pyramid workers": (["pyramid", "W/cell.zarr", "-d", "volumes/raw", "-n", "0"], "--workers"),
    "download unreachable": (["download", "cell_6", "W/dl", "--dry-run", "--base-url", "http://127.0.0.1:9"], "cannot reach"),
}

#: Usage errors (unknown option, missing argument, a non-number where a number goes): exit 2.
USAGE = {
    "unknown option": ["convert", "W/stack", "W/new.zarr", "--bogus"],
    "missing argument": ["equalize"],
    "not an integer": ["mask", "W/cell.zarr", "--min", "0", "--max", "1", "--opening", "two"],
    "unknown command": ["segment", "W/cell.zarr"],
    "export cannot resume": ["export", "W/cell.zarr", "W/out", "--resume"],
}


def _run(workspace: Path, arguments: list[str], capsys) -> tuple[int, str]:
    args = [str(workspace / a[2:]) if a.startswith("W/") else str(workspace) if a == "W" else a for a in arguments]
    status = main(args)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_is_one_line_and_touches_nothing(workspace, capsys, monkeypatch, case):
    monkeypatch.chdir(workspace)
    arguments, words = BAD[case]
    before = snapshot(workspace)
    status, err = _run(workspace, arguments, capsys)
    assert status in (1, 2), err  # 2: the value does not parse (a usage error)
    assert err.startswith("incasem: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err, err
    assert snapshot(workspace) == before
    for hint in re.findall(r"`(incasem [^`]*)`", err):  # every command an error names must parse as it stands
        assert_parses(hint)


def assert_parses(hint: str) -> None:
    """Parse ``hint`` (placeholders Z,Y,X filled) with the command line's own parser, without running it."""
    import typer

    from incasem.cli import app

    def remaining(context) -> list[str]:
        return [*getattr(context, "_protected_args", []), *context.args]

    words = shlex.split(hint.replace("Z,Y,X", "5,5,5"))[1:]
    command = typer.main.get_command(app)
    try:
        context = command.make_context("incasem", list(words), resilient_parsing=False)
        while hasattr(command, "commands") and remaining(context):
            name, command, rest = command.resolve_command(context, remaining(context))
            context = command.make_context(name, rest, parent=context)  # raises on unknown options, missing arguments
    except typer.Exit as done:  # --help
        assert done.exit_code == 0, hint


@pytest.mark.parametrize("case", list(USAGE))
def test_usage_error_is_one_line_with_exit_2(workspace, capsys, case):
    before = snapshot(workspace)
    status, err = _run(workspace, USAGE[case], capsys)
    assert status == 2
    assert err.startswith("incasem: error: ") and err.count("\n") == 1 and "--help" in err, err
    assert snapshot(workspace) == before


def test_every_option_of_every_command_has_a_bad_value_case():
    """The table above must grow with the CLI: each option of each command appears in a case."""
    import typer

    from incasem.cli import app

    tried: dict[str, set[str]] = {}
    for arguments, _ in BAD.values():
        command = " ".join(arguments[:2]) if arguments[0] in ("models", "runs") else arguments[0]
        tried.setdefault(command, set()).update(a for a in arguments if a.startswith("-"))
    aliases = {
        "--no-mlflow": "--mlflow",
        "-d": "--dataset",
        "-i": "--input",
        "-o": "--output",
        "-l": "--labels",
        "-m": "--model",
        "-n": "--workers",
        "-p": "--prediction",
        "-t": "--threshold",
    }
    missing = []
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        leaves = command.commands.items() if hasattr(command, "commands") else [("", command)]
        for sub_name, leaf in leaves:
            key = f"{name} {sub_name}".strip()
            used = {aliases.get(o, o) for o in tried.get(key, set())}
            for param in leaf.params:
                long = [o for o in getattr(param, "opts", []) if o.startswith("--")]
                # switches / tested elsewhere
                flags = {"--quiet", "--resume", "--overwrite", "--base-url", "--sweep", "--instances", "--browser", "--dry-run", "--tta"}
                flags |= {"--predict", "--mlflow"}
                if long and long[0] not in used and long[0] not in flags and not (key == "models fetch" and long[0] == "--cache-dir"):
                    missing.append(f"{key} {long[0]}")
    assert not missing, f"options without a bad-value case: {missing}"


def test_every_overwrite_replaces_only_what_that_command_wrote(workspace, tmp_path, capsys):
    """Run each command twice, the second time with --overwrite: only its own output may change."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(workspace, root)
    cell = root / "cell.zarr"
    runs = [  # (command, options of the first run, options of the overwriting run, what it writes)
        (["convert", str(root / "stack"), str(cell), "-d", "volumes/raw2", "--voxel-size", "5"], ["--z", "0:8"], [], ["cell.zarr/volumes/raw2"]),
        (["equalize", str(cell), "-i", "volumes/raw2", "-o", "volumes/eq2"], ["--clip-limit", "0.01"], [], ["cell.zarr/volumes/eq2"]),
        (["metric-mask", str(cell), "-l", "volumes/labels/mito"], [], ["--exclude-inwards", "1"], ["cell.zarr/volumes/metric_masks/mito"]),
        (["mask", str(cell), "--min", "1", "--max", "250"], ["--opening", "1"], [], ["cell.zarr/volumes/mask"]),
        (["export", str(cell), str(root / "slices")], ["-d", "volumes/eq2"], ["-d", "volumes/mask"], ["slices", ".slices"]),
        (["threshold", str(cell), "-i", "volumes/float", "-o", "volumes/thresholded"], [], ["-t", "0.2"], ["cell.zarr/volumes/thresholded"]),
        (["instances", str(cell), "-i", "volumes/labels/mito"], [], ["--min-size", "100"], ["cell.zarr/volumes/labels/mito_instances"]),
    ]
    for arguments, first, second, outputs in runs:
        assert main([*arguments, *first, "-n", "1"]) == 0, capsys.readouterr().err
        before = snapshot(root)
        assert main([*arguments, *second, "-n", "1", "--overwrite"]) == 0, capsys.readouterr().err
        after = snapshot(root)
        touched = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert touched, f"{arguments[0]} --overwrite wrote nothing"
        strays = [k for k in touched if not any(k == o or k.startswith((f"{o}/", o)) for o in outputs)]
        assert not strays, f"{arguments[0]} --overwrite touched {strays[:5]}"
    for kept in ("notes.txt", "results/figure.txt", "cell.zarr/README.txt", "stack/0000.tif"):
        assert (root / kept).read_bytes() == (workspace / kept).read_bytes()
    np.testing.assert_array_equal(open_volume(cell, "volumes/labels/mito").read(), open_volume(workspace / "cell.zarr", "volumes/labels/mito").read())


def test_empty_ground_truth_scores_are_null_not_nan(workspace, tmp_path, capsys):
    """No labelled and no predicted voxel: F1 is undefined, stored as JSON null and said so."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(workspace, root)
    empty = create_volume(root / "cell.zarr", "volumes/labels/none", (16, 48, 48), "uint8", (5, 5, 5))
    empty.mark_complete()
    config = json.loads((root / "predict.json").read_text())
    config["roi"]["labels"] = {"volumes/labels/none": 1}
    (root / "predict.json").write_text(json.dumps(config))
    assert main(["predict", str(root / "predict.json"), "-m", str(root / "model.pt"), "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "undefined" in out and "nan" not in out.lower()
    attributes = next((root / "cell.zarr" / "volumes" / "predictions").rglob("segmentation/.zattrs"))
    scores = json.loads(attributes.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {attributes}"))["scores"]
    (per_class,) = scores.values()
    assert per_class["recall"] is None and per_class["tn"] > 0
    assert per_class["f1"] is None or (isinstance(per_class["f1"], float) and not math.isnan(per_class["f1"]))
