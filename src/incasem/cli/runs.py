"""``incasem runs list|show|plot``: the training runs in the runs folder (read only; plot writes a picture)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from incasem.cli.app import app
from incasem.runs import (
    RUNS_DIR_ENV,
    RunFolder,
    list_runs,
    open_run,
    read_metrics,
    runs_dir,
)
from incasem.view.curves import CURVES_FILE, plot_run
from incasem.view.preview import check_png_output

runs_app = typer.Typer(
    name="runs",
    help=(
        "Training runs: list them, show one (config, checkpoints with their validation scores, "
        f"latest metrics) or plot its curves. Runs folder: --runs-dir, else ${RUNS_DIR_ENV}, else ./runs."
    ),
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")

_RUNS_DIR = typer.Option(None, "--runs-dir", help=f"Runs folder (default: ${RUNS_DIR_ENV} or ./runs).")
_SCORES = ("f1", "iou", "precision", "recall", "loss")  # shown first, in this order


def _number(value: object) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip() for row in rows]


def _best_f1(record: Mapping[str, Any]) -> str:
    best = record.get("best")
    if not isinstance(best, Mapping):
        return "-"
    return f"{_number((best.get('scores') or {}).get('f1'))} @{best.get('iteration')}"


def _status(run: RunFolder, record: dict) -> str:
    """The recorded status; a "running" run whose process is gone (killed hard) shows as stopped."""
    status = str(record.get("status", "-"))
    if status == "running" and run.trainer() is None:
        return "stopped (its process is gone: resume it)"
    return status


@runs_app.command("list", help="List the runs: id, status, progress, best F1 (at iteration), training data, start.")
def list_command(runs_dir_option: Path | None = _RUNS_DIR) -> None:
    """List the runs of the runs folder."""
    root = runs_dir(runs_dir_option)
    runs = list_runs(root)
    if not runs:
        typer.echo(f"no runs in {root}")
        return
    rows = [("id", "status", "iteration", "best F1", "train data", "created")]
    for run in runs:
        record = run.record()
        rows.append((
            str(run.id),
            _status(run, record),
            f"{record.get('iteration', '-')}/{record.get('iterations', '-')}",
            _best_f1(record),
            Path(str(record.get("train_data") or "-")).name,
            str(record.get("created", "-")),
        ))  # fmt: skip
    typer.echo(f"runs folder: {root}")
    typer.echo("\n".join(_table(rows)))


def _score_names(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Score names of ``entries`` (mappings of name -> score): the usual ones first, then the others sorted."""
    names = {name for entry in entries for name in entry}
    return [n for n in _SCORES if n in names] + sorted(names.difference(_SCORES))


def _config_lines(run: RunFolder) -> list[str]:
    if not run.config_path.is_file():
        return [f"config: {run.config_path} is missing"]
    return ["config:", *("  " + line for line in run.config_path.read_text(encoding="utf-8").splitlines())]


def _checkpoint_lines(record: Mapping[str, Any], run: RunFolder) -> list[str]:
    checkpoints = run.checkpoints()
    if not checkpoints:
        return ["checkpoints: none yet"]
    best = (record.get("best") or {}).get("iteration")
    names = _score_names([entry.get("scores") or {} for entry in checkpoints])
    rows = [("", "iteration", *names, "file")]
    for entry in checkpoints:
        scores = entry.get("scores") or {}
        mark = "*" if entry["iteration"] == best else ""
        rows.append((mark, str(entry["iteration"]), *(_number(scores.get(n)) for n in names), entry["file"]))
    return ["checkpoints (* best):", *_table(rows, "  ")]


def _validation_lines(run: RunFolder) -> list[str]:
    lines = [line for line in read_metrics(run) if line.get("split") == "validation"]
    if not lines:
        return ["latest validation: none yet"]
    iteration = lines[-1].get("iteration")
    latest = [line for line in lines if line.get("iteration") == iteration]
    scores = [{k: v for k, v in line.items() if k not in ("iteration", "split", "roi", "time")} for line in latest]
    names = _score_names(scores)
    rows = [("roi", *names)] + [
        ("all" if line.get("roi") is None else str(line["roi"]), *(_number(s.get(n)) for n in names)) for line, s in zip(latest, scores, strict=True)
    ]
    return [f"latest validation (iteration {iteration}):", *_table(rows, "  ")]


