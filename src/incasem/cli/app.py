"""The typer application shared by all command modules, and the error boundary."""

from __future__ import annotations

import signal
import sys
import threading
import warnings

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


class _Interrupted(BaseException):
    """Raised by the SIGINT handler; a BaseException that no library's ``except Exception`` or
    ``except KeyboardInterrupt`` (typer turns that into a silent exit) swallows."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted()


def _usage_message(error: click.ClickException) -> str:
    """A click usage error as one line, pointing at the command's ``--help``."""
    message = " ".join(error.format_message().split()).rstrip(".")
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "incasem"
    return f"{message} (see `{command} --help`)"


def _interrupt_hint(args: list[str]) -> str:
    """The message for Ctrl-C: how to finish the job, where the command can resume."""
    name = next((a for a in args if not a.startswith("-")), "")
    sub = getattr(typer.main.get_command(app), "commands", {}).get(name)
    if sub is not None and any("--resume" in getattr(p, "opts", ()) and getattr(p, "is_flag", False) for p in sub.params):
        return "incasem: interrupted: rerun the same command with --resume to finish it"
    return "incasem: interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Errors caused by input are one line ``incasem: error: ...`` on stderr: exit status
    1 for an :class:`~incasem.errors.IncasemError` or a failing file operation, 2 for a
    usage error (unknown option, missing argument); ``--debug`` shows the traceback.
    Ctrl-C exits with 130 and says how to finish the job.
    """
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    # a user's own files inside a container (notes, README) are theirs to keep: no warning about them
    warnings.filterwarnings("ignore", message=r"Object at .* is not recognized as a component of a Zarr hierarchy")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _raise_interrupted) if in_main_thread else None
    try:
        app(args=args, prog_name="incasem", standalone_mode=False)
    except (IncasemError, OSError) as error:
        if _state["debug"]:
            raise
        message = str(error) if isinstance(error, IncasemError) else f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
        typer.echo(f"incasem: error: {message}", err=True)
        return 1
    except (_Interrupted, KeyboardInterrupt):
        typer.echo(_interrupt_hint(args), err=True)
        return 130
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return 1
    except _USAGE_ERRORS as error:
        if _state["debug"]:
            raise
        if error.format_message().strip():  # empty: a group called without a command, its help is shown
            typer.echo(f"incasem: error: {_usage_message(error)}", err=True)
        return error.exit_code
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    return 0
