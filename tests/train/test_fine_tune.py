"""Fine-tuning from a container's labelled sections: one command, no config file (real Lucchi++ FIB-SEM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from incasem.cli import main
from incasem.errors import ConfigError, DatasetNotFoundError, IncasemError
from incasem.geometry import Roi
from incasem.io.volume import create_volume, open_volume
from incasem.model.checkpoint import read_card
from incasem.model.shipped import SHIPPED_FOLDER, shipped_card
from incasem.runs import open_run
from incasem.train.config import load_training_config
from incasem.train.finetune import FINE_TUNE_OVERRIDES, fine_tune, fine_tune_config, fitted_block, split_labelled
from incasem.train.trainer import TrainOptions
from tests.helpers import DROSOPHILA, LUCCHI, ctrl_c_at_step, error_line, read_stack

DEMO_MODEL = str(SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt")
#: The smallest useful block of the demo model's network (3 poolings, context 47): fast on 2 cores.
SMALL_BLOCK = ["training.input_size_voxels=[108,108,108]", "training.output_size_voxels=[14,14,14]", "training.num_workers=0"]
LABELLED_SECTIONS = (4, 20, 36, 52)  # 4 of the crop's 64 sections


@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> Path:
    """``cell.zarr``: the Lucchi++ crop (64 x 224 x 224), mitochondria labelled on 4 sections only."""
    container = tmp_path_factory.mktemp("fine_tune") / "cell.zarr"
    raw, mito = read_stack(LUCCHI / "image"), (read_stack(LUCCHI / "labels" / "mito") != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[list(LABELLED_SECTIONS)] = 1
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito * labelled, "volumes/labelled/mito": labelled}.items():
        volume = create_volume(container, name, array.shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 112, 112))
        volume.write(volume.roi, array)
        volume.mark_complete()
    return container


def test_the_labelled_region_splits_along_its_longer_in_plane_axis(cell):
    data = split_labelled(cell, "mito")
    assert (data.raw, data.labels, data.labelled, data.labelled_sections) == ("volumes/raw", "volumes/labels/mito", "volumes/labelled/mito", 4)
    # every labelled section gives to both parts: the rows up to the cut train, the rest validate
    cut = data.train_roi.end[1]
    assert data.train_roi == Roi((0, 0, 0), (64, cut, 224)) and data.val_roi == Roi((0, cut, 0), (64, 224 - cut, 224))
    mito = open_volume(cell, "volumes/labels/mito").read() != 0
    assert 0.2 <= mito[:, cut:].sum() / mito.sum() <= 0.3  # the far quarter of the labelled mitochondria
    dense = split_labelled(cell, "mito", labelled="none", validation_share=0.5)
    assert dense.labelled is None and dense.train_roi.offset == (0, 0, 0) and dense.train_roi.shape[0] == 64


def test_missing_labels_and_unlabelled_masks_are_one_line_errors(cell, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="has no dataset volumes/labels/er"):
        split_labelled(cell, "er", labels="volumes/labels/er")
    create_volume(cell, "volumes/labels/golgi", (64, 224, 224), "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 112, 112)).mark_complete()
    with pytest.raises(DatasetNotFoundError, match=r"has no volumes/labels/er \(labels datasets: volumes/labels/golgi, volumes/labels/mito\)"):
        split_labelled(cell, "er")
    empty = create_volume(cell, "volumes/labelled/empty", (64, 224, 224), "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 112, 112))
    empty.mark_complete()
    with pytest.raises(ConfigError, match="marks no voxel as labelled"):
        split_labelled(cell, "mito", labelled="volumes/labelled/empty")
    status = main(["fine-tune", str(cell), "--start-from", DEMO_MODEL, "--validation-share", "1.5", "--runs-dir", str(tmp_path / "runs")])
    assert status != 0 and not (tmp_path / "runs").exists()


def test_the_recipe_of_the_model_with_fine_tuning_defaults():
    fibsem = fine_tune_config(shipped_card("mito-fibsem-5nm"))
    assert fibsem.training.input_size_voxels == (140, 140, 140) and fibsem.optimizer.lr == 1e-4
    assert fibsem.training.iterations == 400 and fibsem.intervals.validate_every == 50 and fibsem.training.seed is None
    mine = fine_tune_config(shipped_card("mito-fibsem-5nm"), ["training.iterations=1000", "optimizer.lr=5e-5"])
    assert (mine.training.iterations, mine.optimizer.lr) == (1000, 5e-5)
    sstem = fine_tune_config(shipped_card("mito-sstem-50x5nm"))
    assert sstem.augmentation.transpose_only == (1, 2) and sstem.training.input_size_voxels == (20, 164, 164)
    assert "training.iterations=400" in FINE_TUNE_OVERRIDES


def test_the_block_shrinks_to_fit_the_training_part():
    card = shipped_card("mito-fibsem-5nm")
    config = fitted_block(card.architecture, fine_tune_config(card), (40, 300, 300))
    assert config.training.output_size_voxels[0] <= 40 and len(set(config.training.input_size_voxels)) == 1  # transposed axes stay equal
    assert card.architecture.output_shape(config.training.input_size_voxels) == config.training.output_size_voxels
    sstem = shipped_card("mito-sstem-50x5nm")
    kept = fitted_block(sstem.architecture, fine_tune_config(sstem), (30, 120, 400))
    assert kept.training.input_size_voxels[0] == 20 and kept.training.output_size_voxels[1] <= 120
    assert kept.training.input_size_voxels[1] == kept.training.input_size_voxels[2]
    with pytest.raises(ConfigError, match="smaller than the network's smallest output"):
        fitted_block(card.architecture, fine_tune_config(card), (2, 300, 300))


def test_fine_tune_then_predict_with_one_command(cell, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["fine-tune", str(cell), "--start-from", DEMO_MODEL, "--runs-dir", str(runs), "--device", "cpu", "--no-mlflow", "-q", "--predict"]
    assert main([*args, *SMALL_BLOCK, "training.iterations=2", "intervals.validate_every=2"]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    run = open_run(runs, 1)
    record = run.record()
    assert record["status"] == "finished" and record["model"]["file"] == "run-1.pt"
    entries = {name: json.loads((run.data_dir / f"{name}.json").read_text())[name] for name in ("train", "val")}
    assert all(entry["labelled"] == "volumes/labelled/mito" for entry in entries.values())
    card = read_card(run.model_path)
    decision = card.training["decision_threshold"]
    assert decision["threshold"] == record["model"]["threshold"] and "validation data of run 1" in decision["chosen_on"]
    assert card.seed_threshold == record["model"]["seed_threshold"]
    assert "decisions chosen on" in captured.err
    segmentation = open_volume(cell, "volumes/predictions/run-1/0001/segmentation")  # filed under the run's name
    assert segmentation.roi == open_volume(cell, "volumes/raw").roi
    assert "prediction: " in captured.out and "run-1/0001/segmentation" in captured.out
    assert main(["runs", "show", "1", "--runs-dir", str(runs)]) == 0
    assert f"model: run-1.pt (iteration {record['model']['iteration']}): foreground threshold {record['model']['threshold']}" in capsys.readouterr().out


def test_ctrl_c_keeps_the_best_checkpoint_and_still_chooses_its_decisions(cell, tmp_path, monkeypatch):
    ctrl_c_at_step(monkeypatch, 3)
    options = TrainOptions(device="cpu", runs_dir=tmp_path / "runs", mlflow=False)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cell, DEMO_MODEL, [*SMALL_BLOCK, "training.iterations=10", "intervals.validate_every=2", "training.seed=3"], options=options)
    run = open_run(tmp_path / "runs", 1)
    record = run.record()
    assert record["status"] == "interrupted" and record["best"]["iteration"] == 2
    assert record["model"]["iteration"] == 2 and run.model_path.is_file()


def test_a_labelled_mask_off_the_labels_grid_is_refused_before_a_run_exists(cell, tmp_path, capsys):
    shifted = create_volume(cell, "volumes/labelled/shifted", (64, 224, 224), "uint8", (5, 5, 5), (0, 5, 0), chunks=(32, 112, 112))
    shifted.mark_complete()
    status = main(["fine-tune", str(cell), "--start-from", DEMO_MODEL, "--labelled", "volumes/labelled/shifted", "--runs-dir", str(tmp_path / "runs")])
    line = error_line(capsys)
    assert status != 0 and "labelled" in line and not (tmp_path / "runs").exists()
    with pytest.raises(IncasemError):
        fine_tune(cell, DEMO_MODEL, labelled="volumes/labelled/shifted", options=TrainOptions(device="cpu", runs_dir=tmp_path / "runs", mlflow=False))


def test_serial_sections_fine_tune_on_labelled_z_sections(tmp_path):
    """Anisotropic data (50 nm sections): 3 of 20 ssTEM sections labelled; the shipped serial-section model's
    recipe keeps its (1, 2, 2) blocks and y-x-only transposes, and the split runs in-plane."""
    raw = read_stack(DROSOPHILA / "image")
    mito = (read_stack(DROSOPHILA / "labels" / "mito") != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[[3, 10, 16]] = 1
    container = tmp_path / "sstem.zarr"
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito * labelled, "volumes/labelled/mito": labelled}.items():
        volume = create_volume(container, name, array.shape, "uint8", (50, 5, 5), (0, 0, 0))
        volume.write(volume.roi, array)
        volume.mark_complete()
    options = TrainOptions(device="cpu", runs_dir=tmp_path / "runs", mlflow=False)
    run = fine_tune(container, "mito-sstem-50x5nm", ["training.iterations=2", "intervals.validate_every=2", "training.num_workers=0"], options=options)
    config = load_training_config(run.config_path)
    assert config.augmentation.transpose_only == (1, 2) and config.training.input_size_voxels == (20, 164, 164)
    train_entry = json.loads((run.data_dir / "train.json").read_text())["train"]
    assert train_entry["offset"][2] == 0 and train_entry["shape"][:2] == [20, 224] and train_entry["shape"][2] < 320  # cut along x
    assert run.record()["model"]["file"] == "run-1.pt"
    assert read_card(run.model_path).voxel_size_nm == (50, 5, 5)


def test_a_5nm_model_fine_tunes_on_an_8nm_cell_and_then_expects_8nm(tmp_path, capsys):
    """The same command on data of another voxel size: the network trains on the data's grid and
    the new model's card says the voxel size it now expects; its prediction needs no resampling."""
    container = tmp_path / "cell8.zarr"
    raw = read_stack(LUCCHI / "image", slice(0, 40), slice(0, 160), slice(0, 160))
    mito = (read_stack(LUCCHI / "labels" / "mito", slice(0, 40), slice(0, 160), slice(0, 160)) != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[[10, 30]] = 1
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito * labelled, "volumes/labelled/mito": labelled}.items():
        volume = create_volume(container, name, array.shape, "uint8", (8, 8, 8), (0, 0, 0), chunks=(20, 80, 80))
        volume.write(volume.roi, array)
        volume.mark_complete()
    runs = tmp_path / "runs"
    args = ["fine-tune", str(container), "--start-from", DEMO_MODEL, "--runs-dir", str(runs), "--device", "cpu", "--no-mlflow", "-q", "--predict"]
    assert main([*args, *SMALL_BLOCK, "training.iterations=2", "intervals.validate_every=2"]) == 0
    err = capsys.readouterr().err
    assert "note: " + DEMO_MODEL + " was trained at 5×5×5 nm; fine-tuned on this 8×8×8 nm data, the new model expects 8×8×8 nm" in err
    run = open_run(runs, 1)
    assert read_card(run.model_path).voxel_size_nm == (8, 8, 8)
    assert load_training_config(run.config_path).data.voxel_size == (8, 8, 8)
    prediction = open_volume(container, "volumes/predictions/run-1/0001/prob_maps/class_1")
    assert prediction.voxel_size == (8, 8, 8) and "resampling" not in prediction.array.attrs["incasem_provenance"]
    assert "note: resampled" not in err


def test_fine_tuning_across_more_than_twice_the_voxel_size_is_refused(tmp_path, capsys):
    container = tmp_path / "cell12.zarr"
    for name in ("volumes/raw", "volumes/labels/mito"):
        create_volume(container, name, (20, 64, 64), "uint8", (12, 12, 12), (0, 0, 0)).mark_complete()
    status = main(["fine-tune", str(container), "--start-from", DEMO_MODEL, "--labelled", "none", "--runs-dir", str(tmp_path / "runs")])
    line = error_line(capsys)
    assert status == 1 and "12×12×12 nm and the model 5×5×5 nm" in line and not (tmp_path / "runs").exists()
