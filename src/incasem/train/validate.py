"""Validation during training: predict each validation ROI and score it (DESIGN §6, §7).

Each ROI of the validation data config is predicted tile by tile through the prediction
core (:func:`incasem.predict.core.predict_array`), reading the network's context from the
raw dataset (reflected where it leaves the data, as prediction does). Loss and the
confusion counts are taken inside ``mask ∧ metric masks`` (and, for partial labels, the
labelled voxels, of which only the labelled sections are predicted); the segmentation is
the most probable class (threshold 0.5 for two classes). Memory stays bounded by one tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from incasem.evaluate.evaluate import Reference
from incasem.evaluate.metrics import ConfusionCounts, confusion_counts
from incasem.geometry import Roi
from incasem.io.data_config import DataConfig, RoiEntry
from incasem.io.volume import Volume, open_volume
from incasem.model.unet import UNet
from incasem.predict.core import Precision, predict_array
from incasem.train.loss import balanced_masked_cross_entropy

__all__ = ["EXAMPLE_SHAPE", "VALIDATION_TILE", "Example", "RoiScores", "ValidationResult", "scored_boxes", "validate"]

#: Largest region (voxels) of a validation ROI predicted at once.
VALIDATION_TILE = (256, 256, 256)


@dataclass
class RoiScores:
    """Loss and confusion counts per class of one validation ROI."""

    counts: dict[int, ConfusionCounts]
    loss_sum: float = 0.0
    inside_voxels: int = 0

    @property
    def loss(self) -> float:
        """Mean balanced cross entropy per voxel inside the masks (NaN if none)."""
        return self.loss_sum / self.inside_voxels if self.inside_voxels else math.nan

    def scores(self, class_names: Mapping[int, str]) -> dict[str, float | None]:
        """``loss``, ``f1``, ``iou``, ``precision``, ``recall`` (mean over classes; per class too when several).

        Undefined values (nothing labelled and nothing predicted) are ``None``.
        """
        per_class = {c: counts.scores() for c, counts in self.counts.items()}
        result: dict[str, float | None] = {"loss": _defined(self.loss)}
        for metric in ("f1", "iou", "precision", "recall"):
            values = [s[metric] for s in per_class.values() if not math.isnan(s[metric])]
            result[metric] = float(np.mean(values)) if values else None
            if len(per_class) > 1:
                for c, s in per_class.items():
                    result[f"{metric}_{class_names[c]}"] = _defined(s[metric])
        return result


@dataclass(frozen=True)
class Example:
    """A validation block for a snapshot: raw (uint8), labels (class ids), organelle probability."""

    raw: np.ndarray
    labels: np.ndarray
    probability: np.ndarray


@dataclass
class ValidationResult:
    """Scores of every validation ROI and of all of them together, and an example block."""

    per_roi: dict[str, dict[str, float | None]]
    summary: dict[str, float | None] = field(default_factory=dict)
    example: Example | None = None

    @property
    def f1(self) -> float | None:
        """The summary F1 (the best-checkpoint criterion)."""
        return self.summary.get("f1")


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


#: Largest example block kept for a snapshot (voxels per axis, centred in the first tile).
EXAMPLE_SHAPE = (64, 128, 128)


def _example(raw: np.ndarray, target: np.ndarray, probabilities: np.ndarray, context: tuple[int, int, int]) -> Example:
    shape = tuple(min(e, t) for e, t in zip(EXAMPLE_SHAPE, target.shape))
    window = tuple(slice((t - n) // 2, (t - n) // 2 + n) for t, n in zip(target.shape, shape))
    raw_window = tuple(slice(w.start + c, w.stop + c) for w, c in zip(window, context))
    return Example(raw[raw_window].copy(), target[window].copy(), probabilities[(slice(1, None), *window)].sum(axis=0))


def _score_tile(
    model: UNet, raw_volume: Volume, reference: Reference, tile: Roi, class_ids: tuple[int, ...], device: torch.device, precision: Precision
) -> tuple[RoiScores, Example]:
    context = model.config.context
    raw = raw_volume.read(tile.grow(context), padding="reflect")
    probabilities = predict_array(model, raw, Roi(context, tile.shape), block_shape=None, padding="reflect", precision=precision, device=device)
    target, inside = reference.read(tile)
    segmentation = probabilities.argmax(axis=0)
    counts = {c: confusion_counts(segmentation == c, target == c, inside) for c in class_ids}
    log_probabilities = torch.from_numpy(np.log(np.maximum(probabilities, 1e-12)))[None]
    loss = balanced_masked_cross_entropy(log_probabilities, torch.from_numpy(target.astype(np.int64))[None], torch.from_numpy(inside)[None])
    voxels = int(inside.sum())
    return RoiScores(counts, float(loss) * voxels, voxels), _example(raw, target, probabilities, context)


def scored_boxes(entry: RoiEntry, reference: Reference, model: UNet) -> Iterator[Roi]:
    """The boxes of a validation entry that ``model`` predicts for a score: tiles of :data:`VALIDATION_TILE`,
    with partial labels only their labelled sections (those closer than the network's context as one slab)."""
    assert entry.roi is not None, "a config loaded with its datasets checked has every ROI resolved"
    for tile in entry.roi.tiles(VALIDATION_TILE, grid_origin=entry.roi.offset):
        yield from reference.labelled_boxes(tile, merge_gap=2 * model.config.context[0])


def validate(
    model: UNet,
    data_config: DataConfig,
    class_names: tuple[str, ...],
    *,
    device: torch.device,
    precision: Precision,
) -> ValidationResult:
    """Predict and score every ROI of ``data_config`` with ``model`` (left in eval mode).

    Parameters
    ----------
    model : UNet
        The network being trained.
    data_config : DataConfig
        Validation data, loaded with its datasets checked (ROIs known).
    class_names : tuple of str
        Name of each class id (index 0 = background), for per-class scores.
    device, precision
        Where and how to run the network.

    Returns
    -------
    ValidationResult
        Scores per ROI (data config entry) and summed over all ROIs, and the centre of
        the first tile as an example block (:data:`EXAMPLE_SHAPE` at most).
    """
    names = dict(enumerate(class_names))
    per_roi: dict[str, dict[str, float | None]] = {}
    total: RoiScores | None = None
    example: Example | None = None
    for entry in data_config:
        class_ids = tuple(sorted({label.class_id for label in entry.labels})) or tuple(range(1, len(class_names)))
        roi_scores = RoiScores({c: ConfusionCounts() for c in class_ids})
        raw_volume, reference = open_volume(entry.container, entry.raw), Reference.open(entry)
        assert entry.roi is not None, "a config loaded with its datasets checked has every ROI resolved"
        for box in scored_boxes(entry, reference, model):
            scores, box_example = _score_tile(model, raw_volume, reference, box, class_ids, device, precision)
            example = example or box_example
            _add(roi_scores, scores)
        per_roi[entry.name] = roi_scores.scores(names)
        if total is None:
            total = RoiScores({c: ConfusionCounts() for c in range(1, len(class_names))})
        _add(total, roi_scores)
    return ValidationResult(per_roi, total.scores(names) if total is not None else {}, example)


def _add(total: RoiScores, part: RoiScores) -> None:
    for c, counts in part.counts.items():
        total.counts[c] = total.counts.get(c, ConfusionCounts()) + counts
    total.loss_sum += part.loss_sum
    total.inside_voxels += part.inside_voxels
