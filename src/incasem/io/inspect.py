"""A table of the datasets in a container, for ``incasem info``."""

from __future__ import annotations

from pathlib import Path

from incasem.io.volume import Volume, list_volumes


def describe_volume(volume: Volume) -> str:
    """One line: name, shape, dtype, chunks, voxel size, offset and completeness."""
    status = "" if volume.complete else "  INCOMPLETE (interrupted job)"
    return (
        f"{volume.name}  shape={list(volume.shape)}  dtype={volume.dtype}  chunks={list(volume.chunks)}  "
        f"voxel_size={list(volume.voxel_size)}nm  offset={list(volume.offset_nm)}nm{status}"
    )


def describe_container(path: str | Path) -> list[str]:
    """One line per 3D dataset of the container at ``path``."""
    return [describe_volume(volume) for volume in list_volumes(path)]
