"""Training run folders: ids, records, checkpoints, ``run:ID`` model names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from incasem.errors import ConfigError, InputFileError, ModelNotFoundError, RunError
from incasem.runs import (
    DEFAULT_RUNS_DIR,
    RUNS_DIR_ENV,
    RunFolder,
    create_run,
    list_runs,
    open_run,
    resolve_run_checkpoint,
    runs_dir,
)

CONFIG = {
    "training": {"iterations": 5000, "batch_size": 1},
    "optimizer": {"lr": 3.0e-5},
    "model": {"downsample_factors": [[2, 2, 2]]},
}


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    """Two data config files (content with odd spacing: copies must be byte for byte)."""
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    train.write_text('{"roi":  {"file": "cell.zarr"}}\n')
    val.write_text('{\n  "roi": {"file": "other.zarr"}\n}')
    return train, val


def new_run(root: Path, data: tuple[Path, Path], **kwargs) -> RunFolder:
    return create_run(root, config=CONFIG, train_data=data[0], val_data=data[1], command=["incasem", "train", "c.yaml"], **kwargs)


def test_runs_dir_explicit_env_default_and_file(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    assert runs_dir() == Path(DEFAULT_RUNS_DIR) == Path("runs")
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "env"))
    assert runs_dir() == tmp_path / "env"
    assert runs_dir(tmp_path / "given") == tmp_path / "given"
    assert not (tmp_path / "env").exists() and not (tmp_path / "given").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        runs_dir(tmp_path / "file")


def test_create_run_writes_the_folder(tmp_path, data):
    root = tmp_path / "deep" / "runs"
    run = new_run(root, data, start_from="1847")
    assert run == RunFolder(1, root / "1")
    for folder in (run.checkpoints_dir, run.snapshots_dir, run.tensorboard_dir, run.data_dir):
        assert folder.is_dir()
    assert (run.data_dir / "train.json").read_bytes() == data[0].read_bytes()
    assert (run.data_dir / "val.json").read_bytes() == data[1].read_bytes()
    assert yaml.safe_load(run.config_path.read_text()) == CONFIG
    assert list(yaml.safe_load(run.config_path.read_text())) == ["training", "optimizer", "model"]  # order kept
    record = json.loads(run.record_path.read_text())
    assert record == run.record()
    assert {k: record[k] for k in ("id", "status", "iteration", "iterations", "start_from", "checkpoints", "best")} == {
        "id": 1, "status": "running", "iteration": 0, "iterations": 5000, "start_from": "1847", "checkpoints": [], "best": None,
    }  # fmt: skip
    assert record["command"] == ["incasem", "train", "c.yaml"]
    assert record["train_data"] == str(data[0].resolve()) and record["val_data"] == str(data[1].resolve())
    assert record["created"].endswith("+00:00")
    assert run.checkpoint_path(1000) == run.path / "checkpoints" / "iteration_0001000.pt"
    assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))


def test_ids_count_up_past_any_numbered_entry_and_leave_others_alone(tmp_path, data):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "0007").mkdir()  # not a run name (leading zero)
    (root / "4").write_text("a file named like a run")
    run = create_run(root, config=CONFIG, train_data=data[0], val_data=None, command=[])
    assert run.id == 5 and not (run.data_dir / "val.json").exists() and run.record()["val_data"] is None
    assert new_run(root, data).id == 6
    assert (root / "notes.txt").read_text() == "mine" and (root / "4").read_text() == "a file named like a run"
    assert [r.id for r in list_runs(root)] == [5, 6]


def test_concurrent_creations_get_distinct_ids(tmp_path, data):
    root = tmp_path / "runs"
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: new_run(root, data), range(16)))
    assert sorted(run.id for run in runs) == list(range(1, 17))
    assert [run.id for run in list_runs(root)] == list(range(1, 17))


@pytest.mark.parametrize(
    ("config", "train", "error", "words"),
    [
        ({"training": {}}, "train.json", ConfigError, "training.iterations"),
        ({"training": {"iterations": 0}}, "train.json", ConfigError, "training.iterations"),
        ({"training": {"iterations": True}}, "train.json", ConfigError, "training.iterations"),
        ({"training": {"iterations": 3}, "x": object()}, "train.json", ConfigError, "plain data"),
        (CONFIG, "missing.json", InputFileError, "missing.json"),
    ],
)
def test_create_run_checks_before_making_anything(tmp_path, data, config, train, error, words):
    with pytest.raises(error, match=words):
        create_run(tmp_path / "runs", config=config, train_data=tmp_path / train, val_data=None, command=[])
    assert not (tmp_path / "runs").exists()


def test_open_and_list_runs(tmp_path, data):
    root = tmp_path / "runs"
    with pytest.raises(RunError, match=r"run 1 not found in .*runs/ \(no runs there\): see `incasem runs list --runs-dir "):
        open_run(root, 1)
    for _ in range(3):
        new_run(root, data)
    assert open_run(root, "2") == open_run(root, 2) == RunFolder(2, root / "2")
    (root / "9").mkdir()  # creation broke off: no run.json
    (root / "10").mkdir()
    (root / "10" / "run.json").write_text("{trunc")
    (root / "other").mkdir()
    assert [run.id for run in list_runs(root)] == [1, 2, 3]
    with pytest.raises(RunError, match=r"run 12 not found in .*runs/ \(runs there: 1, 2, 3\)"):
        open_run(root, 12)
    with pytest.raises(RunError, match="not a whole number"):
        open_run(root, "abc")
    with pytest.raises(RunError, match="not a whole number"):
        open_run(root, "-1")
    with pytest.raises(RunError, match=r"has no run\.json"):
        open_run(root, 9)
    with pytest.raises(RunError, match="unreadable"):
        open_run(root, 10)
    assert list_runs(tmp_path / "nothing") == []


def test_update_is_atomic_and_merges(tmp_path, data):
    run = new_run(tmp_path / "runs", data)
    record = run.update(status="finished", iteration=5000)
    assert record == run.record() and record["status"] == "finished" and record["iterations"] == 5000
    assert sorted(p.name for p in run.path.iterdir() if p.is_file()) == ["config.yaml", "run.json"]
    with pytest.raises(RunError, match="plain finite"):
        run.update(loss=float("nan"))
    assert run.record() == record


def test_checkpoints_and_best(tmp_path, data):
    run = new_run(tmp_path / "runs", data)
    for iteration in (2000, 1000):
        run.checkpoint_path(iteration).write_bytes(b"weights")
        run.add_checkpoint(iteration, run.checkpoint_path(iteration), {"f1": 0.5, "loss": float("nan")})
    run.add_checkpoint(2000, run.checkpoint_path(2000), {"f1": 0.7, "loss": None})  # replaces
    assert run.record()["checkpoints"] == [
        {"iteration": 1000, "file": "checkpoints/iteration_0001000.pt", "scores": {"f1": 0.5, "loss": None}},
        {"iteration": 2000, "file": "checkpoints/iteration_0002000.pt", "scores": {"f1": 0.7, "loss": None}},
    ]
    run.set_best(2000, {"f1": 0.7})
    assert run.record()["best"] == {"iteration": 2000, "file": "checkpoints/iteration_0002000.pt", "scores": {"f1": 0.7}}
    with pytest.raises(RunError, match=r"no checkpoint of iteration 3000 to mark as best \(checkpoints: 1000, 2000\)"):
        run.set_best(3000, {"f1": 0.9})
    with pytest.raises(RunError, match="does not exist"):
        run.add_checkpoint(3000, run.checkpoint_path(3000))
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"weights")
    with pytest.raises(RunError, match="not inside the folder"):
        run.add_checkpoint(3000, outside)
    with pytest.raises(RunError, match="must be a number"):
        run.add_checkpoint(1000, run.checkpoint_path(1000), {"f1": "high"})
    with pytest.raises(RunError, match="whole number"):
        run.checkpoint_path(-1)


def test_checkpoint_relative_to_the_current_directory(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = new_run(Path("runs"), data)
    run.checkpoint_path(1000).write_bytes(b"w")
    run.add_checkpoint(1000, run.checkpoint_path(1000))  # runs/1/checkpoints/...: relative to the cwd
    assert run.checkpoints()[0]["file"] == "checkpoints/iteration_0001000.pt"


def test_resolve_run_checkpoint(tmp_path, data):
    root = tmp_path / "runs"
    run = new_run(root, data)
    with pytest.raises(RunError, match=r"run 1 has no checkpoint yet .*`incasem runs show 1 --runs-dir "):
        resolve_run_checkpoint("1", root)
    for iteration in (1000, 2000, 3000):
        run.checkpoint_path(iteration).write_bytes(b"w")
        run.add_checkpoint(iteration, run.checkpoint_path(iteration), {"f1": iteration / 4000})
    assert resolve_run_checkpoint("1", root) == run.checkpoint_path(3000)  # no best yet: the latest
    run.set_best(2000, {"f1": 0.5})
    assert resolve_run_checkpoint("1", root) == run.checkpoint_path(2000)
    assert resolve_run_checkpoint("1@1000", root) == run.checkpoint_path(1000)
    with pytest.raises(RunError, match=r"run 1 has no checkpoint of iteration 5000 \(checkpoints: 1000, 2000, 3000\)"):
        resolve_run_checkpoint("1@5000", root)
    with pytest.raises(RunError, match="run 2 not found"):
        resolve_run_checkpoint("2", root)
    for spec in ("x", "1@", "@5", "1@2@3", ""):
        with pytest.raises(RunError, match="RUN@ITERATION"):
            resolve_run_checkpoint(spec, root)
    run.checkpoint_path(1000).rename(tmp_path / "moved.pt")
    with pytest.raises(RunError, match="recorded but missing"):
        resolve_run_checkpoint("1@1000", root)


def test_run_model_names_resolve_to_loadable_checkpoints(tmp_path, data, monkeypatch):
    from incasem.model.checkpoint import load_checkpoint
    from incasem.model.zoo import resolve_model
    from tests.helpers import make_checkpoint

    run = new_run(tmp_path / "runs", data)
    for iteration, seed in ((1000, 0), (2000, 1)):
        make_checkpoint(run.checkpoint_path(iteration), seed=seed)
        run.add_checkpoint(iteration, run.checkpoint_path(iteration), {"f1": 0.1 * seed})
    run.set_best(1000, {"f1": 0.0})
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    assert resolve_model("run:1", cache_dir=tmp_path / "models") == run.checkpoint_path(1000)
    assert resolve_model("run:1@2000", cache_dir=tmp_path / "models") == run.checkpoint_path(2000)
    _, card = load_checkpoint(resolve_model("run:1"))
    assert card.organelle == "mito"
    monkeypatch.delenv(RUNS_DIR_ENV)
    monkeypatch.chdir(tmp_path)  # the default runs folder: ./runs
    assert resolve_model("run:1@2000").resolve() == run.checkpoint_path(2000).resolve()
    with pytest.raises(ModelNotFoundError, match=r"run 7 not found in runs/ \(runs there: 1\)"):
        resolve_model("run:7")
    with pytest.raises(ModelNotFoundError, match="no checkpoint of iteration 3000"):
        resolve_model("run:1@3000")
    with pytest.raises(ModelNotFoundError, match="RUN@ITERATION"):
        resolve_model("run:best")
    with pytest.raises(ModelNotFoundError, match=r"run:ID or run:ID@ITERATION.*`incasem runs list`"):
        resolve_model("nonsense", cache_dir=tmp_path / "models")


def test_runs_and_tracking_modules_do_not_import_torch():
    code = "import sys, incasem.runs, incasem.train.tracking; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
