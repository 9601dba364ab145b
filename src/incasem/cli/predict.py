"""``incasem predict``: segment organelles with a trained or published model."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.evaluate.metrics import ConfusionCounts
from incasem.cli.options import SCHEDULER, parse_triple
from incasem.geometry import Roi
from incasem.predict import PredictOptions, predict_config, predict_container
from incasem.predict.job import PredictionOutput


def _block_shape(text: str) -> tuple[int, int, int] | None:
    return None if text == "auto" else parse_triple(text, "--block-size")


def format_scores(counts: ConfusionCounts) -> str:
    """F1, IoU, precision and recall on one line; undefined ones say why instead of printing nan."""
    shown = "  ".join(
        f"{label} {value:.4f}"
        for label, value in zip(("F1", "IoU", "precision", "recall"), counts.scores().values())
        if not math.isnan(value)
    )
    undefined = counts.undefined()
    return shown + (f"  undefined: {', '.join(undefined)}" if undefined else "")


def _describe(output: PredictionOutput) -> str:
    return f"{output.container}/{output.group}  (segmentation, prob_maps/class_<c>; block {list(output.block_shape)})"


@app.command()
def predict(
    source: Path = typer.Argument(..., help="A data config JSON (one prediction per ROI) or a .zarr container."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint file, published model id (e.g. 1847) or training run id."),
    raw: str = typer.Option("volumes/raw_equalized_0.02", "--raw", help="Raw dataset, when SOURCE is a .zarr container."),
    roi_offset: str | None = typer.Option(None, "--roi-offset", help="Region start in voxels Z,Y,X (with a .zarr SOURCE)."),
    roi_shape: str | None = typer.Option(None, "--roi-shape", help="Region shape in voxels Z,Y,X (with a .zarr SOURCE)."),
    block_size: str = typer.Option("auto", "--block-size", help="Output block in voxels (Z,Y,X or one number), or 'auto': the largest that fits the device memory. Rounded down to a multiple of the network's downsampling (8)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16/fp16 autocast (faster; probabilities differ by ~1e-2)."),
    padding: str = typer.Option("reflect", "--padding", help="How raw is extended where the network's context leaves the data: reflect (mirror at the border), symmetric, edge or constant (zeros)."),
    scheduler: str | None = SCHEDULER,
    resume: bool = typer.Option(False, "--resume", help="Finish the newest interrupted prediction of the same model, region and options."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder the config's 'file' paths are relative to (default: the config's folder)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache folder (default ~/.cache/incasem/models)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict organelle probabilities and a segmentation, blockwise.

    Output goes to volumes/predictions/<model>/<id>/ in each container: prob_maps/class_<c>
    (uint8, 0..255 = probability 0..1) and segmentation (uint8 class id). With labels in the
    config, F1 / precision / recall / IoU inside mask and metric masks are printed and stored.
    """
    options = PredictOptions(_block_shape(block_size), device, precision, padding, scheduler, not quiet)  # type: ignore[arg-type]
    if source.suffix == ".zarr" or (source / ".zgroup").exists() or (source / "zarr.json").exists():
        offset, shape = parse_triple(roi_offset, "--roi-offset"), parse_triple(roi_shape, "--roi-shape")
        if (offset is None) != (shape is None):
            raise typer.BadParameter("give both --roi-offset and --roi-shape, or neither (whole dataset)")
        roi = Roi(offset, shape) if offset is not None and shape is not None else None
        typer.echo(_describe(predict_container(source, model, raw, roi, options, resume, cache_dir)))
        return
    for result in predict_config(source, model, options, data_root, resume, cache_dir):
        typer.echo(f"{result.entry}: {_describe(result.output)}")
        for name, counts in result.scores.items():
            typer.echo(f"  {name}: {format_scores(counts)}")
