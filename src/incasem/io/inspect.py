"""A table of the datasets in a container, for ``incasem info``."""

from __future__ import annotations

from pathlib import Path

from incasem.errors import DatasetMismatchError, MetadataError
from incasem.io.volume import Volume, dataset_names, open_container, open_volume


def describe_volume(volume: Volume) -> str:
    """One line: name, shape, dtype, chunks, voxel size, offset and completeness."""
    status = "" if volume.complete else "  INCOMPLETE (interrupted job)"
    return (
        f"{volume.name}  shape={list(volume.shape)}  dtype={volume.dtype}  chunks={list(volume.chunks)}  "
        f"voxel_size={list(volume.voxel_size)}nm  offset={list(volume.offset_nm)}nm{status}"
    )


def describe_dataset(path: str | Path, dataset: str) -> str:
    """One line for one dataset.

    Raises
    ------
    NotAContainerError, DatasetNotFoundError, MetadataError
        If the container or the dataset does not exist, or its metadata is invalid.
    """
    return describe_volume(open_volume(path, dataset, require_complete=False))


def _describe_or_flag(path: Path, dataset: str) -> str:
    try:
        return describe_dataset(path, dataset)
    except (MetadataError, DatasetMismatchError) as error:  # flagged, not fatal: the others are still listed
        return f"{dataset}  UNUSABLE: {error}"


def describe_container(path: str | Path) -> list[str]:
    """One line per dataset of the container at ``path``; one with invalid metadata says what is wrong."""
    path = Path(path)
    return [_describe_or_flag(path, name) for name in dataset_names(open_container(path), path)]
