"""``incasem equalize``: 3D CLAHE of the raw data, out of core."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_triple
from incasem.io.inspect import describe_volume
from incasem.io.layout import RAW
from incasem.io.volume import WriteMode
from incasem.preprocess.equalize import ClaheOptions, equalize_volume


@app.command()
@job_options()
def equalize(
    container: Path = typer.Argument(..., help="A .zarr container."),
    source: str = typer.Option(RAW, "--input", "-i", help="uint8 or uint16 dataset to equalise."),
    output: str | None = typer.Option(None, "--output", "-o", help="Output dataset (uint8). Default: volumes/raw_equalized_<clip limit>."),
    clip_limit: float = typer.Option(0.02, "--clip-limit", help="Clipping limit in (0, 1]; higher = more contrast."),
    kernel_size: str = typer.Option("128", "--kernel-size", help="Contextual region edge, voxels: N or Z,Y,X."),
    nbins: int = typer.Option(256, "--nbins", help="Number of histogram bins."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Equalise CONTAINER's raw data with 3D CLAHE (scikit-image's equalize_adapthist, out of core)."""
    options = ClaheOptions(parse_triple(kernel_size, "--kernel-size"), clip_limit, nbins)  # type: ignore[arg-type]
    volume = equalize_volume(container, source, output, options=options, mode=mode, run=run)
    typer.echo(f"wrote {volume.container}/{describe_volume(volume)}")
