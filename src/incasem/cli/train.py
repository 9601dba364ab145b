"""``incasem train``: train, fine-tune or resume a model; a thin shell over :mod:`incasem.train.trainer`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.train.config import load_training_config
from incasem.train.trainer import TrainOptions, resume_training, train

_EPILOG = (
    "Examples: `incasem train --train-data train.json --val-data val.json training.iterations=20000`; "
    "fine-tune: `incasem train --start-from 1847 --train-data crop.json --val-data val.json training.iterations=5000`; "
    "continue a stopped run: `incasem train --resume 3`; watch: `tensorboard --logdir runs`, `incasem runs show 3`."
)


def _say(message: str) -> None:
    typer.echo(message, err=True)


@app.command("train", epilog=_EPILOG)
def train_command(
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. training.iterations=5000 optimizer.lr=1e-4."),
    train_data: Path | None = typer.Option(None, "--train-data", help="Data config JSON of the training ROIs (raw, labels, optional mask)."),
    val_data: Path | None = typer.Option(
        None, "--val-data", help="Data config JSON of the validation ROIs (scored every intervals.validate_every iterations; the best checkpoint is kept)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Training config YAML/JSON (keys of the original's config_training.yaml; see incasem.train.config), or a shipped one: standard, anisotropic "
        "(~50 nm sections at ~5 nm).",
    ),
    start_from: str | None = typer.Option(
        None,
        "--start-from",
        help="Fine-tune this model: checkpoint file, published id (e.g. 1847) or run:ID. Its architecture, voxel size and classes are used.",
    ),
    resume: int | None = typer.Option(
        None, "--resume", help="Continue the stopped run with this id from its latest checkpoint (optimizer and data stream included)."
    ),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Folder of the run folders (default: $INCASEM_RUNS_DIR or ./runs)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder the data configs' 'file' paths are relative to (default: each config's folder)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache folder for --start-from ids (default ~/.cache/incasem/models)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto: bf16 autocast where the device runs it natively, else fp32. Or fp32, bf16, fp16."),
    mlflow: bool | None = typer.Option(
        None, "--mlflow/--no-mlflow", help="Also log to MLflow (default: when MLflow is installed, pip install 'incasem\\[mlflow]')."
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: sqlite:///RUNS_DIR/mlflow.db)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (validations, checkpoints and the end are still reported)."),
) -> None:
    """Train a U-Net on labelled ROIs, validating and keeping the best checkpoint.

    Each run gets an id and a folder in the runs folder (config, data configs, metrics.jsonl,
    TensorBoard events, checkpoints, snapshots). Ctrl-C saves a checkpoint; --resume ID continues.
    Predict with the best checkpoint: `incasem predict --model run:ID ...`. Several GPUs or
    nodes: start the same command with `torchrun --nproc_per_node N -m incasem train ...`.
    """
    overrides = overrides or []
    if resume is not None and (train_data is not None or val_data is not None or start_from is not None or config is not None):
        raise typer.BadParameter(
            "--resume continues a run with its own data, model and config: drop --train-data, --val-data, --start-from "
            "and --config (change training.iterations with key=value)"
        )
    if resume is None and train_data is None:
        raise typer.BadParameter("give --train-data TRAIN.json (and --val-data VAL.json), or --resume RUN")
    options = TrainOptions(
        device=device,
        precision=precision,
        runs_dir=runs_dir,
        data_root=data_root,
        cache_dir=cache_dir,
        mlflow=mlflow,
        tracking_uri=tracking_uri,
        log=_say,
        progress=not quiet,
    )
    command = ["incasem", *sys.argv[1:]] if sys.argv[1:2] == ["train"] else ["incasem", "train"]
    if resume is not None:
        run = resume_training(resume, overrides, options=options, command=command)
    else:
        assert train_data is not None  # refused above without --resume
        run = train(train_data, val_data, load_training_config(config, overrides), start_from=start_from, options=options, command=command)
    if run is not None:
        best = run.record().get("best")
        if best and best.get("scores", {}).get("f1") is not None:
            where = f"best F1 {best['scores'].get('f1'):.4f} at iteration {best['iteration']}"
        else:
            where = "no validation score"
        _say(f"run {run.id} finished: {run.path} ({where}); predict with `incasem predict --model run:{run.id} ...`")
