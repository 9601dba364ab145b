"""``incasem runs list`` and ``incasem runs show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from incasem.cli.app import main
from incasem.runs import RUNS_DIR_ENV, RunFolder, create_run

CONFIG = {"training": {"iterations": 3000}, "optimizer": {"lr": 0.0001}}


def make_run(root: Path, tmp_path: Path, checkpoints: dict[int, float | None] | None = None, best: int | None = None) -> RunFolder:
    """A run with fake checkpoint files scored ``checkpoints`` (iteration -> F1), ``best`` marked."""
    data = tmp_path / "mito_train.json"
    data.write_text("{}")
    run = create_run(root, config=CONFIG, train_data=data, val_data=None, command=["incasem", "train", "my config.yaml"])
    for iteration, f1 in (checkpoints or {}).items():
        run.checkpoint_path(iteration).write_bytes(b"w")
        run.add_checkpoint(iteration, run.checkpoint_path(iteration), {"f1": f1, "loss": 0.25, "iou_mito": 0.5})
    if best is not None:
        run.set_best(best, {"f1": checkpoints[best]})
    return run


def invoke(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_empty_and_missing_folder(tmp_path, capsys):
    for root in (tmp_path, tmp_path / "nothing"):
        status, out, err = invoke(capsys, "runs", "list", "--runs-dir", str(root))
        assert (status, out, err) == (0, f"no runs in {root}\n", "")
    assert not (tmp_path / "nothing").exists()


def test_list_shows_each_run(tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    training = make_run(root, tmp_path, {1000: 0.61, 2000: 0.83}, best=2000)
    make_run(root, tmp_path).update(status="finished", iteration=3000)
    make_run(root, tmp_path)  # "running", but no process trains it (killed hard)
    monkeypatch.setenv(RUNS_DIR_ENV, str(root))
    with training.claim():  # this process trains run 1
        status, out, err = invoke(capsys, "runs", "list")
    assert status == 0 and err == ""
    header, first, second, third = out.splitlines()[1:]
    assert header.split() == ["id", "status", "iteration", "best", "F1", "train", "data", "created"]
    assert first.split()[:6] == ["1", "running", "0/3000", "0.83", "@2000", "mito_train.json"]
    assert second.split()[:5] == ["2", "finished", "3000/3000", "-", "mito_train.json"]
    assert third.split()[:2] == ["3", "stopped"]


def test_show_a_run(tmp_path, capsys):
    root = tmp_path / "runs"
    run = make_run(root, tmp_path, {1000: 0.61, 2000: 0.83, 3000: None}, best=2000)
    lines = [
        {"iteration": 1000, "split": "train", "loss": 0.5, "time": 1.0},
        {"iteration": 2000, "split": "validation", "roi": "cell_1", "f1": 0.8, "loss": 0.2, "time": 2.0},
        {"iteration": 2000, "split": "validation", "roi": None, "f1": 0.8, "loss": 0.2, "time": 2.0},
        {"iteration": 3000, "split": "validation", "roi": "cell_1", "f1": None, "loss": 0.3, "time": 3.0},
        {"iteration": 3000, "split": "validation", "roi": None, "f1": None, "loss": 0.3, "time": 3.0},
    ]
    run.metrics_path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"iteration": 3001, "spl')
    with run.claim():
        status, out, err = invoke(capsys, "runs", "show", "1", "--runs-dir", str(root))
    assert status == 0 and err == ""
    assert f"run 1: {run.path}" in out
    assert "status: running, iteration 0 of 3000" in out
    assert "command: incasem train 'my config.yaml'" in out
    assert f"training data: {tmp_path / 'mito_train.json'}" in out and "validation data: -" in out
    assert "config:\n  training:\n    iterations: 3000\n  optimizer:\n    lr: 0.0001\n" in out
    rows = {line.lstrip(" *").split()[0]: line for line in out.splitlines() if "checkpoints/" in line}
    assert rows["2000"].startswith("  *") and not rows["1000"].lstrip().startswith("*")
    assert rows["2000"].split()[1:4] == ["2000", "0.83", "0.25"]  # f1, loss first, then other scores
    assert rows["3000"].split()[:2] == ["3000", "-"]
    latest = out.split("latest validation (iteration 3000):\n")[1].splitlines()
    assert latest[0].split() == ["roi", "f1", "loss"]
    assert latest[1].split() == ["cell_1", "-", "0.3"] and latest[2].split() == ["all", "-", "0.3"]
    assert f"tensorboard --logdir {root}" in out
    assert f"{RUNS_DIR_ENV}={root} incasem predict CONFIG.json --model run:1" in out


def test_show_before_any_checkpoint_in_the_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    make_run(Path("runs"), tmp_path)
    status, out, err = invoke(capsys, "runs", "show", "1")
    assert status == 0 and err == ""
    assert "checkpoints: none yet" in out and "latest validation: none yet" in out
    assert "predict with it: incasem predict CONFIG.json --model run:1" in out


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["runs", "show", "12"], "run 12 not found in"),
        (["runs", "show", "twelve"], "run id 'twelve' is not a whole number"),
        (["runs", "show", "1", "--runs-dir", "FILE"], "is a file, not a folder"),
        (["runs", "list", "--runs-dir", "FILE"], "is a file, not a folder"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, arguments, words):
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    make_run(tmp_path / "runs", tmp_path)
    status, out, err = invoke(capsys, *[str(tmp_path / "file.txt") if a == "FILE" else a for a in arguments])
    assert status == 1 and out == ""
    assert err.startswith("incasem: error: ") and err.count("\n") == 1 and words in err, err
