"""Training runs end to end on real FIB-SEM (Lucchi++): learning, resume, fine-tuning, bad input, torchrun."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from incasem.errors import ConfigError, IncasemError, RunError, VoxelSizeError
from incasem.io.volume import create_volume, open_volume
from incasem.model.checkpoint import load_checkpoint, read_card
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.runs import open_run
from incasem.train import trainer as trainer_module
from incasem.train.config import load_training_config
from incasem.train.data import SampleStream, TrainingSamples
from incasem.train.trainer import TrainOptions, resume_training, train, training_memory_format
from tests.helpers import DROSOPHILA, TINY_TRAINING, ctrl_c_at_step, read_stack, write_mito_config


def options(tmp_path: Path, **changes) -> TrainOptions:
    return TrainOptions(**{"device": "cpu", "runs_dir": tmp_path / "runs", "mlflow": False, **changes})


def weights(path: Path) -> dict[str, torch.Tensor]:
    model, _card = load_checkpoint(path)
    return model.state_dict()


@pytest.mark.slow  # minutes on 2 CPU cores; the other tests here train for a few iterations only
def test_training_learns_mitochondria_on_held_out_data(cell, tmp_path):
    """A few hundred iterations of a tiny U-Net: validation F1 on unseen sections far above the untrained net's."""
    intervals = ["intervals.validate_every=100", "intervals.save_every=100", "intervals.snapshot_every=300"]
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=300", *intervals])
    run = train(cell / "train.json", cell / "val.json", config, options=options(tmp_path))
    record = run.record()
    untrained = record["initial_validation"]["f1"] or 0.0
    best = record["best"]
    assert record["status"] == "finished" and record["iteration"] == 300
    assert best["scores"]["f1"] > untrained + 0.25, (untrained, best)
    card = read_card(run.path / best["file"])
    assert card.iteration == best["iteration"] and card.validation_scores["f1"] == best["scores"]["f1"]
    assert card.voxel_size_nm == (5, 5, 5) and card.class_names == ("background", "mito")
    for name in ("iteration_0000300_train", "iteration_0000300_validation", "iteration_0000000_validation"):
        assert (run.snapshots_dir / f"{name}.png").is_file() and (run.snapshots_dir / f"{name}.zarr").is_dir()
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [entry["iteration"] for entry in lines if entry["split"] == "train"] == list(range(1, 301))
    assert all(0 <= entry["data_wait_fraction"] <= 1 for entry in lines if entry["split"] == "train")


def test_killed_run_resumes_to_the_same_weights(cell, tmp_path, monkeypatch):
    """Ctrl-C saves a checkpoint; resuming replays the same data stream and optimizer state."""
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=6", "intervals.save_every=3", "training.batch_size=2"])
    straight = train(cell / "train.json", None, config, options=options(tmp_path / "a"))

    with monkeypatch.context() as patched:
        ctrl_c_at_step(patched, 5)
        with pytest.raises(KeyboardInterrupt):
            train(cell / "train.json", None, config, options=options(tmp_path / "b"))
    killed = open_run(tmp_path / "b" / "runs", 1)
    assert killed.record()["status"] == "interrupted"
    assert [c["iteration"] for c in killed.record()["checkpoints"]] == [3, 4]  # save_every and the Ctrl-C save

    resumed = resume_training(1, options=options(tmp_path / "b"))
    assert resumed.record()["status"] == "finished"
    a, b = weights(straight.checkpoint_path(6)), weights(resumed.checkpoint_path(6))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    iterations = [json.loads(line)["iteration"] for line in resumed.metrics_path.read_text().splitlines()]
    assert iterations == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_changed_recipe_but_may_train_longer(cell, tmp_path):
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=2"])
    run = train(cell / "train.json", None, config, options=options(tmp_path))
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        resume_training(run.id, ["training.iterations=4", "optimizer.lr=0.01"], options=options(tmp_path))
    with pytest.raises(RunError, match="already trained 2 of 2"):
        resume_training(run.id, options=options(tmp_path))
    longer = resume_training(run.id, ["training.iterations=4"], options=options(tmp_path))
    assert longer.record()["iteration"] == 4 and load_training_config(longer.config_path).training.iterations == 4


