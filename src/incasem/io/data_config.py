"""The data config: which regions of which cells a job reads (JSON, the original's format).

A data config maps ROI names to entries; the original incasem's files are accepted
unchanged::

    {
        "cell_1_er": {
            "file": "cell_1/cell_1.zarr",
            "offset": [150, 120, 1295],
            "shape": [600, 590, 1350],
            "voxel_size": [5, 5, 5],
            "raw": "volumes/raw_equalized_0.02",
            "labels": {"volumes/labels/er": 1},
            "mask": "volumes/mask",
            "metric_masks": ["volumes/metric_masks/er"]
        }
    }

Partial labels (labels drawn on a few sections, boxes or scribbles) add ``"labelled":
"volumes/labelled/er"``: a uint8 mask on the grid of the labels, non-zero where a voxel is
labelled (background or organelle), 0 where the labels say nothing. Unlabelled voxels
count nowhere: not in the loss, the class balancing, the sampler's statistics, validation
or evaluation. Without the key every voxel is labelled, as in the original's configs.

``offset`` and ``shape`` are in **voxels** on the world grid (a dataset whose
``offset`` attribute is ``o`` nm starts at voxel ``o / voxel_size``); leaving both out
takes the region that all datasets of the entry cover. ``voxel_size`` is in nm.
``file`` is relative to a data root (default: the folder of the config file).
``labels`` maps a label dataset to its class id; over the whole config the ids must be
exactly 1..K. ``mask`` and ``metric_masks`` are optional (absent means everywhere).
``name`` (written by some of the original's configs) is accepted and ignored: the
key of the entry is its name.

:func:`load_data_config` checks everything up front and raises one-line errors that
name the config file, the entry and the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from incasem.errors import (
    ConfigError,
    IncasemError,
    InputFileError,
    RoiError,
    VoxelSizeError,
)
from incasem.geometry import NmTriple, Roi, as_nm_triple
from incasem.io.tiff import convert_first, is_tiff_source
from incasem.io.volume import Volume, open_container, open_volume

_PositiveInt = Annotated[StrictInt, Field(gt=0)]
_PositiveNm = Annotated[StrictInt | StrictFloat, Field(gt=0, allow_inf_nan=False)]
_Name = Annotated[StrictStr, Field(min_length=1)]


class _EntrySpec(BaseModel):
    """One entry as written in the JSON file (types only; meaning is checked later)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: _Name
    raw: _Name
    voxel_size: tuple[_PositiveNm, _PositiveNm, _PositiveNm]
    offset: tuple[StrictInt, StrictInt, StrictInt] | None = None
    shape: tuple[_PositiveInt, _PositiveInt, _PositiveInt] | None = None
    labels: dict[_Name, StrictInt] = Field(default_factory=dict)
    mask: _Name | None = None
    metric_masks: tuple[_Name, ...] = ()
    labelled: _Name | None = None
    name: StrictStr | None = None


class _ConfigSpec(RootModel[dict[str, _EntrySpec]]):
    model_config = ConfigDict(frozen=True)


#: What each key must hold, for error messages.
_EXPECTED = {
    "file": "the path of a .zarr container relative to the data root",
    "raw": "a dataset name",
    "voxel_size": "3 positive numbers [z, y, x] (nm)",
    "offset": "3 integers [z, y, x] (voxels)",
    "shape": "3 positive integers [z, y, x] (voxels)",
    "labels": 'an object {"<labels dataset>": <class id 1..K>}',
    "mask": "a dataset name",
    "metric_masks": "a list of dataset names",
    "labelled": "a dataset name (the labelled mask of partial labels)",
    "name": "a string",
}


@dataclass(frozen=True)
class LabelSource:
    """A labels dataset (non-zero = organelle) and the class id its voxels get."""

    dataset: str
    class_id: int


