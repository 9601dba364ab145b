"""``incasem metric-mask`` and ``incasem mask``: the masks that training and evaluation use."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_triple
from incasem.io.inspect import describe_volume
from incasem.io.layout import CELL_MASK, EXCLUSION_WIDTHS_VOXELS, RAW
from incasem.io.volume import WriteMode
from incasem.preprocess.masks import (
    MaskOptions,
    MetricMaskOptions,
    create_mask,
    create_metric_mask,
)

_CONTAINER = typer.Argument(..., help="A .zarr container; the mask is written into it.")
_CHUNKS = typer.Option(None, "--chunks", help="Output chunk shape = block shape, voxels: Z,Y,X (default 128).")

_WIDTHS = ", ".join(f"{name} {i}/{o}" for name, (i, o) in EXCLUSION_WIDTHS_VOXELS.items())
_METRIC_MASK_HELP = (
    "Write the metric mask: 0 in a band around the labelled objects' boundaries, 255 elsewhere.\n\n"
    "The band is dilate(labels, outwards) minus erode(labels, inwards) with 6-connected steps; "
    "outside the dataset counts as background (objects cut by it are eroded from it too). "
    "Partial labels (a labelled mask) get bands only between labelled organelle and labelled background. "
    f"Default widths, inwards/outwards voxels: {_WIDTHS}."
)
_MASK_HELP = (
    "Write the cell mask: 255 where MIN <= grey value <= MAX, after an opening and a closing; 0 elsewhere.\n\n"
    "Both ignore what lies beyond the dataset, so they do not eat into a cell that its border cuts. "
    "The original incasem used --opening 3 --closing 2."
)


@app.command("metric-mask", help=_METRIC_MASK_HELP)
@job_options()
def metric_mask(
    container: Path = _CONTAINER,
    labels: str = typer.Option(..., "--labels", "-l", help="Integer labels dataset, e.g. volumes/labels/mito."),
    output: str | None = typer.Option(None, "--output", "-o", help="Output dataset (default: volumes/metric_masks/<labels name>)."),
    exclude_inwards: int | None = typer.Option(None, "--exclude-inwards", help="Band inside objects, voxels."),
    exclude_outwards: int | None = typer.Option(None, "--exclude-outwards", help="Band outside objects, voxels."),
    organelle: str | None = typer.Option(None, "--organelle", help="Organelle whose default widths to use (default: guessed from --labels)."),
    labelled: str | None = typer.Option(
        None, "--labelled", help="Labelled mask of partial labels (default: volumes/labelled/<labels name> where it exists; 'none' for none)."
    ),
    chunks: str | None = _CHUNKS,
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Write the metric mask of a labels dataset (help text: ``_METRIC_MASK_HELP``)."""
    options = MetricMaskOptions(exclude_inwards, exclude_outwards, organelle)
    chunk_shape = parse_triple(chunks, "--chunks")
    masks = None if labelled is None else [] if labelled == "none" else [labelled]
    volume = create_metric_mask(container, labels, output, options=options, chunks=chunk_shape, labelled=masks, mode=mode, run=run)
    typer.echo(describe_volume(volume))


@app.command("mask", help=_MASK_HELP)
@job_options()
def mask(
    container: Path = _CONTAINER,
    raw: str = typer.Option(RAW, "--input", "-i", help="Grey-value dataset."),
    min_grey: float = typer.Option(..., "--min", help="Lowest grey value inside the cell (inclusive)."),
    max_grey: float = typer.Option(..., "--max", help="Highest grey value inside the cell (inclusive)."),
    output: str = typer.Option(CELL_MASK, "--output", "-o", help="Output dataset."),
    opening: int = typer.Option(0, "--opening", help="Ball radius (voxels) of an opening removing specks; 0: none."),
    closing: int = typer.Option(0, "--closing", help="Ball radius (voxels) of a closing that fills gaps; 0: none."),
    chunks: str | None = _CHUNKS,
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Write the cell mask of a grey-value dataset (help text: ``_MASK_HELP``)."""
    options = MaskOptions(min_grey, max_grey, opening, closing)
    chunk_shape = parse_triple(chunks, "--chunks")
    volume = create_mask(container, raw, output, options=options, chunks=chunk_shape, mode=mode, run=run)
    typer.echo(describe_volume(volume))
