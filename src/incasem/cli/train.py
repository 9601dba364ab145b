"""``incasem train``: train, fine-tune or resume a model; a thin shell over :mod:`incasem.train.trainer`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.predict import predict_container
from incasem.runs import RunFolder
from incasem.train.config import load_training_config
from incasem.train.finetune import VALIDATION_SHARE, fine_tune, fine_tune_config
from incasem.train.setup import load_start
from incasem.train.trainer import TrainOptions, resume_training, train

_EPILOG = (
    "Examples: `incasem train --train-data train.json --val-data val.json training.iterations=20000`; "
    "fine-tune: `incasem train --start-from 1847 --train-data crop.json --val-data val.json training.iterations=5000` "
    "(without --config: the model's recipe with fine-tuning defaults), or from a container's labelled sections: `incasem fine-tune`; "
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
        help="Fine-tune this model: checkpoint file, published id (e.g. 1847) or run:ID. Its architecture, voxel size and classes are used; "
        "without --config its recipe with fine-tuning defaults (400 iterations, validation every 50).",
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
    options = _options(device, precision, runs_dir, data_root, cache_dir, mlflow, tracking_uri, quiet)
    if resume is not None:
        run = resume_training(resume, overrides, options=options, command=_command("train"))
    else:
        assert train_data is not None  # refused above without --resume
        if start_from is not None and config is None:
            training = fine_tune_config(load_start(start_from, cache_dir, runs_dir)[1], overrides)
        else:
            training = load_training_config(config, overrides)
        run = train(train_data, val_data, training, start_from=start_from, options=options, command=_command("train"))
    if run is not None:
        _say(f"run {run.id} finished: {run.path} ({_outcome(run)}); predict with `incasem predict --model run:{run.id} ...`")


def _options(
    device: str,
    precision: str,
    runs_dir: Path | None,
    data_root: Path | None,
    cache_dir: Path | None,
    mlflow: bool | None,
    tracking_uri: str | None,
    quiet: bool,
) -> TrainOptions:
    return TrainOptions(
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


def _command(name: str) -> list[str]:
    return ["incasem", *sys.argv[1:]] if sys.argv[1:2] == [name] else ["incasem", name]


def _outcome(run: RunFolder) -> str:
    record = run.record()
    best = record.get("best")
    if not best or best.get("scores", {}).get("f1") is None:
        return "no validation score"
    text = f"best F1 {best['scores']['f1']:.4f} at iteration {best['iteration']}"
    model = record.get("model")
    if isinstance(model, dict) and isinstance(model.get("f1"), dict) and model["f1"].get("seeded") is not None:
        text += f", {model['f1']['seeded']:.4f} with the decisions of {model.get('file')}"
    return text


_FINE_TUNE_EPILOG = (
    "Example: `incasem convert labels/ cell.zarr -d volumes/labels/mito --like cell.zarr:volumes/raw --sparse`, then "
    "`incasem fine-tune cell.zarr --start-from mito-fibsem-5nm --predict`. More iterations: training.iterations=1000; "
    "continue a stopped run: `incasem train --resume ID training.iterations=...`."
)


@app.command("fine-tune", epilog=_FINE_TUNE_EPILOG)
def fine_tune_command(
    container: Path = typer.Argument(..., help="The cell's .zarr container with its raw and (partial) labels."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Changes to the fine-tuning config, e.g. training.iterations=1000."),
    start_from: str = typer.Option(..., "--start-from", help="The model to fine-tune: shipped name, checkpoint file, published id or run:ID."),
    labels: str | None = typer.Option(None, "--labels", "-l", help="Labels dataset (default volumes/labels/<the model's organelle>)."),
    labelled: str | None = typer.Option(
        None, "--labelled", help="Labelled mask of partial labels (default volumes/labelled/<organelle> where it exists; 'none': every voxel is labelled)."
    ),
    raw: str | None = typer.Option(None, "--raw", help="Raw dataset (default volumes/raw_equalized_0.02, else volumes/raw)."),
    mask: str | None = typer.Option(None, "--mask", help="Cell mask: train and validate inside it only."),
    validation_share: float = typer.Option(
        VALIDATION_SHARE,
        "--validation-share",
        help="Share of the labelled organelle (the far part of the labelled region along its longer of y, x) that validates and chooses the decisions.",
    ),
    predict: bool = typer.Option(False, "--predict", help="Then predict the whole raw with the fine-tuned model."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Folder of the run folders (default: $INCASEM_RUNS_DIR or ./runs)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache folder for published ids."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto: bf16 autocast where the device runs it natively, else fp32. Or fp32, bf16, fp16."),
    mlflow: bool | None = typer.Option(None, "--mlflow/--no-mlflow", help="Also log to MLflow (default: when MLflow is installed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fine-tune a model on the labelled voxels of one cell, with no config file.

    The labelled region is split along its longer in-plane axis: the part with 3/4 of the
    labelled organelle trains, the rest validates (the best checkpoint and the foreground and
    seed thresholds are chosen there). The model's recipe is used with fine-tuning defaults;
    the block shrinks to fit the region. Ctrl-C keeps the best checkpoint and still chooses
    its thresholds.
    """
    options = _options(device, precision, runs_dir, None, cache_dir, mlflow, None, quiet)
    run = fine_tune(
        container,
        start_from,
        overrides or [],
        labels=labels,
        labelled=labelled,
        raw=raw,
        mask=mask,
        validation_share=validation_share,
        options=options,
        command=_command("fine-tune"),
    )
    if run is None:
        return
    _say(f"run {run.id} finished: {run.path} ({_outcome(run)})")
    model = f"run:{run.id}"
    if not predict:
        _say(f"predict with `incasem predict {container} --model {model}" + (f" --runs-dir {runs_dir}`" if runs_dir else "`"))
        return
    raw_dataset = json.loads((run.data_dir / "train.json").read_text(encoding="utf-8"))["train"]["raw"]  # what it trained on
    output = predict_container(container, model, raw_dataset, runs_dir=runs_dir, run=RunOptions(progress=not quiet))
    typer.echo(f"prediction: {container}/{output.segmentation}")
