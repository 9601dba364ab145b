"""``incasem convert`` (TIFF stack -> zarr dataset) and ``incasem export`` (zarr dataset -> TIFF slices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_nm_triple, parse_range, parse_triple
from incasem.io.inspect import describe_volume
from incasem.io.layout import RAW, labelled_mask_dataset
from incasem.io.metadata import JOB_KEY
from incasem.io.tiff import DEFAULT_PATTERN
from incasem.io.volume import WriteMode
from incasem.preprocess.convert import CHUNKS, ConvertOptions, Crop, tiff_to_zarr
from incasem.preprocess.export import MANIFEST, zarr_to_tiff
from incasem.preprocess.export_file import file_format, zarr_to_file

_LINEAR = "round_half_up(255 * (clip(v, LOW, HIGH) - LOW) / (HIGH - LOW))"
_CONVERT_HELP = (
    "Convert a volume into a zarr dataset. SOURCE is a folder of 2D TIFF slices, ordered by the last number in "
    "each file name (the numbers must run without gaps, unless --sparse); a multi-page or OME-TIFF; an MRC file "
    "(.mrc, .rec, .st, .map, .ali); an HDF5 dataset FILE.h5:/path/to/dataset; an N5 dataset CONTAINER.n5/path/to/dataset; "
    "or an OME-Zarr image (its finest level). Voxel size and offset come from the file's metadata where it records "
    "them (MRC header, HDF5 resolution / element_size_um, N5 pixelResolution / resolution, OME physical sizes and "
    "scales); --voxel-size and --offset override them.\n\n"
    "The dtype is kept (uint8, uint16, labels); 16-bit becomes 8-bit only with --to-uint8. "
    "A crop keeps its world position: the dataset's offset is --offset plus the crop's start times the voxel size. "
    "Label stacks: --like CONTAINER:DATASET checks that they have the raw's shape and copies its voxel size and "
    "offset. The dataset is marked complete only when all slices are written. "
    "For the reverse direction use `incasem export`.\n\n"
    "Partial labels: with --sparse and --like, SOURCE is a folder of only the labelled sections, each file named "
    "with its section's number (the last number in the name). They land on the raw's whole grid (0 on the other "
    "sections), and the labelled mask volumes/labelled/<organelle> (uint8: 1 on the given sections, 0 elsewhere) "
    "is written beside the labels. A file numbered N is section z = N - F, where F (--first-number) is the number "
    "of the raw's first section's file: by default the number the raw's conversion record holds (files named "
    "like the raw's TIFFs land on their section, also after a --z crop), else 0 (numbers are z indices, as "
    "`incasem export` names them)."
)
_EXPORT_HELP = (
    "Write a zarr dataset (or a crop of it) as one TIFF per z slice into FOLDER, e.g. for Fiji.\n\n"
    "Files are named by the slice's z index in the dataset, zero-padded (0000.tif, 0001.tif, ...), next to "
    f"a manifest {MANIFEST} that lists them. FOLDER must not exist or be empty; it must never be the container, "
    "lie inside it or hold it. --overwrite replaces only a previous export: a folder holding its manifest and "
    "nothing but the files listed there. The slices are written into a temporary folder that is renamed to "
    "FOLDER at the end, so a failed export leaves nothing behind and an old export as it was.\n\n"
    "One file instead, for Fiji or IMOD: an OUT ending in .ome.tif writes an OME-TIFF (BigTIFF, physical sizes in µm), "
    "one ending in .mrc (or .rec, .map) an MRC file (voxel size and origin in Å; uint8 as IMOD's unsigned mode 0). "
    "It is written under a temporary name and renamed when complete; --overwrite replaces only a file an earlier export wrote."
)


def _crop(z: str | None, y: str | None, x: str | None) -> Crop | None:
    """``--z/--y/--x START:STOP`` as slices (an empty end is open)."""
    if z is None and y is None and x is None:
        return None
    cuts = []
    for option, text in (("--z", z), ("--y", y), ("--x", x)):
        bounds = parse_range(text, option)
        cuts.append(slice(None) if bounds is None else slice(*bounds))
    return (cuts[0], cuts[1], cuts[2])


def _rescale(text: str) -> tuple[float, float] | Literal["auto", "minmax"] | None:
    """``none``, ``auto``, ``minmax`` or ``LOW:HIGH`` (numbers) for ``--to-uint8``."""
    if text == "none":
        return None
    if text == "auto":
        return "auto"
    if text == "minmax":
        return "minmax"
    low, _, high = text.partition(":")
    try:
        bounds = [float(low), float(high)]
    except ValueError:
        raise typer.BadParameter(f"--to-uint8 needs LOW:HIGH, minmax, auto or none, got '{text}'") from None
    low_value, high_value = (int(b) if b.is_integer() else b for b in bounds)
    return (low_value, high_value)


def _like(text: str | None) -> tuple[str, str] | None:
    """``CONTAINER:DATASET`` (or ``CONTAINER`` for its volumes/raw) for ``--like``."""
    if text is None:
        return None
    container, _, dataset = text.rpartition(":") if ":" in text else (text, "", RAW)
    return (container, dataset)


_CHUNKS = ",".join(map(str, CHUNKS))
_RANGE = "voxels START:STOP (stop exclusive; an empty end is open)"


@app.command("convert", help=_CONVERT_HELP)
@job_options()
def convert(
    source: Path = typer.Argument(..., help="TIFF folder, multi-page or OME-TIFF, MRC file, FILE.h5:/dataset, CONTAINER.n5/dataset or OME-Zarr image."),
    container: Path = typer.Argument(..., help="Output .zarr container (created when missing)."),
    dataset: str = typer.Option(RAW, "--dataset", "-d", help="Output dataset, e.g. volumes/raw or volumes/labels/mito."),
    pattern: str = typer.Option(DEFAULT_PATTERN, "--pattern", help="Glob selecting the slices of a folder (any case)."),
    voxel_size: str | None = typer.Option(
        None, "--voxel-size", help="Voxel size, nm: Z,Y,X (default: the file's, else 1 for TIFFs; decimals allowed: 50,4.6,4.6)."
    ),
    offset: str | None = typer.Option(None, "--offset", help="World position of the stack's first voxel, nm: Z,Y,X."),
    like: str | None = typer.Option(
        None,
        "--like",
        help="CONTAINER:DATASET of the raw these labels belong to: same shape required; "
        "voxel size, offset and chunks are copied (DATASET defaults to volumes/raw).",
    ),
    z: str | None = typer.Option(None, "--z", help=f"Slices to convert, {_RANGE}."),
    y: str | None = typer.Option(None, "--y", help=f"Rows to convert, {_RANGE}."),
    x: str | None = typer.Option(None, "--x", help=f"Columns to convert, {_RANGE}."),
    chunks: str | None = typer.Option(None, "--chunks", help=f"Chunk shape, voxels: Z,Y,X (default {_CHUNKS}). Memory ~ workers x Z x slice size."),
    to_uint8: str = typer.Option(
        "none",
        "--to-uint8",
        help=f"none: keep the dtype. LOW:HIGH: out = {_LINEAR} as uint8. "
        "minmax: the same with LOW, HIGH = the converted region's minimum and maximum (one extra pass).",
    ),
    sparse: bool = typer.Option(
        False,
        "--sparse",
        help="Partial labels: SOURCE holds only some sections, named with their numbers (gaps allowed). Needs --like; "
        "writes the labels on the raw's grid and the labelled mask volumes/labelled/<organelle>.",
    ),
    first_number: int | None = typer.Option(
        None,
        "--first-number",
        help="With --sparse: the number of the raw's first section's file (z = number - N). Default: from the raw's conversion record, else 0.",
    ),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Convert a volume into a zarr dataset (help text: ``_CONVERT_HELP``)."""
    options = ConvertOptions(
        pattern=pattern,
        voxel_size=parse_nm_triple(voxel_size, "--voxel-size"),
        offset_nm=parse_nm_triple(offset, "--offset"),
        like=_like(like),
        crop=_crop(z, y, x),
        chunks=parse_triple(chunks, "--chunks"),
        rescale=_rescale(to_uint8),  # type: ignore[arg-type]
        sparse=sparse,
        first_number=first_number,
    )
    volume = tiff_to_zarr(source, container, dataset, options=options, mode=mode, run=run)
    typer.echo(describe_volume(volume))
    job = cast(dict[str, Any], volume.array.attrs[JOB_KEY])  # the job record tiff_to_zarr wrote: a mapping
    typer.echo(f"values: {job['mapping']}")
    if sparse:
        first = job["first_number"]
        numbering = "file number = z" if first == 0 else f"file number = z + {first}"
        typer.echo(f"labelled: {len(job['sections'])} of {volume.shape[0]} sections ({labelled_mask_dataset(volume.name)}); {numbering}")
    if voxel_size is None and like is None:
        typer.echo(
            f"note: no --voxel-size given, recorded 1,1,1 nm; set it with `incasem info {container} --dataset {dataset} --voxel-size Z,Y,X`",
            err=True,
        )


