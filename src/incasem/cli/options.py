"""Parsers for option values shared by several commands."""

from __future__ import annotations

import typer

from incasem.geometry import NmTriple, Triple, as_nm_triple


#: Options shared by the commands that run blockwise jobs.
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing output.")
RESUME = typer.Option(False, "--resume", help="Finish an interrupted run, skipping finished blocks.")
SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://host:8786); default: this machine.")
WORKERS = typer.Option(None, "--workers", "-n", help="Local threads (default: all cores).")


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
        raise typer.BadParameter(
            f"{option} needs START:STOP counted from 0 (no negative numbers; leave an end empty for open), got '{text}'"
        )
    return (bounds[0], bounds[1])
