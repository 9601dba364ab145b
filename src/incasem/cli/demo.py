"""``incasem demo``: the whole workflow on the bundled real FIB-SEM crop."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.evaluate import format_evaluation
from incasem.demo import DEFAULT_MODEL, run_demo


@app.command()
def demo(
    folder: Path = typer.Argument(Path("incasem-demo"), help="Output folder (new, or an earlier demo's)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model to predict with (see `incasem models list`)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the scores, not the steps."),
) -> None:
    """Segment mitochondria in the bundled real FIB-SEM crop and score them against its manual labels.

    Converts, equalises, predicts with the shipped model, prints F1 and IoU (all voxels
    and inside the exclusion zone, and matched instances), writes preview.png and prints
    the command that opens everything in neuroglancer. A few minutes on 2 CPU cores.
    """
    result = run_demo(folder, model, device=device, run=RunOptions(progress=False), say=(lambda line: None) if quiet else typer.echo)
    typer.echo(format_evaluation(result.evaluation))
    typer.echo(f"picture of raw, labels and prediction: {result.preview}")
    typer.echo(f"browse it in 3D: incasem view {result.container}")
