"""The command line of training, end to end on real FIB-SEM: train, follow, Ctrl-C, resume, predict by run id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from incasem.cli.app import main
from incasem.model.checkpoint import checkpoint_sha256
from incasem.runs import RUNS_DIR_ENV, open_run
from tests.helpers import TINY_TRAINING


def test_train_then_follow_and_predict_by_run_id(cell, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    status = main(
        [
            "train",
            "--train-data",
            str(cell / "train.json"),
            "--val-data",
            str(cell / "val.json"),
            "--runs-dir",
            str(runs),
            "--device",
            "cpu",
            "--no-mlflow",
            "-q",
            *TINY_TRAINING,
            "training.iterations=4",
            "intervals.validate_every=2",
            "intervals.save_every=2",
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    assert "iteration 2: validation F1" in err and "run 1 finished" in err and "--model run:1" in err
    assert sorted(p.name for p in (runs / "1" / "checkpoints").iterdir()) == ["iteration_0000002.pt", "iteration_0000004.pt"]
    assert list((runs / "1" / "tensorboard").iterdir())  # event files

    assert main(["runs", "list", "--runs-dir", str(runs)]) == 0
    listed = capsys.readouterr().out
    assert "finished" in listed and "4/4" in listed
    assert main(["runs", "show", "1", "--runs-dir", str(runs)]) == 0
    assert "iteration_0000004.pt" in capsys.readouterr().out

    monkeypatch.chdir(tmp_path / "runs")  # ./runs does not exist here: run:1 is found only through --runs-dir
    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    best = open_run(runs, 1).record()["best"]
    status = main(["predict", str(cell / "val.json"), "--model", "run:1", "--runs-dir", str(runs), "--device", "cpu", "-q"])
    out = capsys.readouterr().out
    assert status == 0 and "F1" in out
    segmentations = list((cell / "cell.zarr" / "volumes" / "predictions" / "run-1").rglob("segmentation/.zattrs"))
    used = {json.loads(p.read_text())["incasem_provenance"]["checkpoint_sha256"] for p in segmentations}
    model = open_run(runs, 1).record()["model"]  # the best checkpoint with its decisions chosen on val.json, found by run id
    assert model["iteration"] == best["iteration"] and model["file"] == "run-1.pt"
    assert checkpoint_sha256(runs / "1" / "run-1.pt") in used  # filed under the run's name

    status = main(
        [
            "train",
            "--train-data",
            str(cell / "train.json"),
            "--runs-dir",
            str(runs),
            "--start-from",
            "run:1",
            "--device",
            "cpu",
            "--no-mlflow",
            "-q",
            *TINY_TRAINING[:3],
            "training.iterations=1",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert open_run(runs, 2).record()["start_from"] == "run:1"  # fine-tuned from run 1 of --runs-dir, not of ./runs


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(cell, tmp_path):
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "incasem",
        "train",
        "--train-data",
        str(cell / "train.json"),
        "--runs-dir",
        str(runs),
        "--device",
        "cpu",
        "--no-mlflow",
        "-q",
        *TINY_TRAINING,
        "training.iterations=100000",
        "intervals.save_every=100000",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = runs / "1" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    run = open_run(runs, 1)
    record = run.record()
    saved = record["checkpoints"][-1]["iteration"]
    assert record["status"] == "interrupted" and saved >= 3
    assert f"interrupted at iteration {saved}" in err and "incasem train --resume 1" in err
    assert "Traceback" not in err

    status = main(["train", "--resume", "1", "--runs-dir", str(runs), "--device", "cpu", "--no-mlflow", "-q", f"training.iterations={saved + 2}"])
    assert status == 0
    record = run.record()
    assert record["status"] == "finished" and record["iteration"] == saved + 2