@app.command("export", help=_EXPORT_HELP)
@job_options(resume=False, overwrite_help="Replace a previous `incasem export` in FOLDER (refused if FOLDER holds any other file).")
def export(
    container: Path = typer.Argument(..., help="A .zarr container."),
    folder: Path = typer.Argument(..., help="Output folder of TIFF slices, or one file: OUT.ome.tif (OME-TIFF) or OUT.mrc (MRC)."),
    dataset: str = typer.Option(RAW, "--dataset", "-d", help="Dataset to export."),
    z: str | None = typer.Option(None, "--z", help=f"Slices to export, {_RANGE}, from the dataset's first slice."),
    y: str | None = typer.Option(None, "--y", help=f"Rows to export, {_RANGE}."),
    x: str | None = typer.Option(None, "--x", help=f"Columns to export, {_RANGE}."),
    to_uint8: str = typer.Option(
        "auto",
        "--to-uint8",
        help="auto: binary labels 0/1 -> 0/255 uint8; float probabilities [0, 1] -> "
        "round_half_up(255 * p) uint8 (other floats refused); other integer data (uint8, uint16 raw, label ids) "
        f"unchanged. none: values unchanged. LOW:HIGH: out = {_LINEAR} as uint8. minmax: the same with the "
        "region's minimum and maximum.",
    ),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """Write a zarr dataset as TIFF slices, an OME-TIFF or an MRC file (help text: ``_EXPORT_HELP``)."""
    write = zarr_to_file if file_format(folder) else zarr_to_tiff
    summary = write(container, dataset, folder, crop=_crop(z, y, x), rescale=_rescale(to_uint8), mode=mode, run=run)
    typer.echo(str(summary))
