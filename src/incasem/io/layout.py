"""The container's vocabulary (DESIGN §2): one home for every word the commands share.

The original incasem's dataset names and patterns, the organelle table, what kind of
data a dataset holds (:func:`dataset_kind`) and the uint8 probability codec. Every module
takes these from here, so a name, a pattern or a rounding is written once. The default
choices built on them (which raw, labels, metric masks and prediction a command uses when
none is named) live in :mod:`incasem.io.defaults`.

Layout of one cell's container (axis order z, y, x)::

    volumes/raw                                   grey levels as converted
    volumes/raw_equalized_0.02                    3D CLAHE of the raw (the networks' input)
    volumes/labels/<organelle>                    0 = background, non-zero = organelle
    volumes/metric_masks/<organelle>              0 = exclusion zone, 255 = scored
    volumes/labelled/<organelle>                  which voxels of the labels are labelled: 0 = not labelled, 1 = labelled
    volumes/mask                                  the cell: 0 = outside, non-zero = inside
    volumes/predictions/<model>/<id>/prob_maps/class_<c>   probability, uint8 0..255
    volumes/predictions/<model>/<id>/segmentation          class id per voxel
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CELL_MASK",
    "DEFAULT_CLIP_LIMIT",
    "EXCLUSION_WIDTHS_VOXELS",
    "LABELLED_GROUP",
    "LABELS_GROUP",
    "METRIC_MASKS_GROUP",
    "PREDICTIONS_GROUP",
    "PROB_MAPS",
    "RAW",
    "RAW_EQUALIZED",
    "SEGMENTATION",
    "DatasetKind",
    "dataset_kind",
    "decode_probability",
    "encode_probability",
    "equalized_dataset",
    "is_probability_map",
    "labelled_mask_dataset",
    "labels_dataset",
    "metric_mask_dataset",
    "organelle_of",
    "prediction_group",
    "probability_map",
    "segmentation_of",
]

#: Grey levels as converted from the microscope's files.
RAW = "volumes/raw"
#: CLAHE clip limit of the original's equalised raw.
DEFAULT_CLIP_LIMIT = 0.02
#: Group of the labels datasets (``volumes/labels/<organelle>``).
LABELS_GROUP = "volumes/labels"
#: Group of the metric masks, the exclusion zones (``volumes/metric_masks/<organelle>``).
METRIC_MASKS_GROUP = "volumes/metric_masks"
#: Group of the labelled masks of partial labels (``volumes/labelled/<organelle>``): 0 where the
#: labels say nothing (not labelled), non-zero where they are background or organelle.
LABELLED_GROUP = "volumes/labelled"
#: The cell mask.
CELL_MASK = "volumes/mask"
#: Group of the predictions (``volumes/predictions/<model>/<id>``).
PREDICTIONS_GROUP = "volumes/predictions"
#: Group of a prediction's probability maps (``<prediction>/prob_maps/class_<c>``).
PROB_MAPS = "prob_maps"
#: A prediction's segmentation (``<prediction>/segmentation``).
SEGMENTATION = "segmentation"

#: Recommended exclusion widths (inwards, outwards) in voxels, per organelle name (DESIGN §7).
EXCLUSION_WIDTHS_VOXELS: dict[str, tuple[int, int]] = {
    "mito": (4, 4),
    "golgi": (2, 2),
    "er": (2, 2),
    "np": (1, 1),
    "nuclear_pores": (1, 1),
    "ccp": (2, 2),
    "coated_pits": (2, 2),
}


def equalized_dataset(clip_limit: float = DEFAULT_CLIP_LIMIT) -> str:
    """The original's name for the equalised raw, e.g. ``volumes/raw_equalized_0.02``."""
    return f"{RAW}_equalized_{float(clip_limit)}"


#: The equalised raw at the original's clip limit: what the networks read.
RAW_EQUALIZED = equalized_dataset()


def organelle_of(dataset: str) -> str:
    """The organelle a labels or metric-mask dataset is named after: its last path component
    (``volumes/labels/mito`` and ``volumes/labels/mito/`` -> ``mito``)."""
    return dataset.rstrip("/").rsplit("/", 1)[-1]


def labels_dataset(organelle: str) -> str:
    """``volumes/labels/<organelle>``."""
    return f"{LABELS_GROUP}/{organelle}"


def metric_mask_dataset(labels: str) -> str:
    """The metric mask of labels dataset ``labels``: ``volumes/metric_masks/<organelle>``."""
    return f"{METRIC_MASKS_GROUP}/{organelle_of(labels)}"


