"""``incasem preview``: a PNG of three orthogonal planes, raw in grey with labels and predictions in colour."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.cli.options import parse_triple
from incasem.view.preview import DEFAULT_CROP_PIXELS, WHOLE_AXIS_PIXELS, write_preview

_HELP = (
    "Write a PNG of three orthogonal planes (z, y, x) through a position of CONTAINER: the raw in grey, "
    "labels and predictions overlaid in colour, each axis drawn at its physical length.\n\n"
    "Default overlays: every volumes/labels/* dataset and the newest finished prediction's segmentation. "
    "Overlays are placed by their world offset and voxel size; what they do not cover stays grey."
)


@app.command(help=_HELP)
def preview(
    container: Path = typer.Argument(..., help="A .zarr container."),
    output: Path = typer.Option(..., "--output", "-o", help="The PNG file to write."),
    raw: str | None = typer.Option(None, "--raw", help="Grey-level dataset (default: the equalised raw, else volumes/raw)."),
    overlay: list[str] | None = typer.Option(
        None, "--overlay", help="Label or segmentation dataset to overlay; repeat for several (default: labels + newest prediction)."
    ),
    position: str | None = typer.Option(None, "--position", help="Position shown, voxels Z,Y,X on the raw's world grid (default: its centre)."),
    size: str | None = typer.Option(
        None,
        "--size",
        help=(
            f"Edge of the region shown, voxels: N or Z,Y,X (default: an axis drawn up to {WHOLE_AXIS_PIXELS} pixels "
            f"long whole, a longer one {DEFAULT_CROP_PIXELS} pixels around the position; a pixel is the smallest voxel edge)."
        ),
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Write a preview PNG of CONTAINER."""
    shown = write_preview(
        container,
        output,
        raw=raw,
        overlays=overlay or None,
        position=parse_triple(position, "--position"),
        size_voxels=parse_triple(size, "--size"),
        overwrite=overwrite,
    )
    typer.echo(f"wrote {output}: {shown.raw} at z,y,x = {','.join(map(str, shown.position))} with {', '.join(shown.overlays) or 'no overlays'}")
