"""Options shared by several commands: the blockwise job options and parsers for option values.

Every command that runs a blockwise job (convert, export, equalize, mask,
metric-mask, predict) takes the same ``--overwrite``/``--resume`` (export:
``--overwrite`` only), ``--scheduler``, ``--workers/-n`` and ``--quiet/-q``, added by
:func:`job_options` and turned into the API's :data:`~incasem.io.volume.WriteMode`
and :class:`~incasem.blockwise.RunOptions` by :func:`job_settings`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from incasem.blockwise import RunOptions
from incasem.geometry import NmTriple, Triple, as_nm_triple
from incasem.io.volume import WriteMode

_OVERWRITE_HELP = "Replace the output an earlier run of this command wrote (never a group, an input or other data)."
_RESUME = typer.Option(False, "--resume", help="Finish an interrupted run with the same settings, computing only what is missing.")
_SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://host:8786); default: this machine.")
_WORKERS = typer.Option(None, "--workers", "-n", help="Local threads (default: all cores; predict: a few blocks in flight).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")


def job_settings(overwrite: bool, resume: bool, scheduler: str | None, workers: int | None, quiet: bool) -> tuple[WriteMode, RunOptions]:
    """The write mode and run options that the shared job flags ask for.

    Raises
    ------
    typer.BadParameter
        For ``--overwrite`` together with ``--resume`` (a usage error).
    InvalidValueError
        For a bad ``--workers`` or ``--scheduler`` (from :class:`RunOptions`).
    """
    if overwrite and resume:
        raise typer.BadParameter("--overwrite and --resume exclude each other: --overwrite starts afresh, --resume finishes an interrupted run; give one")
    mode: WriteMode = "overwrite" if overwrite else "resume" if resume else "create"
    return mode, RunOptions(scheduler=scheduler, workers=workers, progress=not quiet)


def job_options(*, resume: bool = True, overwrite_help: str = _OVERWRITE_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared job options; it receives them as keywords ``mode`` and ``run``.

    The decorated command declares keyword parameters ``mode`` (a
    :data:`~incasem.io.volume.WriteMode`) and ``run`` (a
    :class:`~incasem.blockwise.RunOptions`); on the command line they are
    ``--overwrite``, ``--resume`` (unless ``resume`` is False), ``--scheduler``,
    ``--workers/-n`` and ``--quiet/-q``, mapped by :func:`job_settings`. Put it below
    ``@app.command(...)``.
    """
    flags = [
        ("overwrite", bool, typer.Option(False, "--overwrite", help=overwrite_help)),
        *([("resume", bool, _RESUME)] if resume else []),
        ("scheduler", str | None, _SCHEDULER),
        ("workers", int | None, _WORKERS),
        ("quiet", bool, _QUIET),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name not in ("mode", "run")]
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, t, d in flags]

        @functools.wraps(command)
        def with_job_options(
            *args: Any,
            overwrite: bool = False,
            resume: bool = False,
            scheduler: str | None = None,
            workers: int | None = None,
            quiet: bool = False,
            **kwargs: Any,
        ) -> Any:
            mode, run = job_settings(overwrite, resume, scheduler, workers, quiet)
            return command(*args, **kwargs, mode=mode, run=run)

        parameters = [*own, *shared]
        with_job_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_job_options.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_job_options

    return decorate


def _numbers(text: str, option: str, kind: type, what: str) -> list:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"{option} needs {what} Z,Y,X, got '{text}'") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise typer.BadParameter(f"{option} needs three {what} Z,Y,X (or one for all), got '{text}'")
    return values


def parse_triple(text: str | None, option: str) -> Triple | None:
    """Parse ``"Z,Y,X"`` (or one number for all axes) into three ints; ``None`` stays ``None``."""
    if text is None:
        return None
    values = _numbers(text, option, int, "integers")
    return (values[0], values[1], values[2])


def parse_nm_triple(text: str | None, option: str) -> NmTriple | None:
    """Parse ``"Z,Y,X"`` nanometres (or one number for all axes; decimals allowed, e.g. 50,4.6,4.6)."""
    if text is None:
        return None
    values = _numbers(text, option, float, "numbers (nm)")
    return as_nm_triple(values, option)


def parse_range(text: str | None, option: str) -> tuple[int | None, int | None] | None:
    """Parse ``"START:STOP"`` (voxels, stop exclusive; an empty end is open) into a pair.

    Negative numbers are refused: ``0:-1`` would silently mean "all but the last" in
    Python and "everything" elsewhere; give the stop explicitly.
    """
    if text is None:
        return None
    start_text, colon, stop_text = text.partition(":")
    try:
        if not colon:
            raise ValueError
        bounds = [int(t) if t.strip() else None for t in (start_text, stop_text)]
    except ValueError:
        raise typer.BadParameter(f"{option} needs START:STOP in voxels (stop exclusive), got '{text}'") from None
    if any(b is not None and b < 0 for b in bounds):
        raise typer.BadParameter(f"{option} needs START:STOP counted from 0 (no negative numbers; leave an end empty for open), got '{text}'")
    return (bounds[0], bounds[1])