def test_fine_tuning_takes_the_models_architecture_and_refuses_a_mismatch(cell, tmp_path):
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=2"])
    base = train(cell / "train.json", None, config, options=options(tmp_path))
    # the recipe's model section is ignored: the architecture comes from the checkpoint
    wide = load_training_config(None, [*TINY_TRAINING, "training.iterations=2", "model.num_fmaps=16"])
    tuned = train(cell / "train.json", None, wide, start_from=str(base.checkpoint_path(2)), options=options(tmp_path))
    assert load_checkpoint(tuned.checkpoint_path(2))[0].config == load_checkpoint(base.checkpoint_path(2))[0].config
    with pytest.raises(VoxelSizeError, match=r"12×12×12 nm and the model 5×5×5 nm: along z that is 2\.4"):
        train(
            cell / "train.json",
            None,
            load_training_config(None, [*TINY_TRAINING, "data.voxel_size=[12,12,12]"]),
            start_from=str(base.checkpoint_path(2)),
            options=options(tmp_path),
        )
    with pytest.raises(ConfigError, match=r"data\.num_classes"):
        train(
            cell / "train.json",
            None,
            load_training_config(None, [*TINY_TRAINING, "data.num_classes=3"]),
            start_from=str(base.checkpoint_path(2)),
            options=options(tmp_path),
        )


def write_entry(folder: Path, name: str, **changes) -> Path:
    """The training ROI of ``folder/train.json`` with ``changes`` (None: leave the key out) as ``folder/name``."""
    entry = {**json.loads((folder / "train.json").read_text())["train"], **changes}
    path = folder / name
    path.write_text(json.dumps({"roi": {k: v for k, v in entry.items() if v is not None}}))
    return path


