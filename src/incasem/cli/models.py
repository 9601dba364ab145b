"""``incasem models list|fetch|import|export``: the published models, the local models folder, bioimage.io packages."""

from __future__ import annotations

from pathlib import Path

import typer

from incasem.cli.app import app
from incasem.cli.options import parse_nm_triple
from incasem.model.zoo import (
    CACHE_ENV,
    DEFAULT_BASE_URL,
    fetch_published_model,
    import_model,
    list_models,
    models_dir,
)

models_app = typer.Typer(
    name="models",
    help=(
        "Published incasem models: list them, fetch them into the models folder, import "
        "a checkpoint file you downloaded by hand or a bioimage.io package, export one as a bioimage.io package. "
        f"Models folder: --cache-dir, else ${CACHE_ENV}, "
        "else ~/.cache/incasem/models."
    ),
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

_CACHE_DIR = typer.Option(None, "--cache-dir", help=f"Models folder (default: ${CACHE_ENV} or ~/.cache/incasem/models).")
_LIST_HELP = (
    "List the shipped models (ready to use) and the published and imported ones, and where they are cached.\n\n"
    "Organelles: mito, golgi, er, ccp (clathrin-coated pits), np (nuclear pores); "
    "preparations: CF (chemical fixation), HPF (high-pressure freezing)."
)
_FETCH_HELP = (
    "Download published models, verify them and store them converted in the models folder.\n\n"
    "A model already there (same SHA-256 as when it was fetched) is not downloaded again."
)
_IMPORT_HELP = (
    "Convert FILE, a checkpoint of the original incasem, into the models folder.\n\n"
    "A published checkpoint downloaded by hand takes its metadata from its id (--id, or the file "
    "name model_checkpoint_<id>_...) and then counts as fetched. Any other original-format "
    "checkpoint of the standard U-Net needs --organelle and --voxel-size; it is then named by its "
    "file name without .pt.\n\n"
    "A bioimage.io package (.zip) that `incasem models export` wrote is imported with its card, named "
    "--name or its file name without .zip."
)
_EXPORT_HELP = (
    "Write MODEL (shipped or imported name, published id, checkpoint file or run:ID) as a BioImage Model Zoo "
    "package OUT.zip (bioimage.io format 0.5) for deepImageJ, ilastik, BiaPy and bioimageio.core: PyTorch "
    "state-dict weights with the architecture's source, TorchScript weights, test tensors from the bundled "
    "crop, axes scaled by the voxel size in nm, the input normalisation as preprocessing, the valid output "
    'size, the model card, licence and a cover picture. Needs pip install "incasem[bioimageio]"; '
    "`bioimageio test OUT.zip` checks the package."
)


@models_app.command("list", help=_LIST_HELP)
def list_command(cache_dir: Path | None = _CACHE_DIR) -> None:
    """List the models (help text: ``_LIST_HELP``)."""
    entries = list_models(cache_dir)
    shipped = [entry for entry in entries if entry.kind == "shipped"]
    if shipped:
        typer.echo("shipped with incasem (no download; --model NAME):")
        for entry in shipped:
            typer.echo(f"  {entry.model_id}  {entry.organelle}  {','.join(map(str, entry.voxel_size_nm))} nm  {entry.summary}")
    rows = [("id", "organelle", "prep", "voxel nm", "file", "cached")] + [
        (
            entry.model_id,
            entry.organelle,
            entry.preparation or "-",
            ",".join(map(str, entry.voxel_size_nm)),
            entry.file_name,
            str(entry.path) if entry.path else "not fetched",
        )
        for entry in entries
        if entry.kind != "shipped"
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    typer.echo(f"models folder: {models_dir(cache_dir)}")
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@models_app.command("fetch", help=_FETCH_HELP)
def fetch_command(
    model_ids: list[str] = typer.Argument(..., metavar="ID...", help="Published model ids, e.g. 1847."),
    cache_dir: Path | None = _CACHE_DIR,
    base_url: str = typer.Option(
        DEFAULT_BASE_URL, "--base-url", envvar="INCASEM_BASE_URL", help="Address of the bucket, or of a mirror (also $INCASEM_BASE_URL)."
    ),
) -> None:
    """Fetch published models (help text: ``_FETCH_HELP``)."""
    for model_id in model_ids:
        typer.echo(f"{model_id}: {fetch_published_model(model_id, cache_dir, base_url)}")


@models_app.command("export", help=_EXPORT_HELP)
def export_command(
    model: str = typer.Argument(..., help="Model name, published id, checkpoint file or run:ID."),
    output: Path = typer.Argument(..., help="The package to write, OUT.zip."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT.zip if it is a bioimage.io package."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Folder of the training runs that run:ID names (default: $INCASEM_RUNS_DIR or ./runs)."),
    cache_dir: Path | None = _CACHE_DIR,
) -> None:
    """Export a bioimage.io package (help text: ``_EXPORT_HELP``)."""
    from incasem.bioimageio import export_model

    typer.echo(str(export_model(model, output, cache_dir=cache_dir, runs_dir=runs_dir, overwrite=overwrite)))


@models_app.command("import", help=_IMPORT_HELP)
def import_command(
    file: Path = typer.Argument(..., help="A checkpoint of the original incasem (model_state_dict only), or a bioimage.io package (.zip) incasem wrote."),
    name: str | None = typer.Option(None, "--name", help="For a bioimage.io package: the name to give the model (default: the file name without .zip)."),
    model_id: str | None = typer.Option(None, "--id", help="Published id of FILE (default: read from a name model_checkpoint_<id>_...)."),
    organelle: str | None = typer.Option(None, "--organelle", help="For a non-published model: what it segments."),
    voxel_size: str | None = typer.Option(None, "--voxel-size", help="For a non-published model: training voxel size, nm: Z,Y,X."),
    preparation: str | None = typer.Option(None, "--preparation", help="For a non-published model: sample preparation."),
    cache_dir: Path | None = _CACHE_DIR,
) -> None:
    """Import an original-format checkpoint or a bioimage.io package (help text: ``_IMPORT_HELP``)."""
    if file.suffix.lower() == ".zip":
        from incasem.bioimageio import import_package

        if model_id is not None or organelle is not None or voxel_size is not None or preparation is not None:
            raise typer.BadParameter("a bioimage.io package carries its own card: leave out --id, --organelle, --voxel-size and --preparation")
        typer.echo(str(import_package(file, name, cache_dir=cache_dir)))
        return
    path = import_model(
        file,
        model_id,
        organelle=organelle,
        voxel_size_nm=parse_nm_triple(voxel_size, "--voxel-size"),
        preparation=preparation,
        cache_dir=cache_dir,
    )
    typer.echo(str(path))