@dataclass(frozen=True)
class RoiEntry:
    """One validated entry of a data config.

    Attributes
    ----------
    name
        The entry's key in the config.
    file
        The container path as written in the config (relative to the data root).
    container
        Absolute path of the zarr container.
    voxel_size
        Voxel size in nm (z, y, x), equal to that of every dataset of the entry.
    roi
        The region, in voxels on the world grid. ``None`` only when the config leaves
        ``offset``/``shape`` out and the datasets were not opened to find it.
    raw
        Name of the raw dataset (it may need context beyond ``roi``; padding is the
        reader's business).
    labels
        Labels datasets with their class ids.
    mask
        Cell mask dataset, or ``None`` (everywhere inside).
    metric_masks
        Metric mask datasets (AND-combined; empty: everywhere).
    labelled
        Labelled mask of partial labels (non-zero = labelled), or ``None``: every voxel
        of the labels is labelled.
    """

    name: str
    file: str
    container: Path
    voxel_size: NmTriple
    roi: Roi | None
    raw: str
    labels: tuple[LabelSource, ...] = ()
    mask: str | None = None
    metric_masks: tuple[str, ...] = ()
    labelled: str | None = None

    @property
    def datasets(self) -> dict[str, str]:
        """Every dataset of the entry, by the key that names it (``labels[<dataset>]`` for labels)."""
        named = {"raw": self.raw}
        named.update({f"labels[{label.dataset}]": label.dataset for label in self.labels})
        if self.mask is not None:
            named["mask"] = self.mask
        named.update({f"metric_masks[{i}]": dataset for i, dataset in enumerate(self.metric_masks)})
        if self.labelled is not None:
            named["labelled"] = self.labelled
        return named