def _model_lines(record: Mapping[str, Any]) -> list[str]:
    """The run's model: which checkpoint, the decisions chosen on the validation data and their F1."""
    model = record.get("model")
    if not isinstance(model, Mapping):
        return ["model: none yet (made when a run with validation data ends)"]
    scores = model.get("f1")
    f1: Mapping[str, Any] = scores if isinstance(scores, Mapping) else {}
    seed = model.get("seed_threshold")
    line = (
        f"model: {model.get('file')} (iteration {model.get('iteration')}): foreground threshold {model.get('threshold')}, "
        f"seed threshold {'none' if seed is None else seed}; validation F1 {_number(f1.get('argmax'))} at 0.5, "
        f"{_number(f1.get('threshold'))} at the threshold, {_number(f1.get('seeded'))} with both"
    )
    return [line]


def _mlflow_lines(record: Mapping[str, Any]) -> list[str]:
    uri, run_id = record.get("mlflow_tracking_uri"), record.get("mlflow_run_id")
    if not uri or not run_id:
        return []
    view = f"mlflow ui --backend-store-uri {shlex.quote(uri)}" if uri.startswith("sqlite:") else uri
    return [f"MLflow run {run_id}: {view}"]


def _predict_hint(run: RunFolder, root: Path) -> str:
    """The command that predicts with the run's model (or best checkpoint), naming the runs folder where not the default."""
    command = f"incasem predict CONFIG.json --model run:{run.id}"
    if runs_dir(None).resolve() == root.resolve():
        return command
    return f"{RUNS_DIR_ENV}={shlex.quote(str(root))} {command}"


@runs_app.command("show", help="Show a run: folder, command, data, config, checkpoints with scores, latest validation, its model's decisions.")
def show_command(
    run_id: str = typer.Argument(..., metavar="ID", help="Run id, e.g. 12 (see `incasem runs list`)."),
    runs_dir_option: Path | None = _RUNS_DIR,
) -> None:
    """Show one run."""
    root = runs_dir(runs_dir_option)
    run = open_run(root, run_id)
    record = run.record()
    lines = [
        f"run {run.id}: {run.path}",
        (f"status: {_status(run, record)}, iteration {record.get('iteration', '-')} of {record.get('iterations', '-')}, created {record.get('created', '-')}"),
        f"command: {shlex.join(str(word) for word in record.get('command') or [])}",
        f"training data: {record.get('train_data') or '-'}",
        f"validation data: {record.get('val_data') or '-'}",
        f"started from: {record.get('start_from') or '-'}",
        *_config_lines(run),
        *_checkpoint_lines(record, run),
        *_validation_lines(run),
        *_model_lines(record),
        f"curves of all runs: tensorboard --logdir {shlex.quote(str(root))}",
        *_mlflow_lines(record),
        f"predict with it: {_predict_hint(run, root)}",
    ]
    typer.echo("\n".join(lines))


@runs_app.command(
    "plot",
    help=(
        "Draw a run's curves as PNG: training loss (and its moving average), validation loss, validation F1 and "
        f"IoU per iteration, the best checkpoint marked. Default output: <run folder>/{CURVES_FILE}, replaced each time."
    ),
)
def plot_command(
    run_id: str = typer.Argument(..., metavar="ID", help="Run id, e.g. 12 (see `incasem runs list`)."),
    output: Path | None = typer.Option(None, "--output", "-o", help=f"PNG file to write (default: <run folder>/{CURVES_FILE})."),
    runs_dir_option: Path | None = _RUNS_DIR,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
) -> None:
    """Plot one run's curves."""
    if output is not None:
        check_png_output(output, overwrite)  # before looking for the run: a bad name is refused first
    run = open_run(runs_dir(runs_dir_option), run_id)
    typer.echo(f"wrote {plot_run(run, output, overwrite=overwrite)}")
