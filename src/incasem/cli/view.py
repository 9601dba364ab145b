"""``incasem view``: neuroglancer on the datasets of a container."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.cli.options import parse_triple
from incasem.view.neuroglancer import open_viewer, serve_until_interrupted


@app.command()
def view(
    container: Path = typer.Argument(..., help="A .zarr container (v2 or v3); opened read-only."),
    datasets: list[str] | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset to show (repeat for several; the first sets the grid). Default: the raw "
        "(raw_equalized_0.02, else raw), all volumes/labels/* and the latest prediction's segmentation.",
    ),
    position: str | None = typer.Option(
        None,
        "--position",
        help="Voxel to centre on, Z,Y,X in voxels of the first dataset's voxel size on the world grid "
        "(its offset included). Default: the first dataset's centre.",
    ),
    port: int = typer.Option(0, "--port", help="Port to serve on (0: a free one)."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Address to listen on: 127.0.0.1 = this machine only; 0.0.0.0 = all interfaces."),
    browser: bool = typer.Option(False, "--browser", help="Also open the URL in the system's web browser."),
) -> None:
    """Show CONTAINER's datasets in neuroglancer: prints the URL and serves until Ctrl-C.

    Raw data is grey, labels, masks and segmentations are segmentation layers,
    probability maps a heat map; each at its voxel size and offset. Data are read
    chunk by chunk as the browser asks, so containers of any size work.
    """
    viewer = open_viewer(container, datasets, parse_triple(position, "--position"), bind, port)
    url = viewer.get_viewer_url()
    typer.echo(f"incasem view: serving {container} at the URL below (press Ctrl-C to stop)", err=True)
    typer.echo(url)
    if browser and not webbrowser.open(url):
        typer.echo("incasem view: found no web browser to open: open the URL above yourself", err=True)
    serve_until_interrupted()
