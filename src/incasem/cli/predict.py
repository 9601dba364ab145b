"""``incasem predict``: segment organelles with a trained or published model."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_triple
from incasem.evaluate.metrics import ConfusionCounts
from incasem.geometry import Roi
from incasem.io.layout import RAW_EQUALIZED
from incasem.io.tiff import is_tiff_source
from incasem.io.volume import WriteMode
from incasem.predict import PredictOptions, predict_config, predict_container
from incasem.predict.job import PredictionOutput


def _block_shape(text: str) -> tuple[int, int, int] | None:
    return None if text == "auto" else parse_triple(text, "--block-size")


def _class_mapping(text: str | None) -> dict[str, str] | None:
    """``--classes er=mito,golgi=golgi`` as a mapping."""
    if text is None:
        return None
    pairs = [part.split("=", 1) for part in text.split(",") if part]
    if not pairs or any(len(pair) != 2 or not all(p.strip() for p in pair) for pair in pairs):
        raise typer.BadParameter(f"--classes needs LABEL=CLASS[,LABEL=CLASS...], e.g. er=mito, got '{text}'")
    return {label.strip(): model_class.strip() for label, model_class in pairs}


def format_scores(counts: ConfusionCounts) -> str:
    """F1, IoU, precision and recall on one line; undefined ones say why instead of printing nan."""
    shown = "  ".join(f"{label} {value:.4f}" for label, value in zip(("F1", "IoU", "precision", "recall"), counts.scores().values()) if not math.isnan(value))
    undefined = counts.undefined()
    return shown + (f"  undefined: {', '.join(undefined)}" if undefined else "")


def _describe(output: PredictionOutput) -> str:
    if output.resampling is not None:
        typer.echo(f"note: {output.resampling.describe()}", err=True)
    return f"{output.container}/{output.group}  (segmentation, prob_maps/class_<c>; block {list(output.block_shape)})"


@app.command()
@job_options()
def predict(
    source: Path = typer.Argument(..., help="A data config JSON (one prediction per ROI) or a .zarr container."),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Checkpoint file, published model id (e.g. 1847), imported model name, or training run: run:12 (its best checkpoint) or run:12@5000.",
    ),
    raw: str = typer.Option(RAW_EQUALIZED, "--raw", help="Raw dataset, when SOURCE is a .zarr container."),
    roi_offset: str | None = typer.Option(None, "--roi-offset", help="Region start in voxels Z,Y,X (with a .zarr SOURCE)."),
    roi_shape: str | None = typer.Option(None, "--roi-shape", help="Region shape in voxels Z,Y,X (with a .zarr SOURCE)."),
    block_size: str = typer.Option(
        "auto",
        "--block-size",
        help="Output block in voxels (Z,Y,X or one number), or 'auto': the fewest balanced blocks that fit the device memory. Rounded down to a multiple "
        "of the network's downsampling (8); on data of another voxel size than the model's (resampled), data voxels as given.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto: bf16 autocast where the device runs it natively (CUDA, CPUs with AVX512-BF16/AMX; segmentations agree with fp32 on >= 99.9 % of "
        "voxels), else fp32. Or fp32, bf16, fp16.",
    ),
    padding: str = typer.Option(
        "reflect",
        "--padding",
        help="How raw is extended where the network's context leaves the data: reflect (mirror at the border), symmetric, edge or constant (zeros).",
    ),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Test-time augmentation: average the predictions of the block mirrored along z, y and x (and with y and x swapped where the network allows): "
        "8-16x the time, usually a little more accurate.",
    ),
    seed_threshold: str = typer.Option(
        "model",
        "--seed-threshold",
        help="Keep only objects of the segmentation that reach this probability somewhere (hysteresis; two-class models): model (the model's own, if it "
        "has one: the shipped models do), none (every object), or a probability in [0.5, 1].",
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="With a config: LABEL=CLASS[,...] says which model class labels of another organelle stand for, e.g. er=mito (otherwise such labels are refused).",
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder the config's 'file' paths are relative to (default: the config's folder)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache folder (default ~/.cache/incasem/models)."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Folder of the training runs that run:ID names (default: $INCASEM_RUNS_DIR or ./runs)."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Predict organelle probabilities and a segmentation, blockwise.

    Data of another voxel size than the model's (within 2x per axis) is resampled onto the
    model's grid block by block and the probabilities brought back onto the data's grid; a
    note says so.

    Output goes to volumes/predictions/<model>/<id>/ in each container: prob_maps/class_<c>
    (uint8, 0..255 = probability 0..1) and segmentation (uint8 class id; with a seed threshold,
    only the objects that reach it). With labels in the
    config, F1 / precision / recall / IoU inside mask and metric masks are printed and stored.
    --resume finishes, --overwrite replaces the newest prediction of the same model, region and options.
    """
    options = PredictOptions(_block_shape(block_size), device, precision, padding, tta, seed_threshold)  # type: ignore[arg-type]
    container = source.suffix == ".zarr" or (source / ".zgroup").exists() or (source / "zarr.json").exists()
    if container or is_tiff_source(source):  # TIFFs: refused as not (yet) a container
        offset, shape = parse_triple(roi_offset, "--roi-offset"), parse_triple(roi_shape, "--roi-shape")
        if (offset is None) != (shape is None):
            raise typer.BadParameter("give both --roi-offset and --roi-shape, or neither (whole dataset)")
        roi = Roi(offset, shape) if offset is not None and shape is not None else None
        typer.echo(_describe(predict_container(source, model, raw, roi, options, cache_dir=cache_dir, runs_dir=runs_dir, mode=mode, run=run)))
        return
    mapping = _class_mapping(classes)
    for result in predict_config(source, model, options, classes=mapping, data_root=data_root, cache_dir=cache_dir, runs_dir=runs_dir, mode=mode, run=run):
        typer.echo(f"{result.entry}: {_describe(result.output)}")
        for name, counts in result.scores.items():
            typer.echo(f"  {name}: {format_scores(counts)}")
