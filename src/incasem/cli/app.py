"""The typer application shared by all command modules, and the error boundary."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from pathlib import Path

import click
import typer

from incasem import __version__
from incasem.errors import IncasemError

try:  # typer >= 0.20 bundles its own copy of click
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer
    _USAGE_ERRORS: tuple[type[click.ClickException | _TyperClickException], ...] = (click.ClickException,)
else:
    _USAGE_ERRORS = (click.ClickException, _TyperClickException)

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


def _usage_message(error: click.ClickException | _TyperClickException) -> str:
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


_PACKAGE = Path(__file__).resolve().parents[1]


class _HeldWarnings:
    """Library warnings held back while a command runs: a refusal stays one line.

    While active, a warning raised by a library (numpy, torch, zarr, ...) is kept instead
    of printed; incasem's own warnings (meant for the user, e.g. an MLflow failure during
    training) are printed at once. When the command ends, :meth:`release` prints the kept
    ones (it succeeded, was interrupted or failed unexpectedly) or :meth:`drop` forgets
    them (it refused its input: the one-line error is all the user needs; ``--debug``
    releases them instead).
    """

    def __init__(self) -> None:
        self._held: list[tuple] = []
        self._lock = threading.Lock()
        self._show = warnings.showwarning

    def __enter__(self) -> _HeldWarnings:
        self._show = warnings.showwarning
        warnings.showwarning = self._hold
        return self

    def __exit__(self, *exc: object) -> None:
        if warnings.showwarning == self._hold:
            warnings.showwarning = self._show
        self.release()

    def _hold(self, message, category, filename, lineno, file=None, line=None) -> None:
        try:
            ours = Path(filename).resolve().is_relative_to(_PACKAGE)
        except (OSError, ValueError, TypeError):
            ours = False
        if ours:
            self._show(message, category, filename, lineno, file, line)
            return
        with self._lock:
            self._held.append((message, category, filename, lineno, file, line))

    def release(self) -> None:
        """Print the warnings kept so far."""
        with self._lock:
            held, self._held = self._held, []
        for warning in held:
            self._show(*warning)

    def drop(self) -> None:
        """Forget the warnings kept so far."""
        with self._lock:
            self._held = []


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Errors caused by input are one line ``incasem: error: ...`` on stderr: exit status
    1 for an :class:`~incasem.errors.IncasemError` or a failing file operation, 2 for a
    usage error (unknown option, missing argument); ``--debug`` shows the traceback.
    Ctrl-C exits with 130 and says how to finish the job. Warnings of libraries are
    printed when the command ends, and not at all when it refuses its input (so the
    refusal is one line; ``--debug`` shows them).
    """
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    # a user's own files inside a container (notes, README) are theirs to keep: no warning about them
    warnings.filterwarnings("ignore", message=r"Object at .* is not recognized as a component of a Zarr hierarchy")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _raise_interrupted) if in_main_thread else None
    held = _HeldWarnings()
    try:
        with held:
            return _run(args, held)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def _run(args: list[str], held: _HeldWarnings) -> int:
    """Run the command; ``held`` keeps the library warnings, dropped on a refusal."""
    try:
        app(args=args, prog_name="incasem", standalone_mode=False)
    except (IncasemError, OSError) as error:
        if _state["debug"]:
            raise
        held.drop()
        message = error.for_cli() if isinstance(error, IncasemError) else f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
        typer.echo(f"incasem: error: {message}", err=True)
        return 1
    except (_Interrupted, KeyboardInterrupt):
        held.release()
        typer.echo(_interrupt_hint(args), err=True)
        return 130
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return 1
    except _USAGE_ERRORS as error:
        if _state["debug"]:
            raise
        held.drop()
        if error.format_message().strip():  # empty: a group called without a command, its help is shown
            typer.echo(f"incasem: error: {_usage_message(error)}", err=True)
        return error.exit_code
    return 0
