"""Training curves of a run as a PNG (``incasem runs plot``).

Two panels share the iteration axis: the loss (training loss as logged, a moving
average of it, and the validation loss) above, the validation F1 and IoU (over all
validation ROIs) below. A dashed line marks the run's best checkpoint. The title names
the run, its state and a summary of its configuration. Drawn with matplotlib's Agg
canvas: no GUI backend, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.ndimage import uniform_filter1d

from incasem.errors import RunError
from incasem.files import atomic_write
from incasem.runs import RunFolder, read_metrics
from incasem.view.preview import check_png_output

__all__ = ["CURVES_FILE", "FIGURE_SIZE_PX", "RunCurves", "curves_figure", "plot_run", "read_curves"]

#: Where :func:`plot_run` writes by default: ``<run folder>/curves.png``.
CURVES_FILE = "curves.png"
#: Size of the picture, pixels (width, height).
FIGURE_SIZE_PX = (1000, 750)
_DPI = 100
#: The moving average spans this share of the logged training iterations.
_SMOOTHING_SHARE = 0.02


@dataclass(frozen=True)
class RunCurves:
    """The logged values of a run, as arrays (NaN where a value is undefined).

    Attributes
    ----------
    train_iterations, train_loss
        Training loss per logged iteration.
    validation_iterations, validation_loss, f1, iou
        Validation scores over all ROIs per validated iteration.
    """

    train_iterations: np.ndarray
    train_loss: np.ndarray
    validation_iterations: np.ndarray
    validation_loss: np.ndarray
    f1: np.ndarray
    iou: np.ndarray


def _column(lines: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if line.get(key) is None else float(line[key]) for line in lines], dtype=np.float64)


def read_curves(run: RunFolder) -> RunCurves:
    """The training and validation curves of ``run`` from its ``metrics.jsonl``.

    Validation lines over all ROIs (``roi`` null) are used; of lines logged twice for
    one iteration the last counts.

    Raises
    ------
    RunError
        If nothing has been logged yet, or ``metrics.jsonl`` is damaged.
    """
    lines = read_metrics(run)
    train = {line["iteration"]: line for line in lines if line.get("split") == "train" and "iteration" in line}
    validation = {line["iteration"]: line for line in lines if line.get("split") == "validation" and line.get("roi") is None and "iteration" in line}
    if not train and not validation:
        raise RunError(f"run {run.id} has no metrics yet ({run.metrics_path} is missing or empty): plot it after its first logged iteration")
    train_lines = [train[i] for i in sorted(train)]
    validation_lines = [validation[i] for i in sorted(validation)]
    return RunCurves(
        np.array(sorted(train), dtype=np.int64),
        _column(train_lines, "loss"),
        np.array(sorted(validation), dtype=np.int64),
        _column(validation_lines, "loss"),
        _column(validation_lines, "f1"),
        _column(validation_lines, "iou"),
    )


def _config(run: RunFolder) -> Mapping[str, Any]:
    """The run's configuration, or an empty mapping where ``config.yaml`` is missing or unreadable."""
    try:
        config = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, Mapping) else {}


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    return section if isinstance(section, Mapping) else {}


def _times(values: object) -> str:
    return " × ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values) if isinstance(values, list) else "?"


def _data_line(record: Mapping[str, Any]) -> str:
    """Training and validation data, organelles, the model fine-tuned from: what is known of them."""
    classes = record.get("class_names")
    val_data, start = record.get("val_data"), record.get("start_from")
    parts = [
        f"train {Path(str(record.get('train_data') or '?')).name}",
        f"validate {Path(str(val_data)).name}" if val_data else "no validation data",
        *([", ".join(map(str, classes[1:]))] if isinstance(classes, list) and len(classes) > 1 else []),
        *([f"fine-tuned from {start}"] if start else []),
    ]
    return "; ".join(parts)


def _title(run: RunFolder, record: Mapping[str, Any]) -> str:
    """Run id and state, then the data and the main settings."""
    config = _config(run)
    training, optimizer, data = (_section(config, name) for name in ("training", "optimizer", "data"))
    return "\n".join([
        f"run {run.id}: {record.get('status', '?')}, iteration {record.get('iteration', '?')} of {record.get('iterations', '?')}",
        _data_line(record),
        (
            f"lr {optimizer.get('lr', '?')}, batch {training.get('batch_size', '?')}, "
            f"input {_times(training.get('input_size_voxels'))} voxels, voxel size {_times(data.get('voxel_size'))} nm"
        ),
    ])  # fmt: skip


