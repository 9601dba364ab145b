"""``incasem threshold`` and ``incasem instances``: masks and objects from a prediction, blockwise."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_triple
from incasem.io.inspect import describe_volume
from incasem.io.volume import WriteMode
from incasem.postprocess.foreground import foreground_of
from incasem.postprocess.instances import InstanceOptions, label_instances
from incasem.postprocess.threshold import threshold_probabilities

SEED_HELP = "Probability map: keep only objects that reach this probability somewhere (hysteresis; at least --threshold)."


@app.command()
@job_options()
def threshold(
    container: Path = typer.Argument(..., help="A .zarr container."),
    dataset: str = typer.Option(..., "--input", "-i", help="Probability map, e.g. volumes/predictions/<model>/<id>/prob_maps/class_1."),
    value: float = typer.Option(0.5, "--threshold", "-t", help="Voxels with probability >= this are organelle."),
    output: str | None = typer.Option(None, "--output", "-o", help="Output dataset (default: .../threshold_<t>/class_<c>, or <input>_threshold_<t>)."),
    mask: str | None = typer.Option(None, "--mask", help="Only inside this mask (e.g. volumes/mask, the cell)."),
    seed: float | None = typer.Option(None, "--seed-threshold", help=SEED_HELP),
    chunks: str | None = typer.Option(None, "--chunks", help="Output chunk shape = block shape, voxels Z,Y,X (default: the input's)."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Threshold a probability map into a segmentation (uint8: 1 = organelle, 0 = not).

    With --seed-threshold (hysteresis) only objects that reach that probability somewhere are kept.
    """
    foreground = foreground_of(container, dataset, kind="probabilities", threshold=value, mask=mask, seed_threshold=seed)
    volume = threshold_probabilities(foreground, output, chunks=parse_triple(chunks, "--chunks"), mode=mode, run=run)
    typer.echo(f"wrote {volume.container}/{describe_volume(volume)}")


@app.command()
@job_options()
def instances(
    container: Path = typer.Argument(..., help="A .zarr container."),
    dataset: str = typer.Option(..., "--input", "-i", help="Segmentation, labels or probability map to split into objects."),
    class_id: int | None = typer.Option(None, "--class", help="Segmentation: the class id of the organelle (default: every non-zero voxel)."),
    value: float = typer.Option(0.5, "--threshold", "-t", help="Probability map: voxels with probability >= this are organelle."),
    min_size: int = typer.Option(0, "--min-size", help="Drop objects of fewer voxels."),
    dtype: str = typer.Option("uint32", "--dtype", help="Id type: uint32 or uint64."),
    output: str | None = typer.Option(None, "--output", "-o", help="Output dataset (default: <input>_instances)."),
    mask: str | None = typer.Option(None, "--mask", help="Only inside this mask (e.g. volumes/mask, the cell)."),
    seed: float | None = typer.Option(None, "--seed-threshold", help=SEED_HELP),
    chunks: str | None = typer.Option(None, "--chunks", help="Output chunk shape = block shape, voxels Z,Y,X (default: the input's)."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Connected components (6-connected) with one id per object across block borders.

    Equal to scipy.ndimage.label of the whole volume with small objects removed and
    ids renumbered 1..n in raster order.
    """
    foreground = foreground_of(container, dataset, threshold=value, class_id=class_id, mask=mask, seed_threshold=seed)
    volume = label_instances(foreground, output, options=InstanceOptions(min_size, dtype), chunks=parse_triple(chunks, "--chunks"), mode=mode, run=run)
    typer.echo(f"wrote {volume.container}/{describe_volume(volume)}  {volume.array.attrs['instances']} objects")