@dataclass(frozen=True)
class DataConfig:
    """A validated data config: its file and its entries, in file order."""

    path: Path
    entries: tuple[RoiEntry, ...]

    def __iter__(self) -> Iterator[RoiEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def voxel_size(self) -> NmTriple:
        """The voxel size (nm) shared by all entries."""
        return self.entries[0].voxel_size

    @property
    def classes(self) -> dict[int, tuple[str, ...]]:
        """Class id (1..K) -> labels datasets that provide it, over all entries."""
        classes: dict[int, set[str]] = {}
        for entry in self.entries:
            for label in entry.labels:
                classes.setdefault(label.class_id, set()).add(label.dataset)
        return {class_id: tuple(sorted(classes[class_id])) for class_id in sorted(classes)}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for checkpoints and run records.

        Holds the config file, the voxel size (nm), the classes (id -> labels
        datasets), the total number of voxels in all ROIs (``None`` if some ROI is
        unknown) and per entry its file, ROI (voxels), voxel count and datasets.
        """
        entries = [
            {
                "name": entry.name,
                "file": entry.file,
                "offset": None if entry.roi is None else list(entry.roi.offset),
                "shape": None if entry.roi is None else list(entry.roi.shape),
                "voxels": None if entry.roi is None else entry.roi.size,
                "raw": entry.raw,
                "labels": {label.dataset: label.class_id for label in entry.labels},
                "mask": entry.mask,
                "metric_masks": list(entry.metric_masks),
                "labelled": entry.labelled,
            }
            for entry in self.entries
        ]
        counts = [entry["voxels"] for entry in entries]
        return {
            "config": str(self.path),
            "voxel_size": list(self.voxel_size),
            "classes": {str(class_id): list(datasets) for class_id, datasets in self.classes.items()},
            "total_voxels": None if None in counts else sum(counts),
            "entries": entries,
        }


def load_data_config(
    path: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    model_voxel_size: Sequence[float] | None = None,
    check_datasets: bool = True,
) -> DataConfig:
    """Read and validate a data config JSON file.

    Parameters
    ----------
    path
        The JSON file.
    data_root
        Folder that the entries' ``file`` paths are relative to; default: the folder
        of ``path``.
    model_voxel_size
        Voxel size (nm, z, y, x) of the model the data is for; every entry must match.
    check_datasets
        Open every container and dataset to check that it exists and is complete,
        has the entry's voxel size and covers the entry's ROI (raw included; context
        around the ROI is not required). ``False`` checks the file alone.

    Returns
    -------
    DataConfig
        Entries in file order, with absolute container paths and voxel ROIs.

    Raises
    ------
    InputFileError
        If the config file or a container does not exist.
    ConfigError
        If the file is not valid JSON, has unknown or missing keys, values of the
        wrong type, no entries, ``offset`` without ``shape``, or class ids that are
        not 1..K.
    VoxelSizeError
        If voxel sizes of entries, datasets and model differ.
    RoiError
        If a ROI leaves one of its entry's datasets (or they do not overlap).
    NotAContainerError, DatasetNotFoundError, DatasetMismatchError
        From opening the datasets, with the config file, entry and key in front.
    """
    path = Path(path).expanduser().absolute()
    root = path.parent if data_root is None else Path(data_root).expanduser().absolute()
    specs = _parse(path)
    entries = tuple(_entry(path, root, name, spec) for name, spec in specs.items())
    config = DataConfig(path, entries)
    _check_config(config, model_voxel_size)
    if check_datasets:
        config = DataConfig(path, tuple(_check_datasets(path, root, entry) for entry in entries))
    return config


def _where(path: Path, entry: str | None = None, key: str | None = None) -> str:
    where = str(path)
    if entry is not None:
        where += f": entry '{entry}'"
    if key is not None:
        where += f", key '{key}'"
    return where


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object from its pairs, refusing a key given twice (``ConfigError``)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"'{key}' appears twice in the same object: give each name once")
        result[key] = value
    return result


def _parse(path: Path) -> dict[str, _EntrySpec]:
    if is_tiff_source(path):
        raise InputFileError(convert_first(path, "a data config (.json)", "name {zarr} in a data config"))
    if path.is_dir() and any((path / name).is_file() for name in (".zgroup", "zarr.json")):
        raise InputFileError(f"{path} is a zarr container, not a data config (.json): give a data config whose 'file' names it")
    if path.is_dir():
        raise InputFileError(f"data config {path} is a folder, not a .json file: give the path of the data config file")
    if not path.is_file():
        raise InputFileError(f"data config {path} does not exist: give the path of a .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file: give a data config .json file") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    try:
        specs = _ConfigSpec.model_validate(data).root
    except ValidationError as error:
        raise ConfigError(_translate(path, data, error)) from None
    if not specs:
        raise ConfigError(f'{path}: the config has no entries: add one, e.g. {{"roi_1": {{"file": ..., "raw": ...}}}}')
    return specs


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _translate(path: Path, data: Any, error: ValidationError) -> str:
    """One line for the first problem pydantic found (and how many more there are)."""
    problems = error.errors()
    first = problems[0]
    loc = first["loc"]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    if not loc:
        return f'{path}: the top level must be an object {{"<roi name>": {{...}}, ...}}, got {_show(data)}{more}'
    entry = str(loc[0])
    allowed = ", ".join(_EntrySpec.model_fields)
    if len(loc) == 1:
        return f"{_where(path, entry)}: must be an object with the keys {allowed}, got {_show(data[entry])}{more}"
    key = str(loc[1])
    if first["type"] == "extra_forbidden":
        return f"{_where(path, entry, key)}: unknown key; allowed keys are {allowed}{more}"
    if first["type"] == "missing" and len(loc) == 2:
        return f"{_where(path, entry, key)}: required key is missing: add {_EXPECTED[key]}{more}"
    return f"{_where(path, entry, key)}: must be {_EXPECTED[key]}, got {_show(data[entry][key])}{more}"


def _entry(path: Path, root: Path, name: str, spec: _EntrySpec) -> RoiEntry:
    if (spec.offset is None) != (spec.shape is None):
        key = "shape" if spec.shape is None else "offset"
        raise ConfigError(
            f"{_where(path, name, key)}: required with '{'offset' if key == 'shape' else 'shape'}': give both (voxels), or neither for the whole dataset"
        )
    seen: dict[int, str] = {}
    for dataset, class_id in spec.labels.items():
        if class_id in seen:
            raise ConfigError(
                f"{_where(path, name, 'labels')}: class id {class_id} is given to both '{seen[class_id]}' "
                f"and '{dataset}': give each labels dataset its own class id"
            )
        seen[class_id] = dataset
    if spec.labelled is not None and not spec.labels:
        raise ConfigError(f"{_where(path, name, 'labelled')}: a labelled mask says which voxels of the labels are labelled: add 'labels', or drop 'labelled'")
    return RoiEntry(
        name=name,
        file=spec.file,
        container=(root / Path(spec.file).expanduser()).absolute(),
        voxel_size=as_nm_triple(spec.voxel_size, "voxel_size", positive=True),
        roi=None if spec.offset is None or spec.shape is None else Roi(spec.offset, spec.shape),
        raw=spec.raw,
        labels=tuple(LabelSource(dataset, class_id) for dataset, class_id in spec.labels.items()),
        mask=spec.mask,
        metric_masks=spec.metric_masks,
        labelled=spec.labelled,
    )


def _check_config(config: DataConfig, model_voxel_size: Sequence[float] | None) -> None:
    """Checks across entries that need no data: voxel sizes and class ids."""
    first = config.entries[0]
    for entry in config.entries[1:]:
        if entry.voxel_size != first.voxel_size:
            raise VoxelSizeError(
                f"{_where(config.path, entry.name, 'voxel_size')}: {list(entry.voxel_size)} nm differs from "
                f"{list(first.voxel_size)} nm of entry '{first.name}': one config holds data of one voxel size"
            )
    if model_voxel_size is not None:
        model = as_nm_triple(model_voxel_size, "model voxel size", positive=True)
        if first.voxel_size != model:
            raise VoxelSizeError(
                f"{_where(config.path, first.name, 'voxel_size')}: {list(first.voxel_size)} nm differs from the "
                f"model's voxel size {list(model)} nm: use a model made for this voxel size"
            )
    ids = sorted(config.classes)
    for class_id in ids:
        if not 1 <= class_id <= len(ids):
            owner = next(e for e in config.entries if any(label.class_id == class_id for label in e.labels))
            raise ConfigError(
                f"{_where(config.path, owner.name, 'labels')}: class id {class_id} breaks the numbering: the class "
                f"ids of the config ({', '.join(map(str, ids))}) must be 1..{len(ids)} without gaps"
            )


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Put ``where`` (config file, entry, key) in front of the message of an error from below."""
    try:
        yield
    except IncasemError as error:
        raise type(error)(f"{where}: {error.args[0]}") from None


def _check_datasets(path: Path, root: Path, entry: RoiEntry) -> RoiEntry:
    """Open every dataset of ``entry``; return it with its ROI resolved."""
    if not entry.container.exists():
        raise InputFileError(
            f"{_where(path, entry.name, 'file')}: container {entry.container} does not exist (data root {root}): fix 'file' or give the right data root"
        )
    with _located(_where(path, entry.name, "file")):
        open_container(entry.container)
    rois = {}
    volumes: dict[str, Volume] = {}
    for key, dataset in entry.datasets.items():
        with _located(_where(path, entry.name, key)):
            volume = open_volume(entry.container, dataset)
        if volume.voxel_size != entry.voxel_size:
            raise VoxelSizeError(
                f"{_where(path, entry.name, key)}: {volume.label} has voxel size {list(volume.voxel_size)} nm, "
                f"the entry says {list(entry.voxel_size)} nm: fix 'voxel_size' or the dataset's resolution"
            )
        if entry.roi is not None and not volume.roi.contains(entry.roi):
            raise RoiError(
                f"{_where(path, entry.name, key)}: ROI {entry.roi} (voxels) reaches outside {volume.label}, which covers {volume.roi}: fix 'offset'/'shape'"
            )
        rois[key] = volume.roi
        volumes[key] = volume
    if entry.labelled is not None:
        _check_labelled(path, entry, volumes)
    if entry.roi is not None:
        return entry
    common = next(iter(rois.values()))
    for roi in rois.values():
        common = common.intersect(roi)
    if common.empty:
        listing = ", ".join(f"{key} {roi}" for key, roi in rois.items())
        raise RoiError(f"{_where(path, entry.name)}: its datasets do not overlap ({listing}): give 'offset' and 'shape'")
    return replace(entry, roi=common)


def _check_labelled(path: Path, entry: RoiEntry, volumes: dict[str, Volume]) -> None:
    """The labelled mask is an integer (or boolean) mask on the grid of every labels dataset of the entry."""
    mask = volumes["labelled"]
    if mask.dtype.kind not in "biu":
        raise ConfigError(
            f"{_where(path, entry.name, 'labelled')}: {mask.label} is {mask.dtype}, a labelled mask holds 0 (not labelled) and 1 (labelled): give a uint8 mask"
        )
    for label in entry.labels:
        labels = volumes[f"labels[{label.dataset}]"]
        if labels.roi != mask.roi:
            raise ConfigError(
                f"{_where(path, entry.name, 'labelled')}: {mask.label} covers {mask.roi}, its labels {labels.label} cover "
                f"{labels.roi} (voxels): a labelled mask lies on the grid of its labels (convert it with --like the labels)"
            )