def _smoothed(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Moving average of the finite ``values`` over about 2 % of them; the window in points."""
    window = max(1, round(len(values) * _SMOOTHING_SHARE))
    return uniform_filter1d(values, size=window, mode="nearest"), window


def _draw_loss(axes: Axes, curves: RunCurves) -> None:
    finite = np.isfinite(curves.train_loss)
    iterations, loss = curves.train_iterations[finite], curves.train_loss[finite]
    if len(loss):
        axes.plot(iterations, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="training loss")
        average, window = _smoothed(loss)
        if window > 1:
            axes.plot(iterations, average, color="tab:blue", linewidth=1.8, label=f"training loss, mean of {window}")
    if np.isfinite(curves.validation_loss).any():
        axes.plot(curves.validation_iterations, curves.validation_loss, "o-", color="tab:orange", markersize=3, label="validation loss")
    axes.set_ylabel("loss")


def _draw_scores(axes: Axes, curves: RunCurves) -> None:
    if not (np.isfinite(curves.f1).any() or np.isfinite(curves.iou).any()):
        axes.text(0.5, 0.5, "no validation scores yet", transform=axes.transAxes, ha="center", va="center", color="grey")
    else:
        axes.plot(curves.validation_iterations, curves.f1, "o-", color="tab:green", markersize=3, label="validation F1")
        axes.plot(curves.validation_iterations, curves.iou, "s--", color="tab:purple", markersize=3, label="validation IoU")
    axes.set_ylim(0, 1)
    axes.set_ylabel("score (threshold 0.5)")
    axes.set_xlabel("iteration")


def _mark_best(axes: tuple[Axes, Axes], best: object) -> None:
    """A dashed line at the best checkpoint's iteration, its F1 as a star."""
    if not isinstance(best, Mapping) or not isinstance(best.get("iteration"), int):
        return
    iteration = best["iteration"]
    f1 = (best.get("scores") or {}).get("f1")
    shown = "" if f1 is None else f", F1 {f1:.3f}"
    for panel in axes:
        panel.axvline(iteration, color="tab:red", linestyle=":", linewidth=1.2)
    axes[1].plot([], [], color="tab:red", linestyle=":", label=f"best checkpoint: iteration {iteration}{shown}")
    if f1 is not None:
        axes[1].plot([iteration], [f1], marker="*", markersize=14, color="tab:red", linestyle="none")


def curves_figure(run: RunFolder) -> Figure:
    """The figure of :func:`plot_run` (Agg canvas attached), for further use or saving.

    Raises
    ------
    RunError
        If the run has no metrics yet, or its record or metrics are damaged.
    """
    record = run.record()
    curves = read_curves(run)
    width, height = FIGURE_SIZE_PX
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, score_axes = figure.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    _draw_loss(loss_axes, curves)
    _draw_scores(score_axes, curves)
    _mark_best((loss_axes, score_axes), record.get("best"))
    for panel in (loss_axes, score_axes):
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(loc="best", fontsize=8)
    figure.suptitle(_title(run, record), fontsize=10)
    return figure


def _target(run: RunFolder, output_png: str | Path | None, overwrite: bool) -> Path:
    """Where to write: the run folder's ``curves.png`` (always replaced) or ``output_png``."""
    if output_png is None:
        return run.path / CURVES_FILE
    path = Path(output_png)
    check_png_output(path, overwrite)
    return path


def plot_run(run: RunFolder, output_png: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Draw the loss and F1 / IoU curves of a training run into a PNG, atomically.

    Parameters
    ----------
    run
        The run (:func:`incasem.runs.open_run`).
    output_png
        The PNG to write; default ``<run folder>/curves.png``, which is replaced on
        every call (a picture derived from the run, like the run's other records).
    overwrite
        Replace an existing ``output_png``; without it an existing file is refused.

    Returns
    -------
    pathlib.Path
        The file written, :data:`FIGURE_SIZE_PX` pixels.

    Raises
    ------
    RunError
        If the run has no metrics yet, or its record or metrics are damaged.
    OutputExistsError
        If ``output_png`` exists (and not ``overwrite``) or is a folder.
    InvalidValueError
        If ``output_png`` does not end in ``.png``.
    """
    path = _target(run, output_png, overwrite)
    canvas = cast(FigureCanvasAgg, curves_figure(run).canvas)  # curves_figure draws on an Agg canvas
    return atomic_write(path, lambda stream: canvas.print_png(stream))
