"""The typer application shared by all command modules, and the error boundary."""

from __future__ import annotations

import sys

import click
import typer

try:  # typer >= 0.20 bundles its own copy of click
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer
    _TyperClickException = click.ClickException

_USAGE_ERRORS = (click.ClickException, _TyperClickException)

from incasem import __version__
from incasem.errors import IncasemError

app = typer.Typer(
    name="incasem",
    help="Segment organelles in volume EM: TIFF -> zarr -> equalize -> predict -> view.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"incasem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        app(args=args, prog_name="incasem", standalone_mode=False)
    except (IncasemError, OSError) as error:
        if _state["debug"]:
            raise
        message = str(error) if isinstance(error, IncasemError) else f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
        typer.echo(f"incasem: error: {message}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("incasem: interrupted (rerun with --resume to continue where it stopped)", err=True)
        return 130
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return 1
    except _USAGE_ERRORS as error:
        error.show()
        return error.exit_code
    return 0
