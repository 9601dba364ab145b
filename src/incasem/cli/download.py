"""``incasem download``: the original incasem's example cells from its public bucket."""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from incasem.cli.app import app
from incasem.io.bucket import DEFAULT_BASE_URL
from incasem.io.download import (
    DATASETS_PREFIX,
    INCOMPLETE_MARKER,
    download_cell,
    list_cell,
)

_HELP = (
    "Download an example cell of the original incasem (e.g. cell_6, or 6) into DEST/<cell>/.\n\n"
    "Every file is verified (size, and MD5 where the bucket gives one) before it is put in place. "
    f"Until all files are there, DEST/<cell>/{INCOMPLETE_MARKER} says the download is unfinished; "
    "run the same command again to resume it: files already there are not fetched again. Files in "
    "DEST that incasem did not download are never replaced. An unknown cell lists the cells there are."
)


def _size(size_bytes: int) -> str:
    return tqdm.format_sizeof(size_bytes, "B", 1024)


@app.command("download", help=_HELP)
def download_command(
    cell: str = typer.Argument(..., help="Cell name or number, e.g. cell_6 or 6."),
    destination: Path = typer.Argument(Path("."), metavar="[DEST]", help="Folder receiving <cell>/ (default: here)."),
    base_url: str = typer.Option(
        DEFAULT_BASE_URL, "--base-url", envvar="INCASEM_BASE_URL", help="Address of the bucket, or of a mirror (also $INCASEM_BASE_URL)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cell's files and total size; download nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download an example cell (help text: ``_HELP``)."""
    if dry_run:
        items = list_cell(cell, base_url)
        for item in items:
            typer.echo(f"{_size(item.size):>9}  {destination / item.key[len(DATASETS_PREFIX) :]}")
        typer.echo(f"{len(items)} files, {_size(sum(item.size for item in items))}")
        return
    result = download_cell(cell, destination, base_url, progress=not quiet)
    typer.echo(
        f"{result.cell}: {result.files} files, {_size(result.size_bytes)} in {result.folder} "
        f"({result.fetched} fetched now, {result.files - result.fetched} already there)"
    )
