"""``incasem info``: list datasets of a container and fix their geometry."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.cli.options import parse_nm_triple
from incasem.io.inspect import describe_container, describe_dataset, describe_volume
from incasem.io.volume import set_geometry


@app.command()
def info(
    container: Path = typer.Argument(..., help="A .zarr container."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Show (or set the geometry of) only this dataset."),
    voxel_size: str | None = typer.Option(None, "--voxel-size", help="Set the voxel size, nm: Z,Y,X (decimals allowed, e.g. 50,4.6,4.6)."),
    offset: str | None = typer.Option(None, "--offset", help="Set the world offset, nm: Z,Y,X."),
) -> None:
    """List the datasets of CONTAINER (shape, dtype, chunks, voxel size, offset), or set a dataset's geometry."""
    new_voxel_size = parse_nm_triple(voxel_size, "--voxel-size")
    new_offset = parse_nm_triple(offset, "--offset")
    if new_voxel_size is not None or new_offset is not None:
        if dataset is None:
            raise typer.BadParameter("--voxel-size/--offset need --dataset to say which dataset to change")
        typer.echo(describe_volume(set_geometry(container, dataset, new_voxel_size, new_offset)))
        return
    if dataset is not None:
        typer.echo(describe_dataset(container, dataset))
        return
    lines = describe_container(container)
    typer.echo("\n".join(lines) if lines else f"{container}: no datasets")
