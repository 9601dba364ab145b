"""Run tracking: metrics.jsonl, TensorBoard event files, MLflow in a local SQLite store, resume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from incasem.errors import ConfigError, InvalidValueError, RunError
from incasem.runs import RunFolder, create_run, read_metrics
from incasem.train.tracking import Tracker

CONFIG = {"training": {"iterations": 5000}, "optimizer": {"lr": 3.0e-5}, "model": {"downsample_factors": [[2, 2, 2]]}}


@pytest.fixture
def run(tmp_path) -> RunFolder:
    data = tmp_path / "train.json"
    data.write_text("{}")
    return create_run(tmp_path / "runs", config=CONFIG, train_data=data, val_data=None, command=["incasem", "train"])


def scalars(run: RunFolder) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard shows for the run: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.tensorboard_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def log_iterations(tracker: Tracker, iterations: range, offset: float = 0.0) -> None:
    for iteration in iterations:
        tracker.log_train(iteration, {"loss": offset + 1 / iteration, "seconds_per_iteration": 0.5})


def test_metrics_jsonl_and_tensorboard(run):
    with Tracker(run, mlflow=False) as tracker:
        log_iterations(tracker, range(1, 4))
        tracker.log_train(4, {"loss": float("nan")})
        tracker.log_validation(
            3,
            {"cell_1": {"f1": 0.5, "loss": 0.2}, "cell_2": {"f1": None, "loss": 0.4}},
            {"f1": 0.5, "loss": 0.3},
        )
        tracker.log_image("snapshot/raw", 3, np.arange(64, dtype=np.uint8).reshape(8, 8))
    lines = read_metrics(run)
    expected = [(1, "train"), (2, "train"), (3, "train"), (4, "train"), *[(3, "validation")] * 3]
    assert [(line["iteration"], line["split"]) for line in lines] == expected
    assert lines[0]["loss"] == 1.0 and lines[0]["seconds_per_iteration"] == 0.5 and isinstance(lines[0]["time"], float)
    assert lines[3]["loss"] is None  # NaN: JSON null
    assert [line["roi"] for line in lines[4:]] == ["cell_1", "cell_2", None]
    assert lines[5]["f1"] is None and (lines[6]["f1"], lines[6]["loss"]) == (0.5, 0.3)
    assert "NaN" not in run.metrics_path.read_text()
    shown = scalars(run)
    assert shown["train/loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})  # NaN at 4 not sent
    assert shown["validation/f1"] == {3: 0.5} and shown["validation/cell_1/f1"] == {3: 0.5}
    assert "validation/cell_2/f1" not in shown and shown["validation/cell_2/loss"] == pytest.approx({3: 0.4})
    assert not (run.path.parent / "mlflow.db").exists() and "mlflow_run_id" not in run.record()


def test_resume_drops_what_came_after_the_checkpoint(run):
    with pytest.raises(KeyboardInterrupt), Tracker(run, mlflow=False) as tracker:
        log_iterations(tracker, range(1, 11))
        tracker.log_validation(10, {}, {"f1": 0.4})
        raise KeyboardInterrupt
    with run.metrics_path.open("a") as stream:
        stream.write('{"iteration": 11, "split": "tra')  # killed while writing a line
    last = read_metrics(run)[-1]  # the truncated line is left out
    assert (last["iteration"], last["split"]) == (10, "validation")
    with Tracker(run, start_iteration=6, mlflow=False) as tracker:  # resumed from the checkpoint of iteration 6
        log_iterations(tracker, range(7, 9), offset=100)
    assert [line["iteration"] for line in read_metrics(run)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert read_metrics(run)[-1]["loss"] == 100 + 1 / 8
    shown = scalars(run)
    assert sorted(shown["train/loss"]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert shown["train/loss"][6] == pytest.approx(1 / 6) and shown["train/loss"][7] == pytest.approx(100 + 1 / 7)
    assert not shown.get("validation/f1")  # logged at iteration 10: purged


def test_damaged_metrics_line(run):
    run.metrics_path.write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(RunError, match=r"line 2 of .*metrics\.jsonl is not a JSON object"):
        read_metrics(run)


def test_bad_arguments(run):
    with pytest.raises(InvalidValueError, match="start_iteration"):
        Tracker(run, start_iteration=-1, mlflow=False)
    with Tracker(run, mlflow=False) as tracker, pytest.raises(InvalidValueError, match="2D uint8"):
        tracker.log_image("x", 1, np.zeros((4, 4), dtype=np.float32))


def test_mlflow_missing(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(ConfigError, match=r'MLflow is not installed: pip install "incasem\[mlflow\]"'):
        Tracker(run, mlflow=True)
    assert not run.metrics_path.exists()
    with Tracker(run) as tracker:  # mlflow=None: without MLflow
        tracker.log_train(1, {"loss": 1.0})
    assert not (run.path.parent / "mlflow.db").exists() and "mlflow_run_id" not in run.record()


def test_mlflow_local_store_and_resume(run):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    with Tracker(run, mlflow=True) as tracker:  # default store: <runs folder>/mlflow.db
        log_iterations(tracker, range(1, 4))
        tracker.log_validation(3, {"cell 1": {"f1": 0.5}}, {"f1": 0.6, "loss": None})
    database = Path(run.path.parent) / "mlflow.db"
    client = MlflowClient(f"sqlite:///{database.resolve()}")
    record = run.record()
    mlflow_run = client.get_run(record["mlflow_run_id"])
    assert record["mlflow_tracking_uri"] == f"sqlite:///{database.resolve()}"
    assert mlflow_run.info.run_name == "run 1" and mlflow_run.info.status == "FINISHED"
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "incasem"
    assert mlflow_run.data.params["training.iterations"] == "5000"
    assert mlflow_run.data.params["model.downsample_factors"] == "[[2, 2, 2]]"
    assert mlflow_run.data.tags["incasem_run_dir"] == str(run.path.resolve())
    assert mlflow_run.info.artifact_uri.startswith((run.path.parent.resolve() / "mlartifacts").as_uri())
    history = client.get_metric_history(mlflow_run.info.run_id, "train_loss")
    assert {m.step: m.value for m in history} == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    assert mlflow_run.data.metrics["validation_f1"] == 0.6 and mlflow_run.data.metrics["validation_cell 1_f1"] == 0.5
    assert "validation_loss" not in mlflow_run.data.metrics

    with pytest.raises(RuntimeError), Tracker(run, start_iteration=2, mlflow=True) as tracker:
        tracker.log_train(3, {"loss": 7.0})
        raise RuntimeError("out of memory")
    resumed = client.get_run(record["mlflow_run_id"])  # the same MLflow run, continued
    assert run.record()["mlflow_run_id"] == record["mlflow_run_id"] and resumed.info.status == "FAILED"
    assert resumed.data.metrics["train_loss"] == 7.0
    assert len(client.search_runs([mlflow_run.info.experiment_id])) == 1

    with pytest.raises(KeyboardInterrupt), Tracker(run, start_iteration=3, mlflow=True):
        raise KeyboardInterrupt
    assert client.get_run(record["mlflow_run_id"]).info.status == "KILLED"
