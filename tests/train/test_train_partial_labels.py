"""Training on partial labels: unlabelled voxels count nowhere (real Lucchi++ FIB-SEM).

Two containers hold the same raw, the same labelled sections and the same labels on them; on
every unlabelled voxel one holds the true labels and the other their inverse. A run on either
must see the same blocks, the same losses, the same validation scores and end with the same
weights: any place where an unlabelled voxel counted would tell them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from incasem.errors import ConfigError
from incasem.io.volume import create_volume
from incasem.model.checkpoint import load_checkpoint
from incasem.train.config import load_training_config
from incasem.train.trainer import TrainOptions, train
from tests.helpers import LUCCHI, TINY_TRAINING, read_stack, write_mito_config

REGION = (slice(0, 64), slice(0, 160), slice(0, 160))
TRAIN_ROI = ((24, 0, 0), (40, 160, 160))
VAL_ROI = ((0, 0, 0), (14, 160, 160))
#: Labelled sections: 3 of the 40 training sections, 2 of the 14 validation sections.
LABELLED = (3, 10, 30, 41, 57)


def _write(container: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        volume = create_volume(container, name, array.shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 80, 80))
        volume.write(volume.roi, array)
        volume.mark_complete()


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """``true.zarr`` and ``inverted.zarr`` (labels inverted off the labelled sections), with train/val configs of each."""
    folder = tmp_path_factory.mktemp("partial")
    raw = read_stack(LUCCHI / "image", *REGION)
    mito = (read_stack(LUCCHI / "labels" / "mito", *REGION) != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[list(LABELLED)] = 1
    inverted = np.where(labelled != 0, mito, 1 - mito).astype(np.uint8)
    for name, labels in {"true": mito, "inverted": inverted}.items():
        _write(folder / f"{name}.zarr", {"volumes/raw": raw, "volumes/labels/mito": labels, "volumes/labelled/mito": labelled})
        for part, roi in {"train": TRAIN_ROI, "val": VAL_ROI}.items():
            write_mito_config(folder, f"{name}_{part}", f"{name}.zarr", roi, (5, 5, 5), labelled="volumes/labelled/mito")
    return folder


def _run(cells: Path, name: str, tmp_path: Path):
    overrides = [*TINY_TRAINING, "training.iterations=3", "intervals.validate_every=3", "intervals.save_every=3"]
    options = TrainOptions(device="cpu", runs_dir=tmp_path / name, mlflow=False)
    return train(cells / f"{name}_train.json", cells / f"{name}_val.json", load_training_config(None, overrides), options=options)


def test_loss_validation_and_weights_ignore_unlabelled_voxels(cells, tmp_path):
    runs = {name: _run(cells, name, tmp_path) for name in ("true", "inverted")}
    metrics = {name: [json.loads(line) for line in run.metrics_path.read_text().splitlines()] for name, run in runs.items()}
    losses = {name: [m["loss"] for m in lines if m["split"] == "train"] for name, lines in metrics.items()}
    assert len(losses["true"]) == 3 and losses["true"] == losses["inverted"]
    scores = {name: run.record()["checkpoints"][-1]["scores"] for name, run in runs.items()}
    assert scores["true"]["f1"] is not None and scores["true"] == scores["inverted"]
    weights = {name: load_checkpoint(run.path / run.record()["checkpoints"][-1]["file"])[0].state_dict() for name, run in runs.items()}
    assert all(torch.equal(weights["true"][key], weights["inverted"][key]) for key in weights["true"])
    decisions = {name: run.record()["model"] for name, run in runs.items()}  # chosen on the labelled validation voxels
    assert decisions["true"]["threshold"] == decisions["inverted"]["threshold"] and decisions["true"] == decisions["inverted"]


def test_the_same_data_counted_everywhere_trains_differently(cells, tmp_path):
    """The check above can fail: the inverted container without its labelled mask gives other losses."""
    write_mito_config(cells, "inverted_dense_train", "inverted.zarr", TRAIN_ROI, (5, 5, 5))
    write_mito_config(cells, "inverted_dense_val", "inverted.zarr", VAL_ROI, (5, 5, 5))
    runs = {name: _run(cells, name, tmp_path) for name in ("true", "inverted_dense")}
    losses = {name: [json.loads(line)["loss"] for line in run.metrics_path.read_text().splitlines() if '"train"' in line] for name, run in runs.items()}
    assert losses["true"] != losses["inverted_dense"]


@pytest.mark.parametrize(
    ("labels", "labelled", "message"),
    [
        ("volumes/labels/mito", "volumes/labelled/nothing", "marks no voxel of the ROI"),
        ("volumes/labels/empty", "volumes/labelled/mito", "no labels dataset has any labelled foreground"),
    ],
    ids=["no labelled voxel", "no labelled foreground"],
)
def test_partial_labels_with_nothing_to_learn_are_refused_before_a_run_exists(cells, tmp_path, labels, labelled, message):
    container = cells / "true.zarr"
    shape = (64, 160, 160)
    for name in ("volumes/labelled/nothing", "volumes/labels/empty"):
        if not (container / name).exists():
            create_volume(container, name, shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 80, 80)).mark_complete()
    path = cells / f"nothing_{tmp_path.name}.json"
    entry = {"file": "true.zarr", "offset": list(TRAIN_ROI[0]), "shape": list(TRAIN_ROI[1]), "voxel_size": [5, 5, 5], "raw": "volumes/raw"}
    path.write_text(json.dumps({"sparse": {**entry, "labels": {labels: 1}, "labelled": labelled}}))
    with pytest.raises(ConfigError, match=message) as error:
        train(path, None, load_training_config(None, TINY_TRAINING), options=TrainOptions(device="cpu", runs_dir=tmp_path / "runs", mlflow=False))
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert not (tmp_path / "runs").exists()
