"""Fine-tuning a model to a user's cell from its labelled voxels: one call, no config file (DESIGN §6, §9a).

:func:`fine_tune` takes a container whose labels cover the cell partly (a labelled mask,
``volumes/labelled/<organelle>``, e.g. from ``incasem convert --sparse``) or wholly, and a
model to start from, and trains with fine-tuning defaults:

- **the recipe of the model** (its card's training config: block size, augmentation,
  sampling, learning rate), with :data:`FINE_TUNE_OVERRIDES` (a few hundred iterations,
  validation every 50) and the user's ``key=value`` overrides on top;
- **a split of the labelled voxels**: the labelled region's longer in-plane axis (y or x) is
  cut where the far part holds ``validation_share`` of the labelled organelle voxels; the
  near part trains, the far part validates (chooses the best checkpoint and the decisions).
  Every labelled section gives to both, so a single labelled section is enough, and
  z-sections of serial-section data are split the same way;
- **a block that fits**: the recipe's block, shrunk on the grid of valid sizes where the
  training part is smaller than its output.

At the end (and after Ctrl-C, from the best checkpoint so far) the run's model gets its
foreground and seed thresholds chosen on the validation voxels (:mod:`incasem.train.calibrate`);
``incasem predict --model run:ID`` then files its predictions under ``run-<ID>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from incasem.errors import ConfigError, DatasetNotFoundError, InvalidValueError, option
from incasem.geometry import Roi, as_triple
from incasem.io.defaults import default_labelled_masks, default_raw, label_datasets
from incasem.io.layout import labels_dataset
from incasem.io.volume import Volume, dataset_exists, open_volume
from incasem.model.card import ModelCard
from incasem.model.unet import UNetConfig
from incasem.predict.resample import check_voxel_sizes, set_voxel_size_hint
from incasem.runs import RunFolder
from incasem.train.config import TrainingConfig, load_training_config
from incasem.train.setup import load_start
from incasem.train.trainer import TrainOptions, check_options, train

__all__ = ["FINE_TUNE_OVERRIDES", "VALIDATION_SHARE", "FineTuneData", "fine_tune", "fine_tune_config", "fitted_block", "split_labelled"]

#: Fine-tuning defaults over the model's recipe: short, validated often (DESIGN §6: 5-15k
#: iterations on a GPU; a few hundred on a CPU already move a model to a new cell).
FINE_TUNE_OVERRIDES = (
    "training.iterations=400",
    "intervals.validate_every=50",
    "intervals.save_every=50",
    "intervals.snapshot_every=200",
    "training.seed=null",
)
#: Share of the labelled region (along its longer in-plane axis) that validates.
VALIDATION_SHARE = 0.25
#: Sections of the model's recipe carried into fine-tuning (the rest comes from the model or is the run's own).
_RECIPE_SECTIONS = ("training", "optimizer", "reject", "augmentation", "loss")


def fine_tune_config(card: ModelCard, overrides: Sequence[str] = ()) -> TrainingConfig:
    """The fine-tuning config of a model: its recipe (card ``training.config``, where it has one; the
    defaults otherwise) with :data:`FINE_TUNE_OVERRIDES` and then ``overrides`` applied."""
    recipe = (card.training or {}).get("config")
    base: dict[str, Any] = {}
    if isinstance(recipe, Mapping):
        base = {section: recipe[section] for section in _RECIPE_SECTIONS if isinstance(recipe.get(section), Mapping)}
        try:
            TrainingConfig.model_validate(base)
        except ValidationError:
            base = {}  # a recipe this incasem cannot read: the defaults
    return load_training_config(None, [*FINE_TUNE_OVERRIDES, *overrides], base=base)


def fitted_block(architecture: UNetConfig, config: TrainingConfig, region_shape: Sequence[int]) -> TrainingConfig:
    """``config`` with its block shrunk (on the grid of valid input sizes) until the output fits in ``region_shape``.

    Axes that augmentation transposes keep equal sizes.

    Raises
    ------
    ConfigError
        If not even the smallest valid block fits.
    """
    section = config.training
    shape = list(section.input_size_voxels)
    if not architecture.is_valid_input_shape(shape):
        shape = list(architecture.valid_input_shape_at_least(shape))
    step = architecture.total_downsample_factor
    for axis in range(3):
        while architecture.output_shape(shape)[axis] > region_shape[axis]:
            shape[axis] -= step[axis]
            if not architecture.is_valid_input_shape(shape):
                raise ConfigError(
                    f"the training part of the labelled region ({list(region_shape)} voxels) is smaller than the network's smallest "
                    f"output along axis {'zyx'[axis]}: label a larger region (or sections of a larger area)"
                )
    transposed = config.augmentation.transpose_only
    if len(transposed) > 1:
        smallest = min(shape[axis] for axis in transposed)
        for axis in transposed:
            shape[axis] = smallest
    fitted = (shape[0], shape[1], shape[2])
    return config.model_copy(
        update={"training": section.model_copy(update={"input_size_voxels": fitted, "output_size_voxels": architecture.output_shape(fitted)})}
    )


@dataclass(frozen=True)
class FineTuneData:
    """What a fine-tuning run reads of a container: datasets, and the training and validation regions (voxels)."""

    container: Path
    raw: str
    labels: str
    labelled: str | None
    mask: str | None
    train_roi: Roi
    val_roi: Roi
    labelled_sections: int

    def entries(self) -> dict[str, dict[str, Any]]:
        """The data config entries ``train`` and ``val`` (DESIGN §3)."""
        common: dict[str, Any] = {"file": str(self.container), "raw": self.raw, "labels": {self.labels: 1}}
        common["voxel_size"] = list(open_volume(self.container, self.raw).voxel_size)
        if self.labelled is not None:
            common["labelled"] = self.labelled
        if self.mask is not None:
            common["mask"] = self.mask
        return {name: {**common, "offset": list(roi.offset), "shape": list(roi.shape)} for name, roi in (("train", self.train_roi), ("val", self.val_roi))}


@dataclass(frozen=True)
class _Extent:
    """Where the labelled voxels of a labels dataset lie: their box, how many sections hold some, and
    how many labelled organelle voxels lie at each row (y) and column (x)."""

    box: Roi
    sections: int
    organelle_profiles: tuple[np.ndarray, np.ndarray]


def _labelled_extent(labels: Volume, labelled: Volume | None, roi: Roi) -> _Extent:
    """One pass over the labels (and labelled mask), chunk by chunk."""
    first, last, sections = np.array(roi.end), np.array(roi.offset) - 1, set()
    rows, columns = np.zeros(roi.shape[1], np.int64), np.zeros(roi.shape[2], np.int64)
    for tile in roi.tiles(labels.chunks, grid_origin=labels.roi.offset):
        known = np.ones(tile.shape, bool) if labelled is None else labelled.read(tile) != 0
        where = np.argwhere(known.any(axis=(1, 2)))[:, 0]
        if not len(where):
            continue
        found = np.argwhere(known)
        first = np.minimum(first, found.min(axis=0) + tile.offset)
        last = np.maximum(last, found.max(axis=0) + tile.offset)
        sections.update((where + tile.offset[0]).tolist())
        organelle = known & (labels.read(tile) != 0)
        y, x = (o - r for o, r in zip(tile.offset[1:], roi.offset[1:]))
        rows[y : y + tile.shape[1]] += organelle.sum(axis=(0, 2))
        columns[x : x + tile.shape[2]] += organelle.sum(axis=(0, 1))
    if not sections:
        return _Extent(Roi(roi.offset, (0, 0, 0)), 0, (rows, columns))
    return _Extent(Roi(as_triple(first.tolist(), "offset"), as_triple((last - first + 1).tolist(), "shape")), len(sections), (rows, columns))


def split_labelled(
    container: str | os.PathLike[str],
    organelle: str,
    *,
    labels: str | None = None,
    labelled: str | None = None,
    raw: str | None = None,
    mask: str | None = None,
    validation_share: float = VALIDATION_SHARE,
    model_voxel_size_nm: Sequence[float] | None = None,
) -> FineTuneData:
    """Find the datasets of a fine-tuning and split its labelled voxels into training and validation.

    Parameters
    ----------
    container
        The cell's .zarr container.
    organelle
        What the model segments: its labels default to ``volumes/labels/<organelle>`` (else the
        container's only labels dataset).
    labels, labelled, raw, mask
        Datasets; defaults: the labels above, ``volumes/labelled/<organelle>`` where it exists
        (``"none"``: every voxel is labelled), the equalised raw (else the raw), no cell mask.
    validation_share
        Share of the labelled organelle voxels (counted along the labelled region's longer
        in-plane axis, from its far end) that validates, in (0, 1).
    model_voxel_size_nm
        The voxel size of the model to fine-tune: the raw's must lie within 2× of it per axis
        (the new model then expects the raw's).

    Raises
    ------
    DatasetNotFoundError, ConfigError, InvalidValueError
        One line naming the dataset or option: no labels, no labelled voxel, a region too
        narrow to split, a raw more than 2× the model's voxel size apart.
    """
    if isinstance(validation_share, bool) or not isinstance(validation_share, (int, float)) or not 0 < validation_share < 1:
        raise InvalidValueError(f"{option('validation_share', '--validation-share')} must be a fraction in (0, 1), got {validation_share!r}")
    container = Path(container).absolute()
    raw = raw or default_raw(container)
    for name, dataset in (("raw", raw), ("mask", mask)):
        if dataset is not None and not dataset_exists(container, dataset):
            raise DatasetNotFoundError(f"{container} has no dataset {dataset}: name the {name} with {option(name, '--' + name)}")
    if model_voxel_size_nm is not None:  # before reading any data
        check_voxel_sizes(open_volume(container, raw).voxel_size, model_voxel_size_nm, f"{container}/{raw}", set_voxel_size_hint(container, raw))
    if labels is None:
        candidates = label_datasets(container)
        own = labels_dataset(organelle)
        if own not in candidates and len(candidates) != 1:
            listed = ", ".join(candidates) or "none"
            raise DatasetNotFoundError(f"{container} has no {own} (labels datasets: {listed}): name the labels with {option('labels', '--labels')}")
        labels = own if own in candidates else candidates[0]
    if not dataset_exists(container, labels):
        raise DatasetNotFoundError(f"{container} has no dataset {labels}: name the labels with {option('labels', '--labels')}")
    if labelled is None:
        found = default_labelled_masks(container, [labels])
        labelled = found[0] if found else None
    elif labelled == "none":
        labelled = None
    labels_volume = open_volume(container, labels)
    roi = labels_volume.roi
    if labelled is not None and not dataset_exists(container, labelled):
        raise DatasetNotFoundError(f"{container} has no dataset {labelled}: name the labelled mask with {option('labelled', '--labelled')}, or none")
    mask_volume = None if labelled is None else open_volume(container, labelled)
    if mask_volume is not None and (mask_volume.roi != roi or mask_volume.dtype.kind not in "biu"):
        raise ConfigError(
            f"{option('labelled', '--labelled')} {mask_volume.label} ({mask_volume.dtype}, {mask_volume.roi}) must be an integer mask on the "
            f"grid of the labels {labels_volume.label} ({roi}): convert it with --like the labels"
        )
    extent = _labelled_extent(labels_volume, mask_volume, roi)
    if not extent.sections:
        raise ConfigError(f"{container}/{labelled} marks no voxel as labelled: label some sections (incasem convert --sparse) or give the right mask")
    box = extent.box
    axis = 1 if box.shape[1] >= box.shape[2] else 2
    profile = extent.organelle_profiles[axis - 1]
    if not profile.sum():
        raise ConfigError(f"{container}/{labels} holds no labelled organelle voxel: label the organelle on the labelled sections")
    # the validation part takes the far share of the labelled organelle along the axis, so it has some
    cut = roi.offset[axis] + int(np.searchsorted(np.cumsum(profile), (1 - validation_share) * profile.sum()))
    cut = min(max(cut, box.offset[axis] + 1), box.end[axis] - 1)
    if not box.offset[axis] < cut < box.end[axis]:
        raise ConfigError(f"the labelled region {box} of {container}/{labels} is too narrow to keep {validation_share:g} of it for validation")
    train_end, val_start = list(roi.end), list(roi.offset)
    train_end[axis], val_start[axis] = cut, cut
    train_roi = Roi(roi.offset, as_triple([e - o for e, o in zip(train_end, roi.offset)], "shape"))
    val_roi = Roi(as_triple(val_start, "offset"), as_triple([e - o for e, o in zip(roi.end, val_start)], "shape"))
    return FineTuneData(container, raw, labels, labelled, mask, train_roi, val_roi, extent.sections)


def fine_tune(
    container: str | os.PathLike[str],
    start_from: str,
    overrides: Sequence[str] = (),
    *,
    labels: str | None = None,
    labelled: str | None = None,
    raw: str | None = None,
    mask: str | None = None,
    validation_share: float = VALIDATION_SHARE,
    options: TrainOptions = TrainOptions(),
    command: Sequence[str] = (),
) -> RunFolder | None:
    """Fine-tune ``start_from`` on the labelled voxels of ``container`` (see the module docstring).

    Returns the run (``None`` on the non-main ranks of ``torchrun``); its model ``run-<id>.pt``
    carries the decisions chosen on the validation part.

    Raises
    ------
    IncasemError
        One line before any run folder exists for bad datasets, options or overrides.
    """
    check_options(options)
    _model, card = load_start(start_from, options.cache_dir, options.runs_dir)
    recipe = fine_tune_config(card, overrides)
    data = split_labelled(
        container,
        card.organelle,
        labels=labels,
        labelled=labelled,
        raw=raw,
        mask=mask,
        validation_share=validation_share,
        model_voxel_size_nm=card.voxel_size_nm,
    )
    config = fitted_block(card.architecture, recipe, data.train_roi.shape)
    with tempfile.TemporaryDirectory(prefix="incasem-fine-tune-") as folder:
        paths = {}
        for name, entry in data.entries().items():
            paths[name] = Path(folder) / f"{name}.json"
            paths[name].write_text(json.dumps({name: entry}, indent=2), encoding="utf-8")
        return train(paths["train"], paths["val"], config, start_from=start_from, options=replace(options, data_root=None), command=command)