@pytest.mark.parametrize(
    ("changes", "overrides", "message"),
    [
        ({"labels": {"volumes/labels/mito": 1, "volumes/metric_masks/mito": 2}}, [], "class id 2, but the model has 2 classes"),
        ({"labels": None}, [], "has no 'labels'"),
        ({"shape": [20, 224, 224]}, [], "smaller than the training output block"),
        (
            {},
            ["training.input_size_voxels=[45,45,45]", "training.output_size_voxels=[27,27,27]"],
            "[45, 45, 45] is not a valid input of the network: use [46, 46, 46]",
        ),
        ({}, ["training.output_size_voxels=[20,20,20]"], "output_size_voxels' must be [26, 26, 26]"),
        ({"voxel_size": [5, 5, 6]}, [], "voxel"),
        (
            {},
            ["training.input_size_voxels=[4004,4004,4004]", "training.output_size_voxels=[3986,3986,3986]", "model.num_fmaps=32"],
            "GB are free on this device: use a smaller block",
        ),
    ],
    ids=[
        "class id out of range",
        "no labels",
        "ROI smaller than output",
        "invalid input size",
        "wrong output size",
        "voxel size",
        "block too large for memory",
    ],
)
def test_bad_training_data_is_refused_before_a_run_exists(cell, tmp_path, changes, overrides, message):
    path = write_entry(cell, f"bad_{tmp_path.name}.json", **changes)
    with pytest.raises(IncasemError, match=re.escape(message)):
        train(path, None, load_training_config(None, [*TINY_TRAINING, *overrides]), options=options(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_no_foreground_anywhere_stops_with_a_message(cell, tmp_path):
    shape = open_volume(cell / "cell.zarr", "volumes/raw").shape
    empty = create_volume(cell / "cell.zarr", "volumes/labels/none", shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(64, 128, 128))
    empty.mark_complete()
    path = write_entry(cell, "none.json", labels={"volumes/labels/none": 1})
    with pytest.raises(ConfigError, match="no labels dataset has any labelled foreground"):
        train(path, None, load_training_config(None, TINY_TRAINING), options=options(tmp_path))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(cell, tmp_path, monkeypatch):
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=4", "intervals.save_every=2"])
    real_save = trainer_module.save_checkpoint

    def save(path, *args, **kwargs):
        if "0000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    with pytest.raises(RunError, match=r"No space left on device.*previous checkpoint .*iteration_0000002.pt\) is intact.*--resume 1"):
        train(cell / "train.json", None, config, options=options(tmp_path))
    run = open_run(tmp_path / "runs", 1)
    assert run.record()["status"] == "failed"
    load_checkpoint(run.checkpoint_path(2))  # still valid
    assert not run.checkpoint_path(4).exists()


def test_the_data_stream_does_not_depend_on_loader_processes_or_where_augmentation_runs(cell):
    """Workers or not, augmentation in the loader (CPU) or after the transfer (the GPU path): the same samples."""
    config = load_training_config(None, TINY_TRAINING)
    from incasem.io.data_config import load_data_config

    def samples(augment_here: bool) -> TrainingSamples:
        return TrainingSamples(
            load_data_config(cell / "train.json"),
            config.augmentation,
            (44, 44, 44),
            (26, 26, 26),
            config.sampler_kwargs(),
            3,
            augment_here=augment_here,
        )

    batches = []
    for workers, augment_here in ((0, True), (2, True), (1, False)):
        stream = SampleStream(samples(augment_here), torch.device("cpu"), batch_size=2, start_iteration=5, num_workers=workers)
        batches.append([stream.next_batch() for _ in range(2)])
        stream.close()
    for first, second, third in zip(*batches):
        assert first["index"].tolist() == second["index"].tolist() == third["index"].tolist()
        assert third["raw"].shape == (2, 1, 44, 44, 44) and third["labels"].shape == (2, 26, 26, 26)
        torch.testing.assert_close(first["raw"], third["raw"], rtol=0, atol=1e-6)
        assert torch.equal(first["labels"], third["labels"])
        assert torch.equal(first["labels"], second["labels"]) and torch.equal(first["mask"], second["mask"])
        torch.testing.assert_close(first["raw"], second["raw"], rtol=0, atol=1e-6)  # interpolation: thread count may change the last bit
    assert batches[0][0]["index"].tolist() == [10, 11]


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(cell, tmp_path):
    """DDP on gloo: 2 processes × batch 1 give the weights of 1 process × batch 2."""
    overrides = [*TINY_TRAINING, "training.iterations=3", "training.batch_size=2"]
    common = ["train", "--train-data", str(cell / "train.json"), "--device", "cpu", "--precision", "fp32", "--no-mlflow", "-q", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "incasem", *common, "--runs-dir", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "incasem", *common, "--runs-dir", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert [p.name for p in (tmp_path / "two").iterdir() if p.is_dir()] == ["1"]  # one run folder, written by rank 0
    a = weights(tmp_path / "one" / "1" / "checkpoints" / "iteration_0000003.pt")
    b = weights(tmp_path / "two" / "1" / "checkpoints" / "iteration_0000003.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_fine_tuning_the_bundled_demo_model(cell, tmp_path):
    """--start-from a shipped checkpoint: its weights are the starting point (validated at iteration 0)."""
    demo = SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt"
    config = load_training_config(
        None,
        [
            "training.iterations=2",
            "training.num_workers=0",
            "training.seed=3",
            "intervals.validate_every=2",
            "training.input_size_voxels=[108,108,108]",
            "training.output_size_voxels=[14,14,14]",
            "reject.min_masked=0",
        ],
    )
    # validated on the crop's last 18 sections, rich in mitochondria (Lucchi++ slices 98-115, never seen by the demo model)
    val = write_entry(cell, f"val_{tmp_path.name}.json", offset=[46, 0, 0], shape=[18, 224, 224], metric_masks=["volumes/metric_masks/mito"])
    run = train(cell / "train.json", val, config, start_from=str(demo), options=options(tmp_path))
    demo_model, demo_card = load_checkpoint(demo)
    tuned_model, tuned_card = load_checkpoint(run.checkpoint_path(2))
    assert tuned_model.config == demo_model.config and tuned_card.class_names == demo_card.class_names
    assert tuned_card.source == f"fine-tuned from {demo_card.source}" and tuned_card.organelle == "mito"
    assert run.record()["initial_validation"]["f1"] > 0.3  # the demo model already finds mitochondria
    changed = [k for k, v in tuned_model.state_dict().items() if not torch.equal(v, demo_model.state_dict()[k])]
    assert changed  # and training moved its weights


def test_a_run_trains_in_one_process_at_a_time(cell, tmp_path):
    """A second --resume while the run trains is refused; the lock of a killed process is not."""
    config = load_training_config(None, [*TINY_TRAINING, "training.iterations=2"])
    run = train(cell / "train.json", None, config, options=options(tmp_path))
    assert not run.lock_path.exists()  # released at the end
    run.lock_path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live trainer
    before = run.record_path.read_bytes()
    with pytest.raises(RunError, match=f"run 1 is being trained by process {os.getpid()}"):
        resume_training(run.id, ["training.iterations=3"], options=options(tmp_path))
    assert run.record_path.read_bytes() == before
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.lock_path.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))  # killed with SIGKILL
    resumed = resume_training(run.id, ["training.iterations=3"], options=options(tmp_path))
    assert resumed.record()["iteration"] == 3 and not run.lock_path.exists()


def test_the_shipped_anisotropic_config_trains_on_real_sstem(tmp_path):
    """The `anisotropic` config end to end on 50 × 4.6 × 4.6 nm ssTEM: (1,2,2) pooling, y/x-only transposes."""
    region = (slice(0, 20), slice(0, 160), slice(0, 320))
    raw = read_stack(DROSOPHILA / "image", *region)
    mito = (read_stack(DROSOPHILA / "labels" / "mito", *region) != 0).astype(np.uint8)
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito}.items():
        volume = create_volume(tmp_path / "sstem.zarr", name, array.shape, "uint8", (50, 4.6, 4.6), (0, 0, 0))
        volume.write(volume.roi, array)
        volume.mark_complete()
    for name, roi in {"train": ((0, 0, 0), (20, 160, 200)), "val": ((0, 0, 220), (20, 160, 100))}.items():
        write_mito_config(tmp_path, name, "sstem.zarr", roi, (50, 4.6, 4.6))
    config = load_training_config(
        "anisotropic",
        [
            "model.num_fmaps=2",
            "training.input_size_voxels=[20,116,116]",
            "training.output_size_voxels=[6,22,22]",
            "training.iterations=3",
            "training.num_workers=0",
            "training.seed=5",
            "reject.min_foreground=0",
        ],
    )
    run = train(tmp_path / "train.json", tmp_path / "val.json", config, options=options(tmp_path))
    model, card = load_checkpoint(run.checkpoint_path(3))
    assert card.voxel_size_nm == (50, 4.6, 4.6)  # taken from the data
    assert model.config.downsample_factors == ((1, 2, 2),) * 3 and model.config.kernel_size_down[0] == ((1, 3, 3), (1, 3, 3))
    assert run.record()["best"] is not None and card.validation_scores is not None


@pytest.mark.parametrize(
    ("device", "precision", "fmaps", "layout"),
    [
        ("cpu", "fp32", 12, torch.channels_last_3d),
        ("cpu", "fp32", 20, torch.channels_last_3d),
        ("cpu", "fp32", 32, torch.contiguous_format),
        ("cpu", "bf16", 32, torch.channels_last_3d),
        ("cuda", "bf16", 12, torch.contiguous_format),
    ],
)
def test_training_layout_is_the_faster_one_measured(device: str, precision: str, fmaps: int, layout: torch.memory_format) -> None:
    """fp32 trains channels-last on the CPU only for narrow networks (wide ones train faster
    channels-first there), bf16 always; a GPU channels-first (BENCHMARKS.md, Training)."""
    config = load_training_config(None, [f"model.num_fmaps={fmaps}"])
    assert training_memory_format(config, torch.device(device), precision) == layout
