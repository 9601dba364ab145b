"""Parsers for option values shared by several commands."""

from __future__ import annotations

import typer

from incasem.geometry import Triple


#: Options shared by the commands that run blockwise jobs.
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing output.")
RESUME = typer.Option(False, "--resume", help="Finish an interrupted run, skipping finished blocks.")
SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://host:8786); default: this machine.")
WORKERS = typer.Option(None, "--workers", "-n", help="Local threads (default: all cores).")


def parse_triple(text: str | None, option: str) -> Triple | None:
    """Parse ``"Z,Y,X"`` (or one number for all axes) into three ints; ``None`` stays ``None``."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"{option} needs integers Z,Y,X, got '{text}'") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise typer.BadParameter(f"{option} needs three integers Z,Y,X (or one for all), got '{text}'")
    return (values[0], values[1], values[2])


def parse_range(text: str | None, option: str) -> tuple[int, int] | None:
    """Parse ``"START:STOP"`` (voxels, stop exclusive; either may be empty) into a pair."""
    if text is None:
        return None
    if ":" not in text:
        raise typer.BadParameter(f"{option} needs START:STOP, got '{text}'")
    start_text, stop_text = text.split(":", 1)
    try:
        start = int(start_text) if start_text else 0
        stop = int(stop_text) if stop_text else -1
    except ValueError:
        raise typer.BadParameter(f"{option} needs integers START:STOP, got '{text}'") from None
    return (start, stop)
