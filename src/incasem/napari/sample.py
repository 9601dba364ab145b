"""napari's sample data (``File > Open Sample > incasem``): the bundled FIB-SEM crop with its labels.

The crop's TIFFs (:data:`incasem.demo.EXAMPLE`) are converted once, as ``incasem demo``
does, into ``$XDG_CACHE_HOME/incasem/sample/lucchi_crop.zarr`` (``~/.cache/...``): raw,
equalised raw, the manual mitochondria labels and their metric mask. The container is
built under a temporary name and renamed when complete, so an interrupted first opening
leaves nothing that a later one would take for the sample.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from incasem.demo import make_example_container
from incasem.napari.actions import QUIET
from incasem.napari.layers import LayerData, container_layers

__all__ = ["sample_container", "sample_layers"]


def _sample_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "incasem" / "sample"


def sample_container() -> Path:
    """The sample's container, built on first use."""
    folder = _sample_folder()
    container = folder / "lucchi_crop.zarr"
    if container.is_dir():
        return container
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".lucchi_crop-", dir=folder))
    try:
        make_example_container(scratch / container.name, run=QUIET, say=lambda _line: None)
        os.replace(scratch / container.name, container)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return container


def sample_layers() -> list[LayerData]:
    """The sample's datasets as layers."""
    return container_layers(sample_container())