def labelled_mask_dataset(labels: str) -> str:
    """The labelled mask of partial labels ``labels``: ``volumes/labelled/<organelle>``."""
    return f"{LABELLED_GROUP}/{organelle_of(labels)}"


def prediction_group(model_name: str, prediction_id: str) -> str:
    """Dataset group of one prediction: ``volumes/predictions/<model>/<id>``."""
    return f"{PREDICTIONS_GROUP}/{model_name}/{prediction_id}"


def probability_map(group: str, class_id: int) -> str:
    """The probability map of class ``class_id`` in prediction ``group``: ``<group>/prob_maps/class_<c>``."""
    return f"{group}/{PROB_MAPS}/class_{class_id}"


def segmentation_of(group: str) -> str:
    """The segmentation of prediction ``group``: ``<group>/segmentation``."""
    return f"{group}/{SEGMENTATION}"


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def is_probability_map(name: str) -> bool:
    """Whether dataset ``name`` is named as a probability map: a path component starting with
    ``prob`` (``prob_maps/class_1``, the original's ``probabilities``), or one of its pyramid
    levels (``…/class_1_s1``)."""
    return any(part.startswith("prob") for part in _parts(name))


#: What a dataset holds, and so how it is read, drawn and downsampled.
DatasetKind = Literal["image", "probabilities", "segmentation"]

#: Path components that make an integer dataset a segmentation (ids or a mask, never grey levels).
_SEGMENTATION_PARTS = frozenset({"labels", "labelled", "mask", "masks", "metric_masks", SEGMENTATION, "instances"})


def _is_raw(parts: list[str]) -> bool:
    """``volumes/raw``, its equalised versions and their pyramid levels (``volumes/raw_equalized_0.02_s1``)."""
    group, name = RAW.split("/")
    return len(parts) == 2 and parts[0] == group and parts[1].startswith(name)


def dataset_kind(name: str, dtype: np.dtype | type | str) -> DatasetKind:
    """What dataset ``name`` of element type ``dtype`` holds, the one rule of every command that guesses.

    - ``image`` (grey levels): the raw and its equalised versions (``volumes/raw*``);
    - ``probabilities``: a dataset named as a probability map (:func:`is_probability_map`),
      and any other float dataset (probability maps of other tools);
    - ``segmentation`` (class or object ids, masks): booleans, and integers that are
      labels, masks, segmentations or instances by name, lie under ``volumes/predictions``
      or are wider than 16 bits;
    - ``image`` for the other integers (uint8 or uint16 grey levels of another name).

    The viewer draws an image grey, probabilities as a heat map and a segmentation in
    colours; the pyramid averages images and probabilities and strides segmentations;
    ``threshold``, ``instances`` and ``evaluate`` threshold probabilities and read any
    other dataset as ids (non-zero = organelle).
    """
    dtype, parts = np.dtype(dtype), _parts(name)
    if _is_raw(parts):
        return "image"
    if is_probability_map(name) or dtype.kind == "f":
        return "probabilities"
    if dtype.kind == "b":
        return "segmentation"
    predicted = parts[:2] == PREDICTIONS_GROUP.split("/")
    if dtype.kind in "iu" and (predicted or _SEGMENTATION_PARTS.intersection(parts) or dtype.itemsize > 2):
        return "segmentation"
    return "image"


def encode_probability(probability: ArrayLike) -> NDArray[np.uint8]:
    """Probabilities in [0, 1] stored as uint8 0..255, as the original stores them:
    ``floor(255 * p + 0.5)`` (rounded half up; values outside [0, 1] clipped)."""
    values = np.asarray(probability, dtype=np.float64)
    return np.clip(np.floor(values * 255 + 0.5), 0, 255).astype(np.uint8)


def decode_probability(values: ArrayLike) -> NDArray[np.floating]:
    """Stored probabilities as floats in [0, 1]: uint8 0..255 divided by 255, floats as they are.

    Raises
    ------
    ValueError
        For another dtype, or floats outside [0, 1] (the caller names the dataset).
    """
    array = np.asarray(values)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"probabilities must be floats in [0, 1] or uint8 (0..255), got dtype {array.dtype}")
    if array.size and not (array.min() >= 0 and array.max() <= 1):
        raise ValueError(f"probabilities must lie in [0, 1], got values in [{array.min()}, {array.max()}]")
    return array
