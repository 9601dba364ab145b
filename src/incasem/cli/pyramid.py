"""``incasem pyramid``: multiscale levels of datasets, for smooth viewing of big volumes."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options
from incasem.io.inspect import describe_volume
from incasem.io.layout import RAW
from incasem.io.volume import WriteMode
from incasem.preprocess.pyramid import Downsampling, plan_pyramid, write_pyramid

_HELP = (
    "Write a multiscale pyramid of each dataset: <dataset>_s1, _s2, ... next to it, listed as the levels of "
    "its OME-NGFF image.\n\n"
    "Each level halves the axes whose voxel size is below twice the smallest (50x5x5 nm -> 50x10x10 -> "
    "50x20x20 -> 50x40x40 -> 100x80x80), until a level fits in one chunk or --levels are written. "
    "volumes/raw*, prob* and float data are averaged; other integer data (labels, masks) take each "
    "block's first voxel, keeping their ids. The datasets themselves are only read."
)


@app.command("pyramid", help=_HELP)
@job_options()
def pyramid(
    container: Path = typer.Argument(..., help="A .zarr container; the levels are written into it."),
    datasets: list[str] = typer.Option([RAW], "--dataset", "-d", help="Dataset to downsample (repeat for several)."),
    levels: int | None = typer.Option(None, "--levels", help="Most levels per dataset (default: until a level fits in one chunk)."),
    downsampling: str | None = typer.Option(None, "--downsampling", help="mean or stride (default: mean for raw, prob* and floats, stride otherwise)."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Write pyramids (help text: ``_HELP``); every dataset is checked before any is written."""
    # unchecked here: plan_pyramid refuses any value but mean and stride (InvalidValueError naming --downsampling)
    method = cast("Downsampling | None", downsampling)
    plans = {plan.dataset: plan for plan in (plan_pyramid(container, name, levels, downsampling=method, mode=mode) for name in datasets)}
    for plan in plans.values():
        for volume in write_pyramid(plan, run):
            typer.echo(describe_volume(volume))
