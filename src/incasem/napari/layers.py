"""A container's datasets as napari layers: lazily read, placed by voxel size and offset.

Each dataset becomes one layer, as napari's reader contract has it: ``(data, kwargs,
layer_type)``. Grey levels (the raw and its equalised versions) are images; probability
maps are images of probabilities 0..1 (decoded from the stored 0..255) with a heat
colormap; labels, masks, segmentations and instances are Labels layers, labels green and
predictions magenta as in ``incasem view`` (:mod:`incasem.view.display`). ``scale`` is the
voxel size and ``translate`` the offset, both in nm, so that datasets of different voxel
sizes overlay. The data are the zarr arrays themselves, with a dataset's finished pyramid
levels as napari's multiscale levels: nothing is read until it is drawn, and then
only the chunks of the section in view. Masks (cell, metric and labelled masks) open
hidden: they would cover the cell.

Every layer's ``metadata["incasem"]`` says where it came from (:class:`LayerSource`), so
the widgets hand the API the container and dataset rather than the pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from incasem.errors import IncasemError
from incasem.io.layout import CELL_MASK, LABELLED_GROUP, METRIC_MASKS_GROUP, dataset_kind, decode_probability
from incasem.io.ngff import pyramid_source
from incasem.io.volume import Volume, open_container, open_volume
from incasem.preprocess.pyramid import pyramid_levels
from incasem.view.display import display_range, segment_color

__all__ = ["METADATA_KEY", "LayerSource", "container_layers", "layer_data", "source_of"]

#: Key of a layer's metadata that holds its :class:`LayerSource`.
METADATA_KEY = "incasem"

#: napari layer data: (data, keyword arguments of the layer, layer type).
LayerData = tuple[Any, dict[str, Any], str]

#: Colormap of probability maps.
PROBABILITY_COLORMAP = "inferno"


@dataclass(frozen=True)
class LayerSource:
    """The container and dataset a layer shows."""

    container: Path
    dataset: str

    def to_metadata(self) -> dict[str, str]:
        """The layer's ``metadata[METADATA_KEY]``."""
        return {"container": str(self.container), "dataset": self.dataset}


def source_of(layer: Any) -> LayerSource | None:
    """Where ``layer`` came from, if it shows a dataset of a container (else ``None``)."""
    record = getattr(layer, "metadata", {}).get(METADATA_KEY)
    if not isinstance(record, dict) or not {"container", "dataset"} <= record.keys():
        return None
    return LayerSource(Path(record["container"]), record["dataset"])


class DecodedProbabilities:
    """A uint8 probability map read as probabilities 0..1, decoded after slicing: napari reads a
    section, not the chunks' whole depth in float32 (as a dask ``map_blocks`` would)."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return decode_probability(np.asarray(self.array[key])).astype(np.float32, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)


def _lazy(volume: Volume, probabilities: bool) -> Any:
    """The zarr array itself (napari slices it, reading only the chunks a view needs), probabilities decoded."""
    return DecodedProbabilities(volume.array) if probabilities and volume.dtype == np.uint8 else volume.array


def _levels(volume: Volume) -> list[Volume]:
    """The dataset and its finished pyramid levels (just the dataset where those cannot be read)."""
    try:
        return pyramid_levels(volume.container, volume.name) if volume.complete else [volume]
    except (IncasemError, ValueError):  # ValueError: zarr met a damaged member while listing the levels
        return [volume]


def _segment_colormap(color: str) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: color, 0: "transparent"})


def layer_data(volume: Volume, name: str | None = None) -> LayerData:
    """One dataset as napari layer data (module docstring); an unfinished one says so in its name."""
    kind = dataset_kind(volume.name, volume.dtype)
    levels = _levels(volume)
    data = [_lazy(level, kind == "probabilities") for level in levels]
    name = name or volume.name.removeprefix("volumes/")
    options: dict[str, Any] = {
        "name": name if volume.complete else f"{name} (incomplete)",
        "scale": tuple(float(v) for v in volume.voxel_size),
        "translate": tuple(float(v) for v in volume.offset_nm),
        "metadata": {METADATA_KEY: LayerSource(volume.container, volume.name).to_metadata()},
        "multiscale": len(data) > 1,
    }
    if kind == "segmentation":
        color = segment_color(volume, kind)
        if color is not None:
            options["colormap"] = _segment_colormap(color)
        options["opacity"] = 0.5
        options["visible"] = not _is_mask(volume.name)
        return (data if len(data) > 1 else data[0], options, "labels")
    if kind == "probabilities":
        options.update(colormap=PROBABILITY_COLORMAP, contrast_limits=(0.0, 1.0), blending="additive", opacity=0.7)
    else:
        low, high = display_range(volume, kind) or (0.0, 1.0)
        options.update(colormap="gray", contrast_limits=(low, high))
    return (data if len(data) > 1 else data[0], options, "image")


def _is_mask(dataset: str) -> bool:
    """Cell masks, metric masks and labelled masks: opened hidden (they would cover the cell)."""
    return dataset == CELL_MASK or dataset.startswith((f"{METRIC_MASKS_GROUP}/", f"{LABELLED_GROUP}/"))


def _is_pyramid_level(volume: Volume) -> bool:
    return pyramid_source(volume.array.attrs) is not None


def _order(volume: Volume) -> tuple[int, str]:
    """Images first (drawn below), then probabilities, then segmentations on top."""
    rank = {"image": 0, "probabilities": 1, "segmentation": 2}[dataset_kind(volume.name, volume.dtype)]
    return rank, volume.name


def _is_array_folder(folder: Path, files: list[str]) -> bool:
    if ".zarray" in files:
        return True
    if "zarr.json" not in files:
        return False
    try:
        return json.loads((folder / "zarr.json").read_text(encoding="utf-8")).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return True  # an array or a group with damaged metadata: opening it says which


def _array_paths(container: Path) -> list[str]:
    """The arrays of a local container, found folder by folder, so that one with damaged
    metadata does not hide the others (zarr's listing stops at the first)."""
    found = []
    for folder, subfolders, files in os.walk(container):
        here = Path(folder)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if here != container and _is_array_folder(here, files):
            found.append(here.relative_to(container).as_posix())
            subfolders.clear()
    return sorted(found)


def container_layers(container: str | Path, warn: Any = None) -> list[LayerData]:
    """Every 3D dataset of ``container`` as layer data, pyramid levels inside their dataset's layer.

    A dataset whose metadata cannot be read is skipped, and ``warn`` (if given) is called
    with a one-line message naming it; an unfinished one is shown, named ``(incomplete)``.

    Raises
    ------
    NotAContainerError
        If ``container`` is not a zarr container (one line, naming it).
    """
    path = Path(container).absolute()
    open_container(path)  # refuses what is not a container
    volumes = []
    for name in _array_paths(path):
        try:
            volume = open_volume(path, name, require_complete=False)
        except IncasemError as error:
            if warn is not None:
                warn(f"skipped {path}/{name}: {error}")
            continue
        if volume.array.ndim == 3 and not _is_pyramid_level(volume):
            volumes.append(volume)
    if not volumes and warn is not None:
        warn(f"{path} holds no 3D dataset to show")
    return [layer_data(volume) for volume in sorted(volumes, key=_order)]
