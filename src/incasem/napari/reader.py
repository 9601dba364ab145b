"""napari's reader of incasem containers and the original incasem's (``File > Open Folder``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from incasem.napari.layers import LayerData, container_layers

__all__ = ["get_reader", "read_container"]


def _looks_like_container(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of ``path`` if it names a zarr container (``*.zarr`` or a folder with zarr metadata), else ``None``."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_looks_like_container(Path(p)) for p in paths):
        return None
    return read_container


def _warn(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(f"incasem: {message}")


def read_container(path: str | list[str]) -> list[LayerData]:
    """Every dataset of each container as a layer (see :func:`incasem.napari.layers.container_layers`).

    Raises
    ------
    IncasemError
        One line naming a path that is not a container; napari shows it as a notification.
    """
    paths = [path] if isinstance(path, str) else list(path)
    return [layer for p in paths for layer in container_layers(p, warn=_warn)]
