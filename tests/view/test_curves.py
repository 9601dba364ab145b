"""``incasem runs plot``: loss and F1 curves of a training run as PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from incasem.cli.app import main
from incasem.errors import OutputExistsError, RunError
from incasem.runs import RunFolder, create_run
from incasem.train.config import TrainingConfig
from incasem.train.tracking import Tracker
from incasem.view.curves import CURVES_FILE, FIGURE_SIZE_PX, plot_run, read_curves
from tests.helpers import error_line

TAB_GREEN = (44, 160, 44)  # the validation F1 line
TAB_RED = (214, 39, 40)  # the best checkpoint's star


def new_run(tmp_path: Path) -> RunFolder:
    data = tmp_path / "mito_train.json"
    data.write_text("{}")
    config = TrainingConfig().to_dict()
    return create_run(tmp_path / "runs", config=config, train_data=data, val_data=None, command=["incasem", "train"])


@pytest.fixture
def run(tmp_path) -> RunFolder:
    """A run that logged 300 iterations, validated every 100 and saved checkpoints; the best at 200."""
    run = new_run(tmp_path)
    rng = np.random.default_rng(0)
    with Tracker(run, mlflow=False) as tracker:
        tracker.log_validation(0, {"cell_1": {"loss": 0.7, "f1": 0.1, "iou": 0.05}}, {"loss": 0.7, "f1": 0.1, "iou": 0.05})
        for iteration in range(1, 301):
            tracker.log_train(iteration, {"loss": 0.7 * np.exp(-iteration / 150) + 0.05 * rng.random()})
            if iteration % 100 == 0:
                scores = {"loss": 0.3, "f1": {100: 0.6, 200: 0.8, 300: None}[iteration], "iou": 0.5}
                tracker.log_validation(iteration, {"cell_1": scores}, scores)
                run.checkpoint_path(iteration).write_bytes(b"weights")
                run.add_checkpoint(iteration, run.checkpoint_path(iteration), scores)
    run.set_best(200, {"f1": 0.8, "loss": 0.3})
    return run


def colours(path: Path) -> np.ndarray:
    image = iio.imread(path)
    assert image.shape[:2] == FIGURE_SIZE_PX[::-1]
    return image[..., :3]


def has(image: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((image == colour).all(axis=-1).any())


def test_read_curves_takes_the_totals_over_rois(run):
    curves = read_curves(run)
    assert list(curves.train_iterations) == list(range(1, 301)) and np.isfinite(curves.train_loss).all()
    assert list(curves.validation_iterations) == [0, 100, 200, 300]
    np.testing.assert_array_equal(curves.f1, [0.1, 0.6, 0.8, np.nan])  # undefined F1: a gap


def test_plot_writes_the_curves_into_the_run_folder(run):
    path = plot_run(run)
    assert path == run.path / CURVES_FILE
    image = colours(path)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not blank: curves, text, antialiasing
    assert has(image, TAB_GREEN) and has(image, TAB_RED)
    assert plot_run(run) == path  # a picture derived from the run: replaced on each call


def test_an_explicit_output_is_never_replaced_unless_told(run, tmp_path):
    output = tmp_path / "curves.png"
    output.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plot_run(run, output)
    assert output.read_bytes() == b"mine"
    assert plot_run(run, output, overwrite=True) == output
    colours(output)


def test_training_lines_only(tmp_path):
    run = new_run(tmp_path)
    with Tracker(run, mlflow=False) as tracker:
        for iteration in range(1, 4):
            tracker.log_train(iteration, {"loss": 1 / iteration})
    image = colours(plot_run(run))
    assert not has(image, TAB_GREEN)  # no validation yet, no best


def test_cli(run, tmp_path, capsys):
    root = run.path.parent
    assert main(["runs", "plot", "1", "--runs-dir", str(root)]) == 0
    assert capsys.readouterr().out == f"wrote {run.path / CURVES_FILE}\n"
    output = tmp_path / "out.png"
    assert main(["runs", "plot", "1", "--runs-dir", str(root), "-o", str(output)]) == 0
    assert main(["runs", "plot", "1", "--runs-dir", str(root), "-o", str(output)]) == 1
    assert f"{output} exists already: pass --overwrite" in error_line(capsys)
    assert main(["runs", "plot", "9", "--runs-dir", str(root)]) == 1
    assert "run 9 not found in" in error_line(capsys)
    data = tmp_path / "val.json"
    data.write_text("{}")
    create_run(root, config=TrainingConfig().to_dict(), train_data=data, val_data=None, command=[])
    assert main(["runs", "plot", "2", "--runs-dir", str(root)]) == 1
    assert "run 2 has no metrics yet" in error_line(capsys)
    with pytest.raises(RunError, match="no metrics yet"):
        plot_run(RunFolder(2, root / "2"))
    assert not (root / "2" / CURVES_FILE).exists()


def test_console_script(run, tmp_path):
    script = Path(sys.executable).parent / "incasem"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "incasem"]
    output = tmp_path / "curves.png"
    result = subprocess.run(
        [*command, "runs", "plot", "1", "--runs-dir", str(run.path.parent), "-o", str(output)], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {output}\n"
    colours(output)
